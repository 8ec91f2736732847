#!/usr/bin/env bash
# Installs what building and testing Tapedeck needs on Debian, if missing. Idempotent:
# when everything is there it only checks (well under a second).
set -euo pipefail

# `setup.sh bench` also installs the benchmark's load generator and reference server.
# jq: the README's walkthrough of the API reads tokens and job ids with it.
packages=(clang-19 lld-19 llvm-19 wasi-libc libclang-rt-19-dev-wasm32 make pkg-config ffmpeg mp3val redis-server jq)
[ "${1:-}" = bench ] && packages+=(wrk nginx-light curl python3)
need_apt=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 rustup target" >&2
    rustup target add wasm32-wasip2
fi
for comp in rustfmt clippy; do
    rustup component list --installed | grep -q "^$comp" || rustup component add "$comp"
done

# A real SMTP server for the notifier's tests (tests/tests/host/notify.rs).
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/target/tools/node_modules/.bin/maildev" ]; then
    command -v npm >/dev/null 2>&1 || {
        echo "setup: installing nodejs and npm" >&2
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    }
    echo "setup: installing maildev into target/tools" >&2
    npm install --silent --no-audit --no-fund --prefix "$root/target/tools" maildev@3.0.0 >/dev/null
fi

# An S3-compatible server for the blob-store tests (tests/tests/e2e.rs, mod s3).
if [ ! -d "$root/target/tools/py/moto" ]; then
    echo "setup: installing moto (S3 test server) into target/tools/py" >&2
    python3 -m pip --version >/dev/null 2>&1 || {
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    }
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
        --target "$root/target/tools/py" 'moto[server]==5.1.22' >/dev/null
fi
