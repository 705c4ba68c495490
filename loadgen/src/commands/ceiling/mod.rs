//! `ws-loadgen ceiling URL`: ramp up held connections step by step until a step fails
//! (error rate over `--max-error-rate`), its heartbeat p99 goes over `--max-p99`, or `--max`
//! is reached; hold what is open for `--hold` with heartbeats; name the limit that stopped
//! it from the evidence, say what to change, and project memory.
//!
//! Shape. The load is carried by agent processes ([`agent`], `ws-loadgen ceiling-agent`),
//! as many as needed for the load generator's own open-files limit not to be the one
//! found: one process holds at most RLIMIT_NOFILE − 64 − steps connections. Every step is a
//! new group of connections in every agent (one worker thread each), so earlier steps keep
//! their connections while the next opens. The parent only orchestrates and watches: it
//! merges the agents' statistics, reads the server's descriptors, RSS and limits from /proc
//! when it is local (found by port, or `--server-pid`), scrapes `/metrics` between steps
//! and after the load backs off (a server out of descriptors cannot answer it), and reads
//! meminfo, sockstat and conntrack. [`verdict`] turns that into the binding limit;
//! [`report`] writes text, JSON and HTML.

pub mod agent;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use hdrhistogram::Histogram;

use crate::config::auth::{AdminArgs, TokenArgs, TokenVia};
use crate::config::parse::{
    parse_count, parse_header, parse_ratio, parse_source_ips_arg, SourceIps,
};
use crate::config::plan::parse_duration;
use crate::config::tls::TlsArgs;
use crate::engine::schedule::share;
use crate::engine::stats::{decode_hist, merge_map, new_hist, Counters};
use crate::fmt::{fmt_n, opt_us};
use crate::limits::bounds::{self, Bound, GatherOpts, Inputs, Limits};
use crate::limits::metrics::{MetricsUrl, ServerMetrics};
use crate::limits::sampler::{Sampler, Source};
use crate::limits::verdict::{Evidence, ServerEvidence, StopReason, Verdict};
use crate::limits::{self};
use crate::report::ceiling::{
    CeilingConfig, CeilingReport, HoldReport, LoadgenReport, MemoryReport, ServerReport,
    StepReport, SystemReport, TimePoint,
};
use crate::report::progress::ProgressMode;
use crate::report::{write_file, write_json};
use agent::{AgentMsg, Cmd, GroupDelta};
use ws_common::payload::now_ns;

/// Most steps a ramp may have (each is a worker thread in every agent).
pub const MAX_STEPS: u64 = 400;

const EXAMPLES: &str = "\
Examples:
  # The local ceiling: ramp to 25000 in steps of 2500, hold the result 20 s
  ws-loadgen ceiling ws://127.0.0.1:9001/ws --max 25000 --step 2500 --hold 20s \\
      --json report.json --html report.html

  # A remote server, spreading over 8 source addresses, steps of 5 % of --max
  ws-loadgen ceiling ws://10.0.0.5:9001/ws --max 400k --step 5% --source-ip 10.0.0.10-10.0.0.17

Exit codes: 0 ceiling found and held for --hold; 1 connections were lost during the hold (the
ceiling is not confirmed) or the run was interrupted; 2 bad arguments or nothing could run.";

/// `--step`: a count or a percentage of `--max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Count(u64),
    Percent(f64),
}

impl Step {
    pub fn of(self, max: u64) -> u64 {
        match self {
            Step::Count(n) => n,
            Step::Percent(p) => ((max as f64 * p / 100.0).round() as u64).max(1),
        }
    }
}

pub fn parse_step(s: &str) -> Result<Step, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("{s:?} must be more than 0% and at most 100%"));
        }
        return Ok(Step::Percent(v));
    }
    parse_count(t).map(Step::Count)
}

#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct CeilingArgs {
    /// Server URL: ws://HOST[:PORT]/PATH or wss://... (with --script: in the file)
    #[arg(required_unless_present = "script")]
    pub url: Option<String>,

    /// Ramp connections that run a scenario file (as `run --script`: login, join, the
    /// loop) instead of idle ones; heartbeats stay on, so --max-p99 is still the pong p99,
    /// and a step's failures include the script's (expect_timeout:login, ...).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,

    /// Stop ramping at this many connections (100k, 1M accepted).
    #[arg(long, default_value = "100000", value_parser = parse_count, value_name = "N")]
    pub max: u64,

    /// Connections added per step, or a percentage of --max (e.g. 2500 or 10%).
    #[arg(long, default_value = "2000", value_parser = parse_step, value_name = "N|P%")]
    pub step: Step,

    /// How long the highest level is held with heartbeats to confirm it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub hold: Duration,

    /// Connects per second while ramping (all processes together).
    #[arg(long, default_value_t = 5000.0, value_name = "PER_SEC")]
    pub connect_rate: f64,

    /// Heartbeat (ping) interval of every held connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A step fails when (failed connects + drops) / connect attempts is over this.
    #[arg(long, default_value = "0.1%", value_parser = parse_ratio, value_name = "RATE")]
    pub max_error_rate: f64,

    /// A step fails when its pong p99 is over this (0: no latency threshold).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub max_p99: Duration,

    /// Time allowed for a TCP connect.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed from connected to the 101 (a server out of descriptors never answers).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// At the end, time to wait for outstanding pongs and for the server's Close.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Load generator processes (default: as many as --max needs under this process's
    /// open-files limit).
    #[arg(long, value_name = "P")]
    pub processes: Option<u64>,

    /// Cores the load generator processes run on, one core per process in turn (default:
    /// all this process may use).
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

    /// The server's pid (default: the local process listening on the URL's port, if any):
    /// its descriptors, RSS and limits are read from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// The server's Prometheus metrics (default: /metrics on the admin listener, see
    /// --admin-url; `none` to not ask).
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,

    /// Write the full report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the report as a self-contained HTML page with plots.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Progress on stderr (a line per step; `off` for none).
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub token: TokenArgs,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Statistics accumulated over a window (a step, the hold, a second, the run).
struct Acc {
    c: Counters,
    failures: BTreeMap<String, u64>,
    drops: BTreeMap<String, u64>,
    pong: Histogram<u64>,
    handshake: Histogram<u64>,
}

