//! From parsed arguments to a checked run configuration: the URL resolved to an address,
//! the stage plan, and every impossible setting refused up front with a message that names
//! the limit (file descriptors, ephemeral ports, payload size, ...).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use clap::ValueEnum;

use plan::Plan;

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// `wss://`.
    pub tls: bool,
    /// The URL's host (what TLS checks the certificate against unless `--sni` says other).
    pub host: String,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host_header: String,
    /// Request target: path plus `?query`.
    pub path_and_query: String,
}

pub mod auth;
pub mod parse;
pub mod plan;
pub mod script;
pub mod source_ip;
pub mod tls;

/// What each connection does once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// Idle connections; heartbeat pings every --ping-interval, pong latency recorded.
    Hold,
    /// Echo: stamped --payload byte messages at --rate, RTT, loss and order checked.
    Echo,
    /// Broadcast: every connection subscribes to the URL's room (ws://HOST/broadcast?room=R);
    /// --publishers of them publish stamped messages at --rate in total. Fan-out latency,
    /// per-publisher sequence checks, expected vs received deliveries.
    Broadcast,
    /// Push: connections register as users (?user=u… appended to the URL); HTTP POSTs to
    /// /push/ID at --rate in total deliver stamped messages. Delivery latency, HTTP status.
    Push,
    /// A scenario file (--script FILE): open steps, then a loop.
    #[value(skip)]
    Script,
}

impl ScenarioKind {
    /// Name of the scenario's main latency in reports and thresholds.
    pub fn latency_name(self) -> &'static str {
        match self {
            ScenarioKind::Hold => "pong",
            ScenarioKind::Echo => "rtt",
            ScenarioKind::Broadcast => "fanout",
            ScenarioKind::Push => "push",
            ScenarioKind::Script => "script",
        }
    }
}

/// Which histogram is a run's main latency (the one `--max-p99` without a name, the
/// per-second p99 and the stage table quote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Main {
    Rtt,
    Pong,
    Delivery,
    /// A scripted `[[open]]` step (by index).
    Step(usize),
}

impl RunConfig {
    /// The main latency and its name in reports.
    pub fn main_latency(&self) -> (Main, String) {
        let fixed = |m, n: &str| (m, n.to_string());
        match self.scenario {
            ScenarioKind::Hold => fixed(Main::Pong, "pong"),
            ScenarioKind::Echo => fixed(Main::Rtt, "rtt"),
            ScenarioKind::Broadcast => fixed(Main::Delivery, "fanout"),
            ScenarioKind::Push => fixed(Main::Delivery, "push"),
            ScenarioKind::Script => {
                let Some(s) = self.script.as_deref() else {
                    return fixed(Main::Rtt, "rtt");
                };
                match &s.lp {
                    Some(l) if l.echo => (Main::Rtt, format!("{} rtt", l.name)),
                    Some(l) => (Main::Delivery, format!("{} delivery", l.name)),
                    None => match s.open.iter().rposition(|st| st.expect.is_some()) {
                        Some(i) => (Main::Step(i), s.open[i].name.clone()),
                        None => fixed(Main::Rtt, "rtt"),
                    },
                }
            }
        }
    }

    /// Every latency row a run reports, by the name `--max-p99 NAME=` takes (spaces
    /// written as dots): the fixed ones, then a script's steps and loop.
    pub fn latency_rows(&self) -> Vec<(String, Main)> {
        let mut v: Vec<(String, Main)> = vec![
            ("rtt".into(), Main::Rtt),
            ("pong".into(), Main::Pong),
            ("delivery".into(), Main::Delivery),
        ];
        if let Some(s) = self.script.as_deref() {
            for (i, st) in s.open.iter().enumerate() {
                if st.expect.is_some() {
                    v.push((st.name.clone(), Main::Step(i)));
                }
            }
            if let Some(l) = &s.lp {
                let main = if l.echo { Main::Rtt } else { Main::Delivery };
                v.push((l.name.clone(), main));
                v.push((format!("{}.rtt", l.name), Main::Rtt));
                v.push((format!("{}.delivery", l.name), Main::Delivery));
            }
        }
        v
    }
}

/// Parses and resolves a `ws://` or `wss://` URL.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let u = url::Url::parse(s)
        .map_err(|e| format!("bad URL {s:?}: {e} (expected ws://HOST[:PORT]/PATH)"))?;
    let tls = match u.scheme() {
        "ws" => false,
        "wss" => true,
        other => {
            return Err(format!(
                "bad URL {s:?}: scheme {other:?} is not ws:// or wss://"
            ))
        }
    };
    let end = resolve_host(&u, if tls { 443 } else { 80 }, &format!("URL {s}"))?;
    let mut path_and_query = u.path().to_string();
    if path_and_query.is_empty() {
        path_and_query.push('/');
    }
    if let Some(q) = u.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Ok(Target {
        url: s.to_string(),
        tls,
        host: end.host,
        addr: end.addr,
        host_header: end.host_header,
        path_and_query,
    })
}

