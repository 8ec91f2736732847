-- Takes the ready tenant with the smallest pass and advances it by its stride (`pick` in
-- lib_sched.lua). Returns `{tenant, stride}` or nil.
--
-- KEYS: ready, stride
-- ARGV: default_stride
return pick(KEYS[1], KEYS[2], ARGV[1]) or false
