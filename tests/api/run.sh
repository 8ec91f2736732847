#!/usr/bin/env bash
# API test: starts `tapedeck serve` on loopback with a fresh data dir (scripts/lib.sh's
# serve_tapedeck), makes some real data (a user who is a tenant admin, a job converted
# from a real file), then runs schemathesis against the server's own `/openapi.json`:
# once as that user (every route but `/v1/admin/...`, the session-ending ones last),
# then as the operator (`/v1/admin/...`). Real files go where the
# API needs one (tests/api/hooks.py); a `validation_mismatch` warning (every generated
# case of an operation refused: the description says less than the API checks) fails
# the run (tests/api/schemathesis.toml). Always stops the server.
#
#   scripts/setup-api-test.sh         # once: the pinned schemathesis in target/api-venv
#   tests/api/run.sh                  # TAPEDECK_BIN=... to test another binary
#
# SCHEMATHESIS_EXAMPLES (default 30) bounds the test cases per operation, so the default
# run takes a few minutes at most; raise it for a long run. SCHEMATHESIS_SEED (default 1)
# makes a run repeatable; `random` picks one. Reports (JUnit, and the cassette of every
# request) go to target/api-report/. Exits non-zero on any failure, and when
# ../shared/media (the test inputs) is absent.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${TAPEDECK_BIN:-target/release/tapedeck}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
MEDIA=$REPO/../shared/media
VENV=${API_VENV:-$REPO/target/api-venv}
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-30}
SEED=${SCHEMATHESIS_SEED:-1}
REPORT=$REPO/target/api-report

if [ ! -d "$MEDIA" ]; then
    # Like the Rust suite: `make test` never passes by skipping what it could not run.
    echo "the test media are missing: $MEDIA (the shared corpus, checked out next to the repository)" >&2
    exit 1
fi
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
[ -x "$BIN" ] || fail "no tapedeck binary at $BIN (make build, or set TAPEDECK_BIN)"
[ -x "$VENV/bin/st" ] || fail "no schemathesis in $VENV: run scripts/setup-api-test.sh"
PY=$VENV/bin/python

serve_tapedeck api "$BIN" --max-attempts 1 --shutdown-timeout-secs 2
OPERATOR=$OPERATOR_TOKEN

json() { "$PY" -c 'import json, sys; print(json.load(sys.stdin)'"$1"')'; }

# The description and the docs page are served.
curl -sf "$URL/openapi.json" | json '["openapi"]' | grep -q '^3\.1\.' \
    || fail "GET /openapi.json is not an OpenAPI 3.1 document"
# (grep without -q reads the whole page: curl never writes into a closed pipe, exit 23.)
curl -sf "$URL/docs" | grep -F /openapi.json >/dev/null || fail "GET /docs does not load /openapi.json"

# A user (registered, then made a tenant admin so the /v1/tenant routes do real work),
# a token, and a job converted from a real file so that ids exist.
EMAIL="api-test@example.com"
PASSWORD="api-test-password-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
curl -sf -X POST "$URL/v1/auth/register" -H 'Content-Type: application/json' \
    -d "{\"email\": \"$EMAIL\", \"password\": \"$PASSWORD\"}" >/dev/null \
    || fail "registering a user failed"
curl -sf -X PATCH "$URL/v1/admin/tenants/default" -H "Authorization: Bearer $OPERATOR" \
    -H 'Content-Type: application/json' -d '{"allow_plugins": true}' >/dev/null \
    || fail "the operator could not change the default tenant"
curl -sf -X POST "$URL/v1/admin/tenants/default/users" -H "Authorization: Bearer $OPERATOR" \
    -H 'Content-Type: application/json' \
    -d "{\"email\": \"api-admin@example.com\", \"password\": \"$PASSWORD\", \"role\": \"admin\"}" \
    >/dev/null || fail "the operator could not create a tenant admin"
TOKEN=$(curl -sf -X POST "$URL/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\": \"api-admin@example.com\", \"password\": \"$PASSWORD\"}" | json '["token"]') \
    || fail "logging in failed"
