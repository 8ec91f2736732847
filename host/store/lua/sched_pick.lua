-- Takes the ready tenant with the smallest pass and advances it by its stride. Returns
-- `{tenant, stride}` or nil.
--
-- KEYS: ready, vtime, stride
-- ARGV: default_stride
local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then return false end
local t, p = top[1], tonumber(top[2])
local s = tonumber(redis.call('HGET', KEYS[3], t) or ARGV[1])
redis.call('ZADD', KEYS[1], 'XX', p + s, t)
redis.call('SET', KEYS[2], p)
return {t, tostring(s)}