impl Acc {
    fn new() -> Self {
        Self {
            c: Counters::default(),
            failures: BTreeMap::new(),
            drops: BTreeMap::new(),
            pong: new_hist(),
            handshake: new_hist(),
        }
    }

    fn add(&mut self, g: &GroupDelta, pong: Option<&Histogram<u64>>, hs: Option<&Histogram<u64>>) {
        self.c.merge(&g.c);
        merge_map(&mut self.failures, &g.failures);
        merge_map(&mut self.drops, &g.drops);
        if let Some(p) = pong {
            let _ = self.pong.add(p);
        }
        if let Some(h) = hs {
            let _ = self.handshake.add(h);
        }
    }
}

fn p99(h: &Histogram<u64>) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(0.99))
}

struct Agent {
    proc: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    nofile: (u64, u64),
    rss_start: u64,
    rss: u64,
    hello: bool,
    bye: bool,
    gone: bool,
}

struct GroupAgg {
    agent: usize,
    id: u32,
    n: u64,
    established: u64,
    failed: u64,
    open: u64,
    pending: u64,
    done: bool,
}

/// The orchestrator's state while a ceiling runs.
struct Driver {
    agents: Vec<Agent>,
    groups: Vec<GroupAgg>,
    rx: Receiver<(usize, Option<AgentMsg>)>,
    total: Acc,
    window: Acc,
    second: Acc,
    phase: String,
    timeline: Vec<TimePoint>,
    start: Instant,
    next_tick: Instant,
    errors: Vec<String>,
    peak_open: u64,
    max_open_per_agent: u64,
    server_pid: Option<u32>,
    stop: Arc<AtomicBool>,
    progress: bool,
}

impl Driver {
    fn open(&self) -> u64 {
        self.groups.iter().filter(|g| !g.done).map(|g| g.open).sum()
    }

    fn pending(&self) -> u64 {
        self.groups
            .iter()
            .filter(|g| !g.done)
            .map(|g| g.pending)
            .sum()
    }

    fn send(&mut self, i: usize, c: &Cmd) {
        let a = &mut self.agents[i];
        if let Some(s) = a.stdin.as_mut() {
            if s.write_all(c.line().as_bytes())
                .and_then(|_| s.flush())
                .is_err()
            {
                self.errors
                    .push(format!("agent {} (pid {}) is gone", i, a.pid));
                a.stdin = None;
                a.gone = true;
            }
        }
    }

    fn handle(&mut self, i: usize, m: Option<AgentMsg>) {
        let Some(m) = m else {
            let a = &mut self.agents[i];
            if !a.bye && !a.gone {
                self.errors
                    .push(format!("agent {i} (pid {}) exited unexpectedly", a.pid));
            }
            a.gone = true;
            for g in self.groups.iter_mut().filter(|g| g.agent == i) {
                g.done = true;
            }
            return;
        };
        match m {
            AgentMsg::Hello { pid, nofile, rss } => {
                let a = &mut self.agents[i];
                a.pid = pid;
                a.nofile = nofile;
                a.rss_start = rss;
                a.rss = rss;
                a.hello = true;
            }
            AgentMsg::Status { rss, groups, .. } => {
                self.agents[i].rss = rss;
                for d in groups {
                    let pong = (!d.pong.is_empty())
                        .then(|| decode_hist(&d.pong).ok())
                        .flatten();
                    let hs = (!d.handshake.is_empty())
                        .then(|| decode_hist(&d.handshake).ok())
                        .flatten();
                    self.total.add(&d, pong.as_ref(), hs.as_ref());
                    self.window.add(&d, pong.as_ref(), hs.as_ref());
                    self.second.add(&d, pong.as_ref(), hs.as_ref());
                    if let Some(g) = self
                        .groups
                        .iter_mut()
                        .find(|g| g.agent == i && g.id == d.id)
                    {
                        g.established += d.c.connects_established;
                        g.failed += d.c.connects_failed;
                        g.open = d.open as u64;
                        g.pending = d.pending as u64;
                        g.done |= d.done;
                    }
                }
                let open = self.open();
                self.peak_open = self.peak_open.max(open);
                let mine: u64 = self
                    .groups
                    .iter()
                    .filter(|g| g.agent == i && !g.done)
                    .map(|g| g.open)
                    .sum();
                self.max_open_per_agent = self.max_open_per_agent.max(mine);
            }
            AgentMsg::Error { msg } => self.errors.push(format!("agent {i}: {msg}")),
            AgentMsg::Bye => self.agents[i].bye = true,
        }
    }

    /// Handles agent messages until `until`, ticking the timeline once a second.
    fn pump(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= self.next_tick {
                self.tick();
            }
            let wait = until.min(self.next_tick).saturating_duration_since(now);
            match self.rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok((i, m)) => self.handle(i, m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
            if Instant::now() >= until {
                return;
            }
        }
    }

