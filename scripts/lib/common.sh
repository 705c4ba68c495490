# Shared helpers for the run scripts (sourced, not executed).
# Binaries come from the release build; servers are started pinned and stopped on exit.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release"

build_release() {
    (cd "$ROOT" && cargo build --release -q -p ws-server -p ws-loadgen --bins)
}

# A free TCP port on 127.0.0.1 whose next port is free too: the servers put their admin
# listener (/metrics, /push, /broadcast) on 127.0.0.1:PORT+1 by default.
free_port() {
    python3 -c '
import socket
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p >= 65535: a.close(); continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(); b.close(); continue
    print(p); break
else:
    raise SystemExit("no free pair of adjacent ports")'
}

# admin_url PORT: the admin listener of a server started on PORT (its default).
admin_url() { echo "http://127.0.0.1:$(($1 + 1))"; }

# admin_curl PORT PATH [CURL ARGS...]: a request to the admin listener, with $WS_API_KEY.
admin_curl() {
    local port=$1 path=$2
    shift 2
    local auth=()
    [ -n "${WS_API_KEY:-}" ] && auth=(-H "Authorization: Bearer $WS_API_KEY")
    curl -s --max-time 5 "${auth[@]}" "$@" "$(admin_url "$port")$path"
}

# start_server NAME CORE PORT [ARGS...]: starts $BIN/NAME pinned to CORE; sets SERVER_PID.
# With SERVER_NOFILE=N set, the server starts with RLIMIT_NOFILE N (soft and hard).
start_server() {
    local name=$1 core=$2 port=$3
    shift 3
    local out="${WORK:-/tmp}/$name-$port.out"
    local prefix=()
    [ -n "${SERVER_NOFILE:-}" ] && prefix=(prlimit "--nofile=$SERVER_NOFILE:$SERVER_NOFILE")
    "${prefix[@]}" taskset -c "$core" "$BIN/$name" --cores "$core" --listen "127.0.0.1:$port" "$@" >"$out" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        grep -q "^listening on" "$out" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$out" >&2; return 1; }
        sleep 0.1
    done
    echo "server did not start: $(cat "$out")" >&2
    return 1
}

stop_server() {
    [ -n "${SERVER_PID:-}" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# metric PORT NAME [LABEL]: sum of a metric family on the /metrics of the server started on
# PORT (from its admin listener on PORT+1, with $WS_API_KEY if set).
metric() {
    local port=$1 name=$2 label=${3:-}
    admin_curl "$port" /metrics | python3 -c '
import sys
name, label = sys.argv[1], sys.argv[2]
tot = 0.0
for l in sys.stdin:
    if l.startswith("#") or not l.startswith(name): continue
    rest = l[len(name):]
    if not (rest.startswith("{") or rest.startswith(" ")): continue
    if label and label not in l: continue
    tot += float(l.rsplit(" ", 1)[1])
print(int(tot))' "$name" "$label"
}

# proc_rss PID / proc_fds PID
proc_rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }
proc_fds() { ls "/proc/$1/fd" | wc -l; }

# json FILE EXPR: evaluate a python expression on the loaded JSON `r`.
json() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }
