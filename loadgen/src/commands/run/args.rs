//! `ws-loadgen run` arguments, and their check into a [`RunConfig`]: the URL resolved, the
//! stage plan built, impossible settings (descriptors, ephemeral ports, payload size, ...)
//! refused up front with a message that names the limit.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::config::auth::{AdminArgs, TokenArgs};
use crate::config::parse::{
    parse_header, parse_source_ips_arg, parse_stages_arg, SourceIps, Stages,
};
use crate::config::plan::{ns, parse_duration, Plan, Stage};
use crate::config::script::template::Vars;
use crate::config::script::Script;
use crate::config::tls::TlsArgs;
use crate::config::{
    ephemeral_ports, parse_target, query_param, RunConfig, ScenarioKind, FD_RESERVE,
    MAX_FRAME_LIMIT, MAX_PAYLOAD, MAX_PUSH_CONCURRENCY, MAX_TRACKING_BYTES,
};
use crate::report::progress::ProgressMode;
use crate::report::thresholds::{unknown_row, ThresholdArgs};

pub const EXAMPLES: &str = "\
Examples:
  # 1000 connections opened at 500/s, echo 64-byte messages at 10k msgs/s for 30 s
  ws-loadgen ws://127.0.0.1:9001/ws -c 1000 --connect-rate 500 --rate 10000 -d 30s

  # Closed loop (one message in flight per connection, as fast as possible)
  ws-loadgen ws://127.0.0.1:9001/ws -c 200 --rate 0 -d 10s

  # Idle connections with a heartbeat, stepped load, several source addresses
  ws-loadgen ws://127.0.0.1:9001/ws --scenario hold --ping-interval 5s \\
      --stages 30s:5000,60s:15000 --connect-rate 2000 --source-ip 127.0.0.2-127.0.0.9

  # Broadcast: 1000 subscribers in room r, 2 of them publishing 100 msgs/s in total
  ws-loadgen 'ws://127.0.0.1:9001/broadcast?room=r' --scenario broadcast -c 1000 \\
      --publishers 2 --rate 100 -d 30s

  # Push: 1000 users, 500 HTTP pushes/s to random users
  ws-loadgen ws://127.0.0.1:9001/ws --scenario push -c 1000 --rate 500 -d 30s

  # Your own service, described in a scenario file (login, join, JSON messages)
  ws-loadgen run --script examples/chat.toml -d 60s --max-p99 login=1s --max-p99 say=50ms

  # Fail (exit 1) unless p99 < 20 ms, errors < 0.1 % and 1000 connections were open
  ws-loadgen ws://127.0.0.1:9001/ws -c 1000 --max-p99 20ms --max-error-rate 0.1% \\
      --min-connections 1000 --json report.json

