#!/usr/bin/env bash
# luacheck over the Lua scripts Redis runs (host/store/lua, config in its .luacheckrc),
# installing Debian's lua-check if it is missing. Part of `make lint` and `make test`.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

need_command luacheck luacheck lua-check
cd "$root/host/store/lua"
luacheck --no-color --formatter plain .
