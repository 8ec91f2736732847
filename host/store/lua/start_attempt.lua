-- Starts an attempt, recording the converter that runs it (appended to `converters`
-- unless it is the last one already; empty: not recorded). The canary runs a job's first
-- attempt only, once (`canary_tried`): a retry, or a job requeued by hand, runs the
-- stable converter. Returns `{status, attempts, canary, job}`; status `missing` when the
-- job was deleted; canary 1 when this attempt runs the canary; job: the job hash as it
-- was before (field, value, ...), what the worker needs to run the attempt (one read for
-- both). `canary`: the canary's digest, empty for none; `digest`: empty, not recorded.
--
-- The tenant's usage does not change: `queued` counts converting jobs too (see
-- lib_usage.lua).
--
-- KEYS: job
-- ARGV: channel, digest, canary
local job = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #job, 2 do h[job[i]] = job[i + 1] end
local f = {h['status'], h['attempts'], h['canary_tried'], h['converters']}
local status = f[1]
if not status then return {'missing', 0, 0, job} end
if status == 'done' or status == 'failed' or status == 'expired' then
  return {status, tonumber(f[2] or '0'), 0, job}
end
local attempts = tonumber(f[2] or '0') + 1
local fields = {'status', 'converting', 'progress', '0', 'attempts', attempts}
local digest, canary = ARGV[2], 0
if ARGV[3] ~= '' and attempts == 1 and f[3] ~= '1' then
  digest, canary = ARGV[3], 1
  table.insert(fields, 'canary_tried')
  table.insert(fields, '1')
end
if digest ~= '' then
  local list = f[4] or ''
  if string.match(list, '([^,]*)$') ~= digest then
    if list == '' then list = digest else list = list .. ',' .. digest end
    table.insert(fields, 'converters')
    table.insert(fields, list)
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
if h['watched'] then
  redis.call('PUBLISH', ARGV[1], cjson.encode({status = 'converting', progress = 0}))
end
return {'converting', attempts, canary, job}
