# shellcheck shell=bash
# Shell functions shared by scripts/*.sh and tests/*/run.sh; sourced, never run:
#   . "$root/scripts/lib.sh"
#
#   fail MESSAGE...            prints "error: MESSAGE" on stderr and exits 1
#   as_root COMMAND...         runs COMMAND as root (through sudo unless already root)
#   apt_install WHO PKG...     installs Debian packages quietly; WHO names the caller
#   need_command WHO CMD PKG...   apt_install PKG... unless CMD is on PATH
#   need_python_venv WHO       a python3 that can make virtualenvs (Debian's python3-venv)
#   serve_tapedeck NAME BIN [FLAG...]
#                              `BIN serve` on loopback with a fresh data dir, until the
#                              script exits (see below)

fail() {
    echo "error: $*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

apt_install() {
    local who=$1
    shift
    echo "$who: installing $*" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_command() {
    local who=$1 cmd=$2
    shift 2
    command -v "$cmd" >/dev/null 2>&1 || apt_install "$who" "$@"
}

# Debian ships python3 without `venv`'s ensurepip; python3-venv brings it.
need_python_venv() {
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install "$1" python3 python3-venv
}

# serve_tapedeck NAME BIN [FLAG...]: starts `BIN serve` on a port the kernel picks
# (read back from its `listening on` line: no free-port race), with a fresh data dir
# (mktemp, named after NAME), a random operator token, and FLAGs; waits until /readyz
# answers (30 s at most) and stops it when the script exits: SIGTERM, SIGKILL after 5 s.
# If the script fails, the tail of the server's log is printed and the data dir kept;
# otherwise the data dir is removed. Sets URL, OPERATOR_TOKEN, DATA, LOG and SERVER.
serve_tapedeck() {
    local name=$1 bin=$2
    shift 2
    command -v curl >/dev/null || fail "curl is needed to wait for the server"
    DATA=$(mktemp -d "${TMPDIR:-/tmp}/tapedeck-$name.XXXXXX")
    LOG=$DATA/server.log
    OPERATOR_TOKEN="$name-test-operator-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
    "$bin" serve --listen 127.0.0.1:0 --metrics-listen off --data-dir "$DATA" \
        --admin-token "$OPERATOR_TOKEN" "$@" >"$LOG" 2>&1 &
    SERVER=$!
    trap __tapedeck_stop EXIT
    trap 'exit 130' INT TERM
    URL=""
    local _
    for _ in $(seq 300); do
        [ -n "$URL" ] || URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$LOG" | head -n 1)
        [ -n "$URL" ] && curl -sf "$URL/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER" 2>/dev/null || fail "the server exited before it was ready"
        sleep 0.1
    done
    fail "the server was not ready within 30 s"
}

__tapedeck_stop() {
    local rc=$? _
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ]; then
        echo "--- last lines of the server log ($LOG) ---" >&2
        tail -n 40 "$LOG" >&2 || true
        echo "(data dir kept: $DATA)" >&2
    else
        rm -rf "$DATA"
    fi
    exit "$rc"
}
