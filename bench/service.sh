#!/usr/bin/env bash
# The service benchmark (issue 3), in one run on this machine:
#   1. requests/s of `GET /v1/jobs/{id}` with a token verified by the wasm auth component
#      and its session checked (cached for TAPEDECK_SESSION_CACHE_MS, default 1000; 0 makes
#      every request verify and ask Redis), next to the same lookup without
#      authentication (`--bench-routes`), with wrk;
#   2. upload and download MB/s of a 500 MB file (a valid 5-second M4A padded by a `free`
#      box, made once under $WORK) through tapedeck, next to nginx accepting (WebDAV PUT)
#      and serving (sendfile) the same file;
#   3. end-to-end time from upload to `done` for a 5-second clip, next to the time the
#      conversion itself takes (`tapedeck convert`, same component, same limits).
# Usage: bench/service.sh   (from the repository root; `make bench` runs it)
#        SECTIONS=3 bench/service.sh   runs only the end-to-end latency (no wrk, no nginx);
#        TAPEDECK=path/to/tapedeck picks the binary.
# Needs: target/release/tapedeck (make build), wrk, nginx-light, redis-server, curl,
# ffmpeg — `make setup-bench` installs them.
set -euo pipefail

BENCH=bench/service.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
TAPEDECK=${TAPEDECK:-target/release/tapedeck}
WORK=${WORK:-bench/work/service}
RUNS=${RUNS:-3}
BIG_MB=${BIG_MB:-500}
E2E_N=${E2E_N:-20}

SECTIONS=${SECTIONS:-123}
has() { [[ "$SECTIONS" == *"$1"* ]]; }
bench_needs redis-server redis-cli curl ffmpeg python3
has 1 && bench_needs wrk
has 2 && bench_needs nginx
bench_needs_file "$TAPEDECK" "make build"
bench_needs_file "$MUSIC" "the shared media folder"

# The big file of section 2 is kept between runs (it takes a while to make).
rm -rf "$WORK/data" "$WORK/nginx"
mkdir -p "$WORK/data" "$WORK/nginx/root/up" "$WORK/nginx/tmp"
WORK=$(cd "$WORK" && pwd)

# --- services ---------------------------------------------------------------------
start_redis "$WORK/data"
API_PORT=$(free_port)
API=http://127.0.0.1:$API_PORT
RUST_LOG=warn "$TAPEDECK" serve --listen "127.0.0.1:$API_PORT" --data-dir "$WORK/data" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" --bench-routes --workers 1 \
  --max-upload-bytes $(( (BIG_MB + 100) * 1024 * 1024 )) 2>"$WORK/tapedeck.log" &
track $!
NGINX_PORT=$(free_port)
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
user $(id -un);
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events {}
http {
  access_log off;
  sendfile on;
  client_max_body_size 0;
  client_body_temp_path $WORK/nginx/tmp;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/nginx/root;
    location /up/ { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
if has 2; then
  nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
  track $!
fi
wait_ready "$API" "$WORK/tapedeck.log"

AUTH="Authorization: Bearer $(sign_up "$API" bench@example.com)"

# --- a 5-second clip, converted once so the job exists ------------------------------
CLIP=$WORK/clip-5s.m4a
clip 5 "$CLIP"
# No python in the timed path: sed for the id, the SSE stream (which the server ends once
# the job is done or failed) for the wait.
upload_clip() {
  curl -sf -X POST "$API/v1/jobs" -H "$AUTH" -F "file=@$CLIP" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p'
}
wait_done() {
  curl -sfN -H "$AUTH" "$API/v1/jobs/$1/events" | grep '"status":"done"' >/dev/null \
    || { echo "job $1 did not finish: $(curl -sf -H "$AUTH" "$API/v1/jobs/$1")" >&2; return 1; }
}
JOB=$(upload_clip)
wait_done "$JOB"

echo "# Service benchmark — $(date -u +%F), $(nproc) cores, tapedeck $("$TAPEDECK" --version 2>/dev/null || echo '')"
echo

rps() { wrk -t2 -c32 -d"${WRK_SECONDS:-8}"s "$@" | awk '/Requests\/sec/ {print $2}'; }

# --- 1. authentication cost ------------------------------------------------------
if has 1; then
AUTH_R=(); OPEN_R=()
for _ in $(seq "$RUNS"); do
  OPEN_R+=("$(rps "$API/bench/unauthenticated/jobs/$JOB")")
  AUTH_R+=("$(rps -H "$AUTH" "$API/v1/jobs/$JOB")")
done
open_med=$(median "${OPEN_R[@]}")
auth_med=$(median "${AUTH_R[@]}")
echo "## GET /v1/jobs/{id}: wrk -t2 -c32, ${WRK_SECONDS:-8} s x $RUNS, medians"
echo
echo "| route | requests/s | runs |"
echo "|---|---|---|"
echo "| without auth (/bench/unauthenticated/jobs/{id}) | $open_med | ${OPEN_R[*]} |"
echo "| with token verified by the wasm auth component | $auth_med | ${AUTH_R[*]} |"
python3 -c "print(f'\nauthenticated / unauthenticated = {$auth_med/$open_med:.2f}x (target >= 0.9x; session cache ${TAPEDECK_SESSION_CACHE_MS:-1000} ms)\n')"

fi

# --- 2. upload / download throughput ---------------------------------------------
if has 2; then
# A valid M4A of BIG_MB: the 5-second clip (moov first) followed by a `free` box of
# filler. Every reader (the gateway's sample-description probe, the worker's length
# probe, the converter) sees a real 5-second file, so the job converts in a blink and is
# `done` before its output route is pointed at the uploaded blob. Made once and kept.
BIG=$WORK/big-${BIG_MB}M.m4a
if [ ! -f "$BIG" ]; then
  ffmpeg -v error -y -i "$MUSIC" -t 5 -c copy -movflags +faststart -f mp4 "$BIG.part"
  python3 - "$BIG.part" "$BIG_MB" <<'EOF2'
import os, struct, sys
out, size = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
pad = size - os.path.getsize(out)
with open(out, "ab") as f:
    f.write(struct.pack(">I4sQ", 1, b"free", pad))  # 64-bit size: any BIG_MB
    f.truncate(size)
EOF2
  mv "$BIG.part" "$BIG"
fi
SIZE=$(stat -c %s "$BIG")
TU=(); NU=(); TD=(); ND=()
for i in $(seq "$RUNS"); do
  t=$(curl -sf -o "$WORK/up.json" -w '%{time_total}' -X POST "$API/v1/jobs" -H "$AUTH" \
      -H 'content-type: application/octet-stream' --data-binary "@$BIG")
  TU+=("$t")
  BIG_JOB=$(json '["id"]' <"$WORK/up.json")
  NU+=("$(curl -sf -o /dev/null -w '%{time_total}' -T "$BIG" "http://127.0.0.1:$NGINX_PORT/up/big-$i.mp4")")
  # Download the same bytes through the job's output route: once the job is done, point
  # it at the uploaded blob (the 500 MB "MP3"), then stream it with Range support as usual.
  wait_done "$BIG_JOB"
  redis-cli -p "$REDIS_PORT" HSET "td:{default}:job:$BIG_JOB" \
    output_key "$(redis-cli -p "$REDIS_PORT" HGET "td:{default}:job:$BIG_JOB" input_key)" \
    output_bytes "$SIZE" >/dev/null
  TD+=("$(curl -sf -o /dev/null -w '%{time_total}' -H "$AUTH" "$API/v1/jobs/$BIG_JOB/output")")
  ND+=("$(curl -sf -o /dev/null -w '%{time_total}' "http://127.0.0.1:$NGINX_PORT/up/big-$i.mp4")")
  curl -sf -o /dev/null -X DELETE -H "$AUTH" "$API/v1/jobs/$BIG_JOB"
  rm -f "$WORK/nginx/root/up/big-$i.mp4"
done
tu=$(median "${TU[@]}"); nu=$(median "${NU[@]}")
td=$(median "${TD[@]}"); nd=$(median "${ND[@]}")
echo "## $BIG_MB MB over loopback with curl, medians of $RUNS"
echo
echo "| transfer | tapedeck | nginx | tapedeck / nginx |"
echo "|---|---|---|---|"
python3 - "$SIZE" "$tu" "$nu" "$td" "$nd" <<'EOF'
import sys
size, tu, nu, td, nd = int(sys.argv[1]), *map(float, sys.argv[2:])
for name, t, n in (("upload", tu, nu), ("download", td, nd)):
    print(f"| {name} | {size/1e6/t:.0f} MB/s | {size/1e6/n:.0f} MB/s | {n/t:.2f}x (target >= 0.8x) |")
EOF
echo

fi

# --- 3. end-to-end latency of a 5-second clip --------------------------------------
E2E=(); CONV=()
for _ in $(seq "$E2E_N"); do
  start=$(date +%s.%N)
  id=$(upload_clip)
  wait_done "$id"
  end=$(date +%s.%N)
  E2E+=("$(python3 -c "print($end-$start)")")
  curl -sf -o /dev/null -X DELETE -H "$AUTH" "$API/v1/jobs/$id"
  s=$(date +%s.%N)
  "$TAPEDECK" convert "$CLIP" -o "$WORK/clip.mp3" >/dev/null
  e=$(date +%s.%N)
  CONV+=("$(python3 -c "print($e-$s)")")
done
python3 - "${E2E[*]}" "${CONV[*]}" <<'EOF'
import statistics, sys
e2e = sorted(map(float, sys.argv[1].split()))
conv = sorted(map(float, sys.argv[2].split()))
p = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"## 5-second clip, upload to done, {len(e2e)} jobs one after another\n")
print("| | p50 | p90 |")
print("|---|---|---|")
print(f"| upload -> done (HTTP, queue, worker, wasm, storage) | {1000*p(e2e,.5):.0f} ms | {1000*p(e2e,.9):.0f} ms |")
print(f"| `tapedeck convert` of the same clip (the conversion itself) | {1000*p(conv,.5):.0f} ms | {1000*p(conv,.9):.0f} ms |")
print(f"\nservice overhead at p50: {1000*(p(e2e,.5)-p(conv,.5)):.0f} ms (target < 50 ms)")
EOF
