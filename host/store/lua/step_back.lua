-- Steps a scope's activations back, atomically. `active`: `td:{~plugins}:active`;
-- `trail`: the scope's; `field`: the scope's field in `active`; `mode`: `one` (a
-- rollback: drop the activation in force) or `tenant` (drop the tenant's own choices on
-- top). Then the newest left runs the scope, or the built-in component when none is.
-- Returns `{changed, digest or ""}`; `changed` 0: nothing to drop.
--
-- KEYS: active, trail
-- ARGV: field, mode
local changed = 0
if ARGV[2] == 'one' then
  if redis.call('LPOP', KEYS[2]) then
    changed = 1
  elseif redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
    -- Activated before trails were kept: back to the built-in component.
    changed = 1
  end
else
  while true do
    local top = redis.call('LINDEX', KEYS[2], 0)
    if not top or string.sub(top, 1, 7) ~= 'tenant|' then break end
    redis.call('LPOP', KEYS[2])
    changed = 1
  end
end
if changed == 0 then return {0, ''} end
local top = redis.call('LINDEX', KEYS[2], 0)
if top then
  local digest = string.sub(top, string.find(top, '|', 1, true) + 1)
  redis.call('HSET', KEYS[1], ARGV[1], digest)
  return {1, digest}
end
redis.call('HDEL', KEYS[1], ARGV[1])
return {1, ''}
