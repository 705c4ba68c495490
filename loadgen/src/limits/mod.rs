//! Reading the limits of this box and of the processes on it: sysctls, `/proc/meminfo`,
//! `/proc/net/sockstat`, `/proc/PID/limits`, open descriptors and RSS of a process, the
//! process that listens on a port. The server's Prometheus `/metrics` is [`metrics`]; what
//! these figures allow is [`bounds`].
//!
//! Used by `doctor` (arithmetic over these figures) and `ceiling` (evidence for the limit
//! that stopped a run). Every reader returns `None` instead of failing: a missing figure is
//! reported as unknown, never guessed.
//!
//! Environment (for tests, like `scripts/tune.sh`):
//! - `WS_CEILING_SYSCTL_ROOT`: the sysctl tree (default `/proc/sys`).
//! - `WS_CEILING_MEMINFO`: the meminfo file (default `/proc/meminfo`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub mod bounds;
pub mod metrics;
pub mod sampler;
pub mod tls_probe;
pub mod verdict;

/// The sysctl tree every sysctl read goes through.
pub fn sysctl_root() -> PathBuf {
    std::env::var_os("WS_CEILING_SYSCTL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/sys"))
}

/// The raw value of sysctl `key` (`net.core.somaxconn`), whitespace squashed.
pub fn sysctl(key: &str) -> Option<String> {
    let path = sysctl_root().join(key.replace('.', "/"));
    let s = std::fs::read_to_string(path).ok()?;
    Some(s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A sysctl holding one integer.
pub fn sysctl_u64(key: &str) -> Option<u64> {
    sysctl(key)?.parse().ok()
}

/// `net.ipv4.ip_local_port_range` as (low, high).
pub fn port_range() -> Option<(u32, u32)> {
    parse_port_range(&sysctl("net.ipv4.ip_local_port_range")?)
}

pub fn parse_port_range(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
    match (it.next()??, it.next()??) {
        (lo, hi) if hi >= lo => Some((lo, hi)),
        _ => None,
    }
}

/// Ports listed in `net.ipv4.ip_local_reserved_ports` that fall inside `range`.
pub fn reserved_in_range(reserved: &str, range: (u32, u32)) -> u64 {
    let mut n = 0u64;
    for part in reserved.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
            None => (part.parse::<u32>(), part.parse::<u32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            let lo = a.max(range.0);
            let hi = b.min(range.1);
            if hi >= lo {
                n += (hi - lo + 1) as u64;
            }
        }
    }
    n
}

/// The figures of `/proc/meminfo` this crate uses, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meminfo {
    pub total: u64,
    pub available: u64,
    pub slab: u64,
}

pub fn meminfo_path() -> PathBuf {
    std::env::var_os("WS_CEILING_MEMINFO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/meminfo"))
}

pub fn meminfo() -> Option<Meminfo> {
    parse_meminfo(&std::fs::read_to_string(meminfo_path()).ok()?)
}

pub fn parse_meminfo(text: &str) -> Option<Meminfo> {
    let mut m = Meminfo::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(kib) = v.parse::<u64>() else { continue };
        match k {
            "MemTotal:" => m.total = kib * 1024,
            "MemAvailable:" => m.available = kib * 1024,
            "Slab:" => m.slab = kib * 1024,
            _ => {}
        }
    }
    (m.total > 0).then_some(m)
}

/// The TCP line of `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SockStat {
    pub inuse: u64,
    pub orphan: u64,
    pub tw: u64,
    pub alloc: u64,
    /// Pages charged to `net.ipv4.tcp_mem`.
    pub mem_pages: u64,
}

pub fn sockstat() -> Option<SockStat> {
    parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

pub fn parse_sockstat(text: &str) -> Option<SockStat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |name: &str| {
        f.iter()
            .position(|w| *w == name)
            .and_then(|i| f.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(SockStat {
        inuse: get("inuse"),
        orphan: get("orphan"),
        tw: get("tw"),
        alloc: get("alloc"),
        mem_pages: get("mem"),
    })
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(1) as u64
}

/// "Max open files" (soft, hard) of a process; `unlimited` is `u64::MAX`.
pub fn proc_nofile(pid: u32) -> Option<(u64, u64)> {
    parse_limits_nofile(&std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

pub fn parse_limits_nofile(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let rest = line.trim_start_matches("Max open files");
    let mut it = rest.split_whitespace().map(|v| {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse::<u64>().ok()
        }
    });
    Some((it.next()??, it.next()??))
}

/// Open descriptors of a process.
pub fn proc_fd_count(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

/// Resident set size of a process in bytes (`VmRSS`).
pub fn proc_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

/// User + system CPU seconds of a process (/proc/PID/stat, in clock ticks).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime) = (
        f.get(11)?.parse::<f64>().ok()?,
        f.get(12)?.parse::<f64>().ok()?,
    );
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / hz)
}

/// The command name of a process.
pub fn proc_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether `ip` is an address of this box (loopback, unspecified, or on an interface).
pub fn is_local_ip(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return false;
    }
    let mut found = false;
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it announces.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            let addr = match fam {
                libc::AF_INET => {
                    // SAFETY: family is AF_INET.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 => {
                    // SAFETY: family is AF_INET6.
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if addr == Some(ip) {
                found = true;
                break;
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The pid and command name of the process listening on `port` (from `/proc/net/tcp*` and
/// `/proc/*/fd`), skipping this process: the same lookup as `ws-server`'s stale-port check.
pub use ws_common::metrics::holder_of_port;

/// The server process for `addr`: `explicit` if given, else the local listener of its port
/// when `addr` is an address of this box.
pub fn find_server(addr: SocketAddr, explicit: Option<u32>) -> Option<(u32, String)> {
    if let Some(pid) = explicit {
        return Some((pid, proc_comm(pid).unwrap_or_default()));
    }
    if is_local_ip(addr.ip()) {
        holder_of_port(addr.port())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_seconds_from_proc() {
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let cpu = proc_cpu_seconds(std::process::id()).unwrap();
        assert!((0.0..3600.0).contains(&cpu), "{cpu}");
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("5 4"), None);
        assert_eq!(reserved_in_range("", (1, 10)), 0);
        assert_eq!(reserved_in_range("5,8-20,30", (1, 10)), 4);
        let m =
            parse_meminfo("MemTotal:  1000 kB\nMemFree: 1 kB\nMemAvailable: 500 kB\nSlab: 20 kB\n")
                .unwrap();
        assert_eq!((m.total, m.available, m.slab), (1_024_000, 512_000, 20_480));
        let s = parse_sockstat(
            "sockets: used 31\nTCP: inuse 4 orphan 1 tw 1549 alloc 5 mem 2\nUDP: inuse 0 mem 0\n",
        )
        .unwrap();
        assert_eq!(
            (s.inuse, s.orphan, s.tw, s.alloc, s.mem_pages),
            (4, 1, 1549, 5, 2)
        );
        let lim = "Limit                     Soft Limit           Hard Limit           Units\n\
                   Max processes             95000                95000                processes\n\
                   Max open files            300                  unlimited            files\n";
        assert_eq!(parse_limits_nofile(lim), Some((300, u64::MAX)));
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        assert!(proc_fd_count(me).unwrap() >= 3);
        assert!(proc_rss(me).unwrap() > 0);
        assert!(proc_nofile(me).is_some());
        assert!(is_local_ip("127.0.0.1".parse().unwrap()));
        assert!(!is_local_ip("192.0.2.77".parse().unwrap()));
        assert!(meminfo().is_some());
    }
}
