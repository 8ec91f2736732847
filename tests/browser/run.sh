#!/usr/bin/env bash
# Browser test of the web page at `/`: starts `tapedeck serve` on a free port with a
# fresh data dir, drives Chromium through Playwright (test.mjs), always stops the server.
#
#   scripts/setup-browser.sh          # once: Debian chromium + npm ci (idempotent)
#   tests/browser/run.sh              # TAPEDECK_BIN=... to test another binary
#
# Screenshots go to target/browser-artifacts/. Exits non-zero on any failure; exits 0
# with "skipped: ..." when ../shared/media (the test inputs) is absent.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${TAPEDECK_BIN:-target/release/tapedeck}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
MEDIA=$REPO/../shared/media
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ ! -d "$MEDIA" ]; then
    echo "skipped: ../shared/media absent ($MEDIA)"
    exit 0
fi
fail() { echo "error: $*" >&2; exit 1; }
[ -x "$BIN" ] || fail "no tapedeck binary at $BIN (make build, or set TAPEDECK_BIN)"
[ -x "$CHROMIUM" ] || fail "no $CHROMIUM: run scripts/setup-browser.sh"
[ -d "$HERE/node_modules/playwright-core" ] && [ -d "$HERE/node_modules/axe-core" ] \
    || fail "tests/browser/node_modules missing: run scripts/setup-browser.sh"
command -v curl >/dev/null || fail "curl is needed to wait for the server"

# A free port: bind port 0, read it back, release it (the server binds it right after).
PORT=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
DATA=$(mktemp -d "${TMPDIR:-/tmp}/tapedeck-browser.XXXXXX")
TOKEN="browser-test-operator-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
URL="http://127.0.0.1:$PORT"
LOG=$DATA/server.log

# --max-attempts 1: a failing job becomes a dead letter at once (the test replays one).
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --admin-token "$TOKEN" \
    --max-attempts 1 --shutdown-timeout-secs 2 >"$LOG" 2>&1 &
SERVER=$!

stop() {
    local rc=$?
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ]; then
        echo "--- last lines of the server log ($LOG) ---" >&2
        tail -n 40 "$LOG" >&2 || true
        echo "(data dir kept: $DATA)" >&2
    else
        rm -rf "$DATA"
    fi
    exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT TERM

for _ in $(seq 300); do
    curl -sf "$URL/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || fail "the server exited before it was ready"
    sleep 0.1
done
curl -sf "$URL/readyz" >/dev/null || fail "the server was not ready within 30 s"

TAPEDECK_URL=$URL TAPEDECK_ADMIN_TOKEN=$TOKEN TAPEDECK_REPO=$REPO CHROMIUM=$CHROMIUM \
    node "$HERE/test.mjs"
