#!/usr/bin/env bash
# Installs what the browser test (tests/browser/run.sh) needs, if missing: Debian's
# chromium, then the pinned npm packages of tests/browser (playwright-core, axe-core)
# from its package-lock.json. Idempotent: when everything is there it only checks.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/tests/browser"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
    echo "setup-browser: installing $*" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Playwright drives the system's Chromium; it never downloads a browser of its own.
[ -x /usr/bin/chromium ] || apt_install chromium

command -v npm >/dev/null 2>&1 || apt_install nodejs npm
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
