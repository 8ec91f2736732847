-- Records a session if the tenant exists and is not being deleted: mints the tenant's
-- incarnation if it has none yet (tenants created before incarnations existed).
-- Returns 1, or 0 when the tenant is gone.
--
-- KEYS: session, user_sessions, tenant
-- ARGV: user_id, expires_ms, token_sha, incarnation
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('HGET', KEYS[3], 'deleting') == '1' then
  return 0
end
redis.call('HSETNX', KEYS[3], 'incarnation', ARGV[4])
local inc = redis.call('HGET', KEYS[3], 'incarnation')
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'inc', inc)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = redis.call('PTTL', KEYS[2])
local want = tonumber(ARGV[2]) - tonumber(redis.call('TIME')[1]) * 1000
if ttl < want then redis.call('PEXPIREAT', KEYS[2], ARGV[2]) end
return 1
