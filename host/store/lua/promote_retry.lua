-- Puts one due retry back on its tenant's convert stream, if the job still waits for it
-- (`queued` with `retry_due` set); a stale retry entry changes nothing. Returns 1 if
-- queued, 2 if the job is still `converting` (the worker writes the retry entry before
-- the script that requeues the job: a retry due at once can be promoted in between, so
-- the caller looks again shortly), else 0.
--
-- KEYS: job, convert
-- ARGV: job_id
local f = redis.call('HMGET', KEYS[1], 'status', 'retry_due')
if f[1] == 'converting' then return 2 end
if f[1] ~= 'queued' or not f[2] or f[2] == '' then return 0 end
redis.call('HDEL', KEYS[1], 'retry_due')
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
return 1
