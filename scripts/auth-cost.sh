#!/usr/bin/env bash
# What a signed token costs the server per handshake: the server's CPU time for N
# connections opened (as fast as they come), held a moment and closed, with and without
# --token-secret, in alternating rounds on a fresh server each time, measured side by side
# in one run. ws-loadgen mints the tokens (--token-secret), on its own core.
#
# usage: scripts/auth-cost.sh [--server ws-server|ws-server-tokio] [--connections N]
#                             [--rounds R] [--token-via header|query]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

SERVER=ws-server
N=8000
ROUNDS=3
VIA=header
while [ $# -gt 0 ]; do
    case $1 in
    --server) SERVER=$2; shift 2 ;;
    --connections) N=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --token-via) VIA=$2; shift 2 ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "auth-cost.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $N =~ ^[0-9]+$ && $N -gt 0 && $N -le 18000 ]] ||
    { echo "--connections must be 1..18000 (the open-files limit here is 20000)" >&2; exit 2; }
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 && $ROUNDS -le 20 ]] || { echo "--rounds must be 1..20" >&2; exit 2; }
SC=0
LC=1
[ "$(nproc)" -ge 2 ] || LC=0
WORK=$(mktemp -d)
trap 'stop_server; rm -rf "$WORK"' EXIT
build_release

SECRET=auth-cost-secret-of-32-bytes-xxx
# CPU ns of every thread of PID (schedstat: ns resolution, unlike the 10 ms of /proc/PID/stat).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s}'; }

# one MODE: prints the server's CPU µs per connection for one round.
one() {
    local mode=$1 port sargs=() largs=()
    if [ "$mode" = token ]; then
        sargs=(--token-secret "$SECRET")
        largs=(--token-secret "$SECRET" --token-via "$VIA")
    fi
    port=$(free_port)
    start_server "$SERVER" "$SC" "$port" --ping-interval 0 --idle-timeout 0 "${sargs[@]}"
    sleep 0.3
    local t0 t1
    t0=$(cpu_ns "$SERVER_PID")
    taskset -c "$LC" "$BIN/ws-loadgen" "ws://127.0.0.1:$port/ws" --scenario hold -c "$N" \
        --connect-rate 0 -d 2s --ping-interval 60s --cores "$LC" --progress off \
        --min-connections "$N" --json "$WORK/$mode.json" "${largs[@]}" >"$WORK/$mode.out" 2>&1 ||
        { cat "$WORK/$mode.out" >&2; echo "auth-cost.sh: the $mode round failed" >&2; exit 1; }
    sleep 0.5 # the closes
    t1=$(cpu_ns "$SERVER_PID")
    stop_server
    python3 -c "print(f'{($t1 - $t0) / 1e3 / $N:.2f}')"
}

echo "# $SERVER: server CPU µs per connection (accept + upgrade + close), $N connections per round, token via $VIA"
echo "round,plain_us,token_us"
plain=()
token=()
for r in $(seq 1 "$ROUNDS"); do
    p=$(one plain)
    t=$(one token)
    plain+=("$p")
    token+=("$t")
    echo "$r,$p,$t"
done
python3 - "${plain[*]}" "${token[*]}" <<'PY'
import statistics, sys
p = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
mp, mt = statistics.median(p), statistics.median(t)
print(f"median: plain {mp:.2f} µs, token {mt:.2f} µs per connection; "
      f"token check +{mt - mp:.2f} µs per handshake (ratio {mt / mp:.3f})")
PY
