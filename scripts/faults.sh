#!/usr/bin/env bash
# Fault runs: push the server into its limits on purpose and check what must hold.
#   scripts/faults.sh [--quick] [--server ws-server|ws-server-tokio]
# Writes reports/faults-<timestamp>/faults.md (a table: fault, what must hold, held, figures)
# and the raw loadgen JSON; exit 1 if anything that must hold did not.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

quick=0
server=ws-server
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --server) server=$2; shift 2 ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; sed -n '2,5p' "$0" >&2; exit 2 ;;
    esac
done
if [ $quick = 1 ]; then loris=1000; held=1000; killn=2000; else loris=5000; held=3000; killn=10000; fi

WORK="$ROOT/reports/faults-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$WORK"
trap 'stop_server; [ -n "${LG_PID:-}" ] && kill -KILL "$LG_PID" 2>/dev/null; true' EXIT
build_release
LG="$BIN/ws-loadgen"
FC="python3 $ROOT/scripts/lib/faultclients.py"
rows=()
failed=0
row() { # fault, must hold, ok(0/1), figures
    local mark=yes
    [ "$3" = 1 ] || { mark=NO; failed=1; }
    rows+=("| $1 | $2 | $mark | $4 |")
    echo "  $1: $mark ($4)"
}
loadgen() { taskset -c 1 "$LG" run --cores 1 --progress off --reconnect-max-tries 0 "$@"; }

# 1. Descriptor exhaustion on the server.
echo "1/6 descriptor exhaustion"
port=$(free_port)
# Lowered from the start: io_uring samples RLIMIT_NOFILE when an accept is armed, so a
# prlimit on the running server would only bite once its multishot accept re-arms.
cap=$(( held / 2 + 200 ))
SERVER_NOFILE=$cap start_server "$server" 0 "$port" --ping-interval 0 --idle-timeout 0
loadgen "ws://127.0.0.1:$port/ws" --scenario hold -c "$held" --connect-rate 5000 --ping-interval 2s \
    --handshake-timeout 3s -d 12s --json "$WORK/exhaust.json" >/dev/null 2>&1 || true
loadgen "ws://127.0.0.1:$port/ws" --scenario echo -c 100 --rate 1000 -d 3s --json "$WORK/exhaust-after.json" >/dev/null 2>&1 || true
emfile=$(metric "$port" ws_accept_errors_total 'errno="EMFILE"')
read -r est pings pongs < <(json "$WORK/exhaust.json" 'r["connections"]["established"], r["heartbeat"]["pings_sent"], r["heartbeat"]["pongs_received"]' | tr -d '(),')
read -r aest asent arecv < <(json "$WORK/exhaust-after.json" 'r["connections"]["established"], r["messages"]["sent"], r["messages"]["received"]' | tr -d '(),')
ok=0; [ "$emfile" -gt 0 ] && [ "$pings" -gt 0 ] && [ "$pings" = "$pongs" ] && [ "$aest" = 100 ] && [ "$asent" = "$arecv" ] && ok=1
row "descriptor exhaustion (server RLIMIT_NOFILE $cap, $held clients)" \
    "existing connections served; accepts again once fds free" $ok \
    "$est established, EMFILE accept errors $emfile, pongs $pongs/$pings during exhaustion; afterwards 100/100 new connections, $arecv/$asent echoes"
stop_server

# 2. kill -9 of the load generator.
echo "2/6 kill -9 of the load generator"
port=$(free_port)
start_server "$server" 0 "$port" --ping-interval 3 --idle-timeout 10
taskset -c 1 "$LG" run "ws://127.0.0.1:$port/ws" --cores 1 --progress off --scenario hold -c "$killn" \
    --connect-rate 10000 -d 60s >/dev/null 2>&1 &
