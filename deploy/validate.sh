#!/usr/bin/env bash
# Validates deploy/ offline: Kubernetes manifests (kubernetes-validate, strict, plus the
# KEDA ScaledObject against KEDA's CRD schema), compose.yaml (compose-spec schema) and
# the Dockerfile, plus the cross-checks in deploy/validate.py. Then a self-test: each
# input broken in memory must be caught. Exits non-zero on any failure.
#
#     scripts/setup-deploy.sh && deploy/validate.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
py="${DEPLOY_VENV:-$root/target/deploy-venv}/bin/python"
if [ ! -x "$py" ]; then
    echo "validate: $py is missing; run scripts/setup-deploy.sh first" >&2
    exit 2
fi
"$py" "$root/deploy/validate.py"
"$py" "$root/deploy/validate.py" --self-test
