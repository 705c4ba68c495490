#!/usr/bin/env bash
# Autobahn|Testsuite conformance run: the suite's fuzzingclient against each server's /ws.
#
#   scripts/autobahn.sh [options] [ws-server|ws-server-tokio|all]     (default: all)
#
# For each server: builds the release binary, starts it on a free loopback port, runs every
# case of the suite against ws://127.0.0.1:PORT/ws, writes the HTML/JSON reports to
# reports/autobahn-<server>/ (index.html to browse), prints one summary line, and fails if a
# case FAILED or is worse than scripts/autobahn/expected-<server>.json says
# (OK > NON-STRICT > INFORMATIONAL > UNIMPLEMENTED > FAILED, for behavior and close behavior).
# `all` runs the servers whose binary target exists and says which it skipped.
#
# The suite (autobahntestsuite 0.8.2) runs only on Python 2.7: it is installed once, with
# every version pinned (scripts/autobahn/requirements-py27.txt), into a virtualenv cached at
# $AUTOBAHN_VENV (default ~/.cache/ws-ceiling/autobahn-venv); later runs reuse it until the
# pins change. See docs/CONFORMANCE.md.
#
# Options:
#   --update-expected   rewrite scripts/autobahn/expected-<server>.json from this run
#                       (a FAILED case still fails the run)
#   --cases LIST        run only these cases (comma-separated, wildcards as in the suite,
#                       e.g. 5.*,6.4.1); expected cases that did not run are not required
#   --tls               over wss:// (a certificate made with openssl in the report
#                       directory; --tls-cert/--tls-key), reports in
#                       reports/autobahn-<server>-tls/, the same expectations
#   --no-build          use the release binaries already built
#   -h, --help          this text
# Environment:
#   AUTOBAHN_PYTHON27   the Python 2.7 interpreter to use (default: pyenv's newest 2.7.x,
#                       then python2.7 / python2 on PATH)
#   AUTOBAHN_VENV       where the suite's virtualenv lives
#   AUTOBAHN_TIMEOUT    seconds one server's run may take (default 900)
#   CARGO_TARGET_DIR    honoured, as cargo does, to find the binaries
#
# Exit status: 0 every server passed; 1 a failure or regression (or a build, install or
# start-up error); 2 bad usage; 3 skipped: no Python 2.7 on this machine.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

die_usage() {
    echo "autobahn.sh: $*" >&2
    echo "usage: scripts/autobahn.sh [--update-expected] [--cases LIST] [--tls] [--no-build] [ws-server|ws-server-tokio|all]" >&2
    exit 2
}

KNOWN_SERVERS=(ws-server ws-server-tokio)
target=""
update_expected=0
build=1
tls=0
cases=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --update-expected) update_expected=1 ;;
        --no-build) build=0 ;;
        --tls) tls=1 ;;
        --cases)
            [ $# -ge 2 ] || die_usage "--cases needs a list"
            cases="$2"
            shift
            ;;
        --cases=*) cases="${1#--cases=}" ;;
        -*) die_usage "unknown option $1" ;;
        *)
            [ -z "$target" ] || die_usage "one target at most (got $target and $1)"
            target="$1"
            ;;
    esac
    shift
done
target="${target:-all}"
case "$target" in
    all | ws-server | ws-server-tokio) ;;
    *) die_usage "unknown target '$target' (ws-server, ws-server-tokio or all)" ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/autobahn"
cd "$ROOT"

log() { printf 'autobahn: %s\n' "$*" >&2; }
fail() {
    log "$*"
    exit 1
}

command -v python3 >/dev/null || fail "python3 is needed to read the reports"

# ---------------------------------------------------------------- Python 2.7 and the suite

is_py27() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1
}

find_python27() {
    if [ -n "${AUTOBAHN_PYTHON27:-}" ]; then
        if is_py27 "$AUTOBAHN_PYTHON27"; then
            echo "$AUTOBAHN_PYTHON27"
            return 0
        fi
        log "AUTOBAHN_PYTHON27=$AUTOBAHN_PYTHON27 is not a working Python 2.7"
        return 1
    fi
    local roots=("${PYENV_ROOT:-$HOME/.pyenv}" /root/.pyenv) r p d
    for r in "${roots[@]}"; do
        [ -d "$r/versions" ] || continue
        # Newest 2.7.x first (plain CPython builds only: 2.7.18, not 2.7.18-debug).
        while read -r p; do
            if is_py27 "$r/versions/$p/bin/python"; then
                echo "$r/versions/$p/bin/python"
                return 0
            fi
        done < <(for d in "$r"/versions/2.7.*; do
            d="${d##*/}"
            [[ "$d" =~ ^2\.7\.[0-9]+$ ]] && echo "$d"
        done | sort -t. -k3,3nr)
    done
    for p in python2.7 python2; do
        if command -v "$p" >/dev/null && is_py27 "$(command -v "$p")"; then
            command -v "$p"
            return 0
        fi
    done
    return 1
}

if ! PY27="$(find_python27)"; then
    log "SKIPPED: no Python 2.7 found (looked at \$AUTOBAHN_PYTHON27, ${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.*, python2.7, python2 on PATH)."
    log "Autobahn|Testsuite runs only on Python 2.7: install one (e.g. 'pyenv install 2.7.18') or set AUTOBAHN_PYTHON27."
    exit 3
fi

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ws-ceiling"
VENV="${AUTOBAHN_VENV:-$CACHE/autobahn-venv}"
BOOTSTRAP="${VENV}-virtualenv"
STAMP="$VENV/.ws-ceiling-stamp"

# What the venv was built from: the interpreter and both pin files.
want_stamp="$(
    {
        echo "$PY27"
        "$PY27" -c 'import sys; print(sys.version)'
        cat "$HERE/bootstrap-py27.txt" "$HERE/requirements-py27.txt"
    } | sha256sum | cut -d' ' -f1
)"

ensure_venv() {
    mkdir -p "$(dirname "$VENV")"
    # One installer at a time (two checkouts may share the cache).
    exec 9>"$VENV.lock"
    flock 9
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && [ -x "$VENV/bin/wstest" ]; then
        exec 9>&-
        return 0
    fi
    log "installing Autobahn|Testsuite into $VENV (Python 2.7: $PY27; once, about a minute)"
    local ilog="$CACHE/autobahn-install.log"
    : >"$ilog"
    rm -rf "$VENV" "$BOOTSTRAP"
    # pip of the 2.7 interpreter installs the pinned virtualenv into a folder of its own.
    if ! "$PY27" -m pip --version >>"$ilog" 2>&1; then
        "$PY27" -m ensurepip >>"$ilog" 2>&1 || fail "no pip for $PY27 (see $ilog)"
    fi
    PYTHONWARNINGS=ignore "$PY27" -m pip install --disable-pip-version-check --no-deps \
        --target "$BOOTSTRAP" -r "$HERE/bootstrap-py27.txt" >>"$ilog" 2>&1 ||
        fail "could not install virtualenv for Python 2.7 (see $ilog)"
    PYTHONPATH="$BOOTSTRAP" "$PY27" -m virtualenv --no-periodic-update --no-download \
        "$VENV" >>"$ilog" 2>&1 || fail "could not create $VENV (see $ilog)"
    PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install --disable-pip-version-check \
        --no-deps -r "$HERE/requirements-py27.txt" >>"$ilog" 2>&1 ||
        fail "could not install the pinned suite (see $ilog; wsaccel and zope.interface build with gcc and Python.h)"
    PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip check >>"$ilog" 2>&1 ||
        fail "the pinned set is inconsistent: pip check failed (see $ilog)"
    PYTHONWARNINGS=ignore "$VENV/bin/wstest" --autobahnversion >>"$ilog" 2>&1 ||
        fail "wstest does not start (see $ilog)"
    echo "$want_stamp" >"$STAMP"
    exec 9>&-
}

ensure_venv

# ---------------------------------------------------------------- binaries