Exit codes: 0 all thresholds hold, 1 a threshold failed, 2 bad arguments or the run
could not start (bad URL, unreachable host, no connection established, too few file
descriptors).";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server URL: ws://HOST[:PORT]/PATH[?QUERY] or wss://... (with --script: in the file)
    #[arg(required_unless_present = "script")]
    pub url: Option<String>,

    /// Run a scenario file (TOML): the URL, per-connection headers and data (CSV), steps
    /// after the upgrade (login, join: send, expect, sleep) and a loop of messages. See
    /// examples/ and "Testing your own service" in the README. The command line wins over
    /// the file (-c over connections, --rate over the loop's per-connection rate).
    #[arg(long, value_name = "FILE", conflicts_with = "scenario")]
    pub script: Option<PathBuf>,

    /// Added to every connection number ({{conn}}, the CSV row, stamp senders), so that
    /// several load generator processes or machines number their connections apart.
    /// [default: 0, or in a Kubernetes Indexed Job JOB_COMPLETION_INDEX × the connections]
    #[arg(long, value_name = "N")]
    pub conn_offset: Option<u64>,

    /// Start the schedule at this wall-clock time (Unix seconds, or RFC 3339 such as
    /// 2026-12-07T10:00:00Z), so several load generators start together; one launched
    /// after it starts at once and its report says how late.
    #[arg(long, value_parser = parse_start_at, value_name = "TIME")]
    pub start_at: Option<u64>,

    /// Which load generator this is, in its report and in `merge`'s per-host table
    /// [default: the hostname].
    #[arg(long, value_name = "LABEL")]
    pub host_label: Option<String>,

    /// Connections to open and keep (ignored with --stages) [default: 100, or the
    /// script's connections]
    #[arg(short = 'c', long)]
    pub connections: Option<u32>,

    /// New connections per second, paced evenly (0: as fast as possible).
    #[arg(long, default_value_t = 1000.0, value_name = "PER_SEC")]
    pub connect_rate: f64,

    /// Length of the run (ignored with --stages).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stepped load: DURATION:CONNECTIONS,... Each stage opens (or closes) connections to
    /// reach its target, then holds until its duration has passed.
    #[arg(long, value_parser = parse_stages_arg, value_name = "D:N,...")]
    pub stages: Option<Stages>,

    /// What connections do (with --script: the file says).
    #[arg(long, value_enum)]
    pub scenario: Option<ScenarioKind>,

    /// Heartbeat interval for --scenario hold [default: 30s]; with --script, pings every
    /// open connection this often (default: the script's ping_interval, else none).
    #[arg(long, value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,

    /// Echo message size in bytes (at least 24: the stamp).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload: usize,

    /// Messages per second in total on a constant-rate schedule, latency measured from the
    /// intended send time: echo messages spread over the open connections, broadcast
    /// messages spread over the publishers, or push POSTs. 0: closed loop (echo: one
    /// message in flight per connection; broadcast: one per publisher; push: refused).
    /// With --script: loop messages per second in total, instead of the loop's own rate
    /// per connection. [default: 1000]
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,

    /// Leading part of the run (within --duration) whose messages are sent, received and
    /// counted as usual but kept out of the latency histograms (rtt, delivery/fan-out,
    /// all-delivered): the opening of the connections and the start of a constant-rate
    /// schedule disturb every server alike, and a whole-run p99 would be mostly that.
    /// The report says how many replies it left out. Pings, connect and handshake times
    /// are always recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Open-loop runs (a --rate above 0): the messages due within the next tick leave
    /// together and what arrived is read once per tick, so a worker wakes once per tick
    /// instead of once per send and once per reply. Latency does not include the tick:
    /// arrival times are the kernel's receive timestamps (SO_TIMESTAMPNS), and a message
    /// sent ahead of its schedule is timed from when it was sent. While connects or
    /// handshakes are in progress, and in closed loops and push runs, every event wakes
    /// the worker as with --tick 0.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub tick: Duration,

    /// Broadcast: how many connections publish (the first ones of each worker); --rate is
    /// shared among them. With --rate 0 each publisher sends its next message when its own
    /// previous one comes back to it (closed loop; needs the room's echo).
    #[arg(long, default_value_t = 1, value_name = "P")]
    pub publishers: u32,

    /// Push: HTTP POSTs in flight at most, per worker (one short-lived TCP connection each).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub push_concurrency: u32,

    /// Retries after a failed connect or a dropped connection, with exponential back-off
    /// and jitter (0: never retry).
    #[arg(long, default_value_t = 5)]
    pub reconnect_max_tries: u32,

    /// Cores to run one worker each on, e.g. 0-3,6 (default: all this process may use).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,

    /// Source addresses, used round-robin: 127.0.0.2-127.0.0.40 or a comma list.
    #[arg(long, value_parser = parse_source_ips_arg, value_name = "LIST")]
    pub source_ip: Option<SourceIps>,

    /// Extra handshake header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<String>,

    /// Origin header for the handshake.
    #[arg(long)]
    pub origin: Option<String>,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub token: TokenArgs,

    #[command(flatten)]
    pub admin: AdminArgs,

    /// Time allowed for the TCP connect.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed from connected to a verified 101.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// At the end, time to wait for outstanding replies before counting them lost, and
    /// again for the server to answer our Close.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Largest server frame accepted (larger: close 1009, counted as a drop).
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub max_frame: usize,

    /// Write the full report as JSON (histograms included, mergeable).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the report as one self-contained HTML page: connections, messages/s, p99 per
    /// second, failures, stages, and the server's CPU and RSS over time (from its /metrics).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Sample the server's process_cpu_seconds_total and process_resident_memory_bytes
    /// once a second from this Prometheus page, for the report (`none`: do not) [default
    /// with --html: /metrics on the admin listener, see --admin-url].
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,

    /// Serve the load's own figures as Prometheus metrics on ADDR (GET /metrics, updated
    /// once a second), for Grafana next to the server's (deploy/grafana/).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Write per-second histograms in the HdrHistogram interval-log format.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,

    #[command(flatten)]
    pub thresholds: ThresholdArgs,

    /// Live progress on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub use crate::report::thresholds::{parse_p99, P99Limit};

