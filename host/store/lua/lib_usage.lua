local function moved(usage, from, to)
  if from == 'queued' or from == 'converting' or from == 'done' or from == 'failed' or from == 'expired' then
    redis.call('HINCRBY', usage, from, -1)
  end
  if to then redis.call('HINCRBY', usage, to, 1) end
end
local function count(key, field, n, ttl)
  if redis.call('HINCRBY', key, field, n) == tonumber(n) then redis.call('EXPIRE', key, ttl) end
end
local function add(key, deltas, ttl, cur)
  local fields = {}
  for i = 1, #deltas, 2 do fields[#fields + 1] = deltas[i] end
  cur = cur or redis.call('HMGET', key, unpack(fields))
  local set = {}
  for i = 1, #deltas, 2 do
    set[#set + 1] = deltas[i]
    set[#set + 1] = string.format('%d', tonumber(cur[(i + 1) / 2] or '0') + tonumber(deltas[i + 1]))
  end
  redis.call('HSET', key, unpack(set))
  if ttl and not cur[1] then redis.call('EXPIRE', key, ttl) end
end
