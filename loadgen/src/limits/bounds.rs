//! Which limit stops N connections: pure arithmetic over what the system says
//! ([`Limits`], filled by [`Limits::gather`] or injected by tests) and what a run wants
//! ([`Inputs`]). [`bounds`] returns one [`Bound`] per limit with the largest N it allows,
//! sorted so the first is the binding one. `doctor` prints them; `ceiling` uses them to
//! size its agents and to say what the next limit would be.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::metrics::{MetricsUrl, ServerMetrics};
use crate::limits::{self, Meminfo};

/// User-space bytes per idle connection in ws-server (measured here: 19,000 idle
/// connections at ~42 B each).
pub const SERVER_BYTES_PER_CONN: f64 = 42.0;
/// User-space bytes per idle connection in ws-loadgen: its slot (~130 B) plus what the
/// handshake leaves in the allocator; `ceiling` runs here measure 650-700 B of RSS growth.
pub const LOADGEN_BYTES_PER_CONN: f64 = 700.0;
/// Kernel memory per idle loopback TCP socket (measured ~5 KB; the budget tune.sh uses).
pub const KERNEL_BYTES_PER_SOCKET: f64 = 5120.0;
/// Accepts per second one ws-server core sustains here (measured ~12k/s with handshakes).
pub const ACCEPT_RATE_PER_CORE: f64 = 12_000.0;
/// Descriptors a server needs besides its connections when it cannot be asked.
pub const SERVER_BASE_FDS: u64 = 32;

/// The server side of the limits, when it is known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSide {
    pub pid: Option<u32>,
    pub comm: String,
    /// RLIMIT_NOFILE (soft, hard): from /proc/PID/limits, else `process_max_fds`.
    pub nofile: Option<(u64, u64)>,
    /// Descriptors open now.
    pub fds_open: Option<u64>,
    /// Connections (open + mid-handshake) it holds now, from /metrics.
    pub connections: Option<u64>,
    /// Cores it serves on (from /metrics labels).
    pub cores: usize,
    pub rss_bytes: Option<u64>,
}

impl ServerSide {
    /// Descriptors it uses besides connections.
    pub fn base_fds(&self) -> u64 {
        match (self.fds_open, self.connections) {
            (Some(f), Some(c)) => f.saturating_sub(c),
            (Some(f), None) => f,
            _ => SERVER_BASE_FDS,
        }
    }
}

/// What the system says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// This process's RLIMIT_NOFILE after raising the soft limit to the hard one (what a
    /// load generator started from here gets).
    pub loadgen_nofile: (u64, u64),
    /// Worker threads per load generator process.
    pub loadgen_workers: u64,
    pub server: Option<ServerSide>,
    pub file_max: Option<u64>,
    /// Files allocated system-wide now (first field of fs.file-nr).
    pub file_nr: Option<u64>,
    pub nr_open: Option<u64>,
    pub port_range: Option<(u32, u32)>,
    /// Ports of the range listed in ip_local_reserved_ports.
    pub reserved_ports: u64,
    pub somaxconn: Option<u64>,
    pub syn_backlog: Option<u64>,
    /// nf_conntrack_max (None: conntrack not loaded).
    pub conntrack_max: Option<u64>,
    pub conntrack_count: Option<u64>,
    pub mem: Option<Meminfo>,
}

/// What the run wants, and the per-connection costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub n: u64,
    pub source_ips: u64,
    /// Connects per second (0: unpaced).
    pub connect_rate: f64,
    /// Connection ends on this box (1 or 2).
    pub ends: u32,
    /// 0: as many as `n` needs (what `ceiling` does).
    pub loadgen_processes: u64,
    /// Accepts per second the server sustains (all cores).
    pub server_accept_rate: f64,
    pub server_bytes_per_conn: f64,
    pub loadgen_bytes_per_conn: f64,
    pub kernel_bytes_per_socket: f64,
}

