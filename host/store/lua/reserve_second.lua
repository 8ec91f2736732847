-- The second to issue an account's next token at: now, or one past the last one if
-- that was now or later (HS256 tokens have no nonce: two logins within a second would
-- get the same token).
--
-- KEYS: last_issue
-- ARGV: now_s
local t = math.max(tonumber(ARGV[1]), (tonumber(redis.call('GET', KEYS[1])) or 0) + 1)
redis.call('SET', KEYS[1], t, 'EX', 120)
return t
