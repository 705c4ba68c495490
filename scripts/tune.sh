#!/usr/bin/env bash
# scripts/tune.sh — which kernel / process limit caps the number of WebSocket connections
# (or the connect rate) on this Linux box, and raise the ones that are too low.
#
#   scripts/tune.sh check  [options]   table: setting | current | needed for N | status
#   scripts/tune.sh apply  [options]   raise what is LOW (root), saving the old values
#   scripts/tune.sh revert             put back exactly what apply changed
#
# See usage() below and docs/TUNING.md for what each setting bounds and how to set it
# persistently (sysctl.d, limits.conf, systemd, docker, Kubernetes).
#
# Environment (mostly for tests):
#   WS_CEILING_SYSCTL_ROOT   sysctl tree every read and write goes through (default /proc/sys)
#   WS_CEILING_STATE_DIR     where apply saves the previous values (default /var/lib/ws-ceiling
#                            as root, ${XDG_STATE_HOME:-$HOME/.local/state}/ws-ceiling otherwise)
#   WS_CEILING_MEMINFO       meminfo file for MemTotal (default /proc/meminfo)
#   WS_CEILING_SERVER_NAMES  process names looked up as the server (default
#                            "ws-server ws-server-tokio"); WS_CEILING_LOADGEN_NAMES likewise
#                            (default "ws-loadgen"). Empty disables the lookup.

set -u -o pipefail

readonly PROG=${0##*/}
# Descriptors a process needs besides its connections (listener, epoll/io_uring, eventfds,
# stdio, metrics...): loadgen needs connections + cores + 64, the server a little more.
readonly FD_MARGIN=1024
# Descriptors the rest of the system keeps open, on top of the test's processes.
readonly OTHER_FILES=65536
# Kernel memory per idle TCP socket measured on this project's loopback runs (~5 KB per
# socket, ~9.7 KB per connection when both ends are local), rounded up to 5 KiB.
readonly SOCK_BYTES=5120
# glommio registers 512 KiB of io memory per executor (server/src/executor.rs).
readonly MEMLOCK_NEED_KIB=512
readonly BIG=9223372036854775807

SYSCTL_ROOT=${WS_CEILING_SYSCTL_ROOT:-/proc/sys}
SYSCTL_ROOT=$(cd "$SYSCTL_ROOT" 2>/dev/null && pwd -P) || SYSCTL_ROOT=${WS_CEILING_SYSCTL_ROOT%/}
MEMINFO=${WS_CEILING_MEMINFO:-/proc/meminfo}
SERVER_NAMES=${WS_CEILING_SERVER_NAMES-ws-server ws-server-tokio}
LOADGEN_NAMES=${WS_CEILING_LOADGEN_NAMES-ws-loadgen}
EUID_NOW=$(id -u)
if [[ -n ${WS_CEILING_STATE_DIR:-} ]]; then
    STATE_DIR=$WS_CEILING_STATE_DIR
elif [[ $EUID_NOW -eq 0 ]]; then
    STATE_DIR=/var/lib/ws-ceiling
else
    STATE_DIR=${XDG_STATE_HOME:-$HOME/.local/state}/ws-ceiling
fi
STATE_FILE=$STATE_DIR/saved-sysctls
PAGE=$(getconf PAGESIZE 2>/dev/null || echo 4096)
[[ $PAGE =~ ^[0-9]+$ ]] || PAGE=4096

usage() {
    cat <<EOF
usage: $PROG {check|apply|revert} [--connections N] [--source-ips K]
                                [--server-pid PID] [--loadgen-pid PID] [--ends 1|2]
       $PROG apply ... [--advised] [--only 'GLOB[,GLOB...]']
       $PROG -h | --help

  check    table of every setting that bounds connection count or connect rate:
           current value, value needed for N connections, OK / LOW / ADVISE.
           Works without root. Exit 0: nothing LOW; 1: something LOW; 2: bad usage.
  apply    raise the sysctls that are LOW for N (needs root), saving each previous value
           the first time it is changed; explain what it cannot change (RLIMIT_NOFILE is
           per process, read-only sysctls in a container, ...) and where to change it.
           Never lowers a value unless --advised asks for the advisory ones too.
           Exit 0: nothing LOW afterwards; 1: something still LOW; 2: bad usage.
  revert   restore every value apply saved, then remove the saved file. Exit 0 when
           everything was restored (or nothing was saved), 1 otherwise.

options:
  --connections N    connections to plan for (default 1000000; 100k, 1M, 1.5M accepted)
  --source-ips K     source addresses the load generator spreads over (default 1)
  --server-pid PID   report this server process's limits (default: running ws-server,
                     ws-server-tokio found by name)
  --loadgen-pid PID  report this load generator's limits (default: running ws-loadgen)
  --ends 1|2         connection ends on this box: 2 (default) when server and loadgen
                     both run here (2 sockets, 2 descriptors per connection), 1 otherwise
  --advised          apply: also set the ADVISE rows (may lower tcp_fin_timeout and
                     change tcp_tw_reuse 2 -> 1); revert restores them too
  --only GLOBS       apply: only touch sysctls whose name matches one of the
                     comma-separated globs, e.g. --only 'net.*'

environment: WS_CEILING_SYSCTL_ROOT (default /proc/sys), WS_CEILING_STATE_DIR
(saved values; now $STATE_DIR), WS_CEILING_MEMINFO, WS_CEILING_SERVER_NAMES,
WS_CEILING_LOADGEN_NAMES. Details: docs/TUNING.md
EOF
}

