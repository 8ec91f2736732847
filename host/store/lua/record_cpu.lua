-- Adds a conversion's CPU time to its tenant's hour and day (an attempt that did not
-- complete; `COMPLETE` counts its own).
--
-- KEYS: usage
-- ARGV: cpu_ms, hour_prefix, day_prefix
apply(KEYS[1], change({}, {'cpu_ms', ARGV[1]}, ARGV[2], ARGV[3]))
return 0
