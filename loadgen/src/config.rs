//! From parsed arguments to a checked run configuration: the URL resolved to an address,
//! the stage plan, and every impossible setting refused up front with a message that names
//! the limit (file descriptors, ephemeral ports, payload size, ...).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::cli::{RunArgs, ScenarioKind};
use crate::schedule::{Plan, Stage};

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host_header: String,
    /// Request target: path plus `?query`.
    pub path_and_query: String,
}

/// Parses and resolves a `ws://` URL.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let u = url::Url::parse(s)
        .map_err(|e| format!("bad URL {s:?}: {e} (expected ws://HOST[:PORT]/PATH)"))?;
    match u.scheme() {
        "ws" => {}
        "wss" => {
            return Err(format!(
                "{s}: TLS (wss://) is not supported; ws-loadgen speaks plain ws:// only \
                 (measure the server behind its TLS terminator, or the terminator with ws://)"
            ))
        }
        other => return Err(format!("bad URL {s:?}: scheme {other:?} is not ws://")),
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("bad URL {s:?}: no host"))?;
    let port = u.port().unwrap_or(80);
    // url keeps IPv6 literals in brackets, which the resolver does not want.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?} of {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("host {host:?} of {s} resolves to no address"))?;
    let host_header = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
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
        addr,
        host_header,
        path_and_query,
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

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
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