/// `--start-at`: Unix seconds (fractions allowed) or RFC 3339, as Unix milliseconds.
pub fn parse_start_at(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<f64>() {
        if v.is_finite() && v > 0.0 {
            return Ok((v * 1000.0).round() as u64);
        }
    }
    rfc3339_ms(t).ok_or_else(|| {
        format!("{s:?} is not a time: give Unix seconds (1796630400) or RFC 3339 (2026-12-07T10:00:00Z)")
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` as Unix milliseconds.
fn rfc3339_ms(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut frac_ms = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits: String = f.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        let ms: String = digits.chars().chain("000".chars()).take(3).collect();
        frac_ms = ms.parse().ok()?;
        rest = &f[digits.len()..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    (secs > 0).then(|| (secs * 1000 + frac_ms) as u64)
}

/// This machine's name (for `--host-label`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Longest `--tick`.
pub const MAX_TICK: Duration = Duration::from_millis(100);

/// `ws-loadgen run` arguments on their own (what `ceiling` hands its agents).
#[derive(Debug, Parser)]
#[command(name = "ws-loadgen-run")]
pub struct RunOnly {
    #[command(flatten)]
    pub args: RunArgs,
}

impl RunArgs {
    /// Parses `URL OPTIONS...` as `ws-loadgen run` would.
    pub fn parse_words<I, T>(words: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut v: Vec<std::ffi::OsString> = vec!["ws-loadgen-run".into()];
        v.extend(words.into_iter().map(Into::into));
        RunOnly::try_parse_from(v).map(|r| r.args)
    }
}

/// Checks the arguments; `nofile` is the (soft, hard) RLIMIT_NOFILE the run will have.
pub fn build(a: &RunArgs, nofile: (u64, u64)) -> Result<RunConfig, String> {
    let script = match &a.script {
        Some(p) => {
            if a.url.is_some() {
                return Err(format!(
                    "give the URL in the script ({}) or on the command line, not both",
                    p.display()
                ));
            }
            Some(std::sync::Arc::new(Script::load(p)?))
        }
        None => None,
    };
    let scenario = match (&script, a.scenario) {
        (Some(_), _) => ScenarioKind::Script,
        (None, Some(s)) => s,
        (None, None) => ScenarioKind::Echo,
    };
    let (url, target) = match (&script, &a.url) {
        (Some(s), _) => {
            let mut t = s.target.clone();
            t.url = s.url.clone();
            if s.path_template.is_constant() {
                t.path_and_query = s.path_template.render_string(&constant_vars());
            }
            (s.url.clone(), t)
        }
        (None, Some(u)) => (u.clone(), parse_target(u)?),
        (None, None) => {
            return Err("give the server URL (ws://HOST:PORT/PATH) or --script FILE".into())
        }
    };
    let connections = a
        .connections
        .or(script.as_ref().and_then(|s| s.connections))
        .unwrap_or(100);
    let rate = match (&script, a.rate) {
        (_, Some(r)) => r,
        (Some(_), None) => 0.0,
        (None, None) => 1000.0,
    };
    if let Some(s) = &script {
        let sends = s.lp.as_ref().is_some_and(|l| l.send.is_some());
        let own_rate = s.lp.as_ref().and_then(|l| l.rate);
        if a.rate == Some(0.0) && sends {
            return Err(format!(
                "--rate 0 (closed loop) does not apply to a script; give rate in [loop] of {} or a --rate above 0",
                s.path.display()
            ));
        }
        if sends && own_rate.is_none() && a.rate.is_none() {
            return Err(format!(
                "the [loop] of {} sends but has no rate: give rate = N (messages per second per connection) or --rate (in total)",
                s.path.display()
            ));
        }
    }
    let stages = match &a.stages {
        Some(s) => s.0.clone(),
        None => {
            if a.duration.is_zero() {
                return Err("--duration must be more than 0".into());
            }
            vec![Stage {
                duration_ms: a.duration.as_millis().min(u64::MAX as u128) as u64,
                target: connections,
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
    if a.tick > MAX_TICK {
        return Err(format!(
            "--tick {:?} is over {MAX_TICK:?}: sends would bunch into bursts that long",
            a.tick
        ));
    }
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("--rate {rate} must be 0 (closed loop) or more"));
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
    let room = query_param(&url, "room").unwrap_or_default();
    let echo_self = query_param(&url, "echo").as_deref() != Some("false");
    let mut extra_fds = 0u64;
    match scenario {
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
            if rate == 0.0 && !echo_self {
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
            if rate == 0.0 {
                return Err(
                    "--scenario push is open loop: give --rate (HTTP pushes per second in total)"
                        .into(),
                );
            }
            if query_param(&url, "user").is_some() {
                return Err(format!(
                    "{url}: --scenario push appends its own user=… to the URL query; remove user="
                ));
            }
            if a.push_concurrency == 0 || a.push_concurrency > MAX_PUSH_CONCURRENCY {
                return Err(format!(
                    "--push-concurrency {} must be between 1 and {MAX_PUSH_CONCURRENCY}",
                    a.push_concurrency
                ));
            }
        }
        ScenarioKind::Hold | ScenarioKind::Echo | ScenarioKind::Script => {}
    }
    let ping_interval = match (&script, a.ping_interval) {
        (_, Some(d)) => d,
        (Some(s), None) => Duration::from_nanos(s.ping_interval_ns),
        (None, None) => Duration::from_secs(30),
    };
    if (scenario == ScenarioKind::Hold || a.ping_interval.is_some()) && ping_interval.is_zero() {
        return Err("--ping-interval must be more than 0".into());
    }
    if a.connect_timeout.is_zero() || a.handshake_timeout.is_zero() {
        return Err("--connect-timeout and --handshake-timeout must be more than 0".into());
    }
    let tls = a.tls.client_for(&target, &url)?;
    let tokens = a.token.tokens()?;
    if tokens.is_some() && query_param(&url, "user").is_some() {
        return Err(format!(
            "{url}: with --token-secret the identity is the token's sub; a server with a secret \
             refuses user= (remove it)"
        ));
    }
    if tokens.is_some() && query_param(&url, "token").is_some() {
        return Err(format!(
            "{url}: --token-secret mints each connection's token; remove token= from the URL"
        ));
    }
    let admin = a.admin.admin(&target)?;
    let cores = ws_common::cores::resolve_cores(a.cores.as_deref())?;
    if scenario == ScenarioKind::Push {
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
    // In a Kubernetes Indexed Job each pod is one index: number its connections apart.
    let conn_offset = match (a.conn_offset, std::env::var("JOB_COMPLETION_INDEX")) {
        (Some(o), _) => o,
        (None, Ok(i)) => {
            let i: u64 = i.trim().parse().map_err(|_| {
                format!("JOB_COMPLETION_INDEX={i:?} is not a number (give --conn-offset)")
            })?;
            i * max
        }
        (None, Err(_)) => 0,
    };
    let cfg = RunConfig {
        tls,
        target,
        plan,
        scenario,
        ping_interval_ns: ns(ping_interval),
        payload: a.payload,
        rate,
        connect_rate: a.connect_rate,
        reconnect_max_tries: a.reconnect_max_tries,
        cores,
        source_ips,
        headers: {
            let mut h = a.headers.clone();
            if let Some(s) = script.as_ref().filter(|s| s.constant_request()) {
                let v = constant_vars();
                h.extend(
                    s.headers
                        .iter()
                        .map(|(n, t)| format!("{n}: {}", t.render_string(&v))),
                );
            }
            h
        },
        origin: a.origin.clone(),
        connect_timeout_ns: ns(a.connect_timeout),
        handshake_timeout_ns: ns(a.handshake_timeout),
        drain_ns: ns(a.drain_timeout),
        warmup_ns: ns(a.warmup),
        tick_ns: ns(a.tick),
        max_frame: a.max_frame,
        nofile,
        publishers: a.publishers,
        room,
        echo_self,
        push_concurrency: a.push_concurrency,
        tokens,
        admin,
        script,
        conn_offset,
        host_label: a.host_label.clone().unwrap_or_else(hostname),
        start_at_unix_ms: a.start_at,
    };
    let mut known: Vec<String> = ["connect", "tls", "handshake", "http"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    known.extend(cfg.latency_rows().into_iter().map(|r| r.0));
    if let Some(e) = unknown_row(&a.thresholds.max_p99, &known) {
        return Err(e);
    }
    Ok(cfg)
}

/// Variables of a template that uses none.
fn constant_vars() -> Vars<'static> {
    Vars {
        conn: 0,
        seq: 0,
        row: &[],
        stamp: ws_common::payload::Stamp {
            sender: 0,
            seq: 0,
            sent_ns: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times() {
        assert_eq!(parse_start_at("1796630400").unwrap(), 1_796_630_400_000);
        assert_eq!(parse_start_at("1796630400.25").unwrap(), 1_796_630_400_250);
        assert_eq!(parse_start_at("1970-01-02T00:00:00Z").unwrap(), 86_400_000);
        assert_eq!(
            parse_start_at("2026-12-07T10:00:00Z").unwrap(),
            parse_start_at("2026-12-07T11:00:00+01:00").unwrap()
        );
        assert_eq!(
            parse_start_at("2026-12-07T10:00:00.5Z").unwrap() % 1000,
            500
        );
        assert_eq!(
            parse_start_at("2000-03-01T00:00:00Z").unwrap(),
            951_868_800_000
        );
        for bad in [
            "soon",
            "2026-13-01T00:00:00Z",
            "2026-12-07 10:00",
            "-5",
            "2026-12-07T10:00:00",
        ] {
            assert!(parse_start_at(bad).is_err(), "{bad}");
        }
    }

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

    fn args(extra: &[&str]) -> RunArgs {
        args_for("ws://127.0.0.1:9/ws", extra)
    }

    /// `ws-loadgen URL EXTRA...` parsed as a run.
    fn args_for(url: &str, extra: &[&str]) -> RunArgs {
        let mut v = vec![url];
        v.extend_from_slice(extra);
        RunArgs::parse_words(v).unwrap()
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
