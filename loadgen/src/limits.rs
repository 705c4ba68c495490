//! Reading the limits of this box and of the processes on it: sysctls, `/proc/meminfo`,
//! `/proc/net/sockstat`, `/proc/PID/limits`, open descriptors and RSS of a process, the
//! process that listens on a port, and the server's Prometheus `/metrics`.
//!
//! Used by `doctor` (arithmetic over these figures) and `ceiling` (evidence for the limit
//! that stopped a run). Every reader returns `None` instead of failing: a missing figure is
//! reported as unknown, never guessed.
//!
//! Environment (for tests, like `scripts/tune.sh`):
//! - `WS_CEILING_SYSCTL_ROOT`: the sysctl tree (default `/proc/sys`).
//! - `WS_CEILING_MEMINFO`: the meminfo file (default `/proc/meminfo`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// Parsed Prometheus text: `name{labels} value` samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, value) = match line.rfind(' ') {
                Some(i) => (&line[..i], line[i + 1..].trim()),
                None => continue,
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.find('{') {
                Some(i) => (&head[..i], parse_labels(&head[i + 1..head.len() - 1])),
                None => (head.trim(), BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, v));
        }
        Self { samples }
    }

    /// Sum of every sample of `name` (over all label sets); None if absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut it = self.samples.iter().filter(|s| s.0 == name).peekable();
        it.peek()?;
        Some(it.map(|s| s.2).sum())
    }

    /// Sum of the samples of `name` whose label `k` equals `v`.
    pub fn sum_where(&self, name: &str, k: &str, v: &str) -> Option<f64> {
        let mut it = self
            .samples
            .iter()
            .filter(|s| s.0 == name && s.1.get(k).map(String::as_str) == Some(v))
            .peekable();
        it.peek()?;
        Some(it.map(|s| s.2).sum())
    }

    /// Distinct values of label `k` on samples of `name`.
    pub fn label_values(&self, name: &str, k: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.0 == name)
            .filter_map(|s| s.1.get(k).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for part in s.split(',') {
        if let Some((k, v)) = part.split_once('=') {
            m.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
    }
    m
}

/// Where to scrape the server's metrics.
#[derive(Debug, Clone)]
pub struct MetricsUrl {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl MetricsUrl {
    /// `http://HOST[:PORT]/PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| format!("bad metrics URL {s:?}: {e}"))?;
        if u.scheme() != "http" {
            return Err(format!("metrics URL {s:?} must be http://"));
        }
        let host = u
            .host_str()
            .ok_or_else(|| format!("metrics URL {s:?} has no host"))?;
        let port = u.port().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(bare, port))
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to nothing"))?;
        let host = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Self {
            addr,
            host,
            path: u.path().to_string(),
        })
    }

    /// `/metrics` on the same host and port as a `ws://` target.
    pub fn beside(target: &crate::config::Target) -> Self {
        Self {
            addr: target.addr,
            host: target.host_header.clone(),
            path: "/metrics".into(),
        }
    }

    /// GET the page within `timeout` (connect + whole answer) and parse it.
    pub fn scrape(&self, timeout: Duration) -> Result<Metrics, String> {
        let deadline = Instant::now() + timeout;
        let mut s = TcpStream::connect_timeout(&self.addr, timeout)
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let _ = s.set_write_timeout(Some(left()));
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: ws-loadgen\r\n\r\n",
            self.path, self.host
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut body = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            if Instant::now() >= deadline {
                return Err("no complete answer in time".into());
            }
            let _ = s.set_read_timeout(Some(left()));
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err("no complete answer in time".into())
                }
                Err(e) => return Err(format!("read: {e}")),
            }
            if body.len() > 16 << 20 {
                return Err("answer larger than 16 MiB".into());
            }
        }
        let text = String::from_utf8_lossy(&body);
        let (head, rest) = text.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!("HTTP status {status}"));
        }
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Ok(Metrics::parse(&body))
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// What the server's `/metrics` says about descriptors and connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerMetrics {
    pub connections_open: u64,
    pub pending: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub accept_emfile: u64,
    pub accept_enfile: u64,
    pub accept_enomem: u64,
    pub rejected_503: u64,
    pub cores: usize,
}

impl ServerMetrics {
    pub fn from(m: &Metrics) -> Self {
        let u = |v: Option<f64>| v.map(|x| x.max(0.0) as u64);
        Self {
            connections_open: u(m.sum("ws_connections_open")).unwrap_or(0),
            pending: u(m.sum("ws_pending_connections")).unwrap_or(0),
            open_fds: u(m.sum("process_open_fds")),
            max_fds: u(m.sum("process_max_fds")),
            rss_bytes: u(m.sum("process_resident_memory_bytes")),
            accept_emfile: u(m.sum_where("ws_accept_errors_total", "errno", "EMFILE")).unwrap_or(0),
            accept_enfile: u(m.sum_where("ws_accept_errors_total", "errno", "ENFILE")).unwrap_or(0),
            accept_enomem: u(m.sum_where("ws_accept_errors_total", "errno", "ENOMEM")).unwrap_or(0)
                + u(m.sum_where("ws_accept_errors_total", "errno", "ENOBUFS")).unwrap_or(0),
            rejected_503: u(m.sum_where("ws_handshake_rejections_total", "status", "503"))
                .unwrap_or(0),
            cores: m.label_values("ws_connections_open", "core").len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn prometheus_text() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE x counter\nws_connections_open{core=\"0\"} 5\n\
             ws_connections_open{core=\"1\"} 7\nws_accept_errors_total{core=\"0\",errno=\"EMFILE\"} 3\n\
             ws_accept_errors_total{core=\"1\",errno=\"EMFILE\"} 2\n\
             ws_accept_errors_total{core=\"1\",errno=\"ENFILE\"} 1\n\
             ws_handshake_rejections_total{core=\"0\",reason=\"max_conns\",status=\"503\"} 9\n\
             process_open_fds 30\nprocess_max_fds 300\nprocess_resident_memory_bytes 9.2e6\n",
        );
        let s = ServerMetrics::from(&m);
        assert_eq!(s.connections_open, 12);
        assert_eq!(s.accept_emfile, 5);
        assert_eq!(s.accept_enfile, 1);
        assert_eq!(s.rejected_503, 9);
        assert_eq!(s.open_fds, Some(30));
        assert_eq!(s.max_fds, Some(300));
        assert_eq!(s.rss_bytes, Some(9_200_000));
        assert_eq!(s.cores, 2);
        assert_eq!(m.sum("absent"), None);
        assert_eq!(dechunk("5\r\nhello\r\n3\r\n ab\r\n0\r\n\r\n"), "hello ab");
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