/// A URL's host, resolved.
pub(crate) struct Endpoint {
    /// The host without IPv6 brackets (what TLS and the resolver want).
    pub host: String,
    /// Its first address, on the URL's port or the scheme's default.
    pub addr: SocketAddr,
    /// The `Host` header: the host as written, with the port when the URL names one.
    pub host_header: String,
}

/// Resolves `u`'s host and port (`default_port` when the URL names none); `what` names the
/// URL in errors ("URL ws://…", "--admin-url …"). Every URL the load generator takes (the
/// target, the admin listener, /metrics) goes through here.
pub(crate) fn resolve_host(
    u: &url::Url,
    default_port: u16,
    what: &str,
) -> Result<Endpoint, String> {
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{what} has no host"))?;
    // url keeps IPv6 literals in brackets, which the resolver does not want.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare, u.port().unwrap_or(default_port))
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?} of {what}: {e}"))?
        .next()
        .ok_or_else(|| format!("host {host:?} of {what} resolves to no address"))?;
    let host_header = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(Endpoint {
        host: bare.to_string(),
        addr,
        host_header,
    })
}

/// A checked run configuration, shared read-only by every worker.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub plan: Plan,
    pub scenario: ScenarioKind,
    pub ping_interval_ns: u64,
    pub payload: usize,
    /// Total messages per second (0: closed loop).
    pub rate: f64,
    /// Connects per second (0: unpaced).
    pub connect_rate: f64,
    pub reconnect_max_tries: u32,
    pub cores: Vec<usize>,
    pub source_ips: Vec<IpAddr>,
    pub headers: Vec<String>,
    pub origin: Option<String>,
    pub connect_timeout_ns: u64,
    pub handshake_timeout_ns: u64,
    pub drain_ns: u64,
    /// Messages intended before start + warmup_ns are not in the latency histograms.
    pub warmup_ns: u64,
    /// Open loop: sends and reads are batched per tick (0: every event wakes the worker).
    pub tick_ns: u64,
    /// `wss://`: what the TLS client trusts and presents.
    pub tls: Option<tls::TlsClient>,
    pub max_frame: usize,
    /// RLIMIT_NOFILE after raising the soft limit to the hard one.
    pub nofile: (u64, u64),
    /// Broadcast: publishing connections (at most the largest stage target).
    pub publishers: u32,
    /// Broadcast: the `room` query parameter of the URL (empty when absent).
    pub room: String,
    /// Broadcast: whether a publisher gets its own messages (false with `echo=false` in the
    /// URL query, which the server applies to every connection of the URL).
    pub echo_self: bool,
    /// Push: HTTP POSTs in flight per worker.
    pub push_concurrency: u32,
    /// `--token-secret`: a signed token per connection.
    pub tokens: Option<auth::Tokens>,
    /// The server's admin listener (push POSTs).
    pub admin: auth::Admin,
    /// `--script`: the compiled scenario file.
    pub script: Option<std::sync::Arc<script::Script>>,
    /// `--conn-offset`: added to every `{{conn}}` (and text stamp sender), so several
    /// load generator processes number their connections apart.
    pub conn_offset: u64,
    /// `--host-label` (default: the hostname).
    pub host_label: String,
    /// `--start-at`, Unix ms.
    pub start_at_unix_ms: Option<u64>,
}

/// Descriptors kept aside for stdio, epoll instances, report files and the like.
pub const FD_RESERVE: u64 = 64;

/// Largest `--max-frame` accepted.
pub const MAX_FRAME_LIMIT: usize = 1 << 30;

/// Largest echo payload accepted.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Largest memory the broadcast sequence tracking may take (16 B per subscriber and
/// publisher).
pub const MAX_TRACKING_BYTES: u64 = 1 << 30;

/// Largest `--push-concurrency`.
pub const MAX_PUSH_CONCURRENCY: u32 = 4096;

/// The value of query parameter `name` in `url` (percent-decoded), if present.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let v = u
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    v
}

/// Size of `net.ipv4.ip_local_port_range` (28232 if it cannot be read).
pub fn ephemeral_ports() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            match (it.next()??, it.next()??) {
                (lo, hi) if hi >= lo => Some(hi - lo + 1),
                _ => None,
            }
        })
        .unwrap_or(28_232)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_target("ws://127.0.0.1:9001/ws?room=a&x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:9001");
        assert_eq!(t.path_and_query, "/ws?room=a&x=1");
        let t = parse_target("ws://[::1]:80").unwrap();
        assert_eq!(t.addr, "[::1]:80".parse().unwrap());
        assert_eq!(t.path_and_query, "/");
        let t = parse_target("ws://localhost/").unwrap();
        assert_eq!(t.addr.port(), 80);
        let t = parse_target("wss://127.0.0.1/").unwrap();
        assert!(t.tls);
        assert_eq!(t.addr.port(), 443);
        assert!(!parse_target("ws://127.0.0.1/").unwrap().tls);
        assert!(parse_target("http://127.0.0.1/").is_err());
        assert!(parse_target("not a url").is_err());
        assert!(parse_target("ws://no-such-host.invalid/").is_err());
    }
}
