-- Whether an entry is still pending in a group (a lease's holder may have died). Returns
-- 1 if pending.
--
-- KEYS: stream
-- ARGV: group, entry
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if not ok then return 0 end
return #p
