#!/usr/bin/env bash
# Installs what building and testing Tapedeck needs on Debian, if missing. Idempotent:
# when everything is there it only checks (well under a second).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

# `setup.sh bench` also installs the benchmark's load generator and reference server.
# jq: the README's walkthrough of the API reads tokens and job ids with it.
packages=(clang-19 lld-19 llvm-19 wasi-libc libclang-rt-19-dev-wasm32 make pkg-config ffmpeg mp3val redis-server jq)
[ "${1:-}" = bench ] && packages+=(wrk nginx-light curl python3)
need_apt=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
[ ${#need_apt[@]} -eq 0 ] || apt_install setup "${need_apt[@]}"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 rustup target" >&2
    rustup target add wasm32-wasip2
fi
for comp in rustfmt clippy; do
    rustup component list --installed | grep -q "^$comp" || rustup component add "$comp"
done

# A real SMTP server for the notifier's tests (tests/tests/host/notify.rs).
if [ ! -x "$root/target/tools/node_modules/.bin/maildev" ]; then
    need_command setup npm nodejs npm
    echo "setup: installing maildev into target/tools" >&2
    npm install --silent --no-audit --no-fund --prefix "$root/target/tools" maildev@3.0.0 >/dev/null
fi

# An S3-compatible server for the blob-store tests (tests/tests/e2e.rs, mod s3).
if [ ! -d "$root/target/tools/py/moto" ]; then
    echo "setup: installing moto (S3 test server) into target/tools/py" >&2
    python3 -m pip --version >/dev/null 2>&1 || apt_install setup python3-pip
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
        --target "$root/target/tools/py" 'moto[server]==5.1.22' >/dev/null
fi
