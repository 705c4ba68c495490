//! Command line: `ws-loadgen [run] URL [OPTIONS]`.
//!
//! The run is the default action: `ws-loadgen ws://127.0.0.1:9001/ws -c 100` and
//! `ws-loadgen run ws://...` are the same. Other subcommands (`doctor`, `ceiling`) slot
//! into [`Command`] later.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::schedule::{parse_duration, parse_stages, Stage};

const EXAMPLES: &str = "\
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

  # Fail (exit 1) unless p99 < 20 ms, errors < 0.1 % and 1000 connections were open
  ws-loadgen ws://127.0.0.1:9001/ws -c 1000 --max-p99 20ms --max-error-rate 0.1% \\
      --min-connections 1000 --json report.json

Exit codes: 0 all thresholds hold, 1 a threshold failed, 2 bad arguments or the run
could not start (bad URL, unreachable host, no connection established, too few file
descriptors).";

#[derive(Debug, Parser)]
#[command(
    name = "ws-loadgen",
    version,
    about = "Thread-per-core raw-socket WebSocket load generator that tells the truth.",
    override_usage = "ws-loadgen [run] URL [OPTIONS]\n       ws-loadgen <COMMAND>",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a load (the default when no subcommand is given).
    #[command(after_help = EXAMPLES)]
    Run(Box<RunArgs>),
    /// Which limit stops N connections on this box, the largest N that fits, and the fixes.
    Doctor(Box<crate::doctor::DoctorArgs>),
    /// Ramp held connections until a limit stops them, hold the ceiling, name the limit.
    Ceiling(Box<crate::ceiling::CeilingArgs>),
    /// (internal) A load generator process driven by `ceiling` over stdin/stdout.
    #[command(hide = true)]
    CeilingAgent(Box<crate::ceiling::agent::AgentArgs>),
}

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
}

/// How live progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A progress bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines, once a second.
    Plain,
    /// Nothing.
    Off,
}

/// `--stages` value.
#[derive(Debug, Clone)]
pub struct Stages(pub Vec<Stage>);

/// `--source-ip` value.
#[derive(Debug, Clone)]
pub struct SourceIps(pub Vec<IpAddr>);

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server URL: ws://HOST[:PORT]/PATH[?QUERY] (wss:// is not supported).
    pub url: String,

    /// Connections to open and keep (ignored with --stages).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: u32,

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

    /// What connections do.
    #[arg(long, value_enum, default_value_t = ScenarioKind::Echo)]
    pub scenario: ScenarioKind,

    /// Heartbeat interval for --scenario hold.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Echo message size in bytes (at least 24: the stamp).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload: usize,

    /// Messages per second in total on a constant-rate schedule, latency measured from the
    /// intended send time: echo messages spread over the open connections, broadcast
    /// messages spread over the publishers, or push POSTs. 0: closed loop (echo: one
    /// message in flight per connection; broadcast: one per publisher; push: refused).
    #[arg(long, default_value_t = 1000.0, value_name = "MSGS_PER_SEC")]
    pub rate: f64,

    /// Leading part of the run (within --duration) whose messages are sent, received and
    /// counted as usual but kept out of the latency histograms (rtt, delivery/fan-out,
    /// all-delivered): the opening of the connections and the start of a constant-rate
    /// schedule disturb every server alike, and a whole-run p99 would be mostly that.
    /// The report says how many replies it left out. Pings, connect and handshake times
    /// are always recorded.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

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

    /// Write per-second histograms in the HdrHistogram interval-log format.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,

    /// Threshold: error rate at most this (e.g. 0.1% or 0.001).
    #[arg(long, value_parser = parse_ratio, value_name = "RATE")]
    pub max_error_rate: Option<f64>,

    /// Threshold: p99 latency (RTT for echo, pong for hold, fan-out for broadcast, delivery
    /// for push) at most this (e.g. 200ms).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_p99: Option<Duration>,

    /// Threshold: at least this many connections open at once at some point.
    #[arg(long, value_name = "N")]
    pub min_connections: Option<u32>,

    /// Live progress on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

fn parse_stages_arg(s: &str) -> Result<Stages, String> {
    parse_stages(s).map(Stages)
}

fn parse_source_ips_arg(s: &str) -> Result<SourceIps, String> {
    crate::source_ip::parse_source_ips(s).map(SourceIps)
}

/// `Name: value` with a token name and no line breaks.
pub fn parse_header(s: &str) -> Result<String, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} is not 'Name: value'"))?;
    let name = name.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("header name {name:?} is not a valid HTTP token"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("header {s:?} contains a line break"));
    }
    Ok(format!("{name}: {}", value.trim()))
}

/// `0.1%` or `0.001`, between 0 and 1.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a rate (examples: 0.1%, 0.001)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is not between 0 and 100%"));
    }
    Ok(v)
}

/// Parses the command line, inserting the default `run` subcommand when none is given.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut v: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let explicit = [
        "run",
        "doctor",
        "ceiling",
        "ceiling-agent",
        "help",
        "-h",
        "--help",
        "-V",
        "--version",
    ];
    let needs_run = match v.get(1).and_then(|a| a.to_str()) {
        Some(a) => !explicit.contains(&a),
        None => false,
    };
    if needs_run {
        v.insert(1, OsString::from("run"));
    }
    Cli::try_parse_from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> RunArgs {
        let mut v = vec!["ws-loadgen"];
        v.extend_from_slice(args);
        match parse_from(v).unwrap().command {
            Command::Run(r) => *r,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn run_is_the_default() {
        let a = run(&["ws://127.0.0.1:9001/ws", "--connections", "7"]);
        assert_eq!(a.connections, 7);
        let b = run(&["run", "ws://127.0.0.1:9001/ws", "-c", "8"]);
        assert_eq!(b.connections, 8);
        let c = run(&["-c", "9", "ws://x/"]);
        assert_eq!(c.connections, 9);
        assert_eq!(c.scenario, ScenarioKind::Echo);
        assert!(parse_from(["ws-loadgen"]).is_err());
    }

    #[test]
    fn values() {
        let a = run(&[
            "ws://h/",
            "--stages",
            "1s:10,2s:20",
            "--source-ip",
            "127.0.0.2-127.0.0.4",
            "-H",
            "X-A: b",
            "--header",
            "Cookie:c=d",
            "--max-error-rate",
            "0.1%",
            "--max-p99",
            "200ms",
            "--scenario",
            "hold",
        ]);
        assert_eq!(a.stages.unwrap().0.len(), 2);
        assert_eq!(a.source_ip.unwrap().0.len(), 3);
        assert_eq!(a.headers, ["X-A: b", "Cookie: c=d"]);
        assert!((a.max_error_rate.unwrap() - 0.001).abs() < 1e-12);
        assert_eq!(a.max_p99, Some(Duration::from_millis(200)));
        assert_eq!(a.scenario, ScenarioKind::Hold);
    }

    #[test]
    fn refusals() {
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header("X: a\r\nEvil: 1").is_err());
        assert!(parse_ratio("150%").is_err());
        assert!(parse_ratio("abc").is_err());
        assert!(parse_from(["ws-loadgen", "ws://h/", "--stages", "x"]).is_err());
    }
}
