#!/usr/bin/env bash
# Runs the libFuzzer targets (fuzz/fuzz_targets/*) for a bounded time each.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
# The committed seeds in fuzz/corpus/<target> are read, never written; what the fuzzer
# finds goes to fuzz/target/corpus-<target>, crashes to fuzz/artifacts/<target>.
# A crash fails the run: turn it into a regression test (common/tests/robustness.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
[ $# -gt 0 ] && shift
case "$secs" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;; esac
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(handshake frames)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)..."
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz needs nightly flags (-Zsanitizer); the stable toolchain accepts them this way.
export RUSTC_BOOTSTRAP=1

for t in "${targets[@]}"; do
    work="fuzz/target/corpus-$t"
    mkdir -p "$work"
    echo "==> fuzzing $t for ${secs}s"
    (cd fuzz && cargo fuzz run "$t" "../$work" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 15)
    # cargo fuzz exits non-zero on a crash; pipefail carries it here.
done
echo "fuzzing: ${#targets[@]} target(s), ${secs}s each, no crash"
