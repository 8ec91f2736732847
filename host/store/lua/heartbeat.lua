-- Extends a consumer's hold on an entry (resets its idle time) only if it still owns
-- it. Returns 1 if still ours.
--
-- KEYS: stream
-- ARGV: group, consumer, entry
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