LG_PID=$!
for _ in $(seq 1 150); do [ "$(metric "$port" ws_connections_open)" -ge "$killn" ] && break; sleep 0.2; done
before=$(metric "$port" ws_connections_open)
kill -KILL "$LG_PID"; wait "$LG_PID" 2>/dev/null || true; LG_PID=
t0=$(date +%s.%N)
for _ in $(seq 1 150); do [ "$(metric "$port" ws_connections_open)" = 0 ] && break; sleep 0.1; done
after=$(metric "$port" ws_connections_open)
secs=$(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t0")
ok=0; [ "$before" = "$killn" ] && [ "$after" = 0 ] && ok=1
row "kill -9 of the load generator ($killn connections)" "server reclaims every connection within the idle timeout (10 s)" $ok \
    "$before open before, $after open ${secs}s after"
stop_server

# 3. Slowloris handshakes while real clients are served.
echo "3/6 slowloris"
port=$(free_port)
start_server "$server" 0 "$port" --handshake-timeout 3
$FC slowloris "$port" "$loris" 15 >"$WORK/slowloris.out" &
fc=$!
sleep 1
loadgen "ws://127.0.0.1:$port/ws" --scenario echo -c 200 --rate 2000 -d 4s --json "$WORK/slowloris-real.json" >/dev/null 2>&1 || true
wait "$fc" || true
closed=$(cat "$WORK/slowloris.out")
tclose=$(metric "$port" ws_handshake_timeout_closes_total)
read -r rest rsent rrecv < <(json "$WORK/slowloris-real.json" 'r["connections"]["established"], r["messages"]["sent"], r["messages"]["received"]' | tr -d '(),')
ok=0; [ "$closed" = "$loris" ] && [ "$tclose" -ge "$loris" ] && [ "$rest" = 200 ] && [ "$rsent" = "$rrecv" ] && ok=1
row "$loris slowloris handshakes" "closed at the handshake timeout; real clients still served" $ok \
    "$closed/$loris closed by the server (timeout closes $tclose); real clients 200/200 connected, $rrecv/$rsent echoes"
stop_server

# 4. A flood of oversized frames.
echo "4/6 oversized frames"
port=$(free_port)
start_server "$server" 0 "$port"
rss0=$(proc_rss "$SERVER_PID")
n=$([ $quick = 1 ] && echo 100 || echo 500)
got=$($FC oversized "$port" "$n")
rss1=$(proc_rss "$SERVER_PID")
ok=0; [ "$got" = "$n" ] && [ $(( rss1 - rss0 )) -lt $(( 16 << 20 )) ] && ok=1
row "$n clients announcing 1 GiB frames" "closed with 1009, no memory spike" $ok \
    "$got/$n got 1009; RSS $rss0 -> $rss1 B"
stop_server

# 5. Stalled readers during a broadcast.
echo "5/6 stalled readers during broadcast"
port=$(free_port)
start_server "$server" 0 "$port" --ping-interval 0 --send-queue-bytes 262144
$FC stalled "$port" 20 "/broadcast?room=s" 10 >"$WORK/stalled.out" &
fc=$!
sleep 1
rss0=$(proc_rss "$SERVER_PID")
loadgen "ws://127.0.0.1:$port/broadcast?room=s" --scenario broadcast -c 300 --publishers 1 --rate 200 \
    --payload 8192 -d 10s --json "$WORK/stalled-bcast.json" >/dev/null 2>&1 || true
wait "$fc" || true
rss1=$(proc_rss "$SERVER_PID")
sclosed=$(cat "$WORK/stalled.out")
slow=$(metric "$port" ws_slow_consumer_closes_total)
read -r exp recv p99 < <(json "$WORK/stalled-bcast.json" 'r["broadcast"]["deliveries_expected"], r["broadcast"]["deliveries_received"], round(r["broadcast"]["fanout_latency"]["p99"]/1000,1)' | tr -d '(),')
ok=0; [ "$sclosed" = 20 ] && [ "$exp" = "$recv" ] && [ "$exp" -gt 0 ] && ok=1
row "20 stalled readers in a 300-subscriber broadcast (8 KiB, 200 msgs/s)" "stalled ones closed (1008); others get everything" $ok \
    "$sclosed/20 stalled closed (slow-consumer closes $slow); others $recv/$exp deliveries, fan-out p99 ${p99} ms; RSS $rss0 -> $rss1 B"
stop_server

# 6. SIGTERM under load.
echo "6/6 SIGTERM under load"
port=$(free_port)
start_server "$server" 0 "$port" --drain-timeout 5
taskset -c 1 "$LG" run "ws://127.0.0.1:$port/ws" --cores 1 --progress off --reconnect-max-tries 0 --scenario echo \
    -c 1000 --connect-rate 10000 --rate 5000 -d 20s --json "$WORK/sigterm.json" >/dev/null 2>&1 &
LG_PID=$!
for _ in $(seq 1 100); do [ "$(metric "$port" ws_connections_open)" -ge 1000 ] && break; sleep 0.1; done
sleep 2
kill -TERM "$SERVER_PID"
rc=0; wait "$SERVER_PID" || rc=$?
SERVER_PID=
wait "$LG_PID" 2>/dev/null || true; LG_PID=
read -r c1001 drops < <(json "$WORK/sigterm.json" 'r["close_codes"].get("1001", 0), r["connections"]["drops"]' | tr -d '(),')
ok=0; [ "$rc" = 0 ] && [ "$c1001" = 1000 ] && ok=1
row "SIGTERM with 1000 clients at 5000 msgs/s" "every client gets 1001; exit 0" $ok \
    "$c1001/1000 got 1001, exit code $rc, loadgen drops $drops"

{
    echo "| fault | what must hold | held | figures |"
    echo "|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} >"$WORK/faults.md"
echo
cat "$WORK/faults.md"
echo "faults report: $WORK/faults.md"
exit $failed
