-- Takes a tenant out of the ready set, remembering its pass minus the stride the pick
-- that found nothing to take charged it (no dispatch happened). `stride`: that stride, empty for the tenant's own (or
-- `default_stride`).
--
-- KEYS: ready, pass, stride
-- ARGV: tenant, stride, default_stride
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s then
  local stride = tonumber(ARGV[2])
  if not stride then stride = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or ARGV[3]) end
  local pass = tonumber(s) - stride
  if pass < 0 then pass = 0 end
  redis.call('HSET', KEYS[2], ARGV[1], pass)
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
