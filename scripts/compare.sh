#!/usr/bin/env bash
# scripts/compare.sh: ws-server against ws-server-tokio under identical ws-loadgen loads, with
# the server and the load generator pinned to disjoint cores, next to the physical limits of
# the box measured in the same run by bare epoll programs (bench/: bare-tcp) and the naive
# one-task-per-connection tokio-tungstenite client (bench/: tokio-ws-client).
#
# Prints one Markdown table (server against server, with the ratio and the target) and writes
# it, every raw JSON report and the /proc samples into reports/compare-<timestamp>/.
# docs/BENCHMARKS.md records a run and explains every row.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() {
    cat <<'EOF'
Usage: scripts/compare.sh [OPTIONS]

Runs, for each server, the same phases with ws-loadgen:
  1. idle density   hold N connections: server RSS and fds per connection, kernel memory
                    (Slab, /proc/net/sockstat) per connection, memory after the clients leave
  2. connect rate   handshakes/s while opening those N (ws-loadgen, then tokio-ws-client)
  3. echo           closed-loop max msgs/s (1000 connections, 64 B), then RTT percentiles at
                    a fixed rate, server CPU per million messages
  4. broadcast      fan-out latency and deliveries/s at a fixed rate, then max
                    (skipped when ws-loadgen has no --scenario broadcast)
  5. load generators  ws-loadgen next to a goroutine-per-connection Go gorilla client, k6
                    (one VU per connection) and tokio-ws-client, each alone on the load
                    generator core against ws-server: CPU per message and memory per
                    connection at 3000 connections x 2 msgs/s for 15 s, own p99, received vs
                    sent, closed-loop max on 100 connections (scripts/lib/loadgen_compare.py;
                    a missing Go or k6 is skipped with a note)
and, once, the bare TCP connect+accept and echo rates (bare-tcp), the load generator's
headroom (ws-loadgen and the bare client against the bare WebSocket echo server), and the
floors: the bare WebSocket server under the servers' own echo, fixed-rate and opening loads
(CPU per message, RTT percentiles, CPU per handshake) and, with the broadcast phase, the bare
broadcast server (bare-tcp echo-server --ws --broadcast: every frame to every connection)
under the servers' two broadcast loads (deliveries per CPU-second, fan-out p99). A target
beyond what the bare server reaches is marked "(beyond the bare server)": no server can meet
it on this box.

Options:
  --servers LIST         servers to compare (default ws-server,ws-server-tokio; a missing
                         binary is skipped with a note)
  --server-cores LIST    cores for the server (default 0)
  --loadgen-cores LIST   cores for the load generators (default 1)
  --connections N        connections for idle density and connect rate (default: 95 % of
                         the descriptor limit, rounded down to 1000: 19000 for 20000)
  --echo-connections N   echo connections (default 1000)
  --payload BYTES        echo message size (default 64)
  --echo-rate R          fixed echo rate for the latency run, msgs/s (default 20000)
  --subscribers N        broadcast subscribers (default 1000)
  --publish-rate R       broadcast messages published per second at the fixed rate
                         in total (default 20: 20 × subscribers deliveries/s)
  --publishers P         broadcast publishers at the fixed rate (default 2)
  --max-publishers P     publishers of the max run (default 32): closed loop, each sends
                         when its previous message came back, so P messages are in flight;
                         with too few the run measures fan-out latency, not capacity
  --duration SECS        length of each echo/broadcast run (default 8)
  --warmup SECS          leading part of each echo/broadcast run whose messages are counted
                         but not timed (ws-loadgen --warmup; default 1, 0 in --quick)
  --quick                small N and short runs: a smoke test in under a minute
  --no-build             use the binaries already built
  --bin-dir DIR          take every binary from DIR (implies --no-build)
  --no-bare              skip the bare-tcp reference runs
  --no-loadgen           skip the load-generator section (5)
  --only-loadgen         run only the load-generator section (5)
  --tls                  add the TLS section (6): both servers over wss:// side by side: RSS
                         per idle TLS connection, full and resumed handshakes and echo msgs
                         per server CPU-second, ws-loadgen's CPU over wss next to ws://
                         (scripts/lib/tls_compare.py)
  --only-tls             run only the TLS section (6)
  --script               add the scripted-scenario section (7): ws-loadgen's CPU per message
                         for a --script JSON echo next to its built-in echo, against
                         ws-server (scripts/lib/script_compare.py)
  --only-script          run only the scripted-scenario section (7)
  --loadgen-repeat K     runs of each generator in that section, side by side (default 2, 1 in --quick)
  --no-netns             run in the host's network namespace (by default, as root, the run
                         moves into a private one, see below)
  --out DIR              output directory (default reports/compare-<timestamp>)
  -h, --help             this help

Binaries come from $CARGO_TARGET_DIR/release (default target/release) unless --bin-dir.

As root the whole run happens in a private network namespace (unshare --net, loopback up,
the host's per-namespace TCP sysctls copied in, ip_local_port_range widened to at least
10000-65535), so /proc/net/sockstat counts only this run's sockets, other jobs on the box
cannot take its ports, and connect()'s source-port search does not cap the connect rates.
Memory (Slab) is global.
EOF
}

ORIG_ARGS=("$@")
SERVERS=ws-server,ws-server-tokio
SERVER_CORES=0
LOADGEN_CORES=1
CONNS=""
ECHO_CONNS=1000
PAYLOAD=64
ECHO_RATE=20000
SUBS=1000
PUB_RATE=20
PUBLISHERS=2
MAX_PUBLISHERS=32
DUR=8
WARMUP=""
QUICK=0
BUILD=1
BARE=1
OUT=""
BIN_DIR=""
NETNS=1
LOADGEN_SECTION=1
ONLY_LOADGEN=0
TLS_SECTION=0
ONLY_TLS=0
SCRIPT_SECTION=0
ONLY_SCRIPT=0
LOADGEN_REPEAT=""

need_val() { [ $# -ge 2 ] || { echo "compare.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --servers) need_val "$@"; SERVERS=$2; shift 2 ;;
        --server-cores) need_val "$@"; SERVER_CORES=$2; shift 2 ;;
        --loadgen-cores) need_val "$@"; LOADGEN_CORES=$2; shift 2 ;;
        --connections) need_val "$@"; CONNS=$2; shift 2 ;;
        --echo-connections) need_val "$@"; ECHO_CONNS=$2; shift 2 ;;
        --payload) need_val "$@"; PAYLOAD=$2; shift 2 ;;
        --echo-rate) need_val "$@"; ECHO_RATE=$2; shift 2 ;;
        --subscribers) need_val "$@"; SUBS=$2; shift 2 ;;
        --publish-rate) need_val "$@"; PUB_RATE=$2; shift 2 ;;
        --publishers) need_val "$@"; PUBLISHERS=$2; shift 2 ;;
        --max-publishers) need_val "$@"; MAX_PUBLISHERS=$2; shift 2 ;;
        --duration) need_val "$@"; DUR=$2; shift 2 ;;
        --warmup) need_val "$@"; WARMUP=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --bin-dir) need_val "$@"; BIN_DIR=$2; BUILD=0; shift 2 ;;
        --no-bare) BARE=0; shift ;;
        --no-loadgen) LOADGEN_SECTION=0; shift ;;
        --only-loadgen) ONLY_LOADGEN=1; shift ;;
        --tls) TLS_SECTION=1; shift ;;
        --only-tls) TLS_SECTION=1; ONLY_TLS=1; shift ;;
        --script) SCRIPT_SECTION=1; shift ;;
        --only-script) SCRIPT_SECTION=1; ONLY_SCRIPT=1; shift ;;
        --loadgen-repeat) need_val "$@"; LOADGEN_REPEAT=$2; shift 2 ;;
        --no-netns) NETNS=0; shift ;;
        --out) need_val "$@"; OUT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

command -v python3 >/dev/null || { echo "compare.sh: python3 is required" >&2; exit 2; }

# Per-namespace TCP settings carried into the private namespace (tune.sh may have raised them).
NETNS_SYSCTLS="net/core/somaxconn net/ipv4/ip_local_port_range net/ipv4/tcp_max_syn_backlog
    net/ipv4/tcp_tw_reuse net/ipv4/tcp_fin_timeout net/ipv4/tcp_syncookies net/ipv4/tcp_rmem
    net/ipv4/tcp_wmem net/core/netdev_max_backlog"