# Binary targets of the workspace (name package) and where cargo puts them.
meta="$(cargo metadata --format-version 1 --no-deps)" || fail "cargo metadata failed"
TARGET_DIR="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta")"
declare -A BIN_PKG=()
while read -r name pkg; do
    [ -n "$name" ] && BIN_PKG["$name"]="$pkg"
done < <(python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "bin" in t["kind"]:
            print(t["name"], p["name"])
' <<<"$meta")

servers=()
skipped=()
if [ "$target" = all ]; then
    for s in "${KNOWN_SERVERS[@]}"; do
        if [ -n "${BIN_PKG[$s]:-}" ]; then servers+=("$s"); else skipped+=("$s"); fi
    done
else
    [ -n "${BIN_PKG[$target]:-}" ] ||
        fail "$target: no binary target of that name in the workspace, nothing to test"
    servers=("$target")
fi
[ ${#servers[@]} -gt 0 ] || fail "none of ${KNOWN_SERVERS[*]} exists as a binary target"
for s in "${skipped[@]}"; do
    log "skipping $s: no binary target of that name in the workspace (yet)"
done

if [ "$build" = 1 ]; then
    build_args=()
    declare -A seen_pkg=()
    for s in "${servers[@]}"; do
        p="${BIN_PKG[$s]}"
        if [ -z "${seen_pkg[$p]:-}" ]; then
            build_args+=(-p "$p")
            seen_pkg[$p]=1
        fi
        build_args+=(--bin "$s")
    done
    log "cargo build --release ${build_args[*]}"
    cargo build --release "${build_args[@]}" || fail "build failed: ${servers[*]}"
fi
for s in "${servers[@]}"; do
    [ -x "$TARGET_DIR/release/$s" ] || fail "$TARGET_DIR/release/$s is missing (build it, or drop --no-build)"
done

# ---------------------------------------------------------------- one run per server

server_pid=""
stop_server() {
    [ -n "$server_pid" ] || return 0
    local pid="$server_pid" _ rc=0
    server_pid=""
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "server $pid still running 10 s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}
wstest_pid=""
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    if [ -n "$wstest_pid" ]; then
        kill -TERM "$wstest_pid" 2>/dev/null || true
        wait "$wstest_pid" 2>/dev/null || true
    fi
    stop_server || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Flags the server takes, each passed only if its --help lists it (the tokio baseline may
# not have all of them): one core; 16 MiB messages (9.* sends up to 16 MiB) and an outbound
# queue that holds the echo of one (the 1 MiB default closes a 8 MiB echo with 1008 "slow
# consumer" while the suite is still reading it: a resource policy, not the protocol under
# test); no idle drop and no server pings during the run (they would interleave with what a
# case expects); a short drain at the end.
server_args() {
    local bin="$1" help
    help="$("$bin" --help 2>&1 || true)"
    local args=(--listen 127.0.0.1:0)
    has() { grep -q -- "$1" <<<"$help"; }
    has --cores && args+=(--cores 0)
    has --max-message-size && args+=(--max-message-size 16777216)
    has --send-queue-bytes && args+=(--send-queue-bytes 33554432)
    has --idle-timeout && args+=(--idle-timeout 0)
    has --ping-interval && args+=(--ping-interval 0)
    has --drain-timeout && args+=(--drain-timeout 1)
    echo "${args[@]}"
}

summaries=()
overall=0

run_server() {
    local s="$1" bin="$TARGET_DIR/release/$1"
    local out="reports/autobahn-$s"
    [ "$tls" = 1 ] && out="reports/autobahn-$s-tls"
    local expected="scripts/autobahn/expected-$s.json"
    rm -rf "$out"
    mkdir -p "$out"

    local args
    read -r -a args <<<"$(server_args "$bin")"
    if [ "$tls" = 1 ]; then
        local c="$out/certs"
        mkdir -p "$c"
        if ! {
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -keyout "$c/key.pem" -out "$c/cert.pem" -days 2 -subj /CN=127.0.0.1 \
                -addext "subjectAltName=IP:127.0.0.1,DNS:localhost"
        } >"$c/openssl.log" 2>&1; then
            summaries+=("autobahn $s: FAIL: openssl could not make a certificate ($c/openssl.log)")
            return 1
        fi
        args+=(--tls-cert "$c/cert.pem" --tls-key "$c/key.pem")
    fi
    log "$s: starting $bin ${args[*]}"
    "$bin" "${args[@]}" >"$out/server.stdout" 2>"$out/server.stderr" &
    server_pid=$!
    local addr="" _
    for _ in $(seq 1 100); do
        if [ -s "$out/server.stdout" ]; then
            addr="$(head -n1 "$out/server.stdout" | sed -n 's/^listening on \(.*\)$/\1/p')"
            [ -n "$addr" ] && break
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        stop_server || true
        tail -n 20 "$out/server.stdout" "$out/server.stderr" >&2 || true
        summaries+=("autobahn $s: FAIL: the server did not print 'listening on ADDR' within 10 s")
        return 1
    fi
    local url="ws://$addr/ws"
    [ "$tls" = 1 ] && url="wss://$addr/ws"

    if ! python3 - "$HERE/fuzzingclient.json" "$out/fuzzingclient.json" "$ROOT/$out" "$s" "$url" "$cases" <<'EOF'
import json, sys
src, dst, outdir, agent, url, cases = sys.argv[1:]
text = open(src).read()
for k, v in (("@OUTDIR@", outdir), ("@AGENT@", agent), ("@URL@", url)):
    text = text.replace(k, v)
spec = json.loads(text)
if cases:
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
with open(dst, "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
EOF
    then
        stop_server || true
        summaries+=("autobahn $s: FAIL: could not write $out/fuzzingclient.json")
        return 1
    fi

    log "$s: running the fuzzingclient against $url (log: $out/wstest.log)"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    # In the background so that a signal to this script is handled at once (cleanup).
    (cd "$out" && PYTHONWARNINGS=ignore exec timeout "${AUTOBAHN_TIMEOUT:-900}" \
        "$VENV/bin/wstest" -m fuzzingclient -s fuzzingclient.json >wstest.log 2>&1) &
    wstest_pid=$!
    wait "$wstest_pid" || rc=$?
    wstest_pid=""
    t1=$(date +%s.%N)
    local dur
    dur=$(python3 -c "print('%.1f' % ($t1 - $t0))")

    local crashed=0 src=0
    kill -0 "$server_pid" 2>/dev/null || crashed=1
    stop_server || src=$?
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$out/wstest.log" >&2 || true
        summaries+=("autobahn $s: FAIL: wstest exited with status $rc after ${dur}s (124: over AUTOBAHN_TIMEOUT)")
        return 1
    fi

    local sum_args=(--index "$out/index.json" --agent "$s" --expected "$expected" --duration "$dur")
    [ -n "$cases" ] && sum_args+=(--partial)
    [ "$update_expected" = 1 ] && sum_args+=(--update-expected)
    local report prc=0
    report="$(python3 "$HERE/summarize.py" "${sum_args[@]}")" || prc=$?
    printf '%s\n' "$report" | tee "$out/summary.txt"
    summaries+=("$(head -n1 <<<"$report")")
    if [ "$crashed" = 1 ]; then
        tail -n 20 "$out/server.stderr" >&2 || true
        local why="see $out/server.stderr"
        grep -qi 'signal' "$out/server.stderr" 2>/dev/null &&
            why="it logged a signal: something outside this script stopped it; $why"
        summaries+=("autobahn $s: FAIL: the server died during the run ($why)")
        return 1
    fi
    if [ "$src" -ne 0 ]; then
        log "$s: warning: the server exited with status $src on SIGTERM (see $out/server.stderr)"
    fi
    return "$prc"
}

for s in "${servers[@]}"; do
    run_server "$s" || overall=1
done

echo
for line in "${summaries[@]}"; do
    echo "$line"
done
for s in "${skipped[@]}"; do
    echo "autobahn $s: SKIPPED: no binary target yet"
done
exit "$overall"
