-- Trims a stream below the oldest entry any consumer group still needs: the smallest
-- pending id, or the last delivered id when nothing is pending. Never drops an
-- unacknowledged or undelivered entry. A stream without groups is capped at `cap` entries.
-- Returns entries removed.
--
-- KEYS: stream
-- ARGV: cap
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm end
  return as < bs
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then
  return redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
end
local floor = nil
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local keep = last
  local p = redis.call('XPENDING', KEYS[1], name)
  if p[1] > 0 then keep = p[2] end
  if floor == nil or less(keep, floor) then floor = keep end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