if [ "$NETNS" = 1 ] && [ "${COMPARE_IN_NETNS:-}" = "" ] && [ "$(id -u)" = 0 ] &&
    command -v unshare >/dev/null && command -v ip >/dev/null &&
    unshare --net true 2>/dev/null; then
    host=""
    for k in $NETNS_SYSCTLS; do
        [ -r "/proc/sys/$k" ] && host+="$k=$(tr -s '\t ' ' ' <"/proc/sys/$k");"
    done
    export COMPARE_IN_NETNS=1 COMPARE_HOST_SYSCTLS="$host"
    exec unshare --net -- bash "$0" "${ORIG_ARGS[@]}"
fi
if [ "${COMPARE_IN_NETNS:-}" = 1 ]; then
    ip link set lo up
    IFS=';' read -r -a kv <<<"${COMPARE_HOST_SYSCTLS:-}"
    for e in "${kv[@]}"; do
        [ -n "$e" ] && [ -w "/proc/sys/${e%%=*}" ] && echo "${e#*=}" >"/proc/sys/${e%%=*}" 2>/dev/null || true
    done
    # connect() picks a source port by searching ip_local_port_range, even ports first; past
    # half the range in use to one destination the search costs hundreds of µs per connect
    # (measured: 1,500 connects/s instead of 34,000 for 19,000 connections over the default
    # 32768-60999), a client-side limit that would hide every server difference. The
    # private namespace widens the range to at least 10000-65535; servers listen below it.
    read -r plo phi <"/proc/sys/net/ipv4/ip_local_port_range"
    if [ "$plo" -gt 10000 ] || [ "$phi" -lt 65535 ]; then
        echo "$((plo < 10000 ? plo : 10000)) 65535" >/proc/sys/net/ipv4/ip_local_port_range
    fi
fi
command -v taskset >/dev/null || { echo "compare.sh: taskset (util-linux) is required" >&2; exit 2; }

HARD_NOFILE=$(ulimit -Hn)
[ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=1048576
if [ "$QUICK" = 1 ]; then
    : "${CONNS:=2000}"
    DUR=2
    SUBS=$((SUBS < 200 ? SUBS : 200))
    MAX_PUBLISHERS=$((MAX_PUBLISHERS < 8 ? MAX_PUBLISHERS : 8))
    ECHO_RATE=$((ECHO_RATE < 5000 ? ECHO_RATE : 5000))
    : "${WARMUP:=0}"
fi
: "${WARMUP:=1}"
if [ -z "$CONNS" ]; then
    CONNS=$((HARD_NOFILE * 95 / 100 / 1000 * 1000))
    [ "$CONNS" -ge 1000 ] || CONNS=$((HARD_NOFILE - 100))
fi
if [ "$CONNS" -gt $((HARD_NOFILE - 100)) ]; then
    echo "compare.sh: --connections $CONNS does not fit the descriptor limit ($HARD_NOFILE per process, hard)" >&2
    exit 2
fi
read -r PLO PHI <"/proc/sys/net/ipv4/ip_local_port_range"
if [ "${COMPARE_IN_NETNS:-}" != 1 ] && [ "$CONNS" -gt $(((PHI - PLO + 1) / 2)) ]; then
    echo "compare.sh: warning: $CONNS connections use more than half of ip_local_port_range" \
        "($PLO-$PHI): connect() slows down sharply there and caps every connect rate." \
        "Run as root (a private namespace with a wider range) or widen it (scripts/tune.sh apply)." >&2
fi
# The first core of each list: the bare programs and tokio-ws-client are single-threaded.
SC1=${SERVER_CORES%%[,-]*}
LC1=${LOADGEN_CORES%%[,-]*}

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-reports/compare-$STAMP}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
NOTES="$OUT/notes.txt"
: >"$NOTES"
note() { echo "note: $*" >&2; echo "$*" >>"$NOTES"; }
log() { printf '\n==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------
# build

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN_DIR:-$TARGET_DIR/release}
if [ "$BUILD" = 1 ]; then
    log "cargo build --release (ws-server, ws-loadgen, bare-tcp, tokio-ws-client)"
    cargo build --release --bin ws-server --bin ws-loadgen --bin bare-tcp --bin tokio-ws-client >&2
    if [[ ",$SERVERS," == *",ws-server-tokio,"* ]]; then
        cargo build --release --bin ws-server-tokio >&2 ||
            note "ws-server-tokio did not build; it is skipped"
    fi
fi
for b in ws-loadgen bare-tcp tokio-ws-client; do
    [ -x "$BIN/$b" ] || { echo "compare.sh: $BIN/$b missing (build first, or drop --no-build)" >&2; exit 2; }
done

# Section 5, the load generators: its own program, since it times other tools (Go, k6).
loadgen_section() {
    local args=(--bin "$BIN" --out "$OUT/loadgens" --server-core "$SC1" --lg-core "$LC1"
        --repeat "${LOADGEN_REPEAT:-$([ "$QUICK" = 1 ] && echo 1 || echo 2)}")
    [ "$QUICK" = 1 ] && args+=(--quick)
    log "load generators side by side (ws-loadgen, gorilla, k6, tokio-ws-client)"
    python3 "$ROOT/scripts/lib/loadgen_compare.py" "${args[@]}" ||
        note "the load-generator section failed (see $OUT/loadgens)"
}
# Section 6, TLS: its own program too (openssl s_time, a Python resumption client).
tls_section() {
    local args=(--bin "$BIN" --out "$OUT/tls" --server-core "$SC1" --lg-core "$LC1")
    [ "$QUICK" = 1 ] && args+=(--quick)
    log "TLS: both servers over wss:// (memory, handshakes, echo per server CPU-second)"
    python3 "$ROOT/scripts/lib/tls_compare.py" "${args[@]}" ||
        note "the TLS section failed (see $OUT/tls)"
}
# Section 7, scripted scenarios: ws-loadgen's own cost of a scenario file.
script_section() {
    local args=(--bin "$BIN" --out "$OUT/script" --server-core "$SC1" --lg-core "$LC1")
    [ "$QUICK" = 1 ] && args+=(--quick)
    log "scripted scenario: ws-loadgen --script JSON echo next to its built-in echo"
    python3 "$ROOT/scripts/lib/script_compare.py" "${args[@]}" ||
        note "the script section failed (see $OUT/script)"
}
if [ "$ONLY_SCRIPT" = 1 ]; then
    script_section | tee "$OUT/compare.md"
    echo "report: $OUT/compare.md (raw reports in $OUT/script)" >&2
    exit 0
fi
if [ "$ONLY_TLS" = 1 ]; then
    tls_section | tee "$OUT/compare.md"
    echo "report: $OUT/compare.md (raw figures in $OUT/tls/tls.json)" >&2
    exit 0
fi
if [ "$ONLY_LOADGEN" = 1 ]; then
    loadgen_section | tee "$OUT/compare.md"
    echo "report: $OUT/compare.md (raw reports in $OUT/loadgens)" >&2
    exit 0
fi

# ---------------------------------------------------------------------------------------
# processes: start, wait, stop, clean up on exit

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { # pid: no longer ours to clean up
    local i
    for i in "${!PIDS[@]}"; do [ "${PIDS[$i]}" = "$1" ] && unset 'PIDS[i]'; done
    return 0
}

# A free TCP port below the ephemeral range, so clients never take it, whose next port is
# free too (the servers' admin listener defaults to PORT+1).
free_port() {
    python3 - <<'PY'
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    p = random.randint(max(1024, lo - 5000), max(1025, lo - 2))
    if free(p) and free(p + 1):
        print(p)
        break
PY
}

# start_bg LOGFILE CORES CMD...: starts CMD pinned, sets STARTED_PID, waits for "listening on".
start_listener() {
    local logf=$1 cores=$2
    shift 2
    taskset -c "$cores" "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    local i
    for i in $(seq 1 200); do
        grep -q "listening on" "$logf" 2>/dev/null && return 0
        kill -0 "$STARTED_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "compare.sh: $* did not start:" >&2
    tail -5 "$logf" >&2
    return 1
}

