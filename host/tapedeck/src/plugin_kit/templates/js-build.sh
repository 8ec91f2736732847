#!/usr/bin/env bash
# Builds NAME.wasm with componentize-js (pinned in package.json). Run from this folder:
# ./build.sh
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm ci --silent --no-audit --no-fund
OUT_DIR=. WIT_DIR=wit npm run --silent build
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes)"
