# shellcheck shell=bash
# What bench/*.sh share; sourced (from the repository root), never run:
#   BENCH=bench/NAME.sh; . "$(dirname "$0")/lib.sh"
#
#   bench_needs TOOL...        exits naming the first tool not on PATH (make setup-bench)
#   bench_needs_file PATH WHY  exits unless PATH exists (WHY says where it comes from)
#   bench_workdir DIR          empties DIR (made if missing) and sets WORK to its full path
#   free_port                  a free TCP port on loopback
#   track PID                  kills PID when the script exits (with every other tracked one)
#   start_redis DIR            a redis-server of its own (no persistence) on a free port,
#                              its files in DIR; sets REDIS_PORT once it answers PING
#   wait_ready URL [LOG]       waits until URL/readyz answers 200 (20 s at most; then
#                              exits, printing the tail of the process's LOG)
#   json PATH                  stdin's JSON, indexed by PATH (e.g. '["token"]')
#   median NUMBER...           the median of the numbers
#   sign_up API EMAIL [TENANT] registers EMAIL and prints a login token
#   clip SECONDS OUT           the first SECONDS of $MUSIC, copied (no re-encode), to OUT

MUSIC=${MUSIC:-../shared/media/aac-lc_44k_stereo_music_long__lofty_TempleOS_Hymn.m4a}

bench_needs() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null \
            || { echo "$BENCH: $tool is missing (make setup-bench)" >&2; exit 1; }
    done
}

bench_needs_file() {
    [ -e "$1" ] || { echo "$BENCH: $1 is missing ($2)" >&2; exit 1; }
}

bench_workdir() {
    rm -rf "$1"
    mkdir -p "$1"
    # shellcheck disable=SC2034 # for the caller
    WORK=$(cd "$1" && pwd)
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PIDS=()
track() { PIDS+=("$1"); }
__bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap __bench_cleanup EXIT

start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$1" --logfile "$1/redis.log" &
    track $!
    local _
    for _ in $(seq 200); do
        redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$BENCH: redis-server did not start (see $1/redis.log)" >&2
    exit 1
}

wait_ready() {
    local deadline=$((SECONDS + 20))
    until curl -sf "$1/readyz" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$BENCH: $1 did not become ready" >&2
            [ -z "${2:-}" ] || tail -n 20 "$2" >&2
            exit 1
        fi
        sleep 0.02
    done
}

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

sign_up() {
    local cred="{\"tenant\":\"${3:-default}\",\"email\":\"$2\",\"password\":\"correct horse battery\"}"
    curl -sf -X POST "$1/v1/auth/register" -H 'content-type: application/json' -d "$cred" >/dev/null
    curl -sf -X POST "$1/v1/auth/login" -H 'content-type: application/json' -d "$cred" | json '["token"]'
}

clip() { ffmpeg -v error -y -i "$MUSIC" -t "$1" -c copy "$2"; }
