-- Stores a new job and queues it, if the tenant's limits allow: jobs per minute, jobs
-- not yet finished, stored bytes (read only when a limit is set). Counts it in the
-- tenant's usage. Returns `{'ok'}` or `{limit, value, current}`.
-- `jobs_per_minute`, `max_queued`, `quota_bytes`: 0 for none; `fields...`: the job hash's
-- field/value pairs.
--
-- `hour_prefix`, `day_prefix`: the usage fields of the periods it counts in (see
-- lib_usage.lua).
--
-- KEYS: job, user_jobs, tenant_jobs, convert, usage, rate
-- ARGV: created_ms, job_id, input_bytes, jobs_per_minute, max_queued, quota_bytes, hour_prefix, day_prefix, fields...
local jpm, mq, quota = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local bytes = tonumber(ARGV[3])
if jpm > 0 then
  local n = tonumber(redis.call('GET', KEYS[6]) or '0')
  if n >= jpm then return {'jobs_per_minute', jpm, n} end
end
-- The usage change, and the limits' counts in the same read.
local c = change({'queued', 1, 'stored_bytes', bytes}, {'jobs', 1, 'bytes_in', bytes}, ARGV[7], ARGV[8])
local cur = current(KEYS[5], c, {'queued', 'converting', 'stored_bytes'})
local unfinished = cur['queued'] + cur['converting']
if mq > 0 and unfinished >= mq then return {'max_queued', mq, unfinished} end
if quota > 0 and cur['stored_bytes'] + bytes > quota then
  return {'quota_bytes', quota, cur['stored_bytes']}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[4], '*', 'job', ARGV[2])
apply(KEYS[5], c, cur)
-- The minute's count is kept only under a rate limit: a limit set mid-minute counts
-- from then on.
if jpm > 0 and redis.call('INCR', KEYS[6]) == 1 then redis.call('EXPIRE', KEYS[6], 120) end
return {'ok'}
