-- luacheck for the scripts Redis runs (`make lint`): Redis's Lua is 5.1 with its own
-- globals; the shared functions of lib_*.lua are put in front of the scripts that use
-- them (host/store/src/lua.rs), so for the scripts they are given globals.
std = "lua51"
read_globals = {
  "redis", "cjson", "KEYS", "ARGV",
  -- lib_usage.lua, lib_trim.lua, lib_sched.lua
  "gauge", "change", "current", "apply", "moved", "add", "pick", "trim_below", "token",
}
max_line_length = false
files["lib_*.lua"] = { unused = false }
