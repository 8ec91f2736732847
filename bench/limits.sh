#!/usr/bin/env bash
# What enforcing every tenant limit costs (issue 12): jobs/s of a burst of 5-second clips
# through one `tapedeck serve` (2 conversion slots) with no limits, and with every limit
# of `--tenant-defaults` set (high enough never to refuse, so every check runs: the
# enqueue script's rate/backlog/quota, the dispatcher's running cap and CPU budget, the
# per-run tenant layering, CPU accounting, retention scans). Modes alternate, RUNS each.
# Usage: bench/limits.sh   (from the repository root; `make bench` runs it)
#        TAPEDECK=path/to/tapedeck N=60 RUNS=3 bench/limits.sh
set -euo pipefail

BENCH=bench/limits.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
TAPEDECK=${TAPEDECK:-target/release/tapedeck}
WORK=${WORK:-bench/work/limits}
RUNS=${RUNS:-3}
N=${N:-60}
ALL="max_upload_bytes=1000000000,jobs_per_minute=1000000,max_queued=1000000,max_running=64"
ALL+=",quota_bytes=1000000000000,retention_days=3650,max_memory_mib=64,cpu_per_audio_minute=5"
ALL+=",max_output_mib=512,max_input_minutes=600,cpu_seconds_per_hour=10000000"
ALL+=",notifications_per_hour=1000000"

bench_needs redis-server redis-cli curl ffmpeg python3
bench_needs_file "$TAPEDECK" "make build"
bench_needs_file "$MUSIC" "the shared media folder"
bench_workdir "$WORK"
CLIP=$WORK/clip-5s.m4a
clip 5 "$CLIP"

# One burst: N uploads 8 at a time, then wait until the tenant has no unfinished job.
# Prints jobs/s from the first upload to the last `done`.
burst() { # $1 = mode (none|all)
  local data=$WORK/data-$1-$RANDOM port api token
  mkdir -p "$data"
  start_redis "$data"
  port=$(free_port); api=http://127.0.0.1:$port
  local defaults=""; [ "$1" = all ] && defaults=$ALL
  TAPEDECK_TENANT_DEFAULTS=$defaults RUST_LOG=warn "$TAPEDECK" serve --listen "127.0.0.1:$port" \
    --data-dir "$data" --redis-url "redis://127.0.0.1:$REDIS_PORT" --workers 2 \
    --admin-token bench-operator-token-0123456789 >"$data/tapedeck.out" 2>"$data/tapedeck.log" &
  track $!
  wait_ready "$api" "$data/tapedeck.log"
  token=$(sign_up "$api" bench@example.com)
  # Warm-up: one job end to end (compiles/loads the converter).
  curl -sf -X POST "$api/v1/jobs" -H "Authorization: Bearer $token" -F "file=@$CLIP" >/dev/null
  until curl -sf -H "Authorization: Bearer bench-operator-token-0123456789" \
      "$api/v1/admin/tenants/default/usage" | grep -q '"done":1'; do sleep 0.05; done
  local start end
  start=$(date +%s.%N)
  seq "$N" | xargs -P 8 -I{} curl -sf -o /dev/null -X POST "$api/v1/jobs" \
    -H "Authorization: Bearer $token" -F "file=@$CLIP"
  until curl -sf -H "Authorization: Bearer bench-operator-token-0123456789" \
      "$api/v1/admin/tenants/default/usage" | grep -q "\"done\":$((N + 1))"; do sleep 0.02; done
  end=$(date +%s.%N)
  python3 -c "print(f'{$N/($end-$start):.2f}')"
  kill "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
  wait "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
}

NONE=(); WITH=()
for _ in $(seq "$RUNS"); do
  NONE+=("$(burst none)")
  WITH+=("$(burst all)")
done
none=$(median "${NONE[@]}"); with=$(median "${WITH[@]}")
echo "## Enforcing every tenant limit: $N 5-second clips, 8 uploads at a time, 2 conversion slots, medians of $RUNS"
echo
echo "| | jobs/s | runs |"
echo "|---|---|---|"
echo "| no limits | $none | ${NONE[*]} |"
echo "| every limit set (none refusing) | $with | ${WITH[*]} |"
python3 -c "print(f'\nenforcing all limits costs {100*(1-$with/$none):.1f}% of the throughput (target < 5%)')"
