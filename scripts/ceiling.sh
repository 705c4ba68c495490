#!/usr/bin/env bash
# scripts/ceiling.sh — the complete local ceiling test, in one command:
#
#   1. builds ws-server and ws-loadgen (release),
#   2. runs scripts/tune.sh check (which kernel settings bound the run),
#   3. starts ws-server pinned to half of the cores,
#   4. runs `ws-loadgen doctor` (the prediction) and `ws-loadgen ceiling` on the other half:
#      ramp held connections until a limit stops them, hold the ceiling with heartbeats,
#      name the limit that stopped it and what to change,
#   5. writes everything into reports/ceiling-<timestamp>/ and stops the server.
#
# With --tls the same job runs over wss://: a CA and a certificate for localhost and
# 127.0.0.1 are generated (openssl) into the report directory, ws-server serves them, and
# ws-loadgen trusts that CA.
#
# The defaults finish in about a minute after the build on a 2-core machine. See usage().

set -u -o pipefail

readonly PROG=${0##*/}
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
readonly ROOT

MAX=25000
STEP=""
HOLD=20s
CONNECT_RATE=5000
PING=5s
SERVER_CORES=""
LOADGEN_CORES=""
KEEP_SERVER=0
BUILD=1
OUT=""
TLS=0
CONNECT_RATE_SET=0

usage() {
    cat <<EOF
usage: $PROG [--max N] [--step N|P%] [--hold DURATION] [--connect-rate R]
                   [--server-cores LIST] [--loadgen-cores LIST] [--keep-server]
                   [--tls] [--out DIR] [--no-build]
       $PROG -h | --help

Builds the release binaries, checks the kernel limits (scripts/tune.sh check), starts
ws-server on half of the cores, and runs ws-loadgen ceiling against it from the other half:
the report says how many connections this box held, which limit stopped it, what to change
next, and how many connections memory alone would allow.

options:
  --max N              stop ramping at N connections (default $MAX)
  --step N|P%          connections added per step (default --max / 10)
  --hold DURATION      how long the ceiling is held with heartbeats (default $HOLD)
  --connect-rate R     connects per second while ramping (default $CONNECT_RATE)
  --server-cores LIST  cores for ws-server (default: the first half of the allowed cores)
  --loadgen-cores LIST cores for ws-loadgen (default: the other half)
  --keep-server        leave ws-server running at the end (its pid and address are printed)
  --tls                over wss://: a generated CA and certificate (openssl, in DIR/certs),
                       ws-server --tls-cert/--tls-key, ws-loadgen --ca; default connect
                       rate 2000/s (a full TLS handshake costs the server far more than TCP)
  --out DIR            report directory (default reports/ceiling-<timestamp>)
  --no-build           use the binaries already built

environment: CARGO_TARGET_DIR (where the binaries are built, default target/),
WS_SERVER_BIN / WS_LOADGEN_BIN (use these binaries instead of building).
WS_TOKEN_SECRET / WS_API_KEY (a secured server: both the server and ws-loadgen read them,
so the ceiling is measured with a signed token per connection and a keyed /metrics).

Writes into the report directory: report.txt (the ceiling report), report.json (every
figure), report.html (plots), doctor.txt (the prediction), tune-check.txt, server.log.
Exit status: that of ws-loadgen ceiling (0 ceiling found and held, 1 not confirmed or
interrupted, 2 could not run), or 2 when the setup fails.
EOF
}

die() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    exit 2
}

die_usage() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    usage >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    a=$1
    v=""
    case $a in
        --*=*) v=${a#*=}; a=${a%%=*} ;;
        --max | --step | --hold | --connect-rate | --server-cores | --loadgen-cores | --out)
            [[ $# -ge 2 ]] || die_usage "$a needs a value"
            v=$2
            shift ;;
    esac
    case $a in
        -h | --help) usage; exit 0 ;;
        --max) MAX=$v ;;
        --step) STEP=$v ;;
        --hold) HOLD=$v ;;
        --connect-rate) CONNECT_RATE=$v; CONNECT_RATE_SET=1 ;;
        --tls) TLS=1 ;;
        --server-cores) SERVER_CORES=$v ;;
        --loadgen-cores) LOADGEN_CORES=$v ;;
        --out) OUT=$v ;;
        --keep-server) KEEP_SERVER=1 ;;
        --no-build) BUILD=0 ;;
        *) die_usage "unknown argument: $1" ;;
    esac
    shift