    fn tick(&mut self) {
        self.next_tick += Duration::from_secs(1);
        let s = std::mem::replace(&mut self.second, Acc::new());
        self.timeline.push(TimePoint {
            t_s: self.start.elapsed().as_secs_f64(),
            open: self.open(),
            pending: self.pending(),
            failed: self.total.c.connects_failed,
            drops: self.total.c.drops,
            pong_p99_us: p99(&s.pong),
            phase: self.phase.clone(),
        });
    }

    fn say(&self, s: &str) {
        if self.progress {
            eprintln!("[{:>6.1}s] {s}", self.start.elapsed().as_secs_f64());
        }
    }

    fn settled(&self, id: u32) -> bool {
        self.groups
            .iter()
            .filter(|g| g.id == id)
            .all(|g| g.done || (g.established + g.failed >= g.n && g.pending == 0))
    }

    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What the parent samples about the box and the server at one moment.
///
/// Never the server's descriptor count: listing /proc/PID/fd makes the kernel build an
/// inode and a dentry for every descriptor (~0.9 KB each, cached), which would be counted
/// as kernel memory per connection. It is listed once, at the plateau, after the memory
/// figures are taken. For the same reason a local server's /metrics (which lists its own
/// descriptors) is not scraped between steps.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    mem: Option<limits::Meminfo>,
    sock: Option<limits::SockStat>,
    conntrack: Option<u64>,
    server_rss: Option<u64>,
    loadgen_rss: u64,
    open: u64,
}

fn snapshot(d: &Driver) -> Snapshot {
    Snapshot {
        mem: limits::meminfo(),
        sock: limits::sockstat(),
        conntrack: limits::sysctl_u64("net.netfilter.nf_conntrack_count"),
        server_rss: d.server_pid.and_then(limits::proc_rss),
        loadgen_rss: d.agents.iter().map(|a| a.rss).sum(),
        open: d.open(),
    }
}

fn fail(msg: String) -> i32 {
    eprintln!("ws-loadgen ceiling: {msg}");
    2
}

