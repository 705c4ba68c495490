#!/usr/bin/env bash
# Runs every test of ws-ceiling: formatting, lints, script tests, conformance, cargo tests.
# This is README's second command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "independent peers the tests talk to (Python websockets)"
python3 -c "import websockets" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check websockets
python3 -c "import websockets; print('websockets', websockets.__version__)"
# openssl: the wss tests' s_client peer and the certificates of autobahn.sh/ceiling.sh --tls.
command -v openssl >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }
openssl version
# Chromium: the HTML report tests render every page headless (they skip with a note
# where it cannot be installed).
command -v chromium >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } ||
    echo "note: chromium could not be installed: the HTML rendering tests will skip"
command -v chromium >/dev/null 2>&1 && chromium --version || true

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "no import circles in loadgen/src (files and layers)"
python3 scripts/check-layers.py loadgen/src

step "build (debug, all targets)"
cargo build --workspace --all-targets

if [ -f scripts/tests/test_tune.sh ]; then
    step "scripts/tune.sh tests"
    bash scripts/tests/test_tune.sh
fi

if [ -f scripts/autobahn.sh ]; then
    step "Autobahn|Testsuite"
    rc=0
    bash scripts/autobahn.sh all || rc=$?
    if [ "$rc" -eq 3 ]; then
        echo "Autobahn skipped: no Python 2.7 on this machine"
    elif [ "$rc" -ne 0 ]; then
        exit "$rc"
    fi
    if [ "$rc" -eq 0 ]; then
        step "Autobahn|Testsuite over wss:// (ws-server, the same expectations)"
        bash scripts/autobahn.sh --tls --no-build ws-server
    fi
fi

step "fault runs (quick) and a 2-minute soak (full: scripts/faults.sh, scripts/soak.sh)"
bash scripts/faults.sh --quick
bash scripts/soak.sh --minutes 2

step "fuzzing (short, bounded; longer runs: scripts/fuzz.sh 600)"
bash scripts/fuzz.sh "${WS_CEILING_FUZZ_SECONDS:-15}"

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line for the whole run (cargo's own last line is an empty doc-test binary's).
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
echo "summary: $passed passed, $failed failed"
