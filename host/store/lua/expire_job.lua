-- Marks a finished job `expired` (its blobs are gone: the retention sweeper deleted them
-- first) and takes its bytes off the tenant's stored total. Returns 1 if it expired the
-- job.
--
-- KEYS: job, usage
-- ARGV: now_s, channel
local f = redis.call('HMGET', KEYS[1], 'status', 'input_bytes', 'output_bytes')
if f[1] ~= 'done' and f[1] ~= 'failed' then return 0 end
moved(KEYS[2], f[1], 'expired')
redis.call('HINCRBY', KEYS[2], 'stored_bytes', -(tonumber(f[2] or '0') + tonumber(f[3] or '0')))
redis.call('HSET', KEYS[1], 'status', 'expired', 'expired_at', ARGV[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({status = 'expired'}))
return 1