done
[[ $MAX =~ ^[0-9]+$ && $MAX -gt 0 ]] || die_usage "--max must be a positive whole number, not '$MAX'"
[[ -z $STEP ]] && STEP=$(((MAX + 9) / 10))
[[ $TLS -eq 1 && $CONNECT_RATE_SET -eq 0 ]] && CONNECT_RATE=2000

# --- cores ------------------------------------------------------------------------------

# "0-3,6" -> "0 1 2 3 6"
expand_cores() {
    local part lo hi out=() parts
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
            for ((; lo <= hi; lo++)); do out+=("$lo"); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            out+=("$part")
        fi
    done
    echo "${out[*]}"
}

allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
read -r -a CORES <<<"$(expand_cores "${allowed:-0}")"
[[ ${#CORES[@]} -gt 0 ]] || CORES=(0)
if [[ -z $SERVER_CORES || -z $LOADGEN_CORES ]]; then
    if [[ ${#CORES[@]} -eq 1 ]]; then
        echo "$PROG: only one core (${CORES[0]}): server and load generator share it; the figures will be lower" >&2
        half=1
        [[ -z $SERVER_CORES ]] && SERVER_CORES=${CORES[0]}
        [[ -z $LOADGEN_CORES ]] && LOADGEN_CORES=${CORES[0]}
    else
        half=$((${#CORES[@]} / 2))
        s=("${CORES[@]:0:half}") l=("${CORES[@]:half}")
        [[ -z $SERVER_CORES ]] && SERVER_CORES=$(IFS=,; echo "${s[*]}")
        [[ -z $LOADGEN_CORES ]] && LOADGEN_CORES=$(IFS=,; echo "${l[*]}")
    fi
fi

# --- build ------------------------------------------------------------------------------

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER_BIN=${WS_SERVER_BIN:-$TARGET_DIR/release/ws-server}
LOADGEN_BIN=${WS_LOADGEN_BIN:-$TARGET_DIR/release/ws-loadgen}
if [[ $BUILD -eq 1 && -z ${WS_SERVER_BIN:-} && -z ${WS_LOADGEN_BIN:-} ]]; then
    echo "==> building release binaries (cargo build --release -p ws-server -p ws-loadgen)"
    (cd "$ROOT" && cargo build --release -p ws-server --bin ws-server -p ws-loadgen --bin ws-loadgen) ||
        die "the build failed"
fi
[[ -x $SERVER_BIN ]] || die "no ws-server binary at $SERVER_BIN (build it, or set WS_SERVER_BIN)"
[[ -x $LOADGEN_BIN ]] || die "no ws-loadgen binary at $LOADGEN_BIN (build it, or set WS_LOADGEN_BIN)"

if [[ -z $OUT ]]; then
    OUT=$ROOT/reports/ceiling-$(date +%Y%m%d-%H%M%S)
fi
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd -P)

# --- kernel limits ----------------------------------------------------------------------

echo "==> scripts/tune.sh check --connections $MAX (full table: $OUT/tune-check.txt)"
tune_rc=0
bash "$ROOT/scripts/tune.sh" check --connections "$MAX" --ends 2 >"$OUT/tune-check.txt" 2>&1 || tune_rc=$?
# The summary line and the LOW rows; the table is in the file.
grep -E '^[0-9]+ connections:|^  LOW ' "$OUT/tune-check.txt" || true
[[ $tune_rc -eq 1 ]] && echo "    (LOW settings stop the run before $MAX: the ceiling below names the first one it meets)"

# --- server -----------------------------------------------------------------------------

SERVER_PID=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        if [[ $KEEP_SERVER -eq 1 ]]; then
            echo "==> ws-server left running: pid $SERVER_PID, ${ADDR:-?} (kill $SERVER_PID to stop it)"
        else
            kill -TERM "$SERVER_PID" 2>/dev/null
            local i
            for ((i = 0; i < 100; i++)); do
                kill -0 "$SERVER_PID" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$SERVER_PID" 2>/dev/null; then
                kill -KILL "$SERVER_PID" 2>/dev/null
            fi
            wait "$SERVER_PID" 2>/dev/null
            echo "==> ws-server stopped"
        fi
    fi
    exit "$rc"
}
# Ctrl-C reaches the whole foreground process group: ws-loadgen ceiling then stops, writes
# what it has, and the script still prints where the report is before stopping the server.
INTERRUPTED=0
trap cleanup EXIT
trap 'INTERRUPTED=1' INT
trap 'exit 143' TERM
interrupted_exit() {
    if [[ $INTERRUPTED -eq 1 ]]; then
        echo "==> interrupted; what was written so far is in $OUT"
        exit 130
    fi
}

TLS_SERVER_ARGS=()
TLS_CLIENT_ARGS=()
if [[ $TLS -eq 1 ]]; then
    command -v openssl >/dev/null 2>&1 || die "--tls needs the openssl command to make a certificate"
    C=$OUT/certs
    mkdir -p "$C" || die "cannot create $C"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/ca.key" \
            -out "$C/ca.pem" -days 7 -subj "/CN=ws-ceiling local CA" &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/key.pem" \
                -out "$C/server.csr" -subj "/CN=localhost" &&
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$C/ext.cnf" &&
            openssl x509 -req -in "$C/server.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial \
                -out "$C/cert.pem" -days 7 -extfile "$C/ext.cnf"
    } >"$C/openssl.log" 2>&1 || die "openssl could not make the certificate (see $C/openssl.log)"
    TLS_SERVER_ARGS=(--tls-cert "$C/cert.pem" --tls-key "$C/key.pem")
    TLS_CLIENT_ARGS=(--ca "$C/ca.pem")
    echo "==> wss://: certificate for localhost and 127.0.0.1 in $C (CA: ca.pem)"
fi

echo "==> starting ws-server on core(s) $SERVER_CORES"
# In its own session (when setsid is there), so a Ctrl-C reaches the load generator, which
# still reports on the connections it holds, and not the server, which cleanup stops.
SETSID=()
command -v setsid >/dev/null 2>&1 && SETSID=(setsid)
"${SETSID[@]}" taskset -c "$SERVER_CORES" "$SERVER_BIN" --listen 127.0.0.1:0 --cores "$SERVER_CORES" \
    "${TLS_SERVER_ARGS[@]}" >"$OUT/server.log" 2>&1 </dev/null &
SERVER_PID=$!
ADDR=""
for ((i = 0; i < 100; i++)); do
    ADDR=$(awk '/^listening on / {print $3; exit}' "$OUT/server.log" 2>/dev/null)
    [[ -n $ADDR ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $ADDR ]]; then
    cat "$OUT/server.log" >&2
    die "ws-server did not start (log: $OUT/server.log)"
fi
URL=ws://$ADDR/ws
# Over TLS the name the certificate carries, so the handshake is verified as a client would.
[[ $TLS -eq 1 ]] && URL=wss://localhost:${ADDR##*:}/ws
# The admin listener (/metrics) is on a port of its own, printed after the public one.
ADMIN=""
for ((i = 0; i < 50; i++)); do
    ADMIN=$(awk '/^admin on / {print $3; exit}' "$OUT/server.log" 2>/dev/null)
    [[ -n $ADMIN ]] && break
    sleep 0.1
done
ADMIN_ARGS=()
[[ -n $ADMIN ]] && ADMIN_ARGS=(--admin-url "http://$ADMIN")
interrupted_exit
sed -n '2,3p' "$OUT/server.log" | sed 's/^/    /'

# --- prediction and ceiling -------------------------------------------------------------

echo "==> ws-loadgen doctor $URL --connections $MAX (full answer: $OUT/doctor.txt)"
"$LOADGEN_BIN" doctor "$URL" --connections "$MAX" --server-pid "$SERVER_PID" \
    --connect-rate "$CONNECT_RATE" --cores "$LOADGEN_CORES" --loadgen-processes auto "${ADMIN_ARGS[@]}" \
    "${TLS_CLIENT_ARGS[@]}" \
    --json "$OUT/doctor.json" >"$OUT/doctor.txt" 2>&1
grep -E '^largest feasible N' "$OUT/doctor.txt" | sed 's/^/    /'
interrupted_exit

echo "==> ws-loadgen ceiling $URL --max $MAX --step $STEP --hold $HOLD on core(s) $LOADGEN_CORES"
rc=0
taskset -c "$LOADGEN_CORES" "$LOADGEN_BIN" ceiling "$URL" --max "$MAX" --step "$STEP" --hold "$HOLD" \
    --connect-rate "$CONNECT_RATE" --ping-interval "$PING" --cores "$LOADGEN_CORES" \
    --server-pid "$SERVER_PID" --progress plain "${ADMIN_ARGS[@]}" "${TLS_CLIENT_ARGS[@]}" \
    --json "$OUT/report.json" --html "$OUT/report.html" | tee -i "$OUT/report.txt"
rc=${PIPESTATUS[0]}

echo
[[ $INTERRUPTED -eq 1 ]] && echo "==> interrupted: the report covers the run up to Ctrl-C"
echo "==> report: $OUT/report.txt (figures: report.json, plots: report.html; also doctor.txt, tune-check.txt, server.log)"
exit "$rc"