/// One limit and the largest N it allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// Stable identifier: `server_open_files`, `loadgen_open_files`, `system_open_files`,
    /// `ports`, `conntrack`, `accept_queue`, `memory`.
    pub key: String,
    pub name: String,
    /// The limit's value now, as text.
    pub current: String,
    /// Largest N it allows (None: it does not bound N, or it is unknown).
    pub max_n: Option<u64>,
    /// False when the figure could not be read.
    pub known: bool,
    /// How to raise it.
    pub fix: String,
}

impl Bound {
    pub fn allows(&self, n: u64) -> bool {
        self.max_n.is_none_or(|m| m >= n)
    }
}

fn roundup(v: u64, m: u64) -> u64 {
    v.div_ceil(m) * m
}

fn lim(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Bytes of memory one connection costs on this box.
pub fn bytes_per_conn(i: &Inputs) -> f64 {
    let server = if i.ends >= 2 {
        i.server_bytes_per_conn
    } else {
        0.0
    };
    server + i.loadgen_bytes_per_conn + i.kernel_bytes_per_socket * i.ends as f64
}

/// Every bound for `i.n` connections under `l`, sorted: the one that binds first (smallest
/// max N) first, bounds that do not bound N (or are unknown) last.
pub fn bounds(l: &Limits, i: &Inputs) -> Vec<Bound> {
    let n = i.n;
    let nofile_target = roundup(n + 1024, 1 << 20);
    let mut out = Vec::new();

    // Descriptors of the server process.
    match &l.server {
        Some(s) if s.nofile.is_some() => {
            let (soft, hard) = s.nofile.unwrap_or_default();
            let base = s.base_fds();
            let who = s
                .pid
                .map(|p| format!("pid {p} {}", s.comm))
                .unwrap_or_else(|| "from /metrics".into());
            let pid = s.pid.map_or("PID".to_string(), |p| p.to_string());
            out.push(Bound {
                key: "server_open_files".into(),
                name: format!("server open files (RLIMIT_NOFILE, {who})"),
                current: format!("soft {} hard {}, {base} fds besides connections", lim(soft), lim(hard)),
                max_n: Some(soft.saturating_sub(base)),
                known: true,
                fix: format!(
                    "raise the server's hard and soft RLIMIT_NOFILE to >= {} (N + 1024), e.g. {nofile_target}: \
                     systemd LimitNOFILE={nofile_target}; prlimit --pid {pid} --nofile={nofile_target}:{nofile_target} \
                     (a running process); ulimit -Hn {nofile_target} in the shell that starts it (raising the hard \
                     limit needs CAP_SYS_RESOURCE); docker run --ulimit nofile={nofile_target}:{nofile_target}; \
                     fs.nr_open ({}) caps it. See docs/TUNING.md, scripts/tune.sh check --connections {n}",
                    n + 1024,
                    l.nr_open.map_or("?".into(), |v| v.to_string())
                ),
            });
        }
        _ if i.ends >= 2 => out.push(Bound {
            key: "server_open_files".into(),
            name: "server open files (RLIMIT_NOFILE)".into(),
            current: "unknown: no server process found and no /metrics".into(),
            max_n: None,
            known: false,
            fix: "start the server first, or pass --server-pid PID".into(),
        }),
        _ => {}
    }

    // Descriptors of the load generator, per process.
    let (soft, hard) = l.loadgen_nofile;
    let reserve = crate::config::FD_RESERVE + l.loadgen_workers;
    let per = soft.saturating_sub(reserve);
    let need_procs = n.div_ceil(per.max(1)).max(1);
    let (procs, auto) = match i.loadgen_processes {
        0 => (need_procs, " (auto: as many as N needs)"),
        p => (p, ""),
    };
    out.push(Bound {
        key: "loadgen_open_files".into(),
        name: "load generator open files (RLIMIT_NOFILE per process)".into(),
        current: format!(
            "soft {} hard {} x {procs} process(es){auto}, {reserve} fds reserved each",
            lim(soft),
            lim(hard)
        ),
        max_n: Some(per.saturating_mul(procs)),
        known: true,
        fix: format!(
            "raise the hard RLIMIT_NOFILE of the shell that starts ws-loadgen to >= {} (ulimit -Hn {nofile_target}; \
             needs CAP_SYS_RESOURCE), or spread the load over {need_procs} processes: `ws-loadgen ceiling` does it \
             by itself (--processes), for `run` start several",
            n + reserve
        ),
    });

    // Descriptors of the whole box.
    if let Some(fm) = l.file_max {
        let used = l.file_nr.unwrap_or(0);
        let ends = i.ends.max(1) as u64;
        let target = roundup(ends * (n + 1024) + 65536, 1 << 20);
        out.push(Bound {
            key: "system_open_files".into(),
            name: "system open files (fs.file-max)".into(),
            current: format!("{fm}, {used} allocated now, {ends} file(s) per connection"),
            max_n: Some(fm.saturating_sub(used) / ends),
            known: true,
            fix: format!(
                "sysctl -w fs.file-max={target} (persist in /etc/sysctl.d/90-ws-ceiling.conf; not namespaced: \
                 set it on the host)"
            ),
        });
    }

    // Ephemeral ports per (source address, server address:port).
    match l.port_range {
        Some((lo, hi)) => {
            let per_ip = ((hi - lo + 1) as u64).saturating_sub(l.reserved_ports);
            let k = i.source_ips.max(1);
            let need_ips = n.div_ceil(64_512);
            out.push(Bound {
                key: "ports".into(),
                name: "ephemeral ports (ip_local_port_range x source addresses)".into(),
                current: format!(
                    "{lo}-{hi}: {per_ip} ports{} x {k} source address(es)",
                    if l.reserved_ports > 0 {
                        format!(" ({} reserved)", l.reserved_ports)
                    } else {
                        String::new()
                    }
                ),
                max_n: Some(per_ip.saturating_mul(k)),
                known: true,
                fix: format!(
                    "sysctl -w net.ipv4.ip_local_port_range='1024 65535' (64,512 ports per source address) and/or \
                     spread over {} source addresses: --source-ip 127.0.0.2-127.0.0.{} on loopback (more server \
                     ports or addresses work too)",
                    n.div_ceil(per_ip.max(1)).max(need_ips),
                    1 + n.div_ceil(per_ip.max(1)).max(need_ips).min(254)
                ),
            });
        }
        None => out.push(Bound {
            key: "ports".into(),
            name: "ephemeral ports (ip_local_port_range x source addresses)".into(),
            current: "unknown (net.ipv4.ip_local_port_range unreadable)".into(),
            max_n: None,
            known: false,
            fix: String::new(),
        }),
    }

    // Connection tracking.
    match l.conntrack_max {
        Some(max) => {
            let used = l.conntrack_count.unwrap_or(0);
            out.push(Bound {
                key: "conntrack".into(),
                name: "conntrack table (nf_conntrack_max)".into(),
                current: format!("{max}, {used} entries in use now"),
                max_n: Some(max.saturating_sub(used)),
                known: true,
                fix: format!(
                    "sysctl -w net.netfilter.nf_conntrack_max={} (host only, read-only in a namespace), or do not \
                     track the test traffic: iptables -t raw -A PREROUTING -p tcp --dport PORT -j NOTRACK and the \
                     same in OUTPUT",
                    roundup(n + used, 65536)
                ),
            });
        }
        None => out.push(Bound {
            key: "conntrack".into(),
            name: "conntrack table (nf_conntrack_max)".into(),
            current: "conntrack not loaded".into(),
            max_n: None,
            known: true,
            fix: String::new(),
        }),
    }

    // Accept queue vs connect rate.
    if let Some(som) = l.somaxconn {
        let cores = l.server.as_ref().map_or(1, |s| s.cores.max(1)) as u64;
        let queue = som * cores;
        let a = i.server_accept_rate;
        let r = i.connect_rate;
        let current = format!(
            "somaxconn {som} x {cores} listener(s) = {queue}; connect rate {}; server accepts ~{a:.0}/s",
            if r > 0.0 {
                format!("{r:.0}/s")
            } else {
                "unpaced".into()
            }
        );
        let (max_n, fix) = if r > 0.0 && r > a {
            // The queue grows at (r - a)/s and is full after queue / (r - a) s, by which
            // time r * that connections were started.
            let m = (queue as f64 * r / (r - a)).floor() as u64;
            let need = (n as f64 * (r - a) / r).ceil() as u64;
            (
                Some(m),
                format!(
                    "lower --connect-rate to <= {a:.0}/s, or raise net.core.somaxconn (and ws-server --backlog) \
                     to >= {} per listener (sysctl -w net.core.somaxconn=65535); past it SYNs are dropped and \
                     connects stall 1 s, 3 s, ... (retransmits)",
                    need.div_ceil(cores)
                ),
            )
        } else {
            (None, String::new())
        };
        out.push(Bound {
            key: "accept_queue".into(),
            name: "accept queue vs connect rate (somaxconn)".into(),
            current,
            max_n,
            known: true,
            fix,
        });
    }

    // Memory.
    let per = bytes_per_conn(i);
    match l.mem {
        Some(m) if per > 0.0 => {
            let sides = if i.ends >= 2 {
                format!(
                    "server {:.0} + load generator {:.0} user + 2 x {:.0} kernel",
                    i.server_bytes_per_conn, i.loadgen_bytes_per_conn, i.kernel_bytes_per_socket
                )
            } else {
                format!(
                    "load generator {:.0} user + {:.0} kernel",
                    i.loadgen_bytes_per_conn, i.kernel_bytes_per_socket
                )
            };
            out.push(Bound {
                key: "memory".into(),
                name: "memory (MemAvailable / bytes per connection)".into(),
                current: format!(
                    "{} MiB available of {} MiB; {per:.0} B per connection ({sides})",
                    m.available >> 20,
                    m.total >> 20
                ),
                max_n: Some((m.available as f64 / per).floor() as u64),
                known: true,
                fix: format!(
                    "needs ~{} MiB: add RAM, free memory, or run the load generator on another box (--ends 1)",
                    ((n as f64 * per) as u64) >> 20
                ),
            });
        }
        _ => out.push(Bound {
            key: "memory".into(),
            name: "memory (MemAvailable / bytes per connection)".into(),
            current: "unknown (meminfo unreadable)".into(),
            max_n: None,
            known: false,
            fix: String::new(),
        }),
    }

    out.sort_by_key(|b| (b.max_n.is_none(), b.max_n.unwrap_or(u64::MAX), !b.known));
    out
}

/// The largest N every known bound allows (None: nothing bounds it).
pub fn largest_feasible(b: &[Bound]) -> Option<u64> {
    b.iter().filter_map(|b| b.max_n).min()
}

/// What gathering needs to know.
pub struct GatherOpts {
    pub target: SocketAddr,
    pub server_pid: Option<u32>,
    pub metrics: Option<MetricsUrl>,
    pub loadgen_workers: u64,
}

impl Limits {
    /// Reads the limits of this box, of this process and of the server.
    pub fn gather(o: &GatherOpts) -> (Self, Option<ServerMetrics>) {
        let nofile = ws_common::metrics::raise_nofile_to_hard();
        let port_range = limits::port_range();
        let reserved = match (
            port_range,
            limits::sysctl("net.ipv4.ip_local_reserved_ports"),
        ) {
            (Some(r), Some(s)) => limits::reserved_in_range(&s, r),
            _ => 0,
        };
        let sm = o.metrics.as_ref().and_then(|m| {
            match m.scrape(Duration::from_secs(2)) {
                Ok(page) => Some(ServerMetrics::from(&page)),
                Err(e) => {
                    // Said once, here: every figure that needed the page is then "unknown".
                    eprintln!(
                        "ws-loadgen: note: no server metrics from http://{}{}: {e} \
                         (--metrics-url, --admin-url; `--metrics-url none` not to ask)",
                        m.host, m.path
                    );
                    None
                }
            }
        });
        let found = limits::find_server(o.target, o.server_pid);
        let server = if found.is_some() || sm.is_some() {
            let pid = found.as_ref().map(|f| f.0);
            let mut s = ServerSide {
                pid,
                comm: found.map(|f| f.1).unwrap_or_default(),
                nofile: pid.and_then(limits::proc_nofile),
                fds_open: pid.and_then(limits::proc_fd_count),
                connections: None,
                cores: 1,
                rss_bytes: pid.and_then(limits::proc_rss),
            };
            if let Some(m) = &sm {
                // The scrape's own connection was counted as pending while it was served.
                s.connections = Some(m.connections_open + m.pending.saturating_sub(1));
                s.cores = m.cores.max(1);
                if s.nofile.is_none() {
                    s.nofile = m.max_fds.map(|v| (v, v));
                }
                if s.fds_open.is_none() {
                    s.fds_open = m.open_fds.map(|v| v.saturating_sub(1));
                }
                if s.rss_bytes.is_none() {
                    s.rss_bytes = m.rss_bytes;
                }
            }
            Some(s)
        } else {
            None
        };
        let file_nr = limits::sysctl("fs.file-nr")
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
        (
            Self {
                loadgen_nofile: nofile,
                loadgen_workers: o.loadgen_workers,
                server,
                file_max: limits::sysctl_u64("fs.file-max"),
                file_nr,
                nr_open: limits::sysctl_u64("fs.nr_open"),
                port_range,
                reserved_ports: reserved,
                somaxconn: limits::sysctl_u64("net.core.somaxconn"),
                syn_backlog: limits::sysctl_u64("net.ipv4.tcp_max_syn_backlog"),
                conntrack_max: limits::sysctl_u64("net.netfilter.nf_conntrack_max"),
                conntrack_count: limits::sysctl_u64("net.netfilter.nf_conntrack_count"),
                mem: limits::meminfo(),
            },
            sm,
        )
    }
}

/// Measured bytes per connection: (server, load generator, kernel per socket).
pub type Measured = (Option<f64>, Option<f64>, Option<f64>);

/// Measured bytes per connection from a ceiling JSON report.
pub fn measured_from_report(path: &std::path::Path) -> Result<Measured, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let m = v.get("memory").ok_or_else(|| {
        format!(
            "{}: no \"memory\" section (not a ceiling report?)",
            path.display()
        )
    })?;
    let f = |k: &str| m.get(k).and_then(|x| x.as_f64()).filter(|x| *x > 0.0);
    Ok((
        f("server_user_bytes_per_conn"),
        f("loadgen_user_bytes_per_conn"),
        f("kernel_bytes_per_conn").map(|k| k / 2.0),
    ))
}

