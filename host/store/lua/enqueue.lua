-- Stores a new job and queues it, if the tenant's limits allow: jobs per minute, jobs
-- not yet finished, stored bytes (read only when a limit is set). Counts it in the
-- tenant's usage. Returns `{'ok'}` or `{limit, value, current}`.
-- `jobs_per_minute`, `max_queued`, `quota_bytes`: 0 for none; `fields...`: the job hash's
-- field/value pairs.
--
-- KEYS: job, user_jobs, tenant_jobs, convert, usage, hour, day, rate
-- ARGV: created_ms, job_id, input_bytes, jobs_per_minute, max_queued, quota_bytes, hour_ttl, day_ttl, fields...
local jpm, mq, quota = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local bytes = tonumber(ARGV[3])
if jpm > 0 then
  local n = tonumber(redis.call('GET', KEYS[8]) or '0')
  if n >= jpm then return {'jobs_per_minute', jpm, n} end
end
if mq > 0 or quota > 0 then
  local u = redis.call('HMGET', KEYS[5], 'queued', 'converting', 'stored_bytes')
  local unfinished = tonumber(u[1] or '0') + tonumber(u[2] or '0')
  if mq > 0 and unfinished >= mq then return {'max_queued', mq, unfinished} end
  local stored = tonumber(u[3] or '0')
  if quota > 0 and stored + bytes > quota then return {'quota_bytes', quota, stored} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[4], '*', 'job', ARGV[2])
redis.call('HINCRBY', KEYS[5], 'queued', 1)
redis.call('HINCRBY', KEYS[5], 'stored_bytes', bytes)
count(KEYS[6], 'jobs', 1, ARGV[7])
redis.call('HINCRBY', KEYS[6], 'bytes_in', bytes)
count(KEYS[7], 'jobs', 1, ARGV[8])
redis.call('HINCRBY', KEYS[7], 'bytes_in', bytes)
-- The minute's count is kept only under a rate limit: a limit set mid-minute counts
-- from then on.
if jpm > 0 and redis.call('INCR', KEYS[8]) == 1 then redis.call('EXPIRE', KEYS[8], 120) end
return {'ok'}
