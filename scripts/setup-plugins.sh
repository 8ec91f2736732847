#!/usr/bin/env bash
# Installs what building and checking the example plugins (examples/plugins/) needs, if
# missing: componentize-py (pinned in examples/plugins/notifier-python/requirements.txt)
# in the venv target/plugins-venv, and the npm packages of notifier-js and of the
# harness (pinned by their package-lock.json). Idempotent: when everything is there it
# only checks (well under a second).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
plugins="$root/examples/plugins"
venv="$root/target/plugins-venv"
requirements="$plugins/notifier-python/requirements.txt"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

# componentize-py, at exactly the pinned version.
pinned="$(sed -n 's/^componentize-py==\([^ ]*\).*/\1/p' "$requirements")"
installed="$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{ print $2 }' || true)"
if [ "$installed" != "$pinned" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        need_python_venv setup-plugins
        echo "setup-plugins: creating $venv" >&2
        python3 -m venv "$venv"
    fi
    echo "setup-plugins: installing componentize-py==$pinned into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
fi

# npm packages, from each project's lock: again whenever the lock is newer than the
# install.
need_command setup-plugins npm nodejs npm
for dir in "$plugins/notifier-js" "$plugins/harness"; do
    if [ ! -f "$dir/node_modules/.package-lock.json" ] \
        || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        echo "setup-plugins: npm ci in ${dir#"$root"/}" >&2
        (cd "$dir" && npm ci --silent --no-audit --no-fund >/dev/null)
    fi
done
