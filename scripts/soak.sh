#!/usr/bin/env bash
# Soak: hold the descriptor-limited maximum with heartbeats, then check nothing leaked.
#   scripts/soak.sh [--minutes M] [--connections N] [--server ws-server|ws-server-tokio]
# Defaults: 10 minutes, N = what one process's RLIMIT_NOFILE allows (minus a margin).
# Holds: 0 unexpected closes, heartbeat survival 100 %, server RSS flat (growth reported),
# open fds back to baseline once the clients have left. Exit 1 if any does not hold.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

minutes=10
conns=
server=ws-server
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --connections) conns=$2; shift 2 ;;
        --server) server=$2; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; sed -n '2,7p' "$0" >&2; exit 2 ;;
    esac
done
hard=$(ulimit -Hn)
# Both ends are local: each process holds N sockets; keep ~400 for everything else.
[ -n "$conns" ] || conns=$(( hard - 400 ))

WORK="$ROOT/reports/soak-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$WORK"
trap 'stop_server' EXIT
build_release
port=$(free_port)
start_server "$server" 0 "$port" --ping-interval 30 --idle-timeout 60
fds0=$(proc_fds "$SERVER_PID"); rss0=$(proc_rss "$SERVER_PID")
echo "soak: $server pid $SERVER_PID, $conns connections for $minutes min; baseline fds $fds0, RSS $rss0 B"

secs=$(( minutes * 60 ))
samples="$WORK/server-samples.csv"
echo "t_s,open,rss_bytes,fds" >"$samples"
(
    t=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [ $t -le $(( secs + 60 )) ]; do
        echo "$t,$(metric "$port" ws_connections_open),$(proc_rss "$SERVER_PID"),$(proc_fds "$SERVER_PID")" >>"$samples"
        sleep 10; t=$(( t + 10 ))
    done
) &
sampler=$!

# Ramp at 5000/s, hold with a heartbeat every 5 s (pong latency and survival measured).
taskset -c 1 "$BIN/ws-loadgen" run "ws://127.0.0.1:$port/ws" --cores 1 --scenario hold \
    -c "$conns" --connect-rate 5000 --ping-interval 5s -d "${secs}s" --progress plain \
    --reconnect-max-tries 0 --json "$WORK/loadgen.json" >"$WORK/loadgen.txt" 2>"$WORK/loadgen.progress" || true
kill "$sampler" 2>/dev/null || true

# Clients have left: the server must be back to its baseline descriptors.
# (Closing connections linger up to 2 s for the client's EOF; allow 10 s in all.)
for _ in $(seq 1 50); do
    [ "$(metric "$port" ws_connections_open)" = 0 ] && [ "$(metric "$port" ws_pending_connections)" -le 1 ] && break
    sleep 0.2
done
sleep 3
fds1=$(proc_fds "$SERVER_PID"); rss1=$(proc_rss "$SERVER_PID")

rc=0
python3 - "$WORK" "$conns" "$fds0" "$fds1" "$rss0" "$rss1" <<'PY' || rc=$?
import csv, json, sys
work, n, fds0, fds1, rss0, rss1 = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])
r = json.load(open(f"{work}/loadgen.json"))
c, hb = r["connections"], r["heartbeat"]
rows = [x for x in csv.DictReader(open(f"{work}/server-samples.csv")) if int(x["open"] or 0) >= n]
rss_held = [int(x["rss_bytes"]) for x in rows]
growth = (rss_held[-1] - rss_held[0]) if len(rss_held) > 1 else 0
checks = [
    ("connections held", c["peak_open"] == n and c["open_at_end"] == n, f'{c["open_at_end"]}/{n} open at the end, peak {c["peak_open"]}'),
    ("unexpected closes", c["drops"] == 0 and c["failed"] == 0, f'{c["drops"]} drops, {c["failed"]} failed connects'),
    ("heartbeat survival", hb["pings_sent"] > 0 and hb["pongs_received"] == hb["pings_sent"], f'{hb["pongs_received"]}/{hb["pings_sent"]} pongs'),
    ("server RSS while held", growth <= max(1 << 20, rss_held[0] // 20) if rss_held else False, f'{rss_held[0] if rss_held else 0} -> {rss_held[-1] if rss_held else 0} B (growth {growth} B over {len(rss_held)} samples)'),
    ("descriptors after", fds1 <= fds0, f"{fds0} before, {fds1} after"),
]
pong = r["latency"]["pong"]
lines = ["| check | held | figures |", "|---|---|---|"]
for name, ok, fig in checks:
    lines.append(f"| {name} | {'yes' if ok else 'NO'} | {fig} |")
lines.append(f"| pong latency | - | p50 {pong['p50']/1000:.2f} ms, p99 {pong['p99']/1000:.2f} ms, max {pong['max']/1000:.2f} ms |")
lines.append(f"| server RSS before/after | - | {rss0} B before, {rss1} B after the clients left |")
out = "\n".join(lines)
open(f"{work}/soak.md", "w").write(out + "\n")
print(out)
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY
echo "soak report: $WORK/soak.md"
exit $rc