/// Runs `ceiling`; returns the exit code.
pub fn run(a: &CeilingArgs) -> i32 {
    let (url, target, script) =
        match crate::config::script::url_or_script(a.url.as_deref(), a.script.as_deref()) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
    if let Err(e) = a.tls.client_for(&target, &url) {
        return fail(e);
    }
    if a.max == 0 {
        return fail("--max must be more than 0".into());
    }
    let step = a.step.of(a.max).min(a.max);
    if step == 0 {
        return fail("--step must be more than 0".into());
    }
    let steps = a.max.div_ceil(step);
    if steps > MAX_STEPS {
        return fail(format!(
            "--max {} in steps of {step} is {steps} steps; at most {MAX_STEPS}: use a larger --step",
            a.max
        ));
    }
    if !a.connect_rate.is_finite() || a.connect_rate <= 0.0 {
        return fail("--connect-rate must be more than 0".into());
    }
    if a.ping_interval.is_zero() || a.connect_timeout.is_zero() || a.handshake_timeout.is_zero() {
        return fail(
            "--ping-interval, --connect-timeout and --handshake-timeout must be more than 0".into(),
        );
    }
    let cores = match ws_common::cores::resolve_cores(a.cores.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let metrics = match a
        .admin
        .admin(&target)
        .and_then(|adm| MetricsUrl::choose(a.metrics_url.as_deref(), &adm))
    {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    if let Err(e) = a.token.tokens() {
        return fail(e);
    }
    if let Some(pid) = a.server_pid {
        if limits::proc_nofile(pid).is_none() {
            return fail(format!(
                "--server-pid {pid}: cannot read /proc/{pid}/limits"
            ));
        }
    }

    // Limits before the run (this also raises our soft RLIMIT_NOFILE, which agents inherit).
    let (lim, metrics_before) = Limits::gather(&GatherOpts {
        target: target.addr,
        server_pid: a.server_pid,
        metrics: metrics.clone(),
        loadgen_workers: steps,
    });
    let per_process = lim
        .loadgen_nofile
        .0
        .saturating_sub(crate::config::FD_RESERVE + steps + 16)
        .max(1);
    let processes = a
        .processes
        .unwrap_or_else(|| a.max.div_ceil(per_process))
        .max(1);
    if processes > 256 {
        return fail(format!(
            "--max {} would need {processes} load generator processes at {per_process} connections each: \
             raise the open-files limit (ulimit -Hn) or lower --max",
            a.max
        ));
    }
    let server = lim.server.clone();
    let server_pid = server.as_ref().and_then(|s| s.pid);
    let source_ips = a
        .source_ip
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_default();
    let local = limits::is_local_ip(target.addr.ip());
    let inputs = |n: u64| Inputs {
        n,
        source_ips: source_ips.len().max(1) as u64,
        connect_rate: a.connect_rate,
        ends: if local { 2 } else { 1 },
        loadgen_processes: processes,
        server_accept_rate: bounds::ACCEPT_RATE_PER_CORE
            * server.as_ref().map_or(1, |s| s.cores.max(1)) as f64,
        server_bytes_per_conn: bounds::SERVER_BYTES_PER_CONN,
        loadgen_bytes_per_conn: bounds::LOADGEN_BYTES_PER_CONN,
        kernel_bytes_per_socket: bounds::KERNEL_BYTES_PER_SOCKET,
    };
    let predicted_bounds = bounds::bounds(&lim, &inputs(a.max));
    let predicted = predicted_bounds
        .first()
        .and_then(|b| b.max_n.map(|m| (m, b.key.clone())));

    // Start the agents.
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot find my own executable: {e}")),
    };
    let first: Vec<String> = match (&script, &a.script) {
        // Agents may run elsewhere in the tree: give them the script's absolute path.
        (Some(_), Some(p)) => vec![
            "--script".into(),
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
        ],
        _ => vec![url.clone()],
    };
    let mut run_args: Vec<String> = first;
    run_args.extend([
        "--ping-interval".into(),
        format!("{}ms", a.ping_interval.as_millis()),
        "--connect-timeout".into(),
        format!("{}ms", a.connect_timeout.as_millis()),
        "--handshake-timeout".into(),
        format!("{}ms", a.handshake_timeout.as_millis()),
        "--drain-timeout".into(),
        format!("{}ms", a.drain_timeout.as_millis()),
    ]);
    if !source_ips.is_empty() {
        run_args.push("--source-ip".into());
        run_args.push(
            source_ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    for h in &a.headers {
        run_args.push("--header".into());
        run_args.push(h.clone());
    }
    if let Some(o) = &a.origin {
        run_args.push("--origin".into());
        run_args.push(o.clone());
    }
    run_args.extend(a.tls.to_args());
    // The secret goes to the agents through their environment (WS_TOKEN_SECRET, which
    // they read as --token-secret), not their command lines, which `ps` shows.
    run_args.push("--token-via".into());
    run_args.push(
        match a.token.token_via {
            TokenVia::Header => "header",
            TokenVia::Query => "query",
        }
        .into(),
    );
    run_args.push("--token-ttl".into());
    run_args.push(format!("{}s", a.token.token_ttl.as_secs().max(1)));
    if let Some(r) = &a.token.token_rooms {
        run_args.push("--token-rooms".into());
        run_args.push(r.join(","));
    }
    let stop = crate::commands::stop_on_sigint();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut agents = Vec::new();
    for i in 0..processes as usize {
        let core = cores[i % cores.len()];
        let mut cmd = Command::new(&exe);
        match &a.token.token_secret {
            Some(secret) => cmd.env("WS_TOKEN_SECRET", secret),
            None => cmd.env_remove("WS_TOKEN_SECRET"),
        };
        cmd.arg("ceiling-agent")
            .arg("--core")
            .arg(core.to_string())
            .arg("--")
            .args(&run_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                for mut ag in agents.into_iter().map(|x: Agent| x.proc) {
                    let _ = ag.kill();
                    let _ = ag.wait();
                }
                return fail(format!("cannot start a load generator process: {e}"));
            }
        };
        let out = child.stdout.take();
        let tx = tx.clone();
        std::thread::spawn(move || {
            if let Some(out) = out {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(m) = serde_json::from_str::<AgentMsg>(&line) {
                        if tx.send((i, Some(m))).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send((i, None));
        });
        agents.push(Agent {
            pid: child.id(),
            stdin: child.stdin.take(),
            proc: child,
            nofile: (0, 0),
            rss_start: 0,
            rss: 0,
            hello: false,
            bye: false,
            gone: false,
        });
    }
    drop(tx);
    let start = Instant::now();
    let mut d = Driver {
        agents,
        groups: Vec::new(),
        rx,
        total: Acc::new(),
        window: Acc::new(),
        second: Acc::new(),
        phase: "start".into(),
        timeline: Vec::new(),
        start,
        next_tick: start + Duration::from_secs(1),
        errors: Vec::new(),
        peak_open: 0,
        max_open_per_agent: 0,
        server_pid,
        stop,
        progress: a.progress != ProgressMode::Off,
    };
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // The server's CPU and RSS once a second for the report's plots: from /proc when it is
    // a local process (a /metrics scrape would cost it a descriptor near its limit).
    let sampler = match (server_pid, &metrics) {
        (Some(pid), _) => Some(Sampler::start(Source::Proc(pid), now_ns())),
        (None, Some(m)) => Some(Sampler::start(Source::Metrics(m.clone()), now_ns())),
        (None, None) => None,
    };
    let hello_by = Instant::now() + Duration::from_secs(10);
    while !d.agents.iter().all(|x| x.hello || x.gone) && Instant::now() < hello_by {
        d.pump(Instant::now() + Duration::from_millis(50));
    }
    if !d.agents.iter().all(|x| x.hello) {
        let msg = format!(
            "load generator processes did not start: {}",
            d.errors.join("; ")
        );
        teardown(&mut d, a);
        return fail(msg);
    }
    d.say(&format!(
        "{} load generator process(es) (pids {}), server {}; ramping to {} in steps of {} at {:.0}/s",
        processes,
        d.agents.iter().map(|x| x.pid.to_string()).collect::<Vec<_>>().join(","),
        server
            .as_ref()
            .map(|s| match s.pid {
                Some(p) => format!(
                    "pid {p} ({}) RLIMIT_NOFILE {}",
                    s.comm,
                    s.nofile.map_or("?".into(), |n| n.0.to_string())
                ),
                None => "seen through /metrics".into(),
            })
            .unwrap_or_else(|| "not found locally".into()),
        fmt_n(a.max),
        fmt_n(step),
        a.connect_rate
    ));
    let base = snapshot(&d);
    let base_fds = server_pid.and_then(limits::proc_fd_count);

    // Ramp.
    let max_p99_us = (!a.max_p99.is_zero()).then_some(a.max_p99.as_micros() as u64);
    let mut level = 0u64;
    let mut last_good = 0u64;
    let mut step_reports: Vec<StepReport> = Vec::new();
    let mut stop_reason = StopReason::MaxReached;
    let mut failing_level = None;
    // Connection numbers handed out so far: every group numbers its own from here.
    let mut next_conn = 0u64;
    for gid in 0..steps as u32 {
        if d.interrupted() {
            stop_reason = StopReason::Interrupted;
            break;
        }
        let target = (level + step).min(a.max);
        let add = target - level;
        d.phase = format!("ramp {target}");
        d.window = Acc::new();
        let t0 = Instant::now();
        for i in 0..d.agents.len() {
            let n = share(add as u32, i, d.agents.len()) as u64;
            if n == 0 {
                continue;
            }
            let rate = a.connect_rate * n as f64 / add as f64;
            d.send(
                i,
                &Cmd::Add {
                    id: gid,
                    n: n as u32,
                    rate,
                    offset: next_conn,
                },
            );
            next_conn += n;
            d.groups.push(GroupAgg {
                agent: i,
                id: gid,
                n,
                established: 0,
                failed: 0,
                open: 0,
                pending: 0,
                done: false,
            });
        }
        let deadline = t0
            + Duration::from_secs_f64(add as f64 / a.connect_rate)
            + a.connect_timeout
            + a.handshake_timeout
            + Duration::from_secs(5);
        while !d.settled(gid)
            && Instant::now() < deadline
            && !d.interrupted()
            && d.errors.is_empty()
        {
            d.pump(Instant::now() + Duration::from_millis(100));
        }
        // The tail: the last deltas of the step, drops right after opening.
        d.pump(Instant::now() + Duration::from_millis(600));
        let unsettled = !d.settled(gid);
        let snap = snapshot(&d);
        let scraped = metrics
            .as_ref()
            .filter(|_| server_pid.is_none())
            .and_then(|m| m.scrape(Duration::from_secs(1)).ok());
        let sm = scraped.as_ref().map(ServerMetrics::from);
        let w = &d.window;
        let mut failures = w.failures.clone();
        if unsettled {
            let stalled = d.pending();
            if stalled > 0 {
                failures.insert("stalled".into(), stalled);
            }
        }
        let failed = w.c.connects_failed + failures.get("stalled").copied().unwrap_or(0);
        let errs = failed + w.c.drops;
        let rep = StepReport {
            index: gid as usize,
            target,
            added: add,
            attempted: w.c.connects_attempted,
            established: w.c.connects_established,
            failed,
            failures,
            drops: w.drops.clone(),
            open: snap.open,
            error_rate: errs as f64 / w.c.connects_attempted.max(add).max(1) as f64,
            pong_p99_us: p99(&w.pong),
            handshake_p99_us: p99(&w.handshake),
            duration_s: t0.elapsed().as_secs_f64(),
            server_rss_bytes: snap.server_rss.or(sm.and_then(|m| m.rss_bytes)),
            server_fds: sm.and_then(|m| m.open_fds),
            loadgen_rss_bytes: snap.loadgen_rss,
            slab_bytes: snap.mem.map(|m| m.slab),
            tcp_mem_bytes: snap.sock.map(|s| s.mem_pages * limits::page_size()),
            metrics_answered: sm.is_some(),
        };
        d.say(&format!(
            "step {:>3}: target {:>8}  open {:>8}  failed {:>6}  error rate {:.3}%  pong p99 {}  handshake p99 {}{}",
            gid + 1,
            fmt_n(target),
            fmt_n(rep.open),
            rep.failed,
            rep.error_rate * 100.0,
            opt_us(rep.pong_p99_us),
            opt_us(rep.handshake_p99_us),
            if rep.failures.is_empty() {
                String::new()
            } else {
                format!("  ({})", class_list(&rep.failures))
            }
        ));
        let fail_rate = rep.error_rate > a.max_error_rate;
        let slow = matches!((rep.pong_p99_us, max_p99_us), (Some(p), Some(m)) if p > m);
        let no_conn = d.total.c.connects_established == 0;
        step_reports.push(rep);
        if !d.errors.is_empty() {
            stop_reason = StopReason::Interrupted;
            break;
        }
        if no_conn {
            stop_reason = StopReason::NoConnection;
            failing_level = Some(target);
            break;
        }
        if fail_rate {
            stop_reason = StopReason::Failures;
            failing_level = Some(target);
            break;
        }
        if slow {
            stop_reason = StopReason::Latency;
            failing_level = Some(target);
            break;
        }
        level = target;
        last_good = target;
        if d.interrupted() {
            stop_reason = StopReason::Interrupted;
            break;
        }
    }

    // Back off to the last good level when latency (not a limit) stopped the ramp.
    if stop_reason == StopReason::Latency {
        let last = step_reports.last().map_or(0, |s| s.index as u32);
        for i in 0..d.agents.len() {
            d.send(i, &Cmd::Stop { id: last });
        }
        let by = Instant::now() + a.drain_timeout * 2 + Duration::from_secs(3);
        while Instant::now() < by && d.groups.iter().any(|g| g.id == last && !g.done) {
            d.pump(Instant::now() + Duration::from_millis(100));
        }
    }

    // Hold what is open.
    let mut hold = None;
    let mut peak = snapshot(&d);
    if !matches!(
        stop_reason,
        StopReason::Interrupted | StopReason::NoConnection
    ) && !d.interrupted()
    {
        d.phase = "hold".into();
        d.window = Acc::new();
        let t0 = Instant::now();
        let open_at_start = d.open();
        let mut min_open = open_at_start;
        let mut next_say = t0 + Duration::from_secs(5);
        d.say(&format!(
            "holding {} connections for {:?}",
            fmt_n(open_at_start),
            a.hold
        ));
        let end = t0 + a.hold;
        while Instant::now() < end && !d.interrupted() && d.errors.is_empty() {
            d.pump((Instant::now() + Duration::from_millis(250)).min(end));
            min_open = min_open.min(d.open());
            if Instant::now() >= next_say {
                next_say += Duration::from_secs(5);
                d.say(&format!(
                    "hold: open {}  drops {}  pings {}  pongs {}",
                    fmt_n(d.open()),
                    d.window.c.drops,
                    d.window.c.pings_sent,
                    d.window.c.pongs_received
                ));
            }
        }
        // The last deltas of the hold.
        d.pump(Instant::now() + Duration::from_millis(600));
        min_open = min_open.min(d.open());
        peak = snapshot(&d);
        let w = &d.window;
        hold = Some(HoldReport {
            open_at_start,
            min_open,
            open_at_end: d.open(),
            duration_s: t0.elapsed().as_secs_f64(),
            drops: w.c.drops,
            drop_classes: w.drops.clone(),
            pings: w.c.pings_sent,
            pongs: w.c.pongs_received,
            survival: (w.c.pings_sent > 0)
                .then(|| w.c.pongs_received as f64 / w.c.pings_sent as f64),
            pong_p99_us: p99(&w.pong),
            pong_max_us: (!w.pong.is_empty()).then(|| w.pong.max()),
        });
    }
    // Interrupted during the hold: the ramp's finding stands, only the hold is cut short.
    let interrupted = d.interrupted();
    if interrupted && hold.is_none() {
        stop_reason = StopReason::Interrupted;
    }
    // Listed once, now that the memory figures are taken (see Snapshot).
    let server_fds_peak = server_pid.and_then(limits::proc_fd_count);

    // Back off, then ask the server what happened (it can answer again now).
    d.phase = "teardown".into();
    teardown(&mut d, a);
    let mut metrics_after = None;
    if let Some(m) = &metrics {
        for _ in 0..8 {
            if let Ok(x) = m.scrape(Duration::from_secs(1)) {
                metrics_after = Some(ServerMetrics::from(&x));
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // Evidence and verdict.
    let delta = |f: fn(&ServerMetrics) -> u64| match (metrics_before, metrics_after) {
        (Some(b), Some(x)) => Some(f(&x).saturating_sub(f(&b))),
        (None, Some(x)) => Some(f(&x)),
        _ => None,
    };
    let server_nofile = server
        .as_ref()
        .and_then(|s| s.nofile)
        .or(metrics_after.and_then(|m| m.max_fds.map(|v| (v, v))));
    let server_ev = (server.is_some() || metrics_after.is_some()).then(|| ServerEvidence {
        pid: server_pid,
        nofile: server_nofile,
        fds_at_peak: server_fds_peak,
        accept_emfile: delta(|m| m.accept_emfile),
        accept_enfile: delta(|m| m.accept_enfile),
        accept_enomem: delta(|m| m.accept_enomem),
        rejected_503: delta(|m| m.rejected_503),
    });
    let last_step = step_reports.last().cloned().unwrap_or_default();
    let ev = Evidence {
        stop: Some(stop_reason),
        step_failures: last_step.failures.clone(),
        step_drops: last_step.drops.clone(),
        step_target: last_step.target,
        peak_open: d.peak_open,
        server: server_ev,
        loadgen_nofile: d.agents.first().map_or(0, |x| x.nofile.0),
        loadgen_processes: processes,
        conntrack: lim.conntrack_max.map(|m| (peak.conntrack.unwrap_or(0), m)),
        mem: peak.mem.map(|m| (m.available, m.total)),
        port_range: lim.port_range,
        source_ips: source_ips.len().max(1) as u64,
        step_p99_us: last_step.pong_p99_us,
        max_p99_us,
        max: a.max,
    };
    let mut verdict = crate::limits::verdict::classify(&ev);
    if !d.errors.is_empty() {
        verdict.evidence.extend(d.errors.iter().cloned());
    }

    // Memory per connection: the marginal cost, as the median over the steps of each
    // figure's growth divided by the connections the step added. It ignores the fixed cost
    // of the first connections (allocator arenas, rings, one worker per step) and a step
    // during which another process on the box allocated or freed a lot. With fewer than 3
    // steps it is the growth from the start divided by the connections.
    let conns = peak.open.saturating_sub(base.open);
    let samples: Vec<Sample> = step_reports
        .iter()
        .filter(|s| s.open > 0)
        .map(|s| Sample {
            open: s.open,
            server_rss: s.server_rss_bytes,
            loadgen_rss: Some(s.loadgen_rss_bytes),
            slab: s.slab_bytes,
            tcp_mem: s.tcp_mem_bytes,
        })
        .collect();
    let by_slope = samples.len() >= 3;
    let start = Sample {
        open: base.open,
        server_rss: base.server_rss,
        loadgen_rss: Some(d.agents.iter().map(|x| x.rss_start).sum()),
        slab: base.mem.map(|m| m.slab),
        tcp_mem: base.sock.map(|s| s.mem_pages * limits::page_size()),
    };
    let figure = |f: fn(&Sample) -> Option<u64>, zero_ok: bool| -> Option<f64> {
        let v = if by_slope {
            let pts: Vec<(f64, f64)> = samples
                .iter()
                .filter_map(|s| f(s).map(|y| (s.open as f64, y as f64)))
                .collect();
            median_increment(&pts)
        } else {
            match (samples.last().and_then(f), f(&start)) {
                (Some(x), Some(y)) if conns > 0 => Some((x as f64 - y as f64) / conns as f64),
                _ => None,
            }
        };
        // A figure that did not grow is not a measurement (other activity freed more than
        // the connections took), except TCP buffers: idle sockets hold none.
        v.map(|b| if zero_ok { b.max(0.0) } else { b })
            .filter(|b| *b > 0.0 || zero_ok)
    };
    let mut memory = MemoryReport {
        connections_measured: conns,
        reliable: conns >= crate::report::ceiling::MEMORY_MIN_CONNS,
        method: if by_slope {
            format!(
                "median over {} steps of growth / connections added (marginal cost)",
                samples.len()
            )
        } else {
            "growth from the start / connections (too few steps for a slope)".into()
        },
        server_user_bytes_per_conn: figure(|s| s.server_rss, false),
        loadgen_user_bytes_per_conn: figure(|s| s.loadgen_rss, false),
        kernel_bytes_per_conn: figure(|s| s.slab, false),
        kernel_ends: if server_pid.is_some() || local { 2 } else { 1 },
        sockstat_mem_bytes_per_conn: figure(|s| s.tcp_mem, true),
        ..Default::default()
    };
    memory.project(lim.mem.map(|m| m.total));

    // What next: doctor's arithmetic, now with the measured memory figures.
    let mut measured_inputs = inputs(a.max);
    if let Some(v) = memory.server_user_bytes_per_conn {
        measured_inputs.server_bytes_per_conn = v;
    }
    if let Some(v) = memory.loadgen_user_bytes_per_conn {
        measured_inputs.loadgen_bytes_per_conn = v;
    }
    if let Some(v) = memory.kernel_bytes_per_conn {
        measured_inputs.kernel_bytes_per_socket = v / memory.kernel_ends.max(1) as f64;
    }
    let next = bounds::bounds(&lim, &measured_inputs);
    let what = what_to_change(&verdict, &next, a, processes);

    let held = hold.as_ref().map_or(0, |h| h.min_open);
    let confirmed = !interrupted
        && hold
            .as_ref()
            .is_some_and(|h| h.drops == 0 && h.min_open == h.open_at_start && h.open_at_start > 0);
    let no_conn = stop_reason == StopReason::NoConnection;
    let exit_code = if no_conn || (!d.errors.is_empty() && d.peak_open == 0) {
        2
    } else if confirmed && !interrupted && d.errors.is_empty() {
        0
    } else {
        1
    };
    let error = if no_conn {
        Some(format!(
            "no connection could be established to {} ({}): {}",
            url,
            target.addr,
            class_list(&d.total.failures)
        ))
    } else if !d.errors.is_empty() {
        Some(d.errors.join("; "))
    } else {
        None
    };
    let server_samples = sampler.map(Sampler::finish).unwrap_or_default();
    let report = CeilingReport {
        tool: "ws-loadgen ceiling".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        url: url.clone(),
        server_addr: target.addr.to_string(),
        started_unix_ms: started_unix.as_millis() as u64,
        elapsed_s: d.start.elapsed().as_secs_f64(),
        interrupted,
        config: CeilingConfig {
            max: a.max,
            step,
            hold_s: a.hold.as_secs_f64(),
            connect_rate: a.connect_rate,
            ping_interval_ms: a.ping_interval.as_millis() as u64,
            script: a.script.as_ref().map(|p| p.display().to_string()),
            max_error_rate: a.max_error_rate,
            max_p99_us,
            connect_timeout_ms: a.connect_timeout.as_millis() as u64,
            handshake_timeout_ms: a.handshake_timeout.as_millis() as u64,
            processes,
            cores: cores.clone(),
            source_ips: source_ips.iter().map(|i| i.to_string()).collect(),
        },
        ceiling: crate::report::ceiling::Ceiling {
            connections: held,
            touched: d.peak_open,
            confirmed,
            held_for_s: hold.as_ref().map_or(0.0, |h| h.duration_s),
            stop_reason,
            last_good_level: last_good,
            failing_level,
        },
        binding_limit: verdict,
        what_to_change: what,
        next_limits: next,
        predicted,
        steps: step_reports,
        hold,
        server: ServerReport {
            pid: server_pid,
            comm: server.as_ref().map(|s| s.comm.clone()).unwrap_or_default(),
            nofile: server_nofile,
            fds_at_start: base_fds,
            fds_at_peak: server_fds_peak,
            rss_at_start: base.server_rss,
            rss_at_peak: peak.server_rss,
            metrics_before,
            metrics_after,
            accept_errors: [
                ("EMFILE", delta(|m| m.accept_emfile)),
                ("ENFILE", delta(|m| m.accept_enfile)),
                ("ENOMEM+ENOBUFS", delta(|m| m.accept_enomem)),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
        },
        loadgen: LoadgenReport {
            processes,
            pids: d.agents.iter().map(|x| x.pid).collect(),
            nofile: d.agents.first().map_or((0, 0), |x| x.nofile),
            rss_at_start: d.agents.iter().map(|x| x.rss_start).sum(),
            rss_at_peak: peak.loadgen_rss,
            max_open_per_process: d.max_open_per_agent,
        },
        system: SystemReport {
            mem_at_start: base.mem,
            mem_at_peak: peak.mem,
            sockstat_at_start: base.sock,
            sockstat_at_peak: peak.sock,
            conntrack_max: lim.conntrack_max,
            conntrack_count_at_start: base.conntrack,
            conntrack_count_at_peak: peak.conntrack,
            port_range: lim.port_range,
            somaxconn: lim.somaxconn,
            file_max: lim.file_max,
        },
        memory,
        failures: d.total.failures.clone(),
        drops: d.total.drops.clone(),
        totals: d.total.c.clone(),
        timeline: std::mem::take(&mut d.timeline),
        exit_code,
        error,
        server_samples,
    };
    // Files first: stdout may be gone (a pipe whose reader was interrupted).
    if let Some(p) = &a.json {
        write_json("ws-loadgen ceiling", p, "JSON", &report);
    }
    if let Some(p) = &a.html {
        write_file("ws-loadgen ceiling", p, report.to_html());
    }
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(report.to_text().as_bytes())
        .and_then(|_| out.flush());
    exit_code
}

fn class_list(m: &BTreeMap<String, u64>) -> String {
    crate::fmt::class_counts(m, " x")
}

/// One memory sample: figures at a number of open connections.
struct Sample {
    open: u64,
    server_rss: Option<u64>,
    loadgen_rss: Option<u64>,
    slab: Option<u64>,
    tcp_mem: Option<u64>,
}

/// The median of (y[i+1] - y[i]) / (x[i+1] - x[i]) over points sorted by x: a growth rate
/// that one noisy interval does not move. None without two points apart in x.
pub fn median_increment(pts: &[(f64, f64)]) -> Option<f64> {
    let mut p = pts.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut r: Vec<f64> = p
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].1 - w[0].1) / (w[1].0 - w[0].0))
        .collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let m = r.len() / 2;
    Some(if r.len() % 2 == 1 {
        r[m]
    } else {
        (r[m - 1] + r[m]) / 2.0
    })
}

/// Tells every agent to close and exit, waits for them (bounded), kills stragglers.
fn teardown(d: &mut Driver, a: &CeilingArgs) {
    for i in 0..d.agents.len() {
        d.send(i, &Cmd::Quit);
        d.agents[i].stdin = None;
    }
    let by = Instant::now() + a.drain_timeout * 2 + Duration::from_secs(10);
    while Instant::now() < by && !d.agents.iter().all(|x| x.bye || x.gone) {
        d.pump(Instant::now() + Duration::from_millis(100));
    }
    for ag in d.agents.iter_mut() {
        let wait_by = Instant::now() + Duration::from_secs(2);
        loop {
            match ag.proc.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < wait_by => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = ag.proc.kill();
                    let _ = ag.proc.wait();
                    break;
                }
            }
        }
    }
}

/// The fix for the binding limit, then the limits that come after it.
fn what_to_change(v: &Verdict, next: &[Bound], a: &CeilingArgs, processes: u64) -> Vec<String> {
    let mut out = Vec::new();
    let from_doctor = next.iter().find(|b| b.key == v.kind).map(|b| b.fix.clone());
    match v.kind.as_str() {
        "server_max_conns" => out.push("raise or remove the server's --max-conns".into()),
        "latency" => out.push(
            "give the server (or the load generator) more cores, lower the heartbeat rate (--ping-interval), \
             or accept more latency (--max-p99)"
                .into(),
        ),
        "none" => out.push(format!("no limit below --max {}: raise --max", a.max)),
        "interrupted" => out.push("run it again to the end".into()),
        "unknown" => out.push(
            "look at the server's log and /metrics; pass --server-pid so its descriptors and limits can be read"
                .into(),
        ),
        "loadgen_open_files" => out.push(format!(
            "the load generator ran out of descriptors with {processes} process(es): let ceiling pick the number \
             of processes (drop --processes) or raise the hard RLIMIT_NOFILE of the shell that starts it"
        )),
        _ => {}
    }
    if let Some(f) = from_doctor.filter(|f| !f.is_empty()) {
        out.push(f);
    }
    let after: Vec<String> = next
        .iter()
        .filter(|b| b.key != v.kind && b.max_n.is_some() && b.key != "loadgen_open_files")
        .take(3)
        .map(|b| format!("{} at {}", b.name, fmt_n(b.max_n.unwrap_or(0))))
        .collect();
    if !after.is_empty() {
        out.push(format!(
            "after that, the next limits of this box (doctor): {}",
            after.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(parse_step("2500").unwrap(), Step::Count(2500));
        assert_eq!(parse_step("10%").unwrap(), Step::Percent(10.0));
        assert_eq!(parse_step("10%").unwrap().of(25_000), 2500);
        assert_eq!(parse_step("0.001%").unwrap().of(100), 1);
        assert!(parse_step("0%").is_err());
        assert!(parse_step("x").is_err());
    }

    #[test]
    fn median_increments() {
        let lin = |x: f64| 1000.0 + 42.0 * x;
        let mut pts = vec![
            (2500.0, lin(2500.0)),
            (7500.0, lin(7500.0)),
            (5000.0, lin(5000.0)),
        ];
        assert!((median_increment(&pts).unwrap() - 42.0).abs() < 1e-9);
        // One interval where something else freed a lot does not move it.
        pts.push((10000.0, lin(10000.0)));
        pts.push((12500.0, lin(12500.0) - 5e6));
        assert!((median_increment(&pts).unwrap() - 42.0).abs() < 1e-9);
        assert_eq!(median_increment(&pts[..1]), None);
        assert_eq!(median_increment(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }
}