/// The doctor's whole answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Diagnosis {
    pub url: String,
    pub server_addr: String,
    pub inputs: Inputs,
    pub limits: Limits,
    pub bounds: Vec<Bound>,
    pub largest_feasible: Option<u64>,
    pub binding: Option<String>,
    pub feasible: bool,
    /// wss://: what handshakes cost, measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::limits::tls_probe::TlsProbe>,
}

impl Diagnosis {
    pub fn new(url: String, addr: SocketAddr, limits: Limits, inputs: Inputs) -> Self {
        let b = bounds(&limits, &inputs);
        let largest = largest_feasible(&b);
        let feasible = b.iter().all(|x| x.allows(inputs.n));
        let binding = b
            .first()
            .filter(|x| x.max_n.is_some())
            .map(|x| x.key.clone());
        Self {
            url,
            server_addr: addr.to_string(),
            inputs,
            limits,
            bounds: b,
            largest_feasible: largest,
            binding,
            feasible,
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A roomy box: nothing binds below a few hundred thousand.
    fn roomy() -> Limits {
        Limits {
            loadgen_nofile: (1 << 20, 1 << 20),
            loadgen_workers: 2,
            server: Some(ServerSide {
                pid: Some(42),
                comm: "ws-server".into(),
                nofile: Some((1 << 20, 1 << 20)),
                fds_open: Some(20),
                connections: Some(0),
                cores: 1,
                rss_bytes: None,
            }),
            file_max: Some(10_000_000),
            file_nr: Some(2_000),
            nr_open: Some(1 << 20),
            port_range: Some((1024, 65535)),
            reserved_ports: 0,
            somaxconn: Some(65535),
            syn_backlog: Some(65535),
            conntrack_max: None,
            conntrack_count: None,
            mem: Some(Meminfo {
                total: 64 << 30,
                available: 60 << 30,
                slab: 0,
            }),
        }
    }

    fn inputs(n: u64) -> Inputs {
        Inputs {
            n,
            source_ips: 16,
            connect_rate: 5000.0,
            ends: 2,
            loadgen_processes: 1,
            server_accept_rate: 12_000.0,
            server_bytes_per_conn: 42.0,
            loadgen_bytes_per_conn: 200.0,
            kernel_bytes_per_socket: 5120.0,
        }
    }

    fn get<'a>(b: &'a [Bound], key: &str) -> &'a Bound {
        b.iter().find(|x| x.key == key).unwrap()
    }

