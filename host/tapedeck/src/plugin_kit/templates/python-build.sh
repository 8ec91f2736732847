#!/usr/bin/env bash
# Builds NAME.wasm with componentize-py (pinned in requirements.txt), in a virtualenv
# kept in .venv. Run from this folder: ./build.sh
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet -r requirements.txt
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp ./*.py "$work/"
wit="$PWD/wit"
(cd "$work" && "$OLDPWD/.venv/bin/componentize-py" --quiet -d "$wit" -w notifier componentize app -o "$OLDPWD/NAME.wasm")
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes)"