/// Checks the arguments; `nofile` is the (soft, hard) RLIMIT_NOFILE the run will have.
pub fn build(a: &RunArgs, nofile: (u64, u64)) -> Result<RunConfig, String> {
    let target = parse_target(&a.url)?;
    let stages = match &a.stages {
        Some(s) => s.0.clone(),
        None => {
            if a.duration.is_zero() {
                return Err("--duration must be more than 0".into());
            }
            vec![Stage {
                duration_ms: a.duration.as_millis().min(u64::MAX as u128) as u64,
                target: a.connections,
            }]
        }
    };
    let plan = Plan::new(stages);
    let max = plan.max_target() as u64;
    if max == 0 {
        return Err("nothing to do: 0 connections".into());
    }
    if ns(a.warmup) >= plan.total_ns() && !a.warmup.is_zero() {
        return Err(format!(
            "--warmup {:?} leaves nothing to measure: the run lasts {:?}",
            a.warmup,
            std::time::Duration::from_nanos(plan.total_ns())
        ));
    }
    if !a.rate.is_finite() || a.rate < 0.0 {
        return Err(format!("--rate {} must be 0 (closed loop) or more", a.rate));
    }
    if !a.connect_rate.is_finite() || a.connect_rate < 0.0 {
        return Err(format!(
            "--connect-rate {} must be 0 (unpaced) or more",
            a.connect_rate
        ));
    }
    if a.payload < ws_common::payload::HEADER_LEN || a.payload > MAX_PAYLOAD {
        return Err(format!(
            "--payload {} must be between {} (the stamp: magic, sender, sequence, send time) and {MAX_PAYLOAD}",
            a.payload,
            ws_common::payload::HEADER_LEN
        ));
    }
    if a.max_frame > MAX_FRAME_LIMIT {
        return Err(format!(
            "--max-frame {} is over the {MAX_FRAME_LIMIT}-byte limit",
            a.max_frame
        ));
    }
    if a.payload > a.max_frame {
        return Err(format!(
            "--payload {} is larger than --max-frame {}: every echo would be refused",
            a.payload, a.max_frame
        ));
    }
    let room = query_param(&a.url, "room").unwrap_or_default();
    let echo_self = query_param(&a.url, "echo").as_deref() != Some("false");
    let mut extra_fds = 0u64;
    match a.scenario {
        ScenarioKind::Broadcast => {
            if a.publishers == 0 {
                return Err("--publishers must be at least 1".into());
            }
            if a.publishers as u64 > max {
                return Err(format!(
                    "--publishers {} is more than the {max} connections: publishers are \
                     connections of the run",
                    a.publishers
                ));
            }
            if a.rate == 0.0 && !echo_self {
                return Err(
                    "--rate 0 (closed loop: a publisher sends its next message when its own \
                     previous one comes back) needs the room's echo; remove echo=false from the \
                     URL or give a --rate"
                        .into(),
                );
            }
            let tracking = max * a.publishers as u64 * 16;
            if tracking > MAX_TRACKING_BYTES {
                return Err(format!(
                    "{max} subscribers × {} publishers need {} MiB of sequence tracking \
                     (16 B per pair), over the {} MiB limit: use fewer publishers or \
                     connections per process",
                    a.publishers,
                    tracking >> 20,
                    MAX_TRACKING_BYTES >> 20
                ));
            }
        }
        ScenarioKind::Push => {
            if a.rate == 0.0 {
                return Err(
                    "--scenario push is open loop: give --rate (HTTP pushes per second in total)"
                        .into(),
                );
            }
            if query_param(&a.url, "user").is_some() {
                return Err(format!(
                    "{}: --scenario push appends its own user=… to the URL query; remove user=",
                    a.url
                ));
            }
            if a.push_concurrency == 0 || a.push_concurrency > MAX_PUSH_CONCURRENCY {
                return Err(format!(
                    "--push-concurrency {} must be between 1 and {MAX_PUSH_CONCURRENCY}",
                    a.push_concurrency
                ));
            }
        }
        ScenarioKind::Hold | ScenarioKind::Echo => {}
    }
    if a.scenario == ScenarioKind::Hold && a.ping_interval.is_zero() {
        return Err("--ping-interval must be more than 0".into());
    }
    if a.connect_timeout.is_zero() || a.handshake_timeout.is_zero() {
        return Err("--connect-timeout and --handshake-timeout must be more than 0".into());
    }
    let cores = ws_common::cores::resolve_cores(a.cores.as_deref())?;
    if a.scenario == ScenarioKind::Push {
        // Each worker keeps up to --push-concurrency POST sockets open.
        extra_fds = a.push_concurrency as u64 * cores.len() as u64;
    }
    let source_ips = a
        .source_ip
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_default();
    if let Some(bad) = source_ips
        .iter()
        .find(|ip| ip.is_ipv4() != target.addr.is_ipv4())
    {
        return Err(format!(
            "--source-ip {bad} is not of the same family as the server address {}",
            target.addr
        ));
    }
    // File descriptors: one per connection plus a few per worker and the process.
    let need = max + extra_fds + cores.len() as u64 + FD_RESERVE;
    if need > nofile.0 {
        return Err(format!(
            "{max} connections need about {need} file descriptors, but RLIMIT_NOFILE allows \
             {} (hard limit {}; the soft limit was already raised to it). Lower --connections/\
             --stages, or raise the hard limit (ulimit -Hn, systemd LimitNOFILE, \
             /etc/security/limits.conf) or spread the load over several processes.",
            nofile.0, nofile.1
        ));
    }
    // Ephemeral ports: one per connection per (source address, server address).
    let ports = ephemeral_ports() * source_ips.len().max(1) as u64;
    if max + extra_fds > ports {
        return Err(format!(
            "{max} connections{} to {} need {} ephemeral ports, but {} source address(es) \
             × net.ipv4.ip_local_port_range give {ports}. Add --source-ip addresses \
             (e.g. 127.0.0.2-127.0.0.20 on loopback) or widen the port range.",
            if extra_fds > 0 {
                format!(" and {extra_fds} push POSTs in flight")
            } else {
                String::new()
            },
            target.addr,
            max + extra_fds,
            source_ips.len().max(1)
        ));
    }
    Ok(RunConfig {
        target,
        plan,
        scenario: a.scenario,
        ping_interval_ns: ns(a.ping_interval),
        payload: a.payload,
        rate: a.rate,
        connect_rate: a.connect_rate,
        reconnect_max_tries: a.reconnect_max_tries,
        cores,
        source_ips,
        headers: a.headers.clone(),
        origin: a.origin.clone(),
        connect_timeout_ns: ns(a.connect_timeout),
        handshake_timeout_ns: ns(a.handshake_timeout),
        drain_ns: ns(a.drain_timeout),
        warmup_ns: ns(a.warmup),
        max_frame: a.max_frame,
        nofile,
        publishers: a.publishers,
        room,
        echo_self,
        push_concurrency: a.push_concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_and_echo_from_the_query() {
        let u = "ws://127.0.0.1:9/broadcast?room=a%20b&echo=false";
        assert_eq!(query_param(u, "room").as_deref(), Some("a b"));
        assert_eq!(query_param(u, "echo").as_deref(), Some("false"));
        assert_eq!(query_param(u, "user"), None);
        let r = build(
            &args_for(u, &["--scenario", "broadcast", "--rate", "5"]),
            (20_000, 20_000),
        )
        .unwrap();
        assert_eq!((r.room.as_str(), r.echo_self), ("a b", false));
        assert!(build(
            &args_for(u, &["--scenario", "broadcast", "--rate", "0"]),
            (20_000, 20_000),
        )
        .unwrap_err()
        .contains("echo"));
    }

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
        assert!(parse_target("wss://127.0.0.1/")
            .unwrap_err()
            .contains("TLS"));
        assert!(parse_target("http://127.0.0.1/").is_err());
        assert!(parse_target("not a url").is_err());
        assert!(parse_target("ws://no-such-host.invalid/").is_err());
    }

    fn args(extra: &[&str]) -> RunArgs {
        args_for("ws://127.0.0.1:9/ws", extra)
    }

    /// `ws-loadgen URL EXTRA...` parsed as a run.
    fn args_for(url: &str, extra: &[&str]) -> RunArgs {
        let mut v = vec!["ws-loadgen", url];
        v.extend_from_slice(extra);
        match crate::cli::parse_from(v).unwrap().command {
            crate::cli::Command::Run(r) => *r,
            _ => unreachable!("not a run"),
        }
    }

    #[test]
    fn impossible_settings_name_the_limit() {
        let e = build(&args(&["-c", "50000"]), (20_000, 20_000)).unwrap_err();
        assert!(e.contains("RLIMIT_NOFILE"), "{e}");
        let e = build(&args(&["-c", "100000"]), (1 << 20, 1 << 20)).unwrap_err();
        assert!(e.contains("ephemeral ports"), "{e}");
        assert!(build(&args(&["--payload", "10"]), (20_000, 20_000)).is_err());
        assert!(build(&args(&["-c", "0"]), (20_000, 20_000)).is_err());
        assert!(build(&args(&["--source-ip", "::1"]), (20_000, 20_000)).is_err());
        let bc = |extra: &[&str]| {
            let mut v = vec!["--scenario", "broadcast", "-c", "10"];
            v.extend_from_slice(extra);
            build(&args(&v), (20_000, 20_000))
        };
        assert!(bc(&["--publishers", "0"]).is_err());
        assert!(bc(&["--publishers", "11"])
            .unwrap_err()
            .contains("publishers"));
        assert_eq!(bc(&["--publishers", "3"]).unwrap().publishers, 3);
        let e = build(
            &args(&[
                "--scenario",
                "broadcast",
                "-c",
                "100000",
                "--publishers",
                "1000",
            ]),
            (1 << 20, 1 << 20),
        )
        .unwrap_err();
        assert!(e.contains("sequence tracking"), "{e}");
        let push = |url: &str, extra: &[&str]| {
            let a = args_for(url, &[&["--scenario", "push"], extra].concat());
            build(&a, (20_000, 20_000))
        };
        assert!(push("ws://127.0.0.1:9/ws", &[]).is_ok());
        assert!(push("ws://127.0.0.1:9/ws", &["--rate", "0"])
            .unwrap_err()
            .contains("open loop"));
        assert!(push("ws://127.0.0.1:9/ws?user=x", &[])
            .unwrap_err()
            .contains("user="));
        assert!(push("ws://127.0.0.1:9/ws", &["--push-concurrency", "0"]).is_err());
        // 19900 connections fit in 20000 descriptors, not with 64 POSTs per worker more.
        assert!(build(&args(&["-c", "19900", "--cores", "0"]), (20_000, 20_000)).is_ok());
        let e = push("ws://127.0.0.1:9/ws", &["-c", "19900", "--cores", "0"]).unwrap_err();
        assert!(e.contains("file descriptors"), "{e}");
        let ok = build(
            &args(&["-c", "10", "--stages", "1s:5,1s:20"]),
            (20_000, 20_000),
        )
        .unwrap();
        assert_eq!(ok.plan.max_target(), 20);
    }
}