    #[test]
    fn server_open_files() {
        let mut l = roomy();
        l.server.as_mut().unwrap().nofile = Some((20_000, 20_000));
        l.server.as_mut().unwrap().fds_open = Some(14);
        let b = bounds(&l, &inputs(25_000));
        assert_eq!(b[0].key, "server_open_files");
        assert_eq!(b[0].max_n, Some(19_986));
        assert!(b[0].fix.contains("LimitNOFILE=1048576"), "{}", b[0].fix);
        // Connections it already holds are not part of its base.
        l.server.as_mut().unwrap().fds_open = Some(1014);
        l.server.as_mut().unwrap().connections = Some(1000);
        assert_eq!(
            get(&bounds(&l, &inputs(10)), "server_open_files").max_n,
            Some(19_986)
        );
        // Unknown server: a row that says so, and nothing is assumed.
        l.server = None;
        let b = bounds(&l, &inputs(10));
        let s = get(&b, "server_open_files");
        assert!(!s.known && s.max_n.is_none());
        let mut one_end = inputs(10);
        one_end.ends = 1;
        assert!(!bounds(&l, &one_end)
            .iter()
            .any(|x| x.key == "server_open_files"));
    }

    #[test]
    fn loadgen_open_files_per_process() {
        let mut l = roomy();
        l.loadgen_nofile = (20_000, 20_000);
        let mut i = inputs(50_000);
        let b = bounds(&l, &i);
        // 20000 - 64 reserved - 2 workers.
        assert_eq!(get(&b, "loadgen_open_files").max_n, Some(19_934));
        assert_eq!(b[0].key, "loadgen_open_files");
        i.loadgen_processes = 3;
        assert_eq!(
            get(&bounds(&l, &i), "loadgen_open_files").max_n,
            Some(59_802)
        );
        // auto: as many processes as N needs, so never the binding bound.
        i.loadgen_processes = 0;
        assert_eq!(
            get(&bounds(&l, &i), "loadgen_open_files").max_n,
            Some(59_802)
        );
    }

