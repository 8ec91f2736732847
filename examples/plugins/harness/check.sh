#!/usr/bin/env bash
# Runs a notifier component without the Rust host and checks what it queues:
#   examples/plugins/harness/check.sh <component.wasm> [reference.wasm]
# With a reference (e.g. the Rust notifier,
# target/components/wasm32-wasip2/release/tapedeck_notifier.wasm) every case must queue
# exactly the same messages. Exits non-zero when a check fails. Installs the harness's
# pinned packages (npm ci) on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 <component.wasm> [reference.wasm]" >&2
    exit 2
fi
if [ ! -d "$here/node_modules/@bytecodealliance/jco-transpile" ]; then
    (cd "$here" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
# componentize-py emits extended constant expressions, which Node 20 enables only by flag.
flags=()
node --experimental-wasm-extended-const -e 0 2>/dev/null && flags+=(--experimental-wasm-extended-const)
exec node "${flags[@]}" "$here/check.mjs" "$@"
