-- Adds a conversion's CPU time to its tenant's hour and day (an attempt that did not
-- complete; `COMPLETE` counts its own).
--
-- KEYS: hour, day
-- ARGV: cpu_ms, hour_ttl, day_ttl
count(KEYS[1], 'cpu_ms', ARGV[1], ARGV[2])
count(KEYS[2], 'cpu_ms', ARGV[1], ARGV[3])
return 0