    #[test]
    fn system_open_files() {
        let mut l = roomy();
        l.file_max = Some(100_000);
        l.file_nr = Some(10_000);
        let b = bounds(&l, &inputs(1_000_000));
        assert_eq!(get(&b, "system_open_files").max_n, Some(45_000)); // 2 files each
        let mut i = inputs(1_000_000);
        i.ends = 1;
        assert_eq!(
            get(&bounds(&l, &i), "system_open_files").max_n,
            Some(90_000)
        );
    }

    #[test]
    fn ports() {
        let mut l = roomy();
        l.port_range = Some((32768, 60999));
        let mut i = inputs(100_000);
        i.source_ips = 1;
        let b = bounds(&l, &i);
        assert_eq!(get(&b, "ports").max_n, Some(28_232));
        assert_eq!(b[0].key, "ports");
        assert!(b[0].fix.contains("--source-ip"), "{}", b[0].fix);
        i.source_ips = 4;
        assert_eq!(get(&bounds(&l, &i), "ports").max_n, Some(112_928));
        l.port_range = Some((40000, 40199));
        l.reserved_ports = 10;
        i.source_ips = 1;
        assert_eq!(get(&bounds(&l, &i), "ports").max_n, Some(190));
    }

    #[test]
    fn conntrack() {
        let mut l = roomy();
        let b = bounds(&l, &inputs(1000));
        assert_eq!(get(&b, "conntrack").max_n, None); // not loaded
        l.conntrack_max = Some(262_144);
        l.conntrack_count = Some(2_144);
        let b = bounds(&l, &inputs(1_000_000));
        assert_eq!(get(&b, "conntrack").max_n, Some(260_000));
        assert!(get(&b, "conntrack")
            .fix
            .contains("nf_conntrack_max=1048576"));
    }

