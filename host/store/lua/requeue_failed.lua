-- Queues a failed job again (a replay of its dead letter): attempts start over, the
-- error and the dead-letter entry go, a new convert entry is added. Returns the job's
-- status before: `failed` when it was queued again, else unchanged.
--
-- KEYS: job, convert, dead_letter, usage
-- ARGV: job_id, channel
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'failed' then return status end
moved(KEYS[4], 'failed', 'queued')
local dead = redis.call('HGET', KEYS[1], 'dead_letter')
if dead and dead ~= '' then redis.call('XDEL', KEYS[3], dead) end
redis.call('HDEL', KEYS[1], 'error', 'finished_at', 'dead_letter')
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', '0', 'progress', '0')
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({status = 'queued', progress = 0}))
return 'failed'