stop_pid() { # SIGTERM, wait up to 10 s, then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

last_json() { # FILE: the last line that is a JSON object
    grep '^{' "$1" | tail -1
}

# ---------------------------------------------------------------------------------------
# /proc samples: KEY VALUE lines in $OUT/<name>/samples.txt

fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# Connection rates are timed the same way for every client (bare-tcp connect, ws-loadgen,
# tokio-ws-client): a poller records "TIME TCP_INUSE" from /proc/net/sockstat every 2 ms
# (only changes), and the rate is taken between 1 % and 99 % of the rise. Reading sockstat
# costs the kernel a few counters, not a walk over the sockets.
poll_start() { # FILE
    python3 - "$1" <<'PY' &
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
last = None
with open(sys.argv[1], "w") as out:
    try:
        while True:
            with open("/proc/net/sockstat") as f:
                for line in f:
                    if line.startswith("TCP:"):
                        parts = line.split()
                        v = int(parts[parts.index("inuse") + 1])
                        break
            if v != last:
                out.write(f"{time.time():.6f} {v}\n")
                if last is None:
                    out.flush()
                last = v
            time.sleep(0.002)
    finally:
        out.write(f"{time.time():.6f} {last}\n")
PY
    POLL_PID=$!
    PIDS+=("$POLL_PID")
    local i
    for i in $(seq 1 100); do # until its first sample is written
        [ -s "$1" ] && break
        sleep 0.02
    done
}
poll_stop() {
    kill -TERM "$POLL_PID" 2>/dev/null || true
    wait "$POLL_PID" 2>/dev/null || true
    forget "$POLL_PID"
}

# The ksoftirqd threads of the server cores. Network work the kernel defers there (a burst
# of sends to a thousand sockets, say) is the server's work but not charged to its process,
# so it is added to the server's CPU time below; left out, a server that submits many sends
# at once would look cheaper than it is.
KSOFT_PIDS=()
for c in $(python3 -c '
import sys
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    print(*range(int(a), int(b or a) + 1))' "$SERVER_CORES"); do
    kp=$(pgrep -x "ksoftirqd/$c" || true)
    [ -n "$kp" ] && KSOFT_PIDS+=("$kp")
done
ksoft_ticks() {
    local t=0 kp
    for kp in "${KSOFT_PIDS[@]}"; do
        t=$((t + $(sed 's/^.*) //' "/proc/$kp/stat" | awk '{print $12 + $13}')))
    done
    echo "$t"
}

# sample FILE PREFIX [PID]: process RSS, fds and CPU time (plus the server cores' ksoftirqd),
# and the kernel's socket memory.
sample() {
    local f=$1 p=$2 pid=${3:-}
    {
        if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
            awk -v p="$p" '/^VmRSS:/ {print p ".rss_bytes", $2 * 1024}' "/proc/$pid/status"
            echo "$p.fds $(fd_count "$pid")"
            # utime + stime (fields 14, 15 after the command name), in clock ticks; cpu_s
            # adds the server cores' ksoftirqd time.
            sed 's/^.*) //' "/proc/$pid/stat" |
                awk -v p="$p" -v hz="$(getconf CLK_TCK)" -v k="$(ksoft_ticks)" \
                    '{print p ".proc_cpu_s", ($12 + $13) / hz; print p ".ksoftirqd_s", k / hz
                      print p ".cpu_s", ($12 + $13 + k) / hz}'
            # time its threads were runnable but waiting for their core: other jobs
            cat "/proc/$pid"/task/*/schedstat 2>/dev/null |
                awk -v p="$p" '{w += $2} END {print p ".runq_wait_s", w / 1e9}'
        fi
        [ -r /proc/pressure/cpu ] &&
            awk -v p="$p" '/^some/ {split($5, t, "="); print p ".psi_cpu_some_s", t[2] / 1e6}' /proc/pressure/cpu
        awk -v p="$p" '/^Slab:/ {print p ".slab_bytes", $2 * 1024}
                       /^SUnreclaim:/ {print p ".sunreclaim_bytes", $2 * 1024}' /proc/meminfo
        awk -v p="$p" '/^TCP:/ {for (i = 2; i < NF; i += 2) {
                           if ($i == "inuse") print p ".tcp_inuse", $(i + 1);
                           if ($i == "mem") print p ".tcp_mem_pages", $(i + 1) }}' /proc/net/sockstat
        echo "$p.time $(date +%s.%N)"
    } >>"$f"
}

# wait_fds PID TARGET TIMEOUT_S [WATCHPID]: until PID holds >= TARGET fds (or WATCHPID ends)
wait_fds_at_least() {
    local pid=$1 target=$2 t=$3 watch=${4:-} i
    for i in $(seq 1 $((t * 10))); do
        [ "$(fd_count "$pid")" -ge "$target" ] && return 0
        [ -n "$watch" ] && ! kill -0 "$watch" 2>/dev/null && return 1
        sleep 0.1
    done
    return 1
}
wait_fds_at_most() {
    local pid=$1 target=$2 t=$3 i
    for i in $(seq 1 $((t * 10))); do
        [ "$(fd_count "$pid")" -le "$target" ] && return 0
        sleep 0.1
    done
    return 1
}

# loadgen_bg JSONFILE ARGS...: ws-loadgen on the load generator cores (or $LG_CORES), in the
# background; its pid in LG_PID.
loadgen_bg() {
    local json=$1 cores=${LG_CORES:-$LOADGEN_CORES}
    shift
    taskset -c "$cores" "$BIN/ws-loadgen" run "$@" --cores "$cores" \
        --progress plain --json "$json" >"${json%.json}.log" 2>&1 &
    LG_PID=$!
    PIDS+=("$LG_PID")
}
loadgen() {
    loadgen_bg "$@"
    wait "$LG_PID" || true
    forget "$LG_PID"
    [ -s "$1" ] || note "ws-loadgen wrote no report for $1 (see ${1%.json}.log)"
}

# --warmup for every timed echo/broadcast run (an older ws-loadgen lacks it: then none).
WARM=()
if [ "$WARMUP" != 0 ]; then
    if "$BIN/ws-loadgen" run --help 2>/dev/null | grep -q -- '--warmup'; then
        WARM=(--warmup "${WARMUP}s")
    else
        note "ws-loadgen has no --warmup: latencies include the start of each run"
        WARMUP=0
    fi
fi

HAS_BROADCAST=0
if "$BIN/ws-loadgen" run --help 2>/dev/null | grep -qw broadcast; then
    HAS_BROADCAST=1
else
    note "ws-loadgen has no --scenario broadcast: the broadcast phase is skipped"
fi

quiet_check() { # note the load average: other jobs on the box distort every figure
    local la
    la=$(cut -d' ' -f1 /proc/loadavg)
    echo "$1 $la" >>"$OUT/loadavg.txt"
    if python3 -c "import sys; sys.exit(0 if float('$la') > 0.5 * $(nproc) else 1)"; then
        note "load average $la at '$1': other jobs were running on this box"
    fi
}

# ---------------------------------------------------------------------------------------
# the bare references: physical limits of this box, same cores

run_bare() {
    local d=$OUT/bare port
    mkdir -p "$d"
    quiet_check bare

    log "bare TCP connect+accept: $CONNS connections held (accept on core $SC1, connect on core $LC1)"
    port=$(free_port)
    sample "$d/samples.txt" connect.before
    start_listener "$d/accept.out" "$SC1" "$BIN/bare-tcp" accept --listen "127.0.0.1:$port" --hold
    local apid=$STARTED_PID
    poll_start "$d/connect.sockstat"
    taskset -c "$LC1" "$BIN/bare-tcp" connect "127.0.0.1:$port" -c "$CONNS" --hold --hold-for 2s \
        >"$d/connect.out" 2>"$d/connect.log" &
    local cpid=$!
    PIDS+=("$cpid")
    wait_fds_at_least "$apid" "$CONNS" 60 "$cpid" || true
    sleep 1
    sample "$d/samples.txt" connect.held
    poll_stop
    wait "$cpid" || true
    forget "$cpid"
    stop_pid "$apid"
    last_json "$d/connect.out" >"$d/connect.json" || note "bare-tcp connect printed no report"
    last_json "$d/accept.out" >"$d/accept.json" || note "bare-tcp accept printed no report"

    log "bare TCP echo: $ECHO_CONNS connections, $PAYLOAD B, closed loop, ${DUR}s"
    port=$(free_port)
    start_listener "$d/echo-server.out" "$SC1" "$BIN/bare-tcp" echo-server --listen "127.0.0.1:$port"
    local spid=$STARTED_PID
    taskset -c "$LC1" "$BIN/bare-tcp" echo-client "127.0.0.1:$port" -c "$ECHO_CONNS" \
        --size "$PAYLOAD" -d "${DUR}s" >"$d/echo-client.out" 2>"$d/echo-client.log" || true
    stop_pid "$spid"
    last_json "$d/echo-client.out" >"$d/echo-client.json" || note "bare echo-client printed no report"
    last_json "$d/echo-server.out" >"$d/echo-server.json" || true

    log "bare WebSocket echo server: driven by the bare client, then by ws-loadgen (headroom)"
    port=$(free_port)
    start_listener "$d/ws-echo-server.out" "$SC1" "$BIN/bare-tcp" echo-server --ws --listen "127.0.0.1:$port"
    spid=$STARTED_PID
    local base_fds
    base_fds=$(fd_count "$spid")
    taskset -c "$LC1" "$BIN/bare-tcp" echo-client --ws "127.0.0.1:$port" -c "$ECHO_CONNS" \
        --size "$PAYLOAD" -d "${DUR}s" >"$d/ws-echo-client.out" 2>"$d/ws-echo-client.log" || true
    last_json "$d/ws-echo-client.out" >"$d/ws-echo-client.json" || note "bare ws echo-client printed no report"
    sleep 1
    local S=$d/samples.txt url="ws://127.0.0.1:$port/ws"
    sample "$S" ws_echo_max.before "$spid"
    LG_CORES=$LC1 loadgen "$d/ws-echo-loadgen.json" "$url" -c "$ECHO_CONNS" \
        --connect-rate 0 --rate 0 --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
    sample "$S" ws_echo_max.after "$spid"

    # The floors the servers' rows are held against: the same loads on the bare server.
    log "bare WebSocket echo server: echo at a fixed $ECHO_RATE msgs/s (latency floor)"
    loadgen "$d/ws-echo-fixed.json" "$url" -c "$ECHO_CONNS" --connect-rate 0 --rate "$ECHO_RATE" \
        --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
    log "bare WebSocket echo server: open $CONNS connections (CPU per handshake floor)"
    wait_fds_at_most "$spid" "$base_fds" 15 || true
    sample "$S" ws_open.before "$spid"
    loadgen_bg "$d/ws-open.json" "$url" --scenario hold -c "$CONNS" --connect-rate 0 \
        --ping-interval 600s -d 120s
    local lg=$LG_PID
    wait_fds_at_least "$spid" $((base_fds + CONNS)) 60 "$lg" ||
        note "the bare WebSocket server never held $CONNS connections (see $d/ws-open.log)"
    sleep 1
    sample "$S" ws_open.held "$spid"
    kill -INT "$lg" 2>/dev/null || true
    wait "$lg" || true
    forget "$lg"
    stop_pid "$spid"

    # The broadcast floor: run_broadcast's two loads on the bare broadcast server (every
    # data frame to every open connection, one write per connection per epoll round).
    if [ "$HAS_BROADCAST" = 1 ]; then
        log "bare WebSocket broadcast server: $SUBS subscribers, $PUB_RATE publishes/s, then $MAX_PUBLISHERS publishers in closed loop (broadcast floor)"
        port=$(free_port)
        start_listener "$d/ws-bcast-server.out" "$SC1" "$BIN/bare-tcp" echo-server --ws --broadcast \
            --listen "127.0.0.1:$port"
        spid=$STARTED_PID
        base_fds=$(fd_count "$spid")
        url="ws://127.0.0.1:$port/broadcast?room=compare"
        sample "$S" bcast_fixed.before "$spid"
        loadgen "$d/bcast-fixed.json" "$url" --scenario broadcast -c "$SUBS" --connect-rate 0 \
            --publishers "$PUBLISHERS" --rate "$PUB_RATE" --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
        sample "$S" bcast_fixed.after "$spid"
        wait_fds_at_most "$spid" "$base_fds" 15 || true
        sample "$S" bcast_max.before "$spid"
        loadgen "$d/bcast-max.json" "$url" --scenario broadcast -c "$SUBS" --connect-rate 0 \
            --publishers "$MAX_PUBLISHERS" --rate 0 --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
        sample "$S" bcast_max.after "$spid"
        stop_pid "$spid"
        last_json "$d/ws-bcast-server.out" >"$d/ws-bcast-server.json" || true
    fi
}

# ---------------------------------------------------------------------------------------
# one server

run_server() {
    local name=$1 d=$OUT/$1 port url pid
    local exe=$BIN/$name
    if [ ! -x "$exe" ]; then
        note "$name: no binary at $exe, skipped"
        return 0
    fi
    mkdir -p "$d"
    local S=$d/samples.txt
    port=$(free_port)
    url="ws://127.0.0.1:$port/ws"
    echo "$url" >"$d/url.txt"
    quiet_check "$name"

    log "$name: start on cores $SERVER_CORES, port $port"
    start_listener "$d/server.log" "$SERVER_CORES" "$exe" --cores "$SERVER_CORES" \
        --listen "127.0.0.1:$port" || { note "$name did not start (see $d/server.log)"; return 0; }
    pid=$STARTED_PID
    sleep 0.5
    sample "$S" start "$pid"

    # 1 + 2: idle density and connect rate (ws-loadgen)
    log "$name: open $CONNS connections as fast as possible and hold them (ws-loadgen)"
    local base_fds
    base_fds=$(fd_count "$pid")
    sample "$S" idle.before "$pid"
    poll_start "$d/idle.sockstat"
    loadgen_bg "$d/idle.json" "$url" --scenario hold -c "$CONNS" --connect-rate 0 \
        --ping-interval 600s -d 120s
    local lg=$LG_PID
    if ! wait_fds_at_least "$pid" $((base_fds + CONNS)) 60 "$lg"; then
        note "$name: the server never held $CONNS connections (ws-loadgen: see $d/idle.log)"
    fi
    sleep 1
    sample "$S" idle.held "$pid"
    poll_stop
    sleep 1
    kill -INT "$lg" 2>/dev/null || true
    wait "$lg" || true
    forget "$lg"
    wait_fds_at_most "$pid" "$base_fds" 15 || note "$name: descriptors not back to baseline 15 s after the clients left"
    sleep 1
    sample "$S" idle.after "$pid"

    # 2b: the same opening with the naive tokio-tungstenite client
    log "$name: open $CONNS connections with tokio-ws-client (one task per connection)"
    sample "$S" naive.before "$pid"
    poll_start "$d/naive.sockstat"
    taskset -c "$LC1" "$BIN/tokio-ws-client" "$url" -c "$CONNS" --concurrency 1024 --hold 1s \
        >"$d/tokio-ws-client.out" 2>"$d/tokio-ws-client.log" || true
    poll_stop
    sample "$S" naive.after "$pid"
    last_json "$d/tokio-ws-client.out" >"$d/tokio-ws-client.json" || note "$name: tokio-ws-client printed no report"
    wait_fds_at_most "$pid" "$base_fds" 15 || true

    # 2c: the same client with a 4 KiB read buffer instead of tungstenite's 128 KiB default
    log "$name: open $CONNS connections with tokio-ws-client --read-buffer-size 4096"
    poll_start "$d/naive4k.sockstat"
    taskset -c "$LC1" "$BIN/tokio-ws-client" "$url" -c "$CONNS" --concurrency 1024 --hold 1s \
        --read-buffer-size 4096 >"$d/tokio-ws-client-4k.out" 2>"$d/tokio-ws-client-4k.log" || true
    poll_stop
    last_json "$d/tokio-ws-client-4k.out" >"$d/tokio-ws-client-4k.json" || true
    wait_fds_at_most "$pid" "$base_fds" 15 || true

    # 3: echo, closed loop then fixed rate
    log "$name: echo closed loop, $ECHO_CONNS connections, $PAYLOAD B, ${DUR}s"
    sample "$S" echo_max.before "$pid"
    loadgen "$d/echo-max.json" "$url" -c "$ECHO_CONNS" --connect-rate 0 --rate 0 \
        --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
    sample "$S" echo_max.after "$pid"
    wait_fds_at_most "$pid" "$base_fds" 15 || true

    log "$name: echo at a fixed $ECHO_RATE msgs/s"
    sample "$S" echo_fixed.before "$pid"
    loadgen "$d/echo-fixed.json" "$url" -c "$ECHO_CONNS" --connect-rate 0 --rate "$ECHO_RATE" \
        --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
    sample "$S" echo_fixed.after "$pid"
    wait_fds_at_most "$pid" "$base_fds" 15 || true

    # 4: broadcast
    if [ "$HAS_BROADCAST" = 1 ]; then
        run_broadcast "$name" "$d" "$port" "$pid" "$base_fds"
    fi

    sample "$S" end "$pid"
    log "$name: stop (SIGTERM)"
    stop_pid "$pid"
}

# The loadgen's broadcast flags are read from its --help, so this follows its CLI.
run_broadcast() {
    local name=$1 d=$2 port=$3 pid=$4 base_fds=$5
    local S=$d/samples.txt url="ws://127.0.0.1:$port/broadcast?room=compare"
    log "$name: broadcast, $SUBS subscribers, $PUB_RATE publishes/s, ${DUR}s"
    sample "$S" bcast_fixed.before "$pid"
    loadgen "$d/bcast-fixed.json" "$url" --scenario broadcast -c "$SUBS" --connect-rate 0 \
        --publishers "$PUBLISHERS" --rate "$PUB_RATE" --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
    sample "$S" bcast_fixed.after "$pid"
    wait_fds_at_most "$pid" "$base_fds" 15 || true

    log "$name: broadcast, $SUBS subscribers, $MAX_PUBLISHERS publishers in closed loop"
    sample "$S" bcast_max.before "$pid"
    loadgen "$d/bcast-max.json" "$url" --scenario broadcast -c "$SUBS" --connect-rate 0 \
        --publishers "$MAX_PUBLISHERS" --rate 0 --payload "$PAYLOAD" -d "${DUR}s" "${WARM[@]}"
    sample "$S" bcast_max.after "$pid"
    wait_fds_at_most "$pid" "$base_fds" 15 || true
}

# ---------------------------------------------------------------------------------------

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: scripts/compare.sh ${ORIG_ARGS[*]:-}"
    echo "nproc: $(nproc)"
    echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel: $(uname -r)"
    echo "ram: $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "nofile_hard: $HARD_NOFILE"
    echo "server_cores: $SERVER_CORES"
    echo "loadgen_cores: $LOADGEN_CORES"
    echo "connections: $CONNS"
    echo "echo_connections: $ECHO_CONNS"
    echo "payload: $PAYLOAD"
    echo "echo_rate: $ECHO_RATE"
    echo "warmup_s: $WARMUP"
    echo "subscribers: $SUBS"
    echo "publish_rate: $PUB_RATE"
    echo "publishers: $PUBLISHERS"
    echo "max_publishers: $MAX_PUBLISHERS"
    echo "duration_s: $DUR"
    echo "quick: $QUICK"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- server loadgen common bench 2>/dev/null || echo ' (with uncommitted changes)')"
    if [ -n "$BIN_DIR" ]; then
        echo "binaries: $BIN_DIR$([ -r "$BIN_DIR/COMMIT" ] && echo " (built from $(cat "$BIN_DIR/COMMIT"))")"
    fi
    echo "netns: $([ "${COMPARE_IN_NETNS:-}" = 1 ] && echo private || echo host)"
    echo "port_range: $(tr -s '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range)"
    echo "somaxconn: $(cat /proc/sys/net/core/somaxconn)"
} >"$OUT/machine.txt"

# Every phase leaves tens of thousands of TIME_WAIT sockets for 60 s. They sit in the same
# hash as the established ones and slow every lookup, so whichever server ran second paid
# for the first one's (measured: the same binary 10-20 % slower at broadcast max when it ran
# second). Each server starts once they are gone.
wait_time_wait() {
    local tw i
    for i in $(seq 1 90); do
        tw=$(awk '/^TCP:/ {for (i = 2; i < NF; i += 2) if ($i == "tw") print $(i + 1)}' /proc/net/sockstat)
        [ "${tw:-0}" -le 100 ] && return 0
        [ "$i" = 1 ] && log "waiting for $tw TIME_WAIT sockets to expire (up to 90 s)"
        sleep 1
    done
    note "TIME_WAIT sockets were still there after 90 s: the next server's figures may be lower"
}

T0=$(date +%s)
[ "$BARE" = 1 ] && run_bare
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    wait_time_wait
    run_server "$s"
done
echo "elapsed_s: $(($(date +%s) - T0))" >>"$OUT/machine.txt"

# ---------------------------------------------------------------------------------------
# the table

python3 - "$OUT" "${SERVER_LIST[@]}" <<'PY' | tee "$OUT/compare.md"
import json, os, sys

out, servers = sys.argv[1], sys.argv[2:]


def text(p):
    try:
        with open(os.path.join(out, p)) as f:
            return f.read()
    except OSError:
        return ""


def load(p):
    t = text(p).strip()
    if not t:
        return None
    try:
        return json.loads(t)
    except ValueError:
        return None


def get(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def samples(p):
    d = {}
    for line in text(p).splitlines():
        k, _, v = line.partition(" ")
        try:
            d[k] = float(v)
        except ValueError:
            pass
    return d


def delta(s, a, b, key):
    if f"{a}.{key}" in s and f"{b}.{key}" in s:
        return s[f"{b}.{key}"] - s[f"{a}.{key}"]
    return None


def ramp(p):
    """Connections/s from a sockstat timeline: between 1 % and 99 % of the TCP inuse rise
    (both ends of a loopback connection are counted, so connections = rise / 2)."""
    pts = []
    for line in text(p).splitlines():
        try:
            t, v = line.split()
            pts.append((float(t), int(v)))
        except ValueError:
            pass
    if len(pts) < 3:
        return None
    base = pts[0][1]
    peak = max(v for _, v in pts) - base
    if peak < 200:
        return None
    lo = next(t for t, v in pts if v - base >= 0.01 * peak)
    hi = next(t for t, v in pts if v - base >= 0.99 * peak)
    if hi <= lo:
        return None
    return 0.98 * peak / 2 / (hi - lo)


def div(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def mul(x, k):
    return None if x is None else x * k


machine = dict(
    line.split(": ", 1) for line in text("machine.txt").splitlines() if ": " in line
)

# --- reference figures (bare-tcp, same run, same cores) ---------------------------------
bare_connect = ramp("bare/connect.sockstat")
bc = load("bare/connect.json")
ba = load("bare/accept.json")
bare_echo = get(load("bare/echo-client.json"), "rate")
bare_echo_srv = load("bare/echo-server.json")
bare_ws_client = get(load("bare/ws-echo-client.json"), "rate")
lg_ws = load("bare/ws-echo-loadgen.json")
lg_ws_rate = get(lg_ws, "messages", "received_per_s")
bs = samples("bare/samples.txt")
bare_slab = div(delta(bs, "connect.before", "connect.held", "slab_bytes"), get(ba, "held"))
bare_tcpmem = div(delta(bs, "connect.before", "connect.held", "tcp_mem_pages"), get(ba, "held"))
# The bare WebSocket server under the servers' own loads: what no server can beat here.
bare_ws_msgs = get(lg_ws, "messages", "received")
bare_ws_cpu_per_msg = div(delta(bs, "ws_echo_max.before", "ws_echo_max.after", "cpu_s"), bare_ws_msgs)
bare_ws_open = get(load("bare/ws-open.json"), "connections", "established")
bare_ws_cpu_per_hs = div(delta(bs, "ws_open.before", "ws_open.held", "cpu_s"), bare_ws_open)
bare_ws_fixed = get(load("bare/ws-echo-fixed.json"), "latency", "rtt") or {}
bare_ws_p99 = div(bare_ws_fixed.get("p99"), 1000)
bare_ws_p999 = div(bare_ws_fixed.get("p999"), 1000)
# The bare broadcast server under the servers' two broadcast loads (as the servers' rows:
# deliveries received per server CPU-second, fan-out latency from the broadcast section).
bare_bc = {}
for ph in ("fixed", "max"):
    sec = get(load(f"bare/bcast-{ph}.json"), "broadcast")
    if not isinstance(sec, dict):
        continue
    bare_bc[f"{ph}.rate"] = sec.get("deliveries_per_s")
    bare_bc[f"{ph}.per_cpu_s"] = div(sec.get("deliveries_received"),
                                     delta(bs, f"bcast_{ph}.before", f"bcast_{ph}.after", "cpu_s"))
    fl = sec.get("fanout_latency") or {}
    for q in ("p50", "p99"):
        bare_bc[f"{ph}.{q}"] = fl[q] / 1000 if fl.get(q) else None
bare_echo_cpu_per_msg = None
if bare_echo_srv and get(load("bare/echo-client.json"), "msgs"):
    bare_echo_cpu_per_msg = bare_echo_srv["cpu_s"] / load("bare/echo-client.json")["msgs"]

def fmt(v, kind):
    if v is None:
        return "–"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "B":
        return f"{v:,.0f} B"
    if kind == "KB":
        return f"{v / 1000:,.1f} KB"
    if kind == "us":
        return f"{v:,.1f} µs"
    if kind == "ms":
        return f"{v:,.3f} ms" if v < 10 else f"{v:,.1f} ms"
    if kind == "pct":
        return f"{v:+.1f} %"
    if kind == "pct0":
        return f"{v:.0f} %"
    if kind == "pct1":
        return f"{v:.1f} %"
    if kind == "s":
        return f"{v:.3f} s"
    if kind == "M":
        return f"{v / 1e6:,.2f} M"
    if kind == "ratio":
        return f"{v:.2f}"
    return str(v)


# --- per server -------------------------------------------------------------------------
M = {}
for s in servers:
    smp = samples(f"{s}/samples.txt")
    if not smp:
        continue
    m = {}
    idle = load(f"{s}/idle.json")
    n = get(idle, "connections", "peak_open") or 0
    m["held"] = n
    if n:
        m["rss_per_conn"] = div(delta(smp, "idle.before", "idle.held", "rss_bytes"), n)
        m["fds_per_conn"] = div(delta(smp, "idle.before", "idle.held", "fds"), n)
        m["slab_per_conn"] = div(delta(smp, "idle.before", "idle.held", "slab_bytes"), n)
        tm = delta(smp, "idle.before", "idle.held", "tcp_mem_pages")
        m["tcpmem_per_conn"] = div(tm * 4096 if tm is not None else None, n)
        m["cpu_us_per_handshake"] = div(delta(smp, "idle.before", "idle.held", "cpu_s"), n / 1e6)
    m["loadgen_rss_per_conn"] = get(idle, "process", "rss_per_open_conn_bytes")
    m["handshakes"] = ramp(f"{s}/idle.sockstat")
    m["handshake_failures"] = get(idle, "connections", "failed")
    naive = load(f"{s}/tokio-ws-client.json")
    m["naive_handshakes"] = ramp(f"{s}/naive.sockstat")
    m["naive_established"] = get(naive, "established")
    m["naive_rss_per_conn"] = get(naive, "rss_per_conn_bytes")
    m["naive4k_handshakes"] = ramp(f"{s}/naive4k.sockstat")
    m["naive4k_rss_per_conn"] = get(load(f"{s}/tokio-ws-client-4k.json"), "rss_per_conn_bytes")
    b = smp.get("idle.before.rss_bytes")
    a = smp.get("idle.after.rss_bytes")
    m["rss_after_pct"] = div((a - b) * 100, b) if a is not None and b else None
    m["fds_after"] = delta(smp, "idle.before", "idle.after", "fds")
    for phase, f in (("echo_max", "echo-max.json"), ("echo_fixed", "echo-fixed.json"),
                     ("bcast_fixed", "bcast-fixed.json"), ("bcast_max", "bcast-max.json")):
        r = load(f"{s}/{f}")
        if not r:
            continue
        cpu = delta(smp, f"{phase}.before", f"{phase}.after", "cpu_s")
        rec = get(r, "messages", "received") or 0
        m[f"{phase}.rate"] = get(r, "messages", "received_per_s")
        m[f"{phase}.sent_rate"] = div(get(r, "messages", "sent"), get(r, "elapsed_s"))
        m[f"{phase}.errors"] = get(r, "error_rate")
        wall = delta(smp, f"{phase}.before", f"{phase}.after", "time")
        m[f"{phase}.wait_pct"] = div(mul(delta(smp, f"{phase}.before", f"{phase}.after", "runq_wait_s"), 100), wall)
        m[f"{phase}.psi_pct"] = div(mul(delta(smp, f"{phase}.before", f"{phase}.after", "psi_cpu_some_s"), 100), wall)
        m[f"{phase}.server_busy"] = div(mul(cpu, 100), wall)
        m[f"{phase}.loadgen_busy"] = div(mul(get(r, "process", "cpu_seconds"), 100), wall)
        m[f"{phase}.per_cpu_s"] = div(rec, cpu)
        m[f"{phase}.ksoft_pct"] = div(mul(delta(smp, f"{phase}.before", f"{phase}.after", "ksoftirqd_s"), 100), cpu)
        m[f"{phase}.cpu_per_million"] = div(cpu, rec / 1e6) if rec else None
        lat = get(r, "latency", "rtt") or {}
        for q in ("p50", "p99", "p999"):
            v = lat.get(q)
            m[f"{phase}.{q}"] = v / 1000 if v else None
        # broadcast: deliveries and fan-out latency from the scenario's own section
        bc_sec = get(r, "broadcast")
        if isinstance(bc_sec, dict):
            got = bc_sec.get("deliveries_received") or 0
            m[f"{phase}.rate"] = bc_sec.get("deliveries_per_s")
            m[f"{phase}.published"] = div(bc_sec.get("published"), get(r, "elapsed_s"))
            m[f"{phase}.per_cpu_s"] = div(got, cpu)
            m[f"{phase}.cpu_per_million"] = div(cpu, got / 1e6) if got else None
            m[f"{phase}.missing"] = bc_sec.get("deliveries_missing")
            m[f"{phase}.all_delivered"] = bc_sec.get("all_delivered_ratio")
            fl = bc_sec.get("fanout_latency") or {}
            for q in ("p50", "p99", "p999"):
                m[f"{phase}.{q}"] = fl[q] / 1000 if fl.get(q) else None
    wall = delta(smp, "idle.before", "idle.held", "time")
    m["idle.wait_pct"] = div(mul(delta(smp, "idle.before", "idle.held", "runq_wait_s"), 100), wall)
    m["idle.psi_pct"] = div(mul(delta(smp, "idle.before", "idle.held", "psi_cpu_some_s"), 100), wall)
    parts = []
    for ph, short in (("idle", "open"), ("echo_max", "echo max"), ("echo_fixed", "echo fixed"),
                      ("bcast_fixed", "bcast fixed"), ("bcast_max", "bcast max")):
        w, ps = m.get(f"{ph}.wait_pct"), m.get(f"{ph}.psi_pct")
        if w is not None or ps is not None:
            parts.append(f"{short} {fmt(w, 'pct1')}/{fmt(ps, 'pct1')}")
    m["interference"] = ", ".join(parts) or None
    total = None
    if m.get("rss_per_conn") is not None and m.get("slab_per_conn") is not None:
        # a real server keeps one socket per client (the other end is remote): half the pair
        total = max(m["rss_per_conn"], 0) + m["slab_per_conn"] / 2
    m["mem_per_conn"] = total
    M[s] = m

shown = [s for s in servers if s in M]


rows = []  # (label, values per server, kind, ratio?, target text, verdict)


def row(label, key, kind, ratio=True, target="", verdict=None):
    vals = [M[s].get(key) for s in shown]
    r = None
    if ratio and len(vals) >= 2:
        r = div(vals[0], vals[1])
    rows.append((label, vals, kind, r, target, verdict))


def v(s, key):
    return M.get(s, {}).get(key)


A = shown[0] if shown else None
B = next((s for s in shown if s.endswith("tokio")), shown[1] if len(shown) > 1 else None)
a = lambda k: v(A, k)
b = lambda k: v(B, k)


def ok(cond):
    if cond is None:
        return "–"
    return "yes" if cond else "**no**"


def floor_ok(cond, target, floor, lower_is_better=True):
    """ok(cond), and when the target lies beyond what the bare server reaches on the same
    load, say so: such a target cannot be met on this box by any server."""
    verdict = ok(cond)
    if cond is False and target is not None and floor is not None:
        if (target < floor) if lower_is_better else (target > floor):
            verdict += " (beyond the bare server)"
    return verdict


def both(*c):
    if any(x is None for x in c):
        return None
    return all(c)


def le(x, y):
    return None if x is None or y is None else x <= y


def ge(x, y):
    return None if x is None or y is None else x >= y


n = machine.get("connections", "?")
row(f"connections held (target {n})", "held", "int", ratio=False)
row("server RSS per idle connection", "rss_per_conn", "B",
    target="≤ 512 B and ≤ 1/10 of tokio's",
    verdict=ok(both(le(a("rss_per_conn"), 512), le(a("rss_per_conn"), mul(b("rss_per_conn"), 0.1)))))
row("server descriptors per connection", "fds_per_conn", "ratio")
row("kernel Slab per connection (both loopback ends)", "slab_per_conn", "B")
row("ws-loadgen RSS per idle connection", "loadgen_rss_per_conn", "B", ratio=False,
    target="≤ 1 KiB", verdict=ok(le(a("loadgen_rss_per_conn"), 1024)))
hs_target = both(ge(a("handshakes"), mul(bare_connect, 0.5)), ge(a("handshakes"), mul(a("naive_handshakes"), 2)))
row(f"handshakes/s opening {n} (ws-loadgen)", "handshakes", "int",
    target="≥ 50 % of bare connect+accept, ≥ 2× tokio-ws-client", verdict=ok(hs_target))
row(f"handshakes/s opening {n} (tokio-ws-client, 1 task/conn)", "naive_handshakes", "int")
row("tokio-ws-client RSS per connection", "naive_rss_per_conn", "B")
row(f"handshakes/s opening {n} (tokio-ws-client, 4 KiB read buffer)", "naive4k_handshakes", "int")
row("tokio-ws-client (4 KiB read buffer) RSS per connection", "naive4k_rss_per_conn", "B")
row("server CPU per handshake", "cpu_us_per_handshake", "us", target="≤ 1/2 of tokio's",
    verdict=floor_ok(le(a("cpu_us_per_handshake"), mul(b("cpu_us_per_handshake"), 0.5)),
                     mul(b("cpu_us_per_handshake"), 0.5), mul(bare_ws_cpu_per_hs, 1e6)))
row("echo closed loop: msgs/s", "echo_max.rate", "int",
    target="≥ tokio's and ≥ 80 % of bare TCP echo",
    verdict=ok(both(ge(a("echo_max.rate"), b("echo_max.rate")), ge(a("echo_max.rate"), mul(bare_echo, 0.8)))))
row("echo closed loop: msgs per server CPU-second", "echo_max.per_cpu_s", "int",
    target="≥ 2× tokio's",
    verdict=floor_ok(ge(a("echo_max.per_cpu_s"), mul(b("echo_max.per_cpu_s"), 2)),
                     mul(b("echo_max.per_cpu_s"), 2), div(1, bare_ws_cpu_per_msg), lower_is_better=False))
row("echo closed loop: server CPU-s per million msgs", "echo_max.cpu_per_million", "s")
row("echo closed loop: server core busy", "echo_max.server_busy", "pct0")
row("echo closed loop: ws-loadgen core busy (≈ 100 %: client-bound)", "echo_max.loadgen_busy", "pct0")
row("echo closed loop: error rate", "echo_max.errors", "ratio", ratio=False)
er = machine.get("echo_rate", "?")
row(f"echo at {er} msgs/s: achieved msgs/s", "echo_fixed.rate", "int")
row(f"echo at {er} msgs/s: RTT p50", "echo_fixed.p50", "ms")
row(f"echo at {er} msgs/s: RTT p99", "echo_fixed.p99", "ms", target="≤ 1/2 of tokio's",
    verdict=floor_ok(le(a("echo_fixed.p99"), mul(b("echo_fixed.p99"), 0.5)),
                     mul(b("echo_fixed.p99"), 0.5), bare_ws_p99))
row(f"echo at {er} msgs/s: RTT p99.9", "echo_fixed.p999", "ms", target="≤ 1/2 of tokio's",
    verdict=floor_ok(le(a("echo_fixed.p999"), mul(b("echo_fixed.p999"), 0.5)),
                     mul(b("echo_fixed.p999"), 0.5), bare_ws_p999))
row(f"echo at {er} msgs/s: server CPU-s per million msgs", "echo_fixed.cpu_per_million", "s")
if any(v(s, "bcast_fixed.rate") is not None for s in shown):
    subs = machine.get("subscribers", "?")
    pr = machine.get("publish_rate", "?")
    row(f"broadcast {subs} subs, {pr} pub/s: deliveries/s", "bcast_fixed.rate", "int")
    row("broadcast fixed rate: fan-out latency p50", "bcast_fixed.p50", "ms")
    row("broadcast fixed rate: fan-out latency p99", "bcast_fixed.p99", "ms",
        target="≤ 1/2 of tokio's",
        verdict=floor_ok(le(a("bcast_fixed.p99"), mul(b("bcast_fixed.p99"), 0.5)),
                         mul(b("bcast_fixed.p99"), 0.5), bare_bc.get("fixed.p99")))
    row("broadcast fixed rate: deliveries per server CPU-second", "bcast_fixed.per_cpu_s", "int",
        target="≥ 2× tokio's",
        verdict=floor_ok(ge(a("bcast_fixed.per_cpu_s"), mul(b("bcast_fixed.per_cpu_s"), 2)),
                         mul(b("bcast_fixed.per_cpu_s"), 2), bare_bc.get("fixed.per_cpu_s"),
                         lower_is_better=False))
    row("broadcast fixed rate: deliveries missing", "bcast_fixed.missing", "int")
    mp = machine.get("max_publishers", "?")
    row(f"broadcast max ({mp} publishers, closed loop): deliveries/s", "bcast_max.rate", "int")
    row("broadcast max: deliveries per server CPU-second", "bcast_max.per_cpu_s", "int",
        target="≥ 2× tokio's",
        verdict=floor_ok(ge(a("bcast_max.per_cpu_s"), mul(b("bcast_max.per_cpu_s"), 2)),
                         mul(b("bcast_max.per_cpu_s"), 2), bare_bc.get("max.per_cpu_s"),
                         lower_is_better=False))
    row("broadcast max: server core busy", "bcast_max.server_busy", "pct0")
    row("broadcast max: ws-loadgen core busy", "bcast_max.loadgen_busy", "pct0")
    row("broadcast max: fan-out latency p50", "bcast_max.p50", "ms")
    row("broadcast max: fan-out latency p99", "bcast_max.p99", "ms",
        target="≤ 1/2 of tokio's",
        verdict=floor_ok(le(a("bcast_max.p99"), mul(b("bcast_max.p99"), 0.5)),
                         mul(b("bcast_max.p99"), 0.5), bare_bc.get("max.p99")))
    row("broadcast max: deliveries missing", "bcast_max.missing", "int")
row("interference: server waiting for its core / any task waiting for a CPU (PSI), % of phase",
    "interference", "str", ratio=False)
row("RSS after the clients left, vs before", "rss_after_pct", "pct", ratio=False,
    target="within 10 %", verdict=ok(None if a("rss_after_pct") is None else abs(a("rss_after_pct")) <= 10))
row("descriptors after the clients left, vs before", "fds_after", "int", ratio=False,
    target="0", verdict=ok(None if a("fds_after") is None else a("fds_after") <= 0))
row("memory per connection, server side (RSS + ½ Slab pair)", "mem_per_conn", "B")
for gib in (24, 128, 512):
    for s in shown:
        mp = M[s].get("mem_per_conn")
        M[s][f"proj{gib}"] = (gib * 2**30 / mp) if mp and mp > 0 else None
    row(f"projected connections in {gib} GiB (memory only)", f"proj{gib}", "M")

print(f"## ws-ceiling compare: {', '.join(shown) or 'no server ran'}")
print()
print(f"{machine.get('date', '')} · {machine.get('nproc', '?')} cores ({machine.get('cpu', '?')}), "
      f"kernel {machine.get('kernel', '?')}, {machine.get('ram', '?')} RAM · server on cores "
      f"{machine.get('server_cores', '?')}, load generators on cores {machine.get('loadgen_cores', '?')} · "
      f"{machine.get('netns', '?')} network namespace, ports {machine.get('port_range', '?')} · "
      f"`{machine.get('command', '')}` · "
      + (f"binaries {machine['binaries']}" if "binaries" in machine else f"git {machine.get('git', '?')}"))
print()
if shown:
    hdr = ["figure"] + shown
    if len(shown) >= 2:
        hdr.append(f"{shown[0]} ÷ {B}")
    hdr += ["target (first server)", "met"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for label, vals, kind, r, target, verdict in rows:
        cells = [label] + [fmt(x, kind) for x in vals]
        if len(shown) >= 2:
            cells.append(f"{r:.2f}" if r is not None else "–")
        cells += [target, verdict or ""]
        print("| " + " | ".join(cells) + " |")
    print()

print("### Reference: physical limits, same run, same cores")
print()
print("| figure | value | note |")
print("|---|---|---|")
print(f"| bare TCP connect+accept, {get(ba, 'held') or n} held | {fmt(bare_connect, 'int')} /s | "
      f"epoll, one thread each (bare-tcp accept/connect); self-reported: accept {fmt(get(ba, 'rate'), 'int')}/s, "
      f"connect {fmt(get(bc, 'rate'), 'int')}/s |")
print(f"| bare TCP accept: CPU per accept | {fmt(mul(get(ba, 'cpu_us_per_accept'), 1), 'us')} | server core |")
print(f"| bare kernel Slab per connection (both ends) | {fmt(bare_slab, 'B')} | "
      f"/proc/meminfo Slab delta while held |")
print(f"| bare TCP echo, {machine.get('echo_connections', '?')} conns × {machine.get('payload', '?')} B, closed loop | "
      f"{fmt(bare_echo, 'int')} msgs/s | server CPU {fmt(mul(bare_echo_cpu_per_msg, 1e6), 'us')} per message |")
print(f"| bare WebSocket echo server driven by the bare client | {fmt(bare_ws_client, 'int')} msgs/s | bare-tcp echo-client --ws |")
head = div(lg_ws_rate, bare_ws_client)
print(f"| … driven by ws-loadgen (one core) | {fmt(lg_ws_rate, 'int')} msgs/s | "
      f"headroom {fmt(mul(head, 100), 'pct0')} of the bare client (target ≥ 90 %: {ok(ge(head, 0.9))}) |")
print(f"| … its CPU per message under that load | {fmt(mul(bare_ws_cpu_per_msg, 1e6), 'us')} | "
      f"{fmt(div(1, bare_ws_cpu_per_msg), 'int')} msgs per server CPU-second: the floor for the "
      f"servers' echo rows |")
print(f"| … at {machine.get('echo_rate', '?')} msgs/s (ws-loadgen): RTT p50 / p99 / p99.9 | "
      f"{fmt(div(bare_ws_fixed.get('p50'), 1000), 'ms')} / {fmt(bare_ws_p99, 'ms')} / "
      f"{fmt(bare_ws_p999, 'ms')} | the latency floor of this client, kernel and box |")
print(f"| … opening {fmt(bare_ws_open, 'int')} connections (ws-loadgen): CPU per handshake | "
      f"{fmt(mul(bare_ws_cpu_per_hs, 1e6), 'us')} | accept, read the request, SHA-1, write a "
      f"fixed 101: the floor for the servers' handshake row |")
if bare_bc or any(v(s, "bcast_fixed.rate") is not None for s in shown):
    subs = machine.get("subscribers", "?")
    print(f"| bare WebSocket broadcast server, {subs} subscribers, {machine.get('publish_rate', '?')} "
          f"pub/s ({machine.get('publishers', '?')} publishers): deliveries per server CPU-second | "
          f"{fmt(bare_bc.get('fixed.per_cpu_s'), 'int')} | {fmt(bare_bc.get('fixed.rate'), 'int')} "
          f"deliveries/s; every frame to every connection, one write per connection per epoll "
          f"round (bare-tcp echo-server --ws --broadcast): the floor for the servers' broadcast "
          f"fixed-rate rows |")
    print(f"| … its fan-out latency p50 / p99 | {fmt(bare_bc.get('fixed.p50'), 'ms')} / "
          f"{fmt(bare_bc.get('fixed.p99'), 'ms')} | the floor for the servers' broadcast "
          f"fixed-rate p99 row |")
    print(f"| … {machine.get('max_publishers', '?')} publishers in closed loop: deliveries per "
          f"server CPU-second | {fmt(bare_bc.get('max.per_cpu_s'), 'int')} | "
          f"{fmt(bare_bc.get('max.rate'), 'int')} deliveries/s: the floor for the servers' "
          f"broadcast max rows |")
    print(f"| … its fan-out latency p50 / p99 | {fmt(bare_bc.get('max.p50'), 'ms')} / "
          f"{fmt(bare_bc.get('max.p99'), 'ms')} | the floor for the servers' broadcast max p99 "
          f"row |")
for s in shown:
    if s != A and A and B:
        pass
if A and bare_connect:
    print(f"| {A} handshakes/s ÷ bare connect+accept | {fmt(mul(div(a('handshakes'), bare_connect), 100), 'pct0')} | target ≥ 50 % |")
if A and a("naive_handshakes"):
    print(f"| ws-loadgen ÷ tokio-ws-client handshakes/s against {A} | "
          f"{fmt(div(a('handshakes'), a('naive_handshakes')), 'ratio')} | target ≥ 2 "
          f"(tungstenite's default 128 KiB read buffer) |")
if A and a("naive4k_handshakes"):
    print(f"| ws-loadgen ÷ tokio-ws-client with a 4 KiB read buffer | "
          f"{fmt(div(a('handshakes'), a('naive4k_handshakes')), 'ratio')} | the same client, "
          f"one setting changed |")
if A and bare_echo:
    print(f"| {A} echo msgs/s ÷ bare TCP echo | {fmt(mul(div(a('echo_max.rate'), bare_echo), 100), 'pct0')} | target ≥ 80 % |")
print()
notes = [l for l in text("notes.txt").splitlines() if l.strip()]
for s in shown:
    for ph in ("idle", "echo_max", "echo_fixed", "bcast_fixed", "bcast_max"):
        k = M[s].get(f"{ph}.ksoft_pct")
        if k is not None and k > 2:
            notes.append(f"{s}: {k:.1f} % of its CPU time in the {ph} phase ran in ksoftirqd on "
                         f"its core (network work the kernel deferred); it is counted as the "
                         f"server's")
        w = M[s].get(f"{ph}.wait_pct")
        if w is not None and w > 2:
            notes.append(f"{s} was runnable but waiting for its core {w:.1f} % of the {ph} "
                         f"phase (other jobs on that core, or its own threads): that phase's "
                         f"figures are disturbed")
if notes:
    print("Notes:")
    for l in notes:
        print(f"- {l}")
    print()
print(f"Handshake and connect rates are timed for every client the same way: TCP sockets in use "
      f"(/proc/net/sockstat) polled every 2 ms, rate between 1 % and 99 % of the rise. Kernel "
      f"memory counts both ends of each loopback connection; the projection counts the server's "
      f"RSS plus half of it. Server CPU is its process time plus the ksoftirqd time of its "
      f"cores (network work the kernel deferred). Echo and broadcast latencies leave out messages intended in the "
      f"first {machine.get('warmup_s', '0')} s of each run (ws-loadgen --warmup; counted, not "
      f"timed). Run time {machine.get('elapsed_s', '?')} s.")
PY
echo >&2
if [ "$LOADGEN_SECTION" = 1 ]; then
    echo | tee -a "$OUT/compare.md"
    loadgen_section | tee -a "$OUT/compare.md"
fi
if [ "$TLS_SECTION" = 1 ]; then
    echo | tee -a "$OUT/compare.md"
    tls_section | tee -a "$OUT/compare.md"
fi
if [ "$SCRIPT_SECTION" = 1 ]; then
    echo | tee -a "$OUT/compare.md"
    script_section | tee -a "$OUT/compare.md"
fi
echo "report: $OUT/compare.md (raw JSON and samples alongside)" >&2
