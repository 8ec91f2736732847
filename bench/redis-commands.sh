#!/usr/bin/env bash
# Redis commands per job and per idle second (issue 21), in one run on this machine:
# a redis-server of its own and one `tapedeck serve --role all` (mail to the outbox, no
# SMTP), then
#   1. JOBS one-second jobs end to end — upload, conversion, done, notification written
#      to the outbox — counted from `INFO commandstats` before the first upload and after
#      the last mail, by command: what a job costs in Redis, every background loop during
#      the run included. Twice: uploaded one after another (each job alone in the
#      pipeline: every queue drains between jobs) and BURST at a time (a backlog);
#   2. IDLE_SECONDS with nothing to do, the same way: what an idle process sends.
# The bench's own `INFO` calls are left out; the commands a Lua script runs count (Redis
# counts them), and so does the `EVALSHA` that ran it.
# Usage: bench/redis-commands.sh   (from the repository root)
#        JOBS=150 BURST=8 IDLE_SECONDS=20 WORKERS=2 TAPEDECK=path/to/tapedeck
# Needs: target/release/tapedeck (make build) or target/ci/tapedeck, redis-server,
# redis-cli, curl, ffmpeg, python3.
set -euo pipefail

BENCH=bench/redis-commands.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
TAPEDECK=${TAPEDECK:-$( [ -x target/release/tapedeck ] && echo target/release/tapedeck || echo target/ci/tapedeck )}
WORK=${WORK:-bench/work/redis-commands}
JOBS=${JOBS:-150}
BURST=${BURST:-8}
IDLE_SECONDS=${IDLE_SECONDS:-20}
WORKERS=${WORKERS:-2}

bench_needs redis-server redis-cli curl ffmpeg python3
bench_needs_file "$TAPEDECK" "make build"
bench_needs_file "$MUSIC" "the shared media folder"
bench_workdir "$WORK"
mkdir -p "$WORK/data"

start_redis "$WORK"
API_PORT=$(free_port)
API=http://127.0.0.1:$API_PORT
OPERATOR=tdop_bench_redis_commands_0123456789
RUST_LOG=warn "$TAPEDECK" serve --listen "127.0.0.1:$API_PORT" --metrics-listen off \
  --data-dir "$WORK/data" --redis-url "redis://127.0.0.1:$REDIS_PORT" --workers "$WORKERS" \
  --admin-token "$OPERATOR" 2>"$WORK/tapedeck.log" &
track $!
wait_ready "$API" "$WORK/tapedeck.log"

# A tenant per run: each may send 200 notifications an hour (the server's cap).
# token TENANT: an account's token in TENANT (created for it).
token() {
  curl -sf -X POST "$API/v1/admin/tenants" -H "Authorization: Bearer $OPERATOR" \
    -H 'content-type: application/json' -d "{\"name\":\"$1\",\"self_register\":true}" >/dev/null
  sign_up "$API" bench@example.com "$1"
}
AUTH="Authorization: Bearer $(token warmup)"
CLIP=$WORK/clip-1s.m4a
clip 1 "$CLIP"

stats() { redis-cli -p "$REDIS_PORT" INFO commandstats >"$1"; }
OUTBOX=$WORK/data/blobs/outbox
mails() { find "$OUTBOX" -name '*.eml' 2>/dev/null | wc -l; }

# --- 1. jobs end to end ---------------------------------------------------------------
# One job first (compiles and caches the components, loads the scripts), not counted.
curl -sf -X POST "$API/v1/jobs" -H "$AUTH" -F "file=@$CLIP" >/dev/null
for _ in $(seq 600); do [ "$(mails)" -ge 1 ] && break; sleep 0.1; done
[ "$(mails)" -ge 1 ] || { echo "the first job was not notified:"; tail -20 "$WORK/tapedeck.log"; exit 1; }
sleep 2
upload() { curl -sf -o /dev/null -X POST "$API/v1/jobs" -H "$AUTH" -F "file=@$CLIP"; }
export -f upload; export API AUTH CLIP
# run NAME CONCURRENCY: JOBS uploads (in tenant NAME), CONCURRENCY at a time; waits for
# every mail.
run() {
  AUTH="Authorization: Bearer $(token "$1")"; export AUTH
  local want=$(( $(mails) + JOBS ))
  stats "$WORK/$1-before"
  local t0; t0=$(date +%s.%N)
  seq "$JOBS" | xargs -P "$2" -I{} bash -c upload
  for _ in $(seq 3000); do [ "$(mails)" -ge "$want" ] && break; sleep 0.1; done
  [ "$(mails)" -ge "$want" ] || { echo "only $(mails) of $want jobs were notified"; exit 1; }
  echo "$t0 $(date +%s.%N)" >"$WORK/$1-times"
  stats "$WORK/$1-after"
  sleep 3
}
run sequential 1
run burst "$BURST"

# --- 2. idle ---------------------------------------------------------------------------
# Settle first: what the last jobs left to do (acks, trims) is not idleness.
sleep 3
stats "$WORK/idle-before"
sleep "$IDLE_SECONDS"
stats "$WORK/idle-after"

echo "# Redis commands — $(date -u +%F), $(nproc) cores, $("$TAPEDECK" --version 2>/dev/null || echo tapedeck), redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), --workers $WORKERS"
echo
python3 - "$WORK" "$JOBS" "$IDLE_SECONDS" "$BURST" <<'EOF'
import sys
work, jobs, idle_s, burst = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])

def read(name):
    calls = {}
    for line in open(f"{work}/{name}"):
        if line.startswith("cmdstat_"):
            cmd, rest = line[len("cmdstat_"):].split(":", 1)
            calls[cmd] = int(rest.split("calls=")[1].split(",")[0])
    return calls

def delta(a, b):
    before, after = read(a), read(b)
    d = {c: after[c] - before.get(c, 0) for c in after}
    # The bench's own INFO (one per snapshot).
    d["info"] = d.get("info", 0) - 1
    return {c: n for c, n in d.items() if n > 0}

def table(d, per, unit):
    total = sum(d.values())
    print(f"| command | {unit} | share |")
    print("|---|---|---|")
    for c, n in sorted(d.items(), key=lambda kv: -kv[1]):
        print(f"| `{c.upper()}` | {n / per:.2f} | {100 * n / total:.0f} % |")
    print(f"| **all** | **{total / per:.2f}** | |")
    return total / per

for name, how in (("sequential", "uploaded one after another"), ("burst", f"uploaded {burst} at a time")):
    start, end = map(float, open(f"{work}/{name}-times").read().split())
    print(f"## {jobs} one-second jobs end to end (upload -> done -> mail in the outbox), {how}, {end - start:.1f} s\n")
    per_job = table(delta(f"{name}-before", f"{name}-after"), jobs, "per job")
    print(f"\n{per_job:.1f} commands per job, {how} (target <= 40)\n")
print(f"## idle, {idle_s:.0f} s, one process (--role all: gateway, worker slots, notifier)\n")
d = delta("idle-before", "idle-after")
if d:
    per_s = table(d, idle_s, "per second")
else:
    per_s = 0.0
    print("no commands")
print(f"\n{per_s:.2f} commands/s idle (target <= 5)")
EOF
