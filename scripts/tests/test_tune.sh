#!/usr/bin/env bash
# Tests for scripts/tune.sh. Nothing here changes the host for good: sysctls are read and
# written in fake trees (WS_CEILING_SYSCTL_ROOT), read-only keys come from a read-only bind
# mount inside a private mount namespace, and the real-kernel test runs in a network
# namespace this script creates and deletes. Tests that need a facility the box lacks
# (unshare, setpriv, prlimit, ip netns) are counted as skipped.
#
#   scripts/tests/test_tune.sh        last line: "N passed, M failed, S skipped"; exit 1 on failure

# pass() always succeeds, so "cond && pass ... || fail ..." is an if/else here.
# shellcheck disable=SC2015

set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TUNE=$HERE/../tune.sh
TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_tune.XXXXXX")
chmod 755 "$TMP"
NETNS=""
BG_PIDS=()

cleanup() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    [[ -n $NETNS ]] && ip netns del "$NETNS" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

PASS=0 FAIL=0 SKIP=0
pass() { PASS=$((PASS + 1)); echo "ok   - $1"; }
fail() {
    FAIL=$((FAIL + 1))
    echo "FAIL - $1"
    [[ -n ${2:-} ]] && printf '%s\n' "$2" | sed 's/^/       | /'
    return 0
}
skip() { SKIP=$((SKIP + 1)); echo "skip - $1"; }

# Runs the command; OUT, ERR, RC hold what it did.
run() {
    OUT=$("$@" 2>"$TMP/stderr")
    RC=$?
    ERR=$(<"$TMP/stderr")
}

expect_rc() { # name want
    if [[ $RC -eq $2 ]]; then pass "$1 (exit $2)"; else fail "$1: exit $RC, want $2" "$OUT"$'\n'"$ERR"; fi
}
expect_out() { # name fixed-string
    if grep -qF -- "$2" <<<"$OUT"; then pass "$1"; else fail "$1: output lacks '$2'" "$OUT"$'\n'"$ERR"; fi
}
expect_no_out() {
    if grep -qF -- "$2" <<<"$OUT"; then fail "$1: output has '$2'" "$OUT"; else pass "$1"; fi
}
expect_eq() { # name want got
    if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1: got '$3', want '$2'"; fi
}

# Status column of the table row named $1 in OUT (empty when no such row).
status_of() {
    awk -F'|' -v name="$1" '{ n = $1; gsub(/^ +| +$/, "", n); if (n == name) { s = $NF; gsub(/^ +| +$/, "", s); print s; exit } }' <<<"$OUT"
}
field_of() { # row column(2=current,3=needed)
    awk -F'|' -v name="$1" -v c="$2" '{ n = $1; gsub(/^ +| +$/, "", n); if (n == name) { s = $c; gsub(/^ +| +$/, "", s); print s; exit } }' <<<"$OUT"
}
expect_status() { # row want
    local got
    got=$(status_of "$1")
    if [[ $got == "$2" ]]; then pass "row $1 is $2"; else fail "row $1: status '$got', want '$2'" "$OUT"; fi
}

