#!/usr/bin/env bash
# Browser test of the web page at `/`: starts `tapedeck serve` on loopback with a fresh
# data dir (scripts/lib.sh's serve_tapedeck), drives Chromium through Playwright
# (test.mjs), always stops the server.
#
#   scripts/setup-browser.sh          # once: Debian chromium + npm ci (idempotent)
#   tests/browser/run.sh              # TAPEDECK_BIN=... to test another binary
#
# Screenshots go to target/browser-artifacts/. Exits non-zero on any failure, and when
# ../shared/media (the test inputs) is absent.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${TAPEDECK_BIN:-target/release/tapedeck}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
MEDIA=$REPO/../shared/media
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ ! -d "$MEDIA" ]; then
    # Like the Rust suite: `make test` never passes by skipping what it could not run.
    echo "the test media are missing: $MEDIA (the shared corpus, checked out next to the repository)" >&2
    exit 1
fi
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
[ -x "$BIN" ] || fail "no tapedeck binary at $BIN (make build, or set TAPEDECK_BIN)"
[ -x "$CHROMIUM" ] || fail "no $CHROMIUM: run scripts/setup-browser.sh"
[ -d "$HERE/node_modules/playwright-core" ] && [ -d "$HERE/node_modules/axe-core" ] \
    || fail "tests/browser/node_modules missing: run scripts/setup-browser.sh"

# --max-attempts 1: a failing job becomes a dead letter at once (the test replays one).
serve_tapedeck browser "$BIN" --max-attempts 1 --shutdown-timeout-secs 2

TAPEDECK_URL=$URL TAPEDECK_ADMIN_TOKEN=$OPERATOR_TOKEN TAPEDECK_REPO=$REPO CHROMIUM=$CHROMIUM \
    node "$HERE/test.mjs"
