-- Puts one due retry back on its tenant's convert stream, if the job still waits for it
-- (`queued` with `retry_due` set); a stale retry entry changes nothing. Returns 1 if
-- queued.
--
-- KEYS: job, convert
-- ARGV: job_id
local f = redis.call('HMGET', KEYS[1], 'status', 'retry_due')
if f[1] ~= 'queued' or not f[2] or f[2] == '' then return 0 end
redis.call('HDEL', KEYS[1], 'retry_due')
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
return 1