    #[test]
    fn accept_queue_vs_connect_rate() {
        let mut l = roomy();
        l.somaxconn = Some(4096);
        let mut i = inputs(100_000);
        // Slower than the server accepts: no bound.
        assert_eq!(get(&bounds(&l, &i), "accept_queue").max_n, None);
        // 20000/s against 12000/s: the queue grows 8000/s and holds 4096, full after
        // 0.512 s, by which time 10240 connects were started.
        i.connect_rate = 20_000.0;
        let b = bounds(&l, &i);
        assert_eq!(get(&b, "accept_queue").max_n, Some(10_240));
        assert!(get(&b, "accept_queue").fix.contains("<= 12000/s"));
        // Two listeners (server cores) double the queue.
        l.server.as_mut().unwrap().cores = 2;
        assert_eq!(get(&bounds(&l, &i), "accept_queue").max_n, Some(20_480));
    }

    #[test]
    fn memory() {
        let mut l = roomy();
        l.mem = Some(Meminfo {
            total: 2 << 30,
            available: 1 << 30,
            slab: 0,
        });
        let i = inputs(1_000_000);
        // 42 + 200 + 2 x 5120 = 10482 B per connection.
        assert_eq!(bytes_per_conn(&i), 10_482.0);
        let b = bounds(&l, &i);
        assert_eq!(get(&b, "memory").max_n, Some((1u64 << 30) / 10_482));
        assert_eq!(b[0].key, "memory");
        let mut one = i.clone();
        one.ends = 1;
        assert_eq!(bytes_per_conn(&one), 5320.0);
    }

    #[test]
    fn binding_and_feasibility() {
        let mut l = roomy();
        l.server.as_mut().unwrap().nofile = Some((20_000, 20_000));
        l.server.as_mut().unwrap().fds_open = Some(14);
        l.port_range = Some((32768, 60999));
        let mut i = inputs(25_000);
        i.source_ips = 1;
        let d = Diagnosis::new(
            "ws://x/".into(),
            "127.0.0.1:1".parse().unwrap(),
            l.clone(),
            i.clone(),
        );
        assert!(!d.feasible);
        assert_eq!(d.binding.as_deref(), Some("server_open_files"));
        assert_eq!(d.largest_feasible, Some(19_986));
        let t = d.to_text();
        assert!(
            t.contains("binds first") && t.contains("NOT feasible"),
            "{t}"
        );
        i.n = 19_000;
        let d = Diagnosis::new("ws://x/".into(), "127.0.0.1:1".parse().unwrap(), l, i);
        assert!(d.feasible);
        assert!(d.to_text().contains("19,000 connections: feasible"));
    }
}
