-- The user id of a live session of a live tenant incarnation, or nil.
--
-- KEYS: session, tenant
-- ARGV:
local s = redis.call('HMGET', KEYS[1], 'user', 'inc')
if not s[1] then return false end
local t = redis.call('HMGET', KEYS[2], 'incarnation', 'deleting')
if t[1] ~= s[2] or t[2] == '1' then return false end
return s[1]