die_usage() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    usage >&2
    exit 2
}

# --- arguments --------------------------------------------------------------------------

# "1000000", "1_000_000", "100k", "1M", "1.5M" -> integer on stdout; fails otherwise.
parse_count() {
    local s=${1//[_,]/} mult=1 int frac scale
    case $s in
        *[kK]) mult=1000; s=${s%?} ;;
        *[mM]) mult=1000000; s=${s%?} ;;
        *[gG]) mult=1000000000; s=${s%?} ;;
    esac
    if [[ $s =~ ^[0-9]{1,12}$ ]]; then
        printf '%d\n' $((10#$s * mult))
    elif [[ $mult -gt 1 && $s =~ ^([0-9]{1,6})\.([0-9]{1,6})$ ]]; then
        int=${BASH_REMATCH[1]} frac=${BASH_REMATCH[2]}
        scale=$((10 ** ${#frac}))
        printf '%d\n' $((10#$int * mult + 10#$frac * mult / scale))
    else
        return 1
    fi
}

CMD=""
N=1000000
K=1
ENDS=2
SERVER_PID=""
LOADGEN_PID=""
ADVISED=0
ONLY=""

parse_args() {
    local a v
    [[ $# -gt 0 ]] || die_usage "missing command"
    case $1 in
        -h | --help) usage; exit 0 ;;
        check | apply | revert) CMD=$1 ;;
        *) die_usage "unknown command: $1" ;;
    esac
    shift
    while [[ $# -gt 0 ]]; do
        a=$1
        v=""
        case $a in
            --*=*) v=${a#*=}; a=${a%%=*} ;;
            --connections | --source-ips | --server-pid | --loadgen-pid | --ends | --only)
                [[ $# -ge 2 ]] || die_usage "$a needs a value"
                v=$2
                shift ;;
        esac
        case $a in
            -h | --help) usage; exit 0 ;;
            --connections)
                N=$(parse_count "$v") || die_usage "--connections: not a count: '$v'"
                [[ $N -gt 0 ]] || die_usage "--connections must be more than 0" ;;
            --source-ips)
                [[ $v =~ ^[0-9]{1,6}$ && $((10#$v)) -gt 0 ]] || die_usage "--source-ips: not a positive integer: '$v'"
                K=$((10#$v)) ;;
            --ends)
                [[ $v == 1 || $v == 2 ]] || die_usage "--ends must be 1 or 2, not '$v'"
                ENDS=$v ;;
            --server-pid | --loadgen-pid)
                [[ $v =~ ^[0-9]+$ ]] || die_usage "$a: not a pid: '$v'"
                [[ -r /proc/$v/limits ]] || die_usage "$a: no process $v (cannot read /proc/$v/limits)"
                if [[ $a == --server-pid ]]; then SERVER_PID=$v; else LOADGEN_PID=$v; fi ;;
            --advised)
                [[ -z ${v} && $1 == --advised ]] || die_usage "--advised takes no value"
                ADVISED=1 ;;
            --only)
                [[ -n $v ]] || die_usage "--only needs a glob"
                ONLY=$v ;;
            *) die_usage "unknown argument: $1" ;;
        esac
        shift
    done
    if [[ $CMD != apply ]]; then
        [[ $ADVISED -eq 0 ]] || die_usage "--advised is for apply only"
        [[ -z $ONLY ]] || die_usage "--only is for apply only"
    fi
}

# --- small helpers ----------------------------------------------------------------------

ceil_div() { echo $((($1 + $2 - 1) / $2)); }
roundup() { echo $(((($1 + $2 - 1) / $2) * $2)); }
mib() { echo $((($1 + 1048575) / 1048576)); }
max() { if [[ $1 -ge $2 ]]; then echo "$1"; else echo "$2"; fi; }
# "a<TAB>b  c" -> "a b c"
squash() {
    local IFS=$' \t\n'
    set -f
    # shellcheck disable=SC2086
    set -- $1
    set +f
    echo "$*"
}

sysctl_path() { printf '%s/%s' "$SYSCTL_ROOT" "${1//.//}"; }

# Value of sysctl $1 on stdout (raw, tabs kept); fails when absent or unreadable.
sysctl_raw() {
    local f
    f=$(sysctl_path "$1")
    [[ -f $f && -r $f ]] || return 1
    local v
    v=$(<"$f") || return 1
    printf '%s' "$v"
}
sysctl_get() { local v; v=$(sysctl_raw "$1") || return 1; squash "$v"; }

# Writes $2 to sysctl $1. On failure prints the reason (errno text) on stdout.
sysctl_write() {
    local f err
    f=$(sysctl_path "$1")
    if [[ ! -e $f ]]; then
        echo "No such file or directory"
        return 1
    fi
    err=$({ printf '%s\n' "$2" >"$f"; } 2>&1) && return 0
    err=${err##*: }
    echo "${err:-write failed}"
    return 1
}

# Why a write failed, and where to set the key instead.
write_failure_hint() {
    local key=$1 err=$2
    case $err in
        *"Read-only file system"*)
            echo "read-only here (container? /proc/sys is mounted read-only): set it on the host$(where_else "$key")" ;;
        *"Permission denied"* | *"Operation not permitted"*)
            if [[ $EUID_NOW -ne 0 ]]; then
                echo "permission denied: needs root (sudo $PROG apply ...)"
            else
                echo "read-only here ($err even as root: container, or a key only the initial network namespace may set): set it on the host$(where_else "$key")"
            fi ;;
        *"No such file"*) echo "not present in this kernel/namespace" ;;
        *"Invalid argument"*) echo "the kernel rejected the value ($err)" ;;
        *) echo "write failed: $err" ;;
    esac
}

# Keys a container can set for itself (per network namespace).
namespaced() {
    case $1 in
        net.core.somaxconn | net.ipv4.ip_local_port_range | net.ipv4.tcp_max_syn_backlog | \
            net.ipv4.tcp_rmem | net.ipv4.tcp_wmem | net.ipv4.tcp_tw_reuse | net.ipv4.tcp_fin_timeout) return 0 ;;
    esac
    return 1
}
k8s_safe() {
    case $1 in
        net.ipv4.ip_local_port_range | net.ipv4.tcp_fin_timeout | net.ipv4.tcp_rmem | net.ipv4.tcp_wmem) return 0 ;;
    esac
    return 1
}
where_else() {
    local key=$1
    if namespaced "$key"; then
        if k8s_safe "$key"; then
            printf ', or per container: docker run --sysctl %s=..., Kubernetes pod securityContext.sysctls (a "safe" sysctl)' "$key"
        else
            printf ', or per container: docker run --sysctl %s=..., Kubernetes pod securityContext.sysctls (kubelet --allowed-unsafe-sysctls=%s)' "$key" "$key"
        fi
    else
        printf ' (%s is not namespaced: a container cannot set it for itself)' "$key"
    fi
}

