#!/usr/bin/env bash
# Installs what the browser test (tests/browser/run.sh) needs, if missing: Debian's
# chromium, then the pinned npm packages of tests/browser (playwright-core, axe-core)
# from its package-lock.json. Idempotent: when everything is there it only checks.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/tests/browser"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

# Playwright drives the system's Chromium; it never downloads a browser of its own.
[ -x /usr/bin/chromium ] || apt_install setup-browser chromium

need_command setup-browser npm nodejs npm
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "setup-browser: playwright-core needs Node.js 20 or later, this is $(node --version)" >&2
    exit 1
fi

# npm ci when node_modules is missing, or older than the lock file (npm keeps a copy of
# the lock it installed as node_modules/.package-lock.json).
installed="$dir/node_modules/.package-lock.json"
if [ ! -f "$installed" ] || [ "$dir/package-lock.json" -nt "$installed" ] \
    || [ ! -d "$dir/node_modules/playwright-core" ] || [ ! -d "$dir/node_modules/axe-core" ]; then
    echo "setup-browser: npm ci in tests/browser" >&2
    (cd "$dir" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
