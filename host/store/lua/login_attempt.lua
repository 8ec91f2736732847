-- Takes one attempt from an account's bucket (refilled at one attempt per
-- `per_attempt_ms`, up to `capacity`). Returns 0, or the ms until an attempt is
-- available.
--
-- KEYS: bucket
-- ARGV: now_ms, capacity, per_attempt_ms, ttl_s
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local cap, per, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[1])
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) / per)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * per) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return wait
