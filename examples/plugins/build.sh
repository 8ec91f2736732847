#!/usr/bin/env bash
# Builds the example notifier plugins into components:
#   examples/plugins/build.sh [OUT_DIR]        (default: target/plugins/)
# writes OUT_DIR/<name>.wasm for each project, the name taken from the project itself
# (notifier-python/pyproject.toml `name`, notifier-js/package.json `name`), and prints
# how long each build took and the component's size.
#
# Needs the tools scripts/setup-plugins.sh installs: componentize-py in
# target/plugins-venv (this script installs nothing there), and the notifier-js packages
# (this script runs `npm ci` there when node_modules is missing). WIT_DIR overrides the
# WIT folder (default: the repository's wit/).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/plugins}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
wit="$(cd "${WIT_DIR:-$root/wit}" && pwd)"
venv="$root/target/plugins-venv"

now_ms() { date +%s%3N; }
report() { # name path started_ms
    local bytes
    bytes=$(stat -c %s "$2")
    printf 'build: %-16s %6.1f s  %5.1f MiB (%d bytes)  %s\n' "$1" \
        "$(awk "BEGIN { print ($(now_ms) - $3) / 1000 }")" \
        "$(awk "BEGIN { print $bytes / 1048576 }")" "$bytes" "$2"
}

# --- Python (componentize-py) ---------------------------------------------------------
py="$here/notifier-python"
py_name="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$py/pyproject.toml" | head -1)"
[ -n "$py_name" ] || { echo "build: no name in $py/pyproject.toml" >&2; exit 1; }
if [ ! -x "$venv/bin/componentize-py" ]; then
    echo "build: $venv/bin/componentize-py is missing: run scripts/setup-plugins.sh" >&2
    exit 1
fi
started=$(now_ms)
# componentize-py runs the app once at build time (pre-initialization) and leaves a
# __pycache__ beside it: build from a copy so the source folder stays clean.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$py"/*.py "$work/"
(cd "$work" && "$venv/bin/componentize-py" --quiet -d "$wit" -w notifier \
    componentize app -o "$out/$py_name.wasm")
report "$py_name" "$out/$py_name.wasm" "$started"

# --- JavaScript (componentize-js) -----------------------------------------------------
js="$here/notifier-js"
js_name="$(node -p "require('$js/package.json').name")"
if [ ! -d "$js/node_modules/@bytecodealliance/componentize-js" ]; then
    echo "build: installing the notifier-js packages (npm ci)" >&2
    (cd "$js" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
started=$(now_ms)
(cd "$js" && OUT_DIR="$out" WIT_DIR="$wit" npm run --silent build)
report "$js_name" "$out/$js_name.wasm" "$started"
