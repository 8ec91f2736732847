-- Fails the job for good: dead-letter entry with the reason (its id kept in the job as
-- `dead_letter`), notify entry, ack (and trim), running lease released.
-- `trim`: `0` leaves the stream's trim to a later ack.
--
-- KEYS: job, convert, dead_letter, notify, running, usage
-- ARGV: group, entry, reason, finished_at, job_id, tenant, attempts, channel, hour_prefix, day_prefix, trim
local f = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'owner_email', 'input_name', 'watched')
local before = f[1]
if before and before ~= 'done' and before ~= 'failed' and before ~= 'expired' then
  moved(KEYS[6], before, 'failed', {'failed', 1}, ARGV[9], ARGV[10])
  local dead = redis.call('XADD', KEYS[3], '*', 'job', ARGV[5], 'tenant', ARGV[6], 'reason', ARGV[3], 'attempts', ARGV[7])
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[4], 'dead_letter', dead)
  redis.call('XADD', KEYS[4], '*', 'job', ARGV[5], 'tenant', ARGV[6], 'status', 'failed', 'error', ARGV[3],
    'user_id', f[2] or '', 'owner_email', f[3] or '', 'input_name', f[4] or '',
    'finished_at', ARGV[4])
  if f[5] then redis.call('PUBLISH', ARGV[8], cjson.encode({status = 'failed', error = ARGV[3]})) end
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
if ARGV[11] ~= '0' then trim_below(KEYS[2], ARGV[1]) end
return 1
