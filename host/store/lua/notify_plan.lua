-- Stores a notify entry's plan unless one is stored (another consumer planned first: its
-- plan stands), and admits up to the plan's messages against the tenant's hourly cap,
-- once per entry: a later call returns the first answer. `messages`: how many the plan
-- has. `fresh` 1: the entry was read for the first time (`XREADGROUP >`), so no record
-- exists and none is looked for (plan and admission are written together) — and a plan
-- of one message keeps none at all: its entry's acknowledgement records it (a consumer
-- that stops before that has it delivered again, admitted again). Returns `{admitted,
-- plan}`: the stored plan when it is not this one, else an empty string.
--
-- KEYS: record, rate
-- ARGV: plan, messages, cap, record_ttl, rate_ttl, fresh
local want, theirs = tonumber(ARGV[2]), ''
local fresh = ARGV[6] == '1'
if not fresh then
  if redis.call('HSETNX', KEYS[1], 'plan', ARGV[1]) == 0 then
    local f = redis.call('HMGET', KEYS[1], 'plan', 'admitted')
    if f[2] then return {tonumber(f[2]), f[1]} end
    -- Planned, not yet admitted (its consumer stopped in between): admit that plan.
    want, theirs = #cjson.decode(f[1]), f[1]
  else
    redis.call('EXPIRE', KEYS[1], ARGV[4])
  end
end
local cap = tonumber(ARGV[3])
local admit = 0
if want > 0 and cap > 0 then
  local used = redis.call('INCRBY', KEYS[2], want)
  -- A new hour's counter: its TTL, once.
  if used == want then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
  admit = math.max(0, want - math.max(0, used - cap))
  if admit < want then redis.call('DECRBY', KEYS[2], want - admit) end
end
if fresh then
  if want > 1 then
    redis.call('HSET', KEYS[1], 'plan', ARGV[1], 'admitted', admit)
    redis.call('EXPIRE', KEYS[1], ARGV[4])
  end
else
  redis.call('HSET', KEYS[1], 'admitted', admit)
end
return {admit, theirs}
