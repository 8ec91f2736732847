-- Schedules another attempt: back to `queued` with `retry_due` set (the worker has
-- already added the job to the scheduler's retry set, so a crash between the two leaves
-- a retry entry the promoter drops, never a job nobody requeues), ack, lease released.
-- Acknowledges (and trims) in any case.
-- `refund`: `1` when the attempt does not count (a canary's, retried on stable); `trim`:
-- `0` leaves the stream's trim to a later ack.
--
-- The tenant's usage does not change: `queued` counts converting jobs too.
--
-- KEYS: job, convert, running
-- ARGV: group, entry, reason, due_ms, channel, refund, trim
if redis.call('HGET', KEYS[1], 'status') == 'converting' then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[3], 'progress', '0', 'retry_due', ARGV[4])
  if ARGV[6] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
  redis.call('PUBLISH', ARGV[5], cjson.encode({status = 'queued', progress = 0, error = ARGV[3]}))
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if ARGV[7] ~= '0' then trim_below(KEYS[2], ARGV[1]) end
return 1
