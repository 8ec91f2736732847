-- Marks the job done once (a second delivery changes nothing), acknowledges the entry
-- (and trims the stream below what the group still needs) and adds a notify entry (with
-- what the notifier needs: owner, input name, output). Releases the entry's running
-- lease. The conversion's CPU time goes to the hour and day with the rest. A job whose
-- MP3 would take the tenant's stored bytes past its quota is not marked done (the caller
-- deletes the MP3 and fails the job). Returns 0 when the job no longer exists (the
-- caller drops the MP3), 2 when the quota cannot hold the MP3 (nothing changed), else 1.
-- `bitrate_kbps`: empty when unknown; `quota_bytes`, `cpu_ms`: 0 for none; `trim`: `0`
-- leaves the stream's trim to a later ack.
--
-- KEYS: job, convert, notify, running, usage
-- ARGV: group, entry, output_key, output_bytes, duration_ms, finished_at, job_id, tenant, channel, bitrate_kbps, hour_prefix, day_prefix, quota_bytes, cpu_ms, trim
local f = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'owner_email', 'input_name', 'watched')
local before = f[1]
if not before then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('ZREM', KEYS[4], ARGV[2])
  return 0
end
if before ~= 'done' then
  -- The usage change (totals, hour, day) and the stored bytes (against the quota): one
  -- read, one write.
  local totals = {'stored_bytes', ARGV[4], 'done', 1}
  if gauge(before) then totals[5], totals[6] = gauge(before), -1 end
  local period = {'done', 1, 'bytes_out', ARGV[4]}
  local cpu = tonumber(ARGV[14] or '0')
  if cpu > 0 then period[5], period[6] = 'cpu_ms', cpu end
  local c = change(totals, period, ARGV[11], ARGV[12])
  local cur = current(KEYS[5], c, {'stored_bytes'})
  local quota = tonumber(ARGV[13] or '0')
  if quota > 0 and cur['stored_bytes'] + tonumber(ARGV[4]) > quota then return 2 end
  apply(KEYS[5], c, cur)
  redis.call('HSET', KEYS[1], 'status', 'done', 'progress', '1', 'error', '',
    'output_key', ARGV[3], 'output_bytes', ARGV[4], 'duration_ms', ARGV[5], 'finished_at', ARGV[6],
    'output_bitrate_kbps', ARGV[10])
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[7], 'tenant', ARGV[8], 'status', 'done',
    'user_id', f[2] or '', 'owner_email', f[3] or '', 'input_name', f[4] or '',
    'output_key', ARGV[3], 'output_bytes', ARGV[4], 'duration_ms', ARGV[5], 'finished_at', ARGV[6])
  if f[5] then redis.call('PUBLISH', ARGV[9], cjson.encode({status = 'done', progress = 1})) end
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
if ARGV[15] ~= '0' then trim_below(KEYS[2], ARGV[1]) end
return 1
