-- Takes the next entry of a tenant's convert stream for a consumer, under the tenant's
-- running-jobs cap (expired leases, of workers that died, are dropped first when there
-- is a cap to count against): an entry idle past the visibility timeout (`XAUTOCLAIM`),
-- or a new one; the entry gets a lease until `now_ms` + `lease_ms`. `order` says what to
-- look for: `claim` (idle entries, then new ones) or `new` (new ones only: the caller
-- looks for idle entries of a tenant now and then, not before every entry). A stream
-- without the group (a tenant's first job since it was created or deleted) gets it here,
-- reading from its start. A tenant over its CPU seconds this hour
-- (`cpu_seconds_per_hour`, the smaller of the tenant's and the server's) gets nothing
-- until the hour is over. Returns `{'entry', id, job, taken_over}`, `{'capped', limit,
-- value}` or `{'empty'}`. `max_running`, `cpu_seconds_per_hour`: the tenant's effective
-- limits, the smaller of its own and the server's (0: none; the caller has them from its
-- cached tenant record, so the script reads no tenant hash).
--
-- `cpu_field`: this hour's CPU time in the usage hash (`usage::hour_field`).
--
-- KEYS: convert, running, usage
-- ARGV: group, consumer, now_ms, lease_ms, visibility_ms, max_running, cpu_seconds_per_hour, order, cpu_field
local cap = tonumber(ARGV[6])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
  local running = redis.call('ZCARD', KEYS[2])
  if running >= cap then return {'capped', 'max_running', cap} end
end
local cpu = tonumber(ARGV[7])
if cpu > 0 and tonumber(redis.call('HGET', KEYS[3], ARGV[9]) or '0') >= cpu * 1000 then
  return {'capped', 'cpu_seconds_per_hour', cpu}
end
local function claim()
  local ok, r = pcall(redis.call, 'XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], '0-0', 'COUNT', 1)
  if not ok then
    if not string.find(r.err or tostring(r), 'NOGROUP') then error(r) end
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
    return nil
  end
  return r[2][1]
end
local function new()
  local ok, n = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not ok then
    if not string.find(n.err or tostring(n), 'NOGROUP') then error(n) end
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
    n = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  end
  if n then return n[1][2][1] end
  return nil
end
local e, taken = nil, 0
if ARGV[8] == 'claim' then
  e = claim()
  if e then taken = 1 end
end
if not e then e = new() end
if not e then return {'empty'} end
local job = ''
for i = 1, #e[2], 2 do
  if e[2][i] == 'job' then job = e[2][i + 1] end
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), e[1])
return {'entry', e[1], job, taken}
