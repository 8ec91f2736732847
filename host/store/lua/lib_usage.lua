-- A tenant's usage is one hash (`td:{T}:usage`): totals by state, where `queued` counts
-- every job not finished, converting ones included (`converting`, in hashes written
-- before, is read as part of it), `stored_bytes`, and its activity per hour and per day
-- as `h:<start>:<name>` and `d:<start>:<name>` (the janitor prunes old periods). Callers
-- pass the period's field prefixes (`usage::hour_prefix`, `day_prefix`): the field names
-- are made in one place, on the Rust side. So a
-- job's enqueue, completion or failure changes its usage with one HMGET and one HSET.
local function gauge(state)
  if state == 'converting' then return 'queued' end
  if state == 'queued' or state == 'done' or state == 'failed' or state == 'expired' then
    return state
  end
  return nil
end
-- A change: `deltas` {field, n, ...}, and for each {name, n} of `period` (or nil) the
-- hour's and the day's field (`hour`, `day`: their prefixes). Fields named twice add up; a field that adds up to 0 is
-- left out.
local function change(deltas, period, hour, day)
  local names, by = {}, {}
  local function put(f, n)
    if by[f] == nil then
      names[#names + 1] = f
      by[f] = 0
    end
    by[f] = by[f] + tonumber(n)
  end
  for i = 1, #deltas, 2 do put(deltas[i], deltas[i + 1]) end
  for i = 1, #(period or {}), 2 do
    put(hour .. period[i], period[i + 1])
    put(day .. period[i], period[i + 1])
  end
  local c = {names = {}, by = by}
  for _, f in ipairs(names) do
    if by[f] ~= 0 then c.names[#c.names + 1] = f end
  end
  return c
end
-- The values of a change's fields and of the `extra` field names, by name (one HMGET).
local function current(usage, c, extra)
  local names = {}
  for _, f in ipairs(c.names) do names[#names + 1] = f end
  for _, f in ipairs(extra or {}) do names[#names + 1] = f end
  local cur = {}
  if #names == 0 then return cur end
  local v = redis.call('HMGET', usage, unpack(names))
  for i, f in ipairs(names) do cur[f] = tonumber(v[i] or '0') or 0 end
  return cur
end
-- Writes a change (one HSET) over `cur`, what `current` read (read now if nil).
local function apply(usage, c, cur)
  if #c.names == 0 then return end
  cur = cur or current(usage, c)
  local set = {}
  for _, f in ipairs(c.names) do
    set[#set + 1] = f
    set[#set + 1] = string.format('%d', cur[f] + c.by[f])
  end
  redis.call('HSET', usage, unpack(set))
end
-- A job went from state `from` to `to` (either nil: none), with `period` counted too.
local function moved(usage, from, to, period, hour, day)
  local d = {}
  local f, t = gauge(from), gauge(to)
  if f then
    d[#d + 1] = f
    d[#d + 1] = -1
  end
  if t then
    d[#d + 1] = t
    d[#d + 1] = 1
  end
  apply(usage, change(d, period, hour, day))
end
