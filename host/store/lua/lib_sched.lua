-- Leaves a wake-up token. A token only matters to a reader blocked on the list now (Redis
-- hands it over at once) or about to block; the rest wake readers later for nothing, so
-- the list keeps `cap`, trimmed once it holds twice that (one `LTRIM` per `cap` pushes).
-- `value`: what the token says (default '1').
local function token(list, cap, value)
  if redis.call('LPUSH', list, value or '1') > 2 * tonumber(cap) then
    redis.call('LTRIM', list, 0, tonumber(cap) - 1)
  end
end
-- Puts a tenant in the ready set at its remembered pass or the smallest pass of the ready
-- tenants (the virtual time: whoever is due next), whichever is later, so a tenant back
-- from idle waits at most a round. Into an empty set it comes at 0, and every remembered
-- pass is forgotten: with nobody ready nobody is owed anything, and a pass remembered
-- from long ago would put its tenant far behind the ones that come later.
local function add(ready, pass, wake, tenant, always, cap)
  local added = 0
  if not redis.call('ZSCORE', ready, tenant) then
    local p = 0
    local top = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
    if #top == 0 then
      redis.call('DEL', pass)
    else
      p = math.max(tonumber(redis.call('HGET', pass, tenant) or '0'), tonumber(top[2]))
    end
    redis.call('ZADD', ready, p, tenant)
    added = 1
  end
  if added == 1 or always == '1' then token(wake, cap) end
  return added
end
-- Takes the ready tenant with the smallest pass and advances it by its stride: `{tenant,
-- stride}`, or nil when no tenant is ready.
local function pick(ready, strides, default_stride)
  local top = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  if #top == 0 then return nil end
  local t, p = top[1], tonumber(top[2])
  local s = tonumber(redis.call('HGET', strides, t) or default_stride)
  redis.call('ZADD', ready, 'XX', p + s, t)
  return {t, tostring(s)}
end
