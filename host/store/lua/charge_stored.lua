-- Charges bytes stored besides jobs (a published component) to a tenant, unless its
-- quota (0: none) cannot hold them. Returns 1 if charged.
--
-- KEYS: usage
-- ARGV: bytes, quota
local stored = tonumber(redis.call('HGET', KEYS[1], 'stored_bytes') or '0')
local quota = tonumber(ARGV[2])
if quota > 0 and stored + tonumber(ARGV[1]) > quota then return 0 end
redis.call('HINCRBY', KEYS[1], 'stored_bytes', ARGV[1])
return 1
