#!/usr/bin/env bash
# Installs what deploy/validate.sh needs, pinned, into a virtualenv under
# target/deploy-venv (the system Python is left alone). Idempotent: when the venv holds
# exactly these pins it only checks (well under a second).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${DEPLOY_VENV:-$root/target/deploy-venv}"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

# kubernetes-validate bundles the Kubernetes JSON schemas (strict variants included);
# jsonschema validates the vendored KEDA and compose-spec schemas (deploy/schemas/).
# The rest are their dependencies, pinned too so every machine validates alike.
pins="kubernetes-validate==1.37.0
jsonschema==4.26.0
PyYAML==6.0.3
referencing==0.37.0
jsonschema-specifications==2025.9.1
rpds-py==2026.9.1
attrs==26.1.0
importlib_resources==7.1.0
packaging==26.4
typing_extensions==4.16.0"

stamp="$venv/.tapedeck-pins"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then
    exit 0
fi

need_python_venv setup-deploy

echo "setup-deploy: installing the validation tools into ${venv#"$root"/}" >&2
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $pins
printf '%s' "$pins" > "$stamp"
