local function token(list, cap)
  if redis.call('LPUSH', list, '1') > tonumber(cap) then
    redis.call('LTRIM', list, 0, tonumber(cap) - 1)
  end
end
local function add(ready, pass, vtime, wake, tenant, always, cap)
  local added = 0
  if not redis.call('ZSCORE', ready, tenant) then
    local p = tonumber(redis.call('HGET', pass, tenant) or '0')
    local v = tonumber(redis.call('GET', vtime) or '0')
    if v > p then p = v end
    redis.call('ZADD', ready, p, tenant)
    added = 1
  end
  if added == 1 or always == '1' then token(wake, cap) end
  return added
end
