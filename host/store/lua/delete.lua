-- Deletes a job: its record and listings, its share of the tenant's totals (state and
-- stored bytes), and tells its followers; a `converting` job's worker is asked to stop
-- its run (on the cancel channel). Returns the job's status before (`missing`).
--
-- KEYS: job, user_jobs, tenant_jobs, usage
-- ARGV: job_id, channel, event, cancel_channel, cancel_message
local f = redis.call('HMGET', KEYS[1], 'status', 'input_bytes', 'output_bytes')
if not f[1] then return 'missing' end
moved(KEYS[4], f[1], nil)
if f[1] ~= 'expired' then
  redis.call('HINCRBY', KEYS[4], 'stored_bytes', -(tonumber(f[2] or '0') + tonumber(f[3] or '0')))
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
if f[1] == 'converting' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return f[1]
