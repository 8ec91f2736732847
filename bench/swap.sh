#!/usr/bin/env bash
# Hot swap latency (issue 13): a gateway and 3 worker processes on one Redis; 20 times,
# activate another converter (the built-in one under alternating digests: a custom section
# appended) and time until every worker process reports the new registry version
# (`GET /v1/admin/plugins/active` → `processes[].version`, written right after a process
# has loaded and installed the component). Also: cold start of `tapedeck serve` to ready
# with its compiled components cached, the managed Redis's start shown apart.
# Usage: bench/swap.sh   (from the repository root; `make bench` runs it)
#        TAPEDECK=path/to/tapedeck SWAPS=20 bench/swap.sh
set -euo pipefail

BENCH=bench/swap.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
TAPEDECK=${TAPEDECK:-target/release/tapedeck}
WORK=${WORK:-bench/work/swap}
SWAPS=${SWAPS:-20}
CONVERTER=${CONVERTER:-target/components/wasm32-wasip2/release/tapedeck_converter_component.wasm}
TOKEN=bench-operator-token-0123456789
bench_needs redis-server redis-cli curl python3
bench_needs_file "$TAPEDECK" "make build"
bench_needs_file "$CONVERTER" "make build"
bench_workdir "$WORK"
mkdir -p "$WORK/data"

start_redis "$WORK/data"
serve() { # role port
  RUST_LOG=warn "$TAPEDECK" serve --role "$1" --listen "127.0.0.1:$2" --data-dir "$WORK/data" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" --admin-token "$TOKEN" --workers 1 \
    >>"$WORK/serve.out" 2>>"$WORK/serve.log" &
  track $!
}
API_PORT=$(free_port); API=http://127.0.0.1:$API_PORT
serve gateway "$API_PORT"
for _ in 1 2 3; do serve worker "$(free_port)"; done
wait_ready "$API" "$WORK/serve.log"
AUTH="Authorization: Bearer $TOKEN"

# Two digests of the same converter.
for v in a b; do
  python3 - "$CONVERTER" "$WORK/$v.wasm" "$v" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
name = sys.argv[3].encode()
payload = bytes([len(name)]) + name + b"swap bench"
open(sys.argv[2], "wb").write(data + bytes([0, len(payload)]) + payload)
PY
  curl -sf -H "$AUTH" -F stage=converter -F "file=@$WORK/$v.wasm" "$API/v1/admin/plugins" \
    | json '["plugin"]["digest"]' >"$WORK/$v.digest"
done
DA=$(cat "$WORK/a.digest"); DB=$(cat "$WORK/b.digest")
# Wait until the three workers and the gateway (which swaps the auth stage) report (they
# do every 5 s, and at once after a change).
until [ "$(curl -sf -H "$AUTH" "$API/v1/admin/plugins/active" \
  | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["processes"]))')" -ge 4 ]; do sleep 0.2; done

python3 - "$API" "$TOKEN" "$DA" "$DB" "$SWAPS" <<'PY'
import json, sys, time, urllib.request
api, token, da, db, swaps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
times = []
for i in range(swaps):
    digest = da if i % 2 == 0 else db
    start = time.monotonic()
    call("POST", f"/v1/admin/plugins/{digest}/activate", {"stage": "converter"})
    want = call("GET", "/v1/admin/plugins/active")["version"]
    while True:
        procs = call("GET", "/v1/admin/plugins/active")["processes"]
        if len(procs) >= 4 and all(p["version"] >= want for p in procs):
            break
        time.sleep(0.005)
    times.append(time.monotonic() - start)
    time.sleep(0.3)
times.sort()
p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(f"## Hot swap: activate -> all 4 processes (3 workers, the gateway) run it, {swaps} swaps\n")
print("| p50 | p99 | max |")
print("|---|---|---|")
print(f"| {1000*p(.5):.0f} ms | {1000*p(.99):.0f} ms | {1000*times[-1]:.0f} ms |")
print("\n(target < 1 s)")
PY

# Job latency while swapping: N 5-second clips one after another, upload to done, with
# no swaps, then with the converter activated back and forth every 0.5 s.
N=${N:-40}
if [ -f "$MUSIC" ] && command -v ffmpeg >/dev/null; then
  CLIP=$WORK/clip-5s.m4a
  clip 5 "$CLIP"
  UTOKEN=$(sign_up "$API" swap@example.com)
  one_job() {
    local start id end
    start=$(date +%s.%N)
    id=$(curl -sf -X POST "$API/v1/jobs" -H "Authorization: Bearer $UTOKEN" -F "file=@$CLIP" \
      | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
    curl -sfN -H "Authorization: Bearer $UTOKEN" "$API/v1/jobs/$id/events" | grep -q '"status":"done"'
    end=$(date +%s.%N)
    python3 -c "print($end-$start)"
  }
  one_job >/dev/null
  CALM=(); for _ in $(seq "$N"); do CALM+=("$(one_job)"); done
  touch "$WORK/swapping"
  ( i=0; while [ -f "$WORK/swapping" ]; do
      d=$DA; [ $((i % 2)) = 1 ] && d=$DB
      curl -sf -o /dev/null -H "$AUTH" -H 'content-type: application/json' \
        -d '{"stage":"converter"}' "$API/v1/admin/plugins/$d/activate"
      i=$((i + 1)); sleep 0.5
    done ) &
  SWAPPER=$!
  BUSY=(); for _ in $(seq "$N"); do BUSY+=("$(one_job)"); done
  rm -f "$WORK/swapping"; wait "$SWAPPER" 2>/dev/null || true
  python3 - "${CALM[*]}" "${BUSY[*]}" <<'PY'
import sys
calm = sorted(map(float, sys.argv[1].split()))
busy = sorted(map(float, sys.argv[2].split()))
p = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"\n## 5-second clips, upload to done, {len(calm)} jobs one after another\n")
print("| | p50 | p99 |")
print("|---|---|---|")
print(f"| no swaps | {1000*p(calm,.5):.0f} ms | {1000*p(calm,.99):.0f} ms |")
print(f"| converter swapped every 0.5 s | {1000*p(busy,.5):.0f} ms | {1000*p(busy,.99):.0f} ms |")
print(f"\np99 during swaps: {100*(p(busy,.99)/p(calm,.99)-1):+.0f}% (target within +10%)")
PY
fi

# Cold start: a second gateway on the same data dir (compiled components cached), and a
# managed-Redis start apart.
cold() {
  local port start end
  port=$(free_port)
  start=$(date +%s.%N)
  RUST_LOG=warn "$TAPEDECK" serve --role all --listen "127.0.0.1:$port" --data-dir "$WORK/data" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" --admin-token "$TOKEN" \
    >>"$WORK/serve.out" 2>>"$WORK/serve.log" &
  local pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.005; done
  end=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "print(f'{1000*($end-$start):.0f}')"
}
COLD=(); for _ in 1 2 3 4 5; do COLD+=("$(cold)"); done
rport=$(free_port); mkdir -p "$WORK/r2"
start=$(date +%s.%N)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly yes --dir "$WORK/r2" \
  --logfile "$WORK/r2.log" &
rpid=$!
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.002; done
end=$(date +%s.%N)
kill "$rpid"; wait "$rpid" 2>/dev/null || true
echo
echo "## Cold start of \`tapedeck serve --role all\` to /readyz, compiled components cached"
echo
echo "runs: ${COLD[*]} ms (median $(median "${COLD[@]}") ms; target < 300 ms); a redis-server start to PING on its own: $(python3 -c "print(f'{1000*($end-$start):.0f}')") ms"