INPUT=$(find "$MEDIA" -maxdepth 1 -name 'aac-lc_*.m4a' -size -400k | sort | head -n 1)
[ -n "$INPUT" ] || fail "no small .m4a in $MEDIA"
JOB=$(curl -sf -X POST "$URL/v1/jobs" -H "Authorization: Bearer $TOKEN" \
    -F "file=@$INPUT" | json '["id"]') || fail "uploading $INPUT failed"
STATUS=queued
for _ in $(seq 120); do
    STATUS=$(curl -sf "$URL/v1/jobs/$JOB" -H "Authorization: Bearer $TOKEN" | json '["status"]')
    case $STATUS in done|failed) break ;; esac
    sleep 0.5
done
[ "$STATUS" = done ] || fail "job $JOB from $(basename "$INPUT") is $STATUS, not done"
echo "api test: server $URL, job $JOB done; schemathesis: $EXAMPLES examples per operation, seed $SEED"

SEED_ARGS=()
[ "$SEED" = random ] || SEED_ARGS=(--seed "$SEED")
rm -rf "$REPORT"
mkdir -p "$REPORT"
# Run from the report dir: schemathesis and hypothesis write there, not in the repo.
cd "$REPORT"
# Real files where the API needs one (tests/api/hooks.py): the job's input, the components.
export SCHEMATHESIS_HOOKS=hooks PYTHONPATH=$HERE API_TEST_MEDIA=$INPUT \
    API_TEST_COMPONENTS=${API_TEST_COMPONENTS:-$REPO/target/components/wasm32-wasip2/release}
schemathesis() {
    local name=$1
    shift
    NO_COLOR=1 "$VENV/bin/st" --config-file "$HERE/schemathesis.toml" run "$URL/openapi.json" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --max-examples "$EXAMPLES" "${SEED_ARGS[@]}" \
        --workers 2 --request-timeout 20 --generation-database none \
        --suppress-health-check all --no-color \
        --report junit,vcr --report-dir "$REPORT" \
        --report-junit-path "$REPORT/$name.xml" --report-vcr-path "$REPORT/$name.yaml" \
        "$@"
}

# The operations that end the caller's sessions run last, on their own: in the first run
# the first logout would leave every later operation a 401.
SESSION_ENDING='^/v1/auth/(logout|logout-all|password)$'
# Activating a digest and starting a canary on one are refused (400 `invalid_input`)
# unless the body's `stage` is that published component's (a canary's: a converter): a
# rule between resources no schema can state, so generated pairs are mostly refused. They
# run apart, with the publish whose links pass the right stage, and without the
# validation_mismatch warning (shown, it would fail the run).
PAIRED='^/v1/(admin|tenant)/plugins/\{digest\}/(activate|canary)$'
BUT_MISMATCH=(--warnings missing_auth,missing_test_data,missing_deserializer)
rc=0
echo "=== as a user (tenant admin) ==="
schemathesis user -H "Authorization: Bearer $TOKEN" \
    --exclude-path-regex "^/v1/admin/|$SESSION_ENDING|$PAIRED" || rc=1
echo "=== as a user: publish, then activate ==="
schemathesis user-paired -H "Authorization: Bearer $TOKEN" "${BUT_MISMATCH[@]}" \
    --include-path-regex '^/v1/tenant/plugins(/\{digest\}/activate)?$' || rc=1
echo "=== as a user: the session-ending operations ==="
schemathesis sessions -H "Authorization: Bearer $TOKEN" --include-path-regex "$SESSION_ENDING" \
    --phases examples,coverage,fuzzing || rc=1
echo "=== as the operator ==="
schemathesis operator -H "Authorization: Bearer $OPERATOR" --include-path-regex '^/v1/admin/' \
    --exclude-path-regex "$PAIRED" || rc=1
echo "=== as the operator: publish, then activate or start a canary ==="
schemathesis operator-paired -H "Authorization: Bearer $OPERATOR" "${BUT_MISMATCH[@]}" \
    --include-path-regex '^/v1/admin/plugins(/\{digest\}/(activate|canary))?$' || rc=1
# The server must have survived both runs.
curl -sf "$URL/readyz" >/dev/null || fail "the server is not ready after the runs"
[ "$rc" -eq 0 ] || fail "schemathesis found failures (reports in $REPORT)"
echo "api test: passed"
