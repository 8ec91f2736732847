-- Puts a tenant in the ready set (`add` in lib_sched.lua): with `always` 1 it leaves a wake token even if the tenant was ready. Returns 1 if it was added.
--
-- KEYS: ready, pass, wake
-- ARGV: tenant, always, cap
return add(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
