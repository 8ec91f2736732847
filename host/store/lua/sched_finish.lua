-- A conversion ended: drops its lease, with `readd` 1 (it counted against a running-jobs
-- cap, so its tenant may have been parked at the cap) makes its tenant ready again, and,
-- when it left a notify entry, tells the notifiers (the tenant in the notify set and a
-- wake token naming the tenant). Then picks the next tenant for the same worker slot
-- (`pick` in lib_sched.lua: one script, not two). Returns `{tenant, stride}` or nil.
--
-- KEYS: leases, ready, pass, wake, notify_ready, notify_wake, stride
-- ARGV: lease, tenant, notify, readd, cap, default_stride
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[4] == '1' then add(KEYS[2], KEYS[3], KEYS[4], ARGV[2], '0', ARGV[5]) end
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[5], ARGV[2])
  token(KEYS[6], ARGV[5], ARGV[2])
end
return pick(KEYS[2], KEYS[7], ARGV[6]) or false
