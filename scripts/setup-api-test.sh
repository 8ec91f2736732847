#!/usr/bin/env bash
# Installs what the API test (tests/api/run.sh) needs, if missing: a Python virtualenv in
# target/api-venv with the pinned schemathesis from PyPI. Idempotent: when the pinned
# version is there it only checks (well under a second).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
venv="${API_VENV:-$root/target/api-venv}"
# The pin: bump deliberately (the CLI's options and checks change between releases).
SCHEMATHESIS_VERSION=4.32.5

have() {
    [ -x "$venv/bin/st" ] && [ -f "$venv/.schemathesis-$SCHEMATHESIS_VERSION" ]
}
if have; then
    exit 0
fi

need_python_venv setup-api-test
python=$(command -v python3)
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    echo "setup-api-test: schemathesis needs Python 3.9 or later, this is $("$python" --version)" >&2
    exit 1
fi

echo "setup-api-test: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
touch "$venv/.schemathesis-$SCHEMATHESIS_VERSION"
