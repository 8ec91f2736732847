-- Ends a canary if it is still the one running in its scope (same digest, same start).
-- Returns 1 if it ended it, 0 if it had ended already.
--
-- KEYS: canaries
-- ARGV: scope, digest, started_at
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local c = cjson.decode(v)
if c.digest ~= ARGV[2] or tostring(c.started_at) ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