have_cap_sys_resource() {
    local line
    while IFS= read -r line; do
        if [[ $line == CapEff:* ]]; then
            line=${line#CapEff:}
            line=$(squash "$line")
            (((0x$line >> 24) & 1)) && return 0
            return 1
        fi
    done </proc/self/status
    return 1
}

# "soft hard" of limit $2 ("Max open files", "Max locked memory") of pid $1; unlimited -> BIG.
proc_limit() {
    local pid=$1 what=$2 line rest soft hard
    while IFS= read -r line; do
        if [[ $line == "$what"* ]]; then
            rest=${line#"$what"}
            read -r soft hard _ <<<"$rest"
            [[ $soft == unlimited ]] && soft=$BIG
            [[ $hard == unlimited ]] && hard=$BIG
            echo "$soft $hard"
            return 0
        fi
    done <"/proc/$pid/limits" 2>/dev/null
    return 1
}

proc_name() { local c; c=$(<"/proc/$1/comm") 2>/dev/null || c="?"; echo "$c"; }

find_pids() {
    local name pids=()
    for name in $1; do
        if command -v pgrep >/dev/null 2>&1; then
            # shellcheck disable=SC2207
            pids+=($(pgrep -x -- "$name" 2>/dev/null))
        else
            local d
            for d in /proc/[0-9]*; do
                [[ $(cat "$d/comm" 2>/dev/null) == "$name" ]] && pids+=("${d#/proc/}")
            done
        fi
    done
    echo "${pids[*]}"
}

fmt_kib() { if [[ $1 -ge $BIG ]]; then echo unlimited; else echo "$1 KiB"; fi; }
fmt_lim() { if [[ $1 -ge $BIG ]]; then echo unlimited; else echo "$1"; fi; }
ulimit_val() { local v; v=$(ulimit "$1"); [[ $v == unlimited ]] && v=$BIG; echo "$v"; }

# --- evaluation -------------------------------------------------------------------------
# Each row: name, current, needed, status (OK LOW ADVISE n/a), sysctl key (or ""), value
# apply would write (or ""), one-line fix.
R_NAME=() R_CUR=() R_NEED=() R_STATUS=() R_KEY=() R_TARGET=() R_FIX=()
NOTES=()

row() {
    R_NAME+=("$1") R_CUR+=("$2") R_NEED+=("$3") R_STATUS+=("$4") R_KEY+=("$5") R_TARGET+=("$6") R_FIX+=("$7")
}

grade() { # current min rec
    if [[ $1 -lt $2 ]]; then echo LOW; elif [[ $1 -lt $3 ]]; then echo ADVISE; else echo OK; fi
}

persist_hint() {
    printf "sysctl -w %s='%s' (persist: echo '%s = %s' >> /etc/sysctl.d/90-ws-ceiling.conf)" "$1" "$2" "$1" "$2"
}

# Numeric single-value sysctl row. $1 key, $2 min (LOW below; 0 = advisory only),
# $3 recommended (ADVISE below), $4 target apply writes, $5 why (for the fix line).
sysctl_row() {
    local key=$1 min=$2 rec=$3 target=$4 why=$5 cur st need
    if ! cur=$(sysctl_get "$key") || [[ ! $cur =~ ^[0-9]+$ ]]; then
        row "$key" "absent" "-" "n/a" "" "" ""
        return
    fi
    st=$(grade "$cur" "$min" "$rec")
    if [[ $min -gt 0 && $rec -gt $min ]]; then
        need=">= $min (rec. $rec)"
    elif [[ $min -gt 0 ]]; then
        need=">= $min"
    else
        need=">= $rec (advised)"
    fi
    row "$key" "$cur" "$need" "$st" "$key" "$target" "$why: $(persist_hint "$key" "$target")"
}

evaluate() {
    R_NAME=() R_CUR=() R_NEED=() R_STATUS=() R_KEY=() R_TARGET=() R_FIX=()
    NOTES=()
    local per_proc=$((N + FD_MARGIN))
    local nofile_target
    nofile_target=$(roundup "$per_proc" 1048576)
    local sockets=$((ENDS * N))
    local kmem=$((sockets * SOCK_BYTES))
    local cap_note="needs CAP_SYS_RESOURCE"
    if have_cap_sys_resource; then cap_note+=": present"; else cap_note+=": missing here"; fi
    local nofile_fix="RLIMIT_NOFILE is per process: in the shell that starts the run 'ulimit -Hn $nofile_target; ulimit -n $nofile_target' (raising the hard limit $cap_note), or limits.conf '* - nofile $nofile_target', systemd LimitNOFILE=$nofile_target, docker run --ulimit nofile=$nofile_target:$nofile_target (see docs/TUNING.md)"

    # RLIMIT_NOFILE of this shell (what processes started from it inherit).
    local soft hard st
    soft=$(ulimit_val -Sn) hard=$(ulimit_val -Hn)
    if [[ $soft -ge $per_proc ]]; then st=OK; else st=ADVISE; fi
    row "RLIMIT_NOFILE soft (this shell)" "$(fmt_lim "$soft")" ">= $per_proc" "$st" "" "" \
        "ws-server/ws-loadgen raise their soft limit to the hard one at start; for other tools: ulimit -n $(fmt_lim "$hard")"
    row "RLIMIT_NOFILE hard (this shell)" "$(fmt_lim "$hard")" ">= $per_proc" "$(grade "$hard" "$per_proc" 0)" "" "" "$nofile_fix"

    # RLIMIT_MEMLOCK (io_uring rings and glommio's registered buffers).
    soft=$(ulimit_val -Sl) hard=$(ulimit_val -Hl)
    row "RLIMIT_MEMLOCK soft (this shell)" "$(fmt_kib "$soft") (hard $(fmt_kib "$hard"))" ">= $MEMLOCK_NEED_KIB KiB" \
        "$(grade "$soft" "$MEMLOCK_NEED_KIB" 0)" "" "" \
        "io_uring/glommio lock memory: ulimit -l $MEMLOCK_NEED_KIB (or unlimited), limits.conf '* - memlock unlimited', systemd LimitMEMLOCK=infinity, docker run --ulimit memlock=-1:-1"

    # The server / loadgen processes.
    local role pids pid lim name mlim
    for role in server loadgen; do
        if [[ $role == server ]]; then
            pids=${SERVER_PID:-$(find_pids "$SERVER_NAMES")}
        else
            pids=${LOADGEN_PID:-$(find_pids "$LOADGEN_NAMES")}
        fi
        if [[ -z $pids ]]; then
            if [[ $role == server ]]; then
                NOTES+=("no running server process (${SERVER_NAMES:-lookup disabled}): start it, or pass --server-pid PID, to check its own limits")
            else
                NOTES+=("no running loadgen process (${LOADGEN_NAMES:-lookup disabled}): start it, or pass --loadgen-pid PID, to check its own limits")
            fi
            continue
        fi
        for pid in $pids; do
            lim=$(proc_limit "$pid" "Max open files") || { NOTES+=("process $pid is gone"); continue; }
            name="$(proc_name "$pid")[$pid]"
            read -r soft hard <<<"$lim"
            row "RLIMIT_NOFILE soft $name" "$(fmt_lim "$soft")" ">= $per_proc" "$(grade "$soft" "$per_proc" 0)" "" "" \
                "running process: prlimit --pid $pid --nofile=$nofile_target:$nofile_target (hard part $cap_note), or restart it from a shell with ulimit -n $nofile_target"
            row "RLIMIT_NOFILE hard $name" "$(fmt_lim "$hard")" ">= $per_proc" "$(grade "$hard" "$per_proc" 0)" "" "" "$nofile_fix"
            if [[ $role == server ]] && mlim=$(proc_limit "$pid" "Max locked memory"); then
                read -r soft hard <<<"$mlim"
                [[ $soft -lt $BIG ]] && soft=$((soft / 1024))
                [[ $hard -lt $BIG ]] && hard=$((hard / 1024))
                row "RLIMIT_MEMLOCK soft $name" "$(fmt_kib "$soft") (hard $(fmt_kib "$hard"))" ">= $MEMLOCK_NEED_KIB KiB" \
                    "$(grade "$soft" "$MEMLOCK_NEED_KIB" 0)" "" "" \
                    "running process: prlimit --pid $pid --memlock=unlimited:unlimited, or restart it after ulimit -l unlimited"
            fi
        done
    done

    # fs.file-max: every descriptor of the box.
    local need cur target
    need=$((ENDS * per_proc + OTHER_FILES))
    if cur=$(sysctl_get fs.file-max) && [[ $cur =~ ^[0-9]+$ ]]; then
        target=$(roundup "$need" 1048576)
        row fs.file-max "$cur" ">= $need" "$(grade "$cur" "$need" 0)" fs.file-max "$target" \
            "open files system-wide ($ENDS x $per_proc + $OTHER_FILES): $(persist_hint fs.file-max "$target")"
    else
        row fs.file-max absent - n/a "" "" ""
    fi
    # fs.nr_open: ceiling of any hard RLIMIT_NOFILE.
    if cur=$(sysctl_get fs.nr_open) && [[ $cur =~ ^[0-9]+$ ]]; then
        row fs.nr_open "$cur" ">= $per_proc" "$(grade "$cur" "$per_proc" 0)" fs.nr_open "$nofile_target" \
            "ceiling of RLIMIT_NOFILE: $(persist_hint fs.nr_open "$nofile_target")"
    else
        row fs.nr_open absent - n/a "" "" ""
    fi

    # Ephemeral ports: one per connection per (source address, destination) pair.
    local lo hi ports total nlo nhi srcs
    if cur=$(sysctl_get net.ipv4.ip_local_port_range) && read -r lo hi _ <<<"$cur" && [[ $lo =~ ^[0-9]+$ && $hi =~ ^[0-9]+$ ]]; then
        ports=$((hi - lo + 1))
        total=$((ports * K))
        nlo=$lo nhi=$hi
        [[ $nlo -gt 1024 ]] && nlo=1024
        [[ $nhi -lt 65535 ]] && nhi=65535
        srcs=$(ceil_div "$N" $((nhi - nlo + 1)))
        target=""
        [[ $nlo -ne $lo || $nhi -ne $hi ]] && target="$nlo $nhi"
        local pfix="$N connections need $N ports per destination: "
        [[ -n $target ]] && pfix+="widen the range: $(persist_hint net.ipv4.ip_local_port_range "$target")"
        if [[ $((( nhi - nlo + 1) * K)) -lt $N ]]; then
            [[ -n $target ]] && pfix+=" and "
            pfix+="use >= $srcs source addresses (--source-ips $srcs; loadgen --source-ip 127.0.0.2-127.0.0.$((srcs + 1)) on loopback) or several server ports/addresses"
        fi
        row net.ipv4.ip_local_port_range "$lo-$hi: $ports x $K src = $total" ">= $N" "$(grade "$total" "$N" 0)" \
            net.ipv4.ip_local_port_range "$target" "$pfix"
    else
        row net.ipv4.ip_local_port_range absent - n/a "" "" ""
    fi

    # Accept queue and SYN queue (connect rate), backlog of the receive path.
    # (no queue holds more than N, so a small N needs less than 4096)
    local qmin=4096
    [[ $N -lt $qmin ]] && qmin=$N
    sysctl_row net.core.somaxconn "$qmin" 65535 65535 "accept queue cap (listen backlog), drops SYNs during fast ramps"
    sysctl_row net.ipv4.tcp_max_syn_backlog "$qmin" 65535 65535 "half-open connections per listener during a ramp"
    sysctl_row net.core.netdev_max_backlog 1000 16384 16384 "per-CPU input queue (loopback too): drops SYN bursts"

    # Memory: tcp_mem (pages) against the kernel memory N idle sockets need.
    local need_pages memtotal_kib=0 ram_pages l="" p="" h="" nl np nh
    need_pages=$(ceil_div "$kmem" "$PAGE")
    local line
    if [[ -r $MEMINFO ]]; then
        while IFS= read -r line; do
            if [[ $line == MemTotal:* ]]; then
                read -r _ memtotal_kib _ <<<"$line"
                break
            fi
        done <"$MEMINFO"
    fi
    [[ $memtotal_kib =~ ^[0-9]+$ ]] || memtotal_kib=0
    ram_pages=$((memtotal_kib * 1024 / PAGE))
    if cur=$(sysctl_get net.ipv4.tcp_mem) && read -r l p h _ <<<"$cur" && [[ $h =~ ^[0-9]+$ ]]; then
        nh=$need_pages
        local capped=""
        if [[ $ram_pages -gt 0 && $nh -gt $((ram_pages * 9 / 10)) ]]; then
            nh=$((ram_pages * 9 / 10))
            capped=" (capped at 90% of RAM: RAM is the limit)"
        fi
        nh=$(max "$h" "$nh")
        np=$(max "$p" $((nh * 2 / 3)))
        nl=$(max "$l" $((nh / 2)))
        target=""
        [[ $nh -ne $h ]] && target="$nl $np $nh"
        row net.ipv4.tcp_mem "$cur (max $(mib $((h * PAGE))) MiB)" ">= $need_pages pages max ($(mib "$kmem") MiB)" \
            "$(grade "$h" "$need_pages" 0)" net.ipv4.tcp_mem "$target" \
            "TCP memory ceiling in $PAGE-byte pages, $sockets sockets x ~$SOCK_BYTES B: $(persist_hint net.ipv4.tcp_mem "${target:-$l $p $h}")$capped"
    else
        row net.ipv4.tcp_mem absent - n/a "" "" ""
    fi
    local key mn df imp
    for key in net.ipv4.tcp_rmem net.ipv4.tcp_wmem; do
        if cur=$(sysctl_get "$key") && read -r mn df _ <<<"$cur" && [[ $df =~ ^[0-9]+$ && $mn =~ ^[0-9]+$ ]]; then
            imp=$((sockets * mn))
            st=OK
            [[ -n $h && $h =~ ^[0-9]+$ && $imp -gt $((h * PAGE)) ]] && st=ADVISE
            row "$key" "$cur" "at N: min $(mib "$imp"), default $(mib $((sockets * df))) MiB" "$st" "" "" \
                "min buffer each socket is guaranteed under memory pressure: $sockets sockets x $mn B = $(mib "$imp") MiB > tcp_mem max $(mib $((h * PAGE))) MiB: raise tcp_mem (or lower the min)"
        else
            row "$key" absent - n/a "" "" ""
        fi
    done
    if [[ $memtotal_kib -gt 0 ]]; then
        row "MemTotal (RAM)" "$((memtotal_kib / 1024)) MiB" ">= $(mib "$kmem") MiB kernel" \
            "$(grade $((memtotal_kib * 1024)) "$kmem" 0)" "" "" \
            "not a setting: $sockets sockets x ~$SOCK_BYTES B of kernel memory (plus user space) do not fit; add RAM or spread the load over boxes"
    fi

    # conntrack: one entry per connection when the module is loaded.
    local bk ctmax
    if cur=$(sysctl_get net.netfilter.nf_conntrack_max) && [[ $cur =~ ^[0-9]+$ ]]; then
        local cnt
        cnt=$(sysctl_get net.netfilter.nf_conntrack_count 2>/dev/null) || cnt="?"
        target=$(roundup "$N" 65536)
        row net.netfilter.nf_conntrack_max "$cur (in use $cnt)" ">= $N" "$(grade "$cur" "$N" 0)" \
            net.netfilter.nf_conntrack_max "$target" \
            "one conntrack entry per connection, new ones dropped when full: $(persist_hint net.netfilter.nf_conntrack_max "$target"), or exempt the test traffic (iptables -t raw ... -j NOTRACK)"
        if bk=$(sysctl_get net.netfilter.nf_conntrack_buckets) && [[ $bk =~ ^[0-9]+$ ]]; then
            ctmax=$(max "$cur" "$target")
            target=$(max "$bk" $((ctmax / 4)))
            row net.netfilter.nf_conntrack_buckets "$bk" ">= $((ctmax / 8)) (max/8)" "$(grade "$bk" 0 $((ctmax / 8)))" \
                net.netfilter.nf_conntrack_buckets "$target" \
                "conntrack hash size (lookup cost, not a bound): $(persist_hint net.netfilter.nf_conntrack_buckets "$target") or modprobe option nf_conntrack hashsize=$target"
        fi
    else
        row net.netfilter.nf_conntrack_max "not loaded" - OK "" "" ""
        NOTES+=("conntrack is not loaded: nothing to size (it would need nf_conntrack_max >= $N if loaded)")
    fi

    # Advisory: TIME_WAIT reuse, FIN_WAIT2 time, mappings.
    if cur=$(sysctl_get net.ipv4.tcp_tw_reuse) && [[ $cur =~ ^[0-9]+$ ]]; then
        st=OK
        [[ $cur -ne 1 ]] && st=ADVISE
        local shown=$cur
        [[ $cur -eq 2 ]] && shown="2 (loopback only)"
        row net.ipv4.tcp_tw_reuse "$shown" "1 (advised)" "$st" net.ipv4.tcp_tw_reuse 1 \
            "reuse TIME_WAIT ports for new connects on repeated runs: $(persist_hint net.ipv4.tcp_tw_reuse 1)"
    else
        row net.ipv4.tcp_tw_reuse absent - n/a "" "" ""
    fi
    if cur=$(sysctl_get net.ipv4.tcp_fin_timeout) && [[ $cur =~ ^[0-9]+$ ]]; then
        st=OK
        [[ $cur -gt 30 ]] && st=ADVISE
        row net.ipv4.tcp_fin_timeout "$cur" "<= 30 (advised)" "$st" net.ipv4.tcp_fin_timeout 30 \
            "seconds an orphaned FIN_WAIT2 socket (port + memory) lingers after a mass close: $(persist_hint net.ipv4.tcp_fin_timeout 30)"
    else
        row net.ipv4.tcp_fin_timeout absent - n/a "" "" ""
    fi
    sysctl_row vm.max_map_count 0 262144 262144 "memory mappings per process (allocator arenas, io_uring rings at many cores)"
}

print_table() {
    local i w1=7 w2=7 w3 n=${#R_NAME[@]} hdr3="needed for N=$N"
    w3=${#hdr3}
    for ((i = 0; i < n; i++)); do
        [[ ${#R_NAME[i]} -gt $w1 ]] && w1=${#R_NAME[i]}
        [[ ${#R_CUR[i]} -gt $w2 ]] && w2=${#R_CUR[i]}
        [[ ${#R_NEED[i]} -gt $w3 ]] && w3=${#R_NEED[i]}
    done
    printf '%-*s | %-*s | %-*s | %s\n' "$w1" setting "$w2" current "$w3" "$hdr3" status
    printf '%s-+-%s-+-%s-+-%s\n' "$(printf '%*s' "$w1" '' | tr ' ' -)" "$(printf '%*s' "$w2" '' | tr ' ' -)" \
        "$(printf '%*s' "$w3" '' | tr ' ' -)" ------
    for ((i = 0; i < n; i++)); do
        printf '%-*s | %-*s | %-*s | %s\n' "$w1" "${R_NAME[i]}" "$w2" "${R_CUR[i]}" "$w3" "${R_NEED[i]}" "${R_STATUS[i]}"
    done
}

count_status() {
    local i c=0
    for ((i = 0; i < ${#R_STATUS[@]}; i++)); do [[ ${R_STATUS[i]} == "$1" ]] && c=$((c + 1)); done
    echo "$c"
}

plural() { if [[ $1 -eq 1 ]]; then echo "$1 $2"; else echo "$1 ${2}s"; fi; }

print_summary() {
    local i lows advs
    lows=$(count_status LOW) advs=$(count_status ADVISE)
    echo "$N connections: $(plural "$lows" setting) LOW, $(plural "$advs" advisory)" | sed 's/advisorys/advisories/'
    for ((i = 0; i < ${#R_NAME[@]}; i++)); do
        [[ ${R_STATUS[i]} == LOW ]] && echo "  LOW ${R_NAME[i]}: ${R_FIX[i]}"
    done
    for ((i = 0; i < ${#R_NAME[@]}; i++)); do
        [[ ${R_STATUS[i]} == ADVISE ]] && echo "  ADVISE ${R_NAME[i]}: ${R_FIX[i]}"
    done
    return 0
}

header() {
    echo "ws-ceiling $CMD: $N connections, $K source address(es), $ENDS connection end(s) on this box (sysctl root $SYSCTL_ROOT)"
}

cmd_check() {
    header
    evaluate
    print_table
    local note
    for note in "${NOTES[@]}"; do echo "note: $note"; done
    print_summary
    [[ $(count_status LOW) -eq 0 ]]
}

# --- saved values -----------------------------------------------------------------------

netns_id() { readlink /proc/self/ns/net 2>/dev/null || echo unknown; }

# Checks the state file belongs to this sysctl root and network namespace.
state_matches() {
    local line root="" ns=""
    while IFS= read -r line; do
        case $line in
            "# sysctl-root "*) root=${line#"# sysctl-root "} ;;
            "# netns "*) ns=${line#"# netns "} ;;
        esac
    done <"$STATE_FILE"
    if [[ $root != "$SYSCTL_ROOT" || $ns != "$(netns_id)" ]]; then
        echo "$STATE_FILE holds values saved for sysctl root '$root' in network namespace $ns, but this run uses '$SYSCTL_ROOT' in $(netns_id): run $PROG revert there (same WS_CEILING_SYSCTL_ROOT / ip netns exec), or use another WS_CEILING_STATE_DIR" >&2
        return 1
    fi
}

saved_has() {
    [[ -f $STATE_FILE ]] || return 1
    local line
    while IFS= read -r line; do
        [[ $line == "$1 "* ]] && return 0
    done <"$STATE_FILE"
    return 1
}

# Records the original raw value of $1 unless an earlier apply already did; SAVED_NEW
# tells whether this call added it.
SAVED_NEW=0
save_original() {
    local key=$1 raw=$2
    SAVED_NEW=0
    saved_has "$key" && return 0
    SAVED_NEW=1
    mkdir -p "$STATE_DIR" 2>/dev/null || { echo "cannot create $STATE_DIR" >&2; return 1; }
    if [[ ! -f $STATE_FILE ]]; then
        {
            echo "# ws-ceiling scripts/tune.sh: sysctl values before apply; 'scripts/tune.sh revert' restores them"
            echo "# sysctl-root $SYSCTL_ROOT"
            echo "# netns $(netns_id)"
        } >"$STATE_FILE" 2>/dev/null || { echo "cannot write $STATE_FILE" >&2; return 1; }
    fi
    printf '%s %s\n' "$key" "$raw" >>"$STATE_FILE" 2>/dev/null || { echo "cannot write $STATE_FILE" >&2; return 1; }
}

# Drops $1 from the saved values (its write failed, so there is nothing to restore).
unsave() {
    local line keep=() n=0
    while IFS= read -r line; do
        [[ $line == "$1 "* ]] && continue
        keep+=("$line")
        [[ $line == "#"* ]] || n=$((n + 1))
    done <"$STATE_FILE"
    if [[ $n -eq 0 ]]; then
        rm -f "$STATE_FILE"
    else
        printf '%s\n' "${keep[@]}" >"$STATE_FILE.tmp" && mv "$STATE_FILE.tmp" "$STATE_FILE"
    fi
}

only_match() {
    [[ -z $ONLY ]] && return 0
    local g globs
    IFS=, read -r -a globs <<<"$ONLY"
    for g in "${globs[@]}"; do
        # shellcheck disable=SC2053
        [[ $1 == $g ]] && return 0
    done
    return 1
}

# How to raise RLIMIT_NOFILE where it lives, and whether this box lets a process do it.
explain_nofile() {
    local t out
    t=$(roundup $((N + FD_MARGIN)) 1048576)
    echo "RLIMIT_NOFILE is a per-process limit inherited from whatever starts the process: a script cannot raise it for its caller, and apply does not touch running processes."
    local hard
    hard=$(ulimit_val -Hn)
    if [[ $hard -ge $t ]]; then
        echo "  this shell's hard limit ($(fmt_lim "$hard")) already allows $t: 'ulimit -n $t' here, prlimit for a running process, or restart it from here."
    elif out=$( (ulimit -Hn "$t" && ulimit -Sn "$t") 2>&1); then
        echo "  this process could raise its own hard limit to $t (CAP_SYS_RESOURCE present): do it in the shell that starts the run."
    else
        out=${out##*: }
        if ! have_cap_sys_resource; then
            echo "  the hard limit cannot be raised here: no CAP_SYS_RESOURCE (ulimit -Hn $t: ${out:-refused}); raise it where the process is created (host, container runtime, service manager)."
        else
            echo "  the hard limit cannot be raised to $t here (ulimit -Hn $t: ${out:-refused}): fs.nr_open is $(sysctl_get fs.nr_open || echo '?'), raise it first."
        fi
    fi
    echo "  ways: ulimit -Hn $t; ulimit -n $t       (the shell that starts the run; hard part needs CAP_SYS_RESOURCE)"
    echo "        prlimit --pid PID --nofile=$t:$t    (a running process, e.g. that shell)"
    echo "        /etc/security/limits.conf: '* - nofile $t'   (PAM logins; root needs its own 'root - nofile $t' line)"
    echo "        systemd: LimitNOFILE=$t in the unit, or systemd-run -p LimitNOFILE=$t --pty bash"
    echo "        docker run --ulimit nofile=$t:$t"
    echo "        Kubernetes: no pod field; the container runtime's limit applies (LimitNOFILE= of containerd.service, CRI-O default_ulimits), the entrypoint may lower it"
}

cmd_apply() {
    header
    if [[ -f $STATE_FILE ]]; then state_matches || return 1; fi
    echo "saved values: $STATE_FILE"
    evaluate
    local i key target st raw old err changed=0 failed=0 skipped=0 readback
    # Sysctls first (fs.nr_open before anyone tries the hard RLIMIT_NOFILE).
    for ((i = 0; i < ${#R_NAME[@]}; i++)); do
        st=${R_STATUS[i]} key=${R_KEY[i]} target=${R_TARGET[i]}
        [[ $st == LOW || ($st == ADVISE && $ADVISED -eq 1) ]] || continue
        [[ -n $key ]] || continue
        if ! only_match "$key"; then
            echo "$key: $st, skipped (not in --only '$ONLY')"
            skipped=$((skipped + 1))
            continue
        fi
        if [[ -z $target ]]; then
            echo "$key: $st, nothing apply can change: ${R_FIX[i]}"
            continue
        fi
        raw=$(sysctl_raw "$key") || { echo "$key: cannot read it"; failed=$((failed + 1)); continue; }
        old=$(squash "$raw")
        if [[ $old == "$(squash "$target")" ]]; then
            continue
        fi
        save_original "$key" "$raw" || { echo "$key: not changed: its current value could not be saved"; failed=$((failed + 1)); continue; }
        if err=$(sysctl_write "$key" "$target"); then
            readback=$(sysctl_get "$key" || echo '?')
            if [[ $readback == "$(squash "$target")" ]]; then
                echo "$key: $old -> $target"
            else
                echo "$key: $old -> $readback (asked for $target: the kernel clamped it)"
            fi
            changed=$((changed + 1))
        else
            [[ $SAVED_NEW -eq 1 ]] && unsave "$key"
            echo "$key: could not change ($old, wanted $target): $(write_failure_hint "$key" "$err")"
            failed=$((failed + 1))
        fi
    done
    # What apply cannot change.
    local name nofile_low=0
    for ((i = 0; i < ${#R_NAME[@]}; i++)); do
        [[ ${R_STATUS[i]} == LOW && -z ${R_KEY[i]} ]] || continue
        name=${R_NAME[i]}
        case $name in
            RLIMIT_NOFILE*) echo "$name: not changed (${R_CUR[i]}, needs ${R_NEED[i]})"; nofile_low=1 ;;
            *) echo "$name: not changed (${R_CUR[i]}, needs ${R_NEED[i]}): ${R_FIX[i]}" ;;
        esac
        failed=$((failed + 1))
    done
    [[ $nofile_low -eq 1 ]] && explain_nofile
    for ((i = 0; i < ${#R_NAME[@]}; i++)); do
        [[ ${R_NAME[i]} == net.netfilter.nf_conntrack_max && -z ${R_KEY[i]} ]] &&
            echo "net.netfilter.nf_conntrack_max: conntrack is not loaded: nothing needed"
    done
    local state_note=""
    [[ -f $STATE_FILE ]] && state_note=" (scripts/tune.sh revert restores the saved values)"
    echo "apply: $changed changed, $failed could not be changed, $skipped skipped$state_note"
    # Re-check.
    evaluate
    local lows
    lows=$(count_status LOW)
    if [[ $lows -eq 0 ]]; then
        echo "$N connections: nothing LOW now"
        return 0
    fi
    echo "$N connections: $(plural "$lows" setting) still LOW:"
    for ((i = 0; i < ${#R_NAME[@]}; i++)); do
        [[ ${R_STATUS[i]} == LOW ]] && echo "  LOW ${R_NAME[i]} (${R_CUR[i]}, needs ${R_NEED[i]}): ${R_FIX[i]}"
    done
    return 1
}

cmd_revert() {
    if [[ ! -f $STATE_FILE ]]; then
        echo "nothing saved ($STATE_FILE does not exist): nothing to revert"
        return 0
    fi
    state_matches || return 1
    local line key raw cur err keep=() ok=0 bad=0
    while IFS= read -r line; do
        [[ -z $line || $line == "#"* ]] && continue
        key=${line%% *} raw=${line#* }
        cur=$(sysctl_raw "$key") || cur="?"
        if [[ $(squash "$cur") == "$(squash "$raw")" ]]; then
            echo "$key: already $(squash "$raw")"
            ok=$((ok + 1))
        elif err=$(sysctl_write "$key" "$raw"); then
            echo "$key: $(squash "$cur") -> $(squash "$raw")"
            ok=$((ok + 1))
        else
            echo "$key: could not restore $(squash "$raw"): $(write_failure_hint "$key" "$err")"
            keep+=("$line")
            bad=$((bad + 1))
        fi
    done <"$STATE_FILE"
    if [[ $bad -eq 0 ]]; then
        rm -f "$STATE_FILE"
        rmdir "$STATE_DIR" 2>/dev/null || true
        echo "revert: $ok restored, saved values removed"
        return 0
    fi
    local tmp=$STATE_FILE.tmp
    {
        head -n 3 "$STATE_FILE"
        printf '%s\n' "${keep[@]}"
    } >"$tmp" && mv "$tmp" "$STATE_FILE"
    echo "revert: $ok restored, $bad not restored (kept in $STATE_FILE)"
    return 1
}

main() {
    parse_args "$@"
    case $CMD in
        check) cmd_check ;;
        apply) cmd_apply ;;
        revert) cmd_revert ;;
    esac
}

main "$@"