# A fake sysctl tree: defaults (too low for 10k connections where it matters), overridden
# by key=value arguments; "key=" removes the key; "conntrack=off" removes net/netfilter.
make_tree() {
    local dir=$1 kv key val
    shift
    rm -rf "$dir"
    local -A v=(
        [fs.file-max]=20000
        [fs.nr_open]=1048576
        [net.ipv4.ip_local_port_range]=$'32768\t60999'
        [net.core.somaxconn]=1024
        [net.ipv4.tcp_max_syn_backlog]=512
        [net.core.netdev_max_backlog]=1000
        [net.ipv4.tcp_mem]=$'5000\t7500\t10000'
        [net.ipv4.tcp_rmem]=$'4096\t131072\t6291456'
        [net.ipv4.tcp_wmem]=$'4096\t16384\t4194304'
        [net.netfilter.nf_conntrack_max]=8192
        [net.netfilter.nf_conntrack_buckets]=2048
        [net.netfilter.nf_conntrack_count]=3
        [net.ipv4.tcp_tw_reuse]=2
        [net.ipv4.tcp_fin_timeout]=60
        [vm.max_map_count]=65530
    )
    local conntrack=on
    for kv in "$@"; do
        key=${kv%%=*} val=${kv#*=}
        if [[ $key == conntrack ]]; then conntrack=$val; continue; fi
        if [[ -z $val ]]; then unset "v[$key]"; else v[$key]=$val; fi
    done
    for key in "${!v[@]}"; do
        [[ $conntrack == off && $key == net.netfilter.* ]] && continue
        mkdir -p "$dir/$(dirname "${key//.//}")"
        printf '%s\n' "${v[$key]}" >"$dir/${key//.//}"
    done
}
# Every file of the tree with its exact content (for "restored exactly" comparisons).
snapshot() { (cd "$1" && find . -type f | LC_ALL=C sort | while read -r f; do printf '%s=' "$f"; od -An -c "$f" | tr -s ' \n' ' '; echo; done); }
get() { cat "$1/${2//.//}"; }

MEMINFO=$TMP/meminfo
printf 'MemTotal:       16384000 kB\nMemFree:        16000000 kB\n' >"$MEMINFO"
# Isolated from whatever runs on the box: no process lookup, fake RAM, private state dir.
export WS_CEILING_SERVER_NAMES="" WS_CEILING_LOADGEN_NAMES="" WS_CEILING_MEMINFO=$MEMINFO
export WS_CEILING_STATE_DIR=$TMP/state
# The RLIMIT_NOFILE most runs use: 20000 (enough for the 10k-connection cases), or the
# hard limit if that is lower (below 11024 the "nothing LOW" cases cannot pass).
H=$(ulimit -Hn)
[[ $H == unlimited || $H -gt 20000 ]] && H=20000
LIM=$H:$H
[[ $H -ge 11024 ]] || echo "# warning: hard RLIMIT_NOFILE $H < 11024: cases expecting it OK at 10000 connections will fail"
HAVE_PRLIMIT=0
command -v prlimit >/dev/null 2>&1 && prlimit --nofile=1024:2048 true 2>/dev/null && HAVE_PRLIMIT=1
# Runs tune.sh with RLIMIT_NOFILE soft:hard (lowering needs no privilege).
with_nofile() {
    local lim=$1
    shift
    if [[ $HAVE_PRLIMIT -eq 1 ]]; then
        prlimit --nofile="$lim" -- "$TUNE" "$@"
    else
        (ulimit -Hn "${lim#*:}" && ulimit -Sn "${lim%:*}" && exec "$TUNE" "$@")
    fi
}

echo "# usage"
run "$TUNE"
expect_rc "no arguments" 2
[[ -z $OUT && $ERR == *"usage: tune.sh {check|apply|revert}"* ]] && pass "no arguments: usage on stderr only" || fail "no arguments: usage on stderr only" "$OUT / $ERR"
run "$TUNE" frobnicate
expect_rc "unknown command" 2
[[ $ERR == *"unknown command: frobnicate"* && $ERR == *usage:* ]] && pass "unknown command named, usage shown" || fail "unknown command message" "$ERR"
run "$TUNE" check --bogus
expect_rc "unknown option" 2
[[ -z $OUT && $ERR == *"unknown argument: --bogus"* && $ERR == *usage:* ]] && pass "unknown option refused with usage on stderr" || fail "unknown option message" "$OUT / $ERR"
run "$TUNE" check extra
expect_rc "stray positional argument" 2
run "$TUNE" check --connections
expect_rc "--connections without a value" 2
run "$TUNE" check --connections lots
expect_rc "--connections not a number" 2
run "$TUNE" check --connections 0
expect_rc "--connections 0" 2
run "$TUNE" check --source-ips 0
expect_rc "--source-ips 0" 2
run "$TUNE" check --ends 3
expect_rc "--ends 3" 2
run "$TUNE" check --only 'net.*'
expect_rc "--only with check" 2
run "$TUNE" revert --advised
expect_rc "--advised with revert" 2
run "$TUNE" check --server-pid 999999999
expect_rc "--server-pid of no process" 2
run "$TUNE" --help
expect_rc "--help" 0
expect_out "--help prints usage on stdout" "usage: tune.sh {check|apply|revert}"
run "$TUNE" apply -h
expect_rc "apply -h" 0

echo "# check"
T=$TMP/tree
make_tree "$T"
export WS_CEILING_SYSCTL_ROOT=$T
for pair in 1M:1000000 100k:100000 1.5M:1500000 1_000_000:1000000 250000:250000; do
    run with_nofile "$LIM" check --connections "${pair%%:*}"
    expect_out "--connections ${pair%%:*} means ${pair#*:}" "ws-ceiling check: ${pair#*:} connections"
done
run with_nofile "$LIM" check
expect_out "default is 1000000 connections" "ws-ceiling check: 1000000 connections"

run with_nofile "$LIM" check --connections 10000
expect_rc "check with LOW settings" 1
head -n 3 <<<"$OUT" | grep -q '^setting *| current *| needed for N=10000 *| status$' && pass "table header: setting | current | needed for N | status" || fail "table header" "$OUT"
expect_status fs.file-max LOW
expect_status fs.nr_open OK
expect_status net.ipv4.ip_local_port_range OK
expect_status net.core.somaxconn LOW
expect_status net.ipv4.tcp_max_syn_backlog LOW
expect_status net.core.netdev_max_backlog ADVISE
expect_status net.ipv4.tcp_mem LOW
expect_status net.netfilter.nf_conntrack_max LOW
expect_status net.netfilter.nf_conntrack_buckets ADVISE
expect_status net.ipv4.tcp_tw_reuse ADVISE
expect_status net.ipv4.tcp_fin_timeout ADVISE
expect_status vm.max_map_count ADVISE
expect_status "RLIMIT_NOFILE soft (this shell)" OK
expect_status "RLIMIT_NOFILE hard (this shell)" OK
expect_status "MemTotal (RAM)" OK
expect_out "summary line counts the LOW rows" "10000 connections: 5 settings LOW, 7 advisories"
expect_out "one-line fix for each LOW row" "  LOW net.core.somaxconn: "
expect_out "fix names the sysctl.d file" "sysctl -w net.ipv4.tcp_max_syn_backlog='65535' (persist: echo 'net.ipv4.tcp_max_syn_backlog = 65535' >> /etc/sysctl.d/90-ws-ceiling.conf)"
expect_eq "file-max need = 2 x (N + 1024) + 65536" ">= 87584" "$(field_of fs.file-max 3)"
expect_eq "tcp_mem: implied max in MiB shown" "5000 7500 10000 (max 40 MiB)" "$(field_of net.ipv4.tcp_mem 2)"
expect_eq "tcp_mem: 2 x N sockets x 5 KiB in pages" ">= 25000 pages max (98 MiB)" "$(field_of net.ipv4.tcp_mem 3)"
expect_eq "conntrack current shows entries in use" "8192 (in use 3)" "$(field_of net.netfilter.nf_conntrack_max 2)"
expect_eq "tcp_rmem implied memory at N" "at N: min 79, default 2500 MiB" "$(field_of net.ipv4.tcp_rmem 3)"
expect_status net.ipv4.tcp_rmem ADVISE

run with_nofile "$LIM" check --connections 10000 --ends 1
expect_eq "--ends 1 halves the socket memory" ">= 12500 pages max (49 MiB)" "$(field_of net.ipv4.tcp_mem 3)"
expect_eq "--ends 1: file-max for one process" ">= 76560" "$(field_of fs.file-max 3)"

# Everything sized: exit 0.
G=$TMP/good
make_tree "$G" fs.file-max=2000000 net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
    net.core.netdev_max_backlog=16384 net.ipv4.tcp_mem=$'100000\t150000\t200000' net.netfilter.nf_conntrack_max=262144 \
    net.netfilter.nf_conntrack_buckets=65536 net.ipv4.tcp_tw_reuse=1 net.ipv4.tcp_fin_timeout=30 vm.max_map_count=262144
WS_CEILING_SYSCTL_ROOT=$G run with_nofile "$LIM" check --connections 10000
expect_rc "check with everything sized" 0
expect_out "summary with nothing LOW" "10000 connections: 0 settings LOW, 0 advisories"
expect_no_out "no ADVISE row when all sized" "| ADVISE"
WS_CEILING_SYSCTL_ROOT=$G run with_nofile "$LIM" check --connections 1000
expect_rc "small N: queues of 4096 are not LOW" 0

# Ports: per-source range x source addresses.
run with_nofile "$LIM" check --connections 100000 --source-ips 3
expect_status net.ipv4.ip_local_port_range LOW
expect_eq "ports current: range, per source x sources" "32768-60999: 28232 x 3 src = 84696" "$(field_of net.ipv4.ip_local_port_range 2)"
expect_out "ports fix: widen range" "sysctl -w net.ipv4.ip_local_port_range='1024 65535'"
run with_nofile "$LIM" check --connections 100000
expect_out "ports fix: source addresses needed with the widened range" "and use >= 2 source addresses (--source-ips 2"
run with_nofile "$LIM" check --connections 100000 --source-ips 4
expect_status net.ipv4.ip_local_port_range OK

# Conntrack not loaded.
C=$TMP/noct
make_tree "$C" conntrack=off
WS_CEILING_SYSCTL_ROOT=$C run with_nofile "$LIM" check --connections 10000
expect_eq "conntrack not loaded: row says so" "not loaded" "$(field_of net.netfilter.nf_conntrack_max 2)"
expect_status net.netfilter.nf_conntrack_max OK
expect_out "conntrack not loaded: nothing needed" "conntrack is not loaded: nothing to size"

# Missing key: shown, not counted.
A=$TMP/absent
make_tree "$A" vm.max_map_count=
WS_CEILING_SYSCTL_ROOT=$A run with_nofile "$LIM" check --connections 10000
expect_status vm.max_map_count n/a

echo "# rlimits"
if [[ $HAVE_PRLIMIT -eq 1 ]]; then
    run with_nofile 1024:4096 check --connections 10000
    expect_status "RLIMIT_NOFILE soft (this shell)" ADVISE
    expect_status "RLIMIT_NOFILE hard (this shell)" LOW
    expect_eq "shell hard limit shown" "4096" "$(field_of "RLIMIT_NOFILE hard (this shell)" 2)"
    expect_out "hard RLIMIT_NOFILE fix names limits.conf" "limits.conf '* - nofile 1048576'"
    expect_out "hard RLIMIT_NOFILE fix names systemd" "LimitNOFILE=1048576"
    expect_out "hard RLIMIT_NOFILE fix names docker" "docker run --ulimit nofile=1048576:1048576"
    run prlimit --memlock=65536:65536 -- "$TUNE" check --connections 1000
    expect_status "RLIMIT_MEMLOCK soft (this shell)" LOW
    expect_out "memlock fix" "ulimit -l 512"

    # A "server" with its own limits, by pid and by name.
    cp "$(command -v sleep)" "$TMP/wsct-srv"
    prlimit --nofile=512:512 --memlock=131072:131072 -- "$TMP/wsct-srv" 300 &
    SRV=$!
    BG_PIDS+=("$SRV")
    sleep 0.2
    run with_nofile "$LIM" check --connections 10000 --server-pid "$SRV"
    expect_status "RLIMIT_NOFILE soft wsct-srv[$SRV]" LOW
    expect_status "RLIMIT_NOFILE hard wsct-srv[$SRV]" LOW
    expect_status "RLIMIT_MEMLOCK soft wsct-srv[$SRV]" LOW
    expect_eq "server memlock read from /proc/PID/limits" "128 KiB (hard 128 KiB)" "$(field_of "RLIMIT_MEMLOCK soft wsct-srv[$SRV]" 2)"
    expect_out "running process fix uses prlimit" "prlimit --pid $SRV --nofile=1048576:1048576"
    expect_out "no loadgen: note says how to point at one" "pass --loadgen-pid PID"
    WS_CEILING_SERVER_NAMES="nothing-here wsct-srv" run with_nofile "$LIM" check --connections 10000
    expect_status "RLIMIT_NOFILE soft wsct-srv[$SRV]" LOW
    pass "server found by process name"
    run with_nofile "$LIM" check --connections 100 --loadgen-pid "$SRV"
    expect_status "RLIMIT_NOFILE soft wsct-srv[$SRV]" LOW
    [[ $(status_of "RLIMIT_MEMLOCK soft wsct-srv[$SRV]") == "" ]] && pass "loadgen: no memlock row" || fail "loadgen: no memlock row" "$OUT"
    kill "$SRV" 2>/dev/null
    wait "$SRV" 2>/dev/null
else
    skip "rlimit rows (prlimit unavailable)"
fi

if command -v setpriv >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    run setpriv --reuid=65534 --regid=65534 --clear-groups env -u WS_CEILING_SYSCTL_ROOT "$TUNE" check --connections 10000
    if [[ $RC -le 1 && $OUT == *"10000 connections:"* && -z $ERR ]]; then pass "check works without root on the real /proc/sys (exit $RC)"; else fail "check without root" "$OUT"$'\n'"$ERR"; fi
else
    skip "check as non-root (needs setpriv and root to drop from)"
fi

echo "# apply / revert on a fake tree"
T=$TMP/apply
make_tree "$T"
export WS_CEILING_SYSCTL_ROOT=$T
BEFORE=$(snapshot "$T")
SAVED=$WS_CEILING_STATE_DIR/saved-sysctls
run with_nofile "$LIM" apply --connections 10000
expect_rc "apply fixes every LOW sysctl" 0
expect_out "apply prints old -> new" "net.core.somaxconn: 1024 -> 65535"
expect_out "apply: tcp_mem triple" "net.ipv4.tcp_mem: 5000 7500 10000 -> 12500 16666 25000"
expect_out "apply: nothing LOW afterwards" "10000 connections: nothing LOW now"
expect_eq "somaxconn raised" 65535 "$(get "$T" net.core.somaxconn)"
expect_eq "tcp_max_syn_backlog raised" 65535 "$(get "$T" net.ipv4.tcp_max_syn_backlog)"
expect_eq "file-max raised" 1048576 "$(get "$T" fs.file-max)"
expect_eq "conntrack max raised (rounded to 64Ki)" 65536 "$(get "$T" net.netfilter.nf_conntrack_max)"
expect_eq "advisory tw_reuse untouched without --advised" 2 "$(get "$T" net.ipv4.tcp_tw_reuse)"
expect_eq "OK nr_open untouched" 1048576 "$(get "$T" fs.nr_open)"
expect_eq "port range (OK at 10k) untouched" $'32768\t60999' "$(get "$T" net.ipv4.ip_local_port_range)"
if [[ -f $SAVED ]]; then pass "saved-values file written"; else fail "saved-values file written"; fi
expect_eq "saved file holds the original values" \
    "fs.file-max 20000|net.core.somaxconn 1024|net.ipv4.tcp_max_syn_backlog 512|net.ipv4.tcp_mem 5000	7500	10000|net.netfilter.nf_conntrack_max 8192" \
    "$(grep -v '^#' "$SAVED" | LC_ALL=C sort | paste -sd'|')"
SAVED1=$(cat "$SAVED")
run with_nofile "$LIM" check --connections 10000
expect_rc "check after apply" 0

run with_nofile "$LIM" apply --connections 10000
expect_rc "second apply" 0
expect_out "second apply changes nothing" "apply: 0 changed"
expect_eq "second apply leaves the saved originals alone" "$SAVED1" "$(cat "$SAVED")"

# Someone lowers a key again: apply raises it again but keeps the true original.
printf '100\n' >"$T/net/core/somaxconn"
run with_nofile "$LIM" apply --connections 10000
expect_out "re-raised after a manual change" "net.core.somaxconn: 100 -> 65535"
expect_eq "true original still saved" "$SAVED1" "$(cat "$SAVED")"

run with_nofile "$LIM" apply --connections 10000 --advised
expect_rc "apply --advised" 0
expect_eq "--advised: tw_reuse" 1 "$(get "$T" net.ipv4.tcp_tw_reuse)"
expect_eq "--advised: fin_timeout" 30 "$(get "$T" net.ipv4.tcp_fin_timeout)"
expect_eq "--advised: max_map_count" 262144 "$(get "$T" vm.max_map_count)"
expect_eq "--advised: conntrack buckets max/4" 16384 "$(get "$T" net.netfilter.nf_conntrack_buckets)"
expect_eq "--advised: earlier saved lines kept first" "$SAVED1" "$(head -n "$(wc -l <<<"$SAVED1")" "$SAVED")"
grep -q '^net.ipv4.tcp_fin_timeout 60$' "$SAVED" && pass "--advised: original fin_timeout saved" || fail "--advised: original fin_timeout saved" "$(cat "$SAVED")"

# Revert from another tree must refuse (and not touch either tree).
O=$TMP/other
make_tree "$O"
OTHER_BEFORE=$(snapshot "$O")
WS_CEILING_SYSCTL_ROOT=$O run "$TUNE" revert
expect_rc "revert against another sysctl root refuses" 1
[[ $ERR == *"holds values saved for sysctl root '$T'"* ]] && pass "revert names the root the values belong to" || fail "revert mismatch message" "$ERR"
expect_eq "other tree untouched" "$OTHER_BEFORE" "$(snapshot "$O")"
WS_CEILING_SYSCTL_ROOT=$O run with_nofile "$LIM" apply --connections 10000
expect_rc "apply against another root with values saved refuses" 1
expect_eq "other tree still untouched" "$OTHER_BEFORE" "$(snapshot "$O")"

run "$TUNE" revert
expect_rc "revert" 0
expect_out "revert prints what it restores" "net.core.somaxconn: 65535 -> 1024"
expect_eq "revert restores every file exactly (tabs included)" "$BEFORE" "$(snapshot "$T")"
if [[ ! -e $SAVED ]]; then pass "revert removes the saved file"; else fail "revert removes the saved file"; fi
run "$TUNE" revert
expect_rc "revert with nothing saved" 0
expect_out "revert with nothing saved says so" "nothing to revert"

echo "# apply --only"
run with_nofile "$LIM" apply --connections 10000 --only 'net.core.*,fs.file-*'
expect_rc "apply --only leaves other LOW keys" 1
expect_eq "--only: somaxconn changed" 65535 "$(get "$T" net.core.somaxconn)"
expect_eq "--only: file-max changed" 1048576 "$(get "$T" fs.file-max)"
expect_eq "--only: tcp_max_syn_backlog untouched" 512 "$(get "$T" net.ipv4.tcp_max_syn_backlog)"
expect_out "--only: skipped keys reported" "net.ipv4.tcp_max_syn_backlog: LOW, skipped (not in --only"
run "$TUNE" revert
expect_eq "revert after --only" "$BEFORE" "$(snapshot "$T")"

echo "# what apply cannot change"
if [[ $HAVE_PRLIMIT -eq 1 ]]; then
    run with_nofile 1024:4096 apply --connections 10000
    expect_rc "apply with a low hard RLIMIT_NOFILE" 1
    expect_out "RLIMIT_NOFILE reported as not changed" "RLIMIT_NOFILE hard (this shell): not changed (4096, needs >= 11024)"
    expect_out "explains RLIMIT_NOFILE is per process" "RLIMIT_NOFILE is a per-process limit"
    expect_out "ways: limits.conf" "/etc/security/limits.conf: '* - nofile 1048576'"
    expect_out "ways: systemd" "LimitNOFILE=1048576"
    expect_out "ways: docker" "docker run --ulimit nofile=1048576:1048576"
    expect_out "ways: Kubernetes" "Kubernetes:"
    if grep -q '^CapEff:.*' /proc/self/status && ! (ulimit -Hn $(($(ulimit -Hn) + 1))) 2>/dev/null; then
        expect_out "no CAP_SYS_RESOURCE detected" "no CAP_SYS_RESOURCE"
    else
        expect_out "CAP_SYS_RESOURCE present detected" "CAP_SYS_RESOURCE present"
    fi
    expect_out "still-LOW list at the end" "1 setting still LOW:"
    run "$TUNE" revert
else
    skip "apply with a low hard RLIMIT_NOFILE (prlimit unavailable)"
fi

C=$TMP/noct-apply
make_tree "$C" conntrack=off
WS_CEILING_SYSCTL_ROOT=$C run with_nofile "$LIM" apply --connections 10000
expect_out "apply: conntrack not loaded, nothing needed" "conntrack is not loaded: nothing needed"
WS_CEILING_SYSCTL_ROOT=$C run "$TUNE" revert
expect_rc "revert (no conntrack tree)" 0

# Read-only key: a read-only bind mount in a private mount namespace gives the EROFS a
# container's /proc/sys gives.
R=$TMP/ro
make_tree "$R"
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null 2>&1 &&
    unshare -m --propagation private true 2>/dev/null; then
    R_BEFORE=$(snapshot "$R")
    # shellcheck disable=SC2016 # expanded by the inner bash
    WS_CEILING_SYSCTL_ROOT=$R run unshare -m --propagation private bash -c \
        'mount --bind "$1/net/core" "$1/net/core" && mount -o remount,ro,bind "$1/net/core" && exec "$2" apply --connections 10000' \
        _ "$R" "$TUNE"
    expect_rc "apply with a read-only key" 1
    expect_out "read-only key explained" "net.core.somaxconn: could not change (1024, wanted 65535): read-only here (container?"
    expect_out "read-only namespaced key: docker/Kubernetes way" "docker run --sysctl net.core.somaxconn=..., Kubernetes pod securityContext.sysctls"
    expect_out "other keys still changed" "net.ipv4.tcp_max_syn_backlog: 512 -> 65535"
    expect_out "read-only key listed as still LOW" "LOW net.core.somaxconn (1024"
    grep -q '^net.core.somaxconn ' "$SAVED" && fail "unchanged read-only key not kept in saved values" "$(cat "$SAVED")" || pass "unchanged read-only key not kept in saved values"
    WS_CEILING_SYSCTL_ROOT=$R run "$TUNE" revert
    expect_rc "revert after the read-only apply" 0
    expect_eq "read-only tree restored exactly" "$R_BEFORE" "$(snapshot "$R")"
else
    skip "read-only key (needs root and unshare -m)"
fi

# Not root: permission denied is explained as such.
if command -v setpriv >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    P=$TMP/perm
    make_tree "$P"
    mkdir -p "$TMP/nobody-state" && chmod 777 "$TMP/nobody-state"
    WS_CEILING_SYSCTL_ROOT=$P WS_CEILING_STATE_DIR=$TMP/nobody-state run \
        setpriv --reuid=65534 --regid=65534 --clear-groups "$TUNE" apply --connections 10000
    expect_rc "apply as non-root" 1
    expect_out "non-root: needs root" "permission denied: needs root"
    [[ ! -e $TMP/nobody-state/saved-sysctls ]] && pass "non-root: nothing saved when nothing changed" || fail "non-root: nothing saved" "$(cat "$TMP/nobody-state/saved-sysctls")"
else
    skip "apply as non-root (needs setpriv)"
fi

echo "# real kernel, inside a network namespace"
ns_ok=0
if [[ $(id -u) -eq 0 ]] && command -v ip >/dev/null 2>&1; then
    NETNS=wsct-tune-$$
    if ip netns add "$NETNS" 2>/dev/null && ip netns exec "$NETNS" true 2>/dev/null; then
        ns_ok=1
    else
        ip netns del "$NETNS" 2>/dev/null
        NETNS=""
    fi
fi
if [[ $ns_ok -eq 1 ]]; then
    NSX=(ip netns exec "$NETNS" env -u WS_CEILING_SYSCTL_ROOT WS_CEILING_STATE_DIR="$TMP/ns-state")
    ip netns exec "$NETNS" sh -c 'echo 1024 > /proc/sys/net/core/somaxconn; echo "40000 50000" > /proc/sys/net/ipv4/ip_local_port_range; echo 1024 > /proc/sys/net/ipv4/tcp_max_syn_backlog'
    ns_get() { ip netns exec "$NETNS" cat "/proc/sys/${1//.//}"; }
    host_before=$(cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/tcp_max_syn_backlog /proc/sys/fs/file-max /proc/sys/vm/max_map_count)
    ns_before="$(ns_get net.core.somaxconn) $(ns_get net.ipv4.ip_local_port_range) $(ns_get net.ipv4.tcp_max_syn_backlog)"
    run "${NSX[@]}" "$TUNE" apply --connections 50000 --only 'net.core.*,net.ipv4.*'
    expect_out "netns: somaxconn raised" "net.core.somaxconn: 1024 -> 65535"
    expect_out "netns: port range widened" "net.ipv4.ip_local_port_range: 40000 50000 -> 1024 65535"
    expect_out "netns: syn backlog raised" "net.ipv4.tcp_max_syn_backlog: 1024 -> 65535"
    expect_eq "netns: somaxconn inside" 65535 "$(ns_get net.core.somaxconn)"
    expect_eq "netns: port range inside" $'1024\t65535' "$(ns_get net.ipv4.ip_local_port_range)"
    expect_eq "netns: host untouched" "$host_before" "$(cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/tcp_max_syn_backlog /proc/sys/fs/file-max /proc/sys/vm/max_map_count)"
    run "${NSX[@]}" "$TUNE" check --connections 50000
    expect_status net.core.somaxconn OK
    expect_status net.ipv4.tcp_mem n/a

    # The saved values belong to the namespace: a revert outside it must refuse.
    WS_CEILING_SYSCTL_ROOT=/proc/sys WS_CEILING_STATE_DIR=$TMP/ns-state run "$TUNE" revert
    expect_rc "netns: revert from the host namespace refuses" 1
    expect_eq "netns: host still untouched" "$host_before" "$(cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/tcp_max_syn_backlog /proc/sys/fs/file-max /proc/sys/vm/max_map_count)"

    # conntrack's limit is the initial namespace's: read-only in ours (EACCES even for root).
    ct=/proc/sys/net/netfilter/nf_conntrack_max
    if ip netns exec "$NETNS" test -f "$ct" && ! ip netns exec "$NETNS" test -w "$ct"; then
        ctmax=$(ip netns exec "$NETNS" cat "$ct")
        run "${NSX[@]}" "$TUNE" apply --connections $((ctmax + 1)) --only 'net.netfilter.nf_conntrack_max'
        expect_out "netns: read-only conntrack explained" "net.netfilter.nf_conntrack_max: could not change ($ctmax, wanted"
        expect_out "netns: read-only as root" "read-only here (Permission denied even as root"
        expect_eq "netns: conntrack max unchanged" "$ctmax" "$(cat "$ct")"
    else
        skip "netns: read-only conntrack (not loaded or writable in a netns here)"
    fi

    run "${NSX[@]}" "$TUNE" revert
    expect_rc "netns: revert" 0
    expect_eq "netns: values restored inside" "$ns_before" "$(ns_get net.core.somaxconn) $(ns_get net.ipv4.ip_local_port_range) $(ns_get net.ipv4.tcp_max_syn_backlog)"
    expect_eq "netns: host untouched after revert" "$host_before" "$(cat /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/tcp_max_syn_backlog /proc/sys/fs/file-max /proc/sys/vm/max_map_count)"
    ip netns del "$NETNS" && NETNS=""
else
    skip "network namespace apply/revert (ip netns unavailable or not root)"
fi

echo "$PASS passed, $FAIL failed, $SKIP skipped"
[[ $FAIL -eq 0 ]]
