//! The report of a run: one serde structure written as JSON (`--json`, every figure plus
//! the histograms, so runs can be merged later) and rendered as text on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::plan::Stage;
use crate::config::ScenarioKind;
use crate::engine::stats::{Counters, HistSummary, Hists};
use crate::report::thresholds::{Observed, Outcome};

/// The settings the run used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigEcho {
    pub stages: Vec<Stage>,
    pub connect_rate: f64,
    pub rate: f64,
    pub payload: usize,
    pub ping_interval_ms: u64,
    pub reconnect_max_tries: u32,
    pub cores: Vec<usize>,
    pub source_ips: Vec<String>,
    pub headers: Vec<String>,
    pub origin: Option<String>,
    pub connect_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    /// --warmup: messages intended in this leading part are not in the latency histograms.
    #[serde(default)]
    pub warmup_ms: u64,
    /// `--tick` in µs (0: every event woke the workers).
    #[serde(default)]
    pub tick_us: u64,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
}

/// Connection figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Connections {
    /// Largest stage target.
    pub target: u32,
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    /// Most connections open at once (sampled each second).
    pub peak_open: u32,
    /// Open when the run's end was reached (before our Close).
    pub open_at_end: u32,
    /// open_at_end / established (None when nothing was established).
    pub alive_at_end_ratio: Option<f64>,
    pub drops: u64,
    pub reconnects: u64,
    pub retries: u64,
    pub gave_up: u64,
    /// Established connections per second over the whole load phase.
    pub established_per_s: f64,
    /// Most connections established in one second of the run (the achieved connect rate).
    pub peak_established_per_s: u64,
}

/// Message figures (bytes are payload bytes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Messages {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub skipped_backpressure: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub received_per_s: f64,
    pub bytes_received_per_s: f64,
}

/// Heartbeat figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub pings_sent: u64,
    pub pongs_received: u64,
    /// pongs / pings (None when no ping was sent).
    pub survival_rate: Option<f64>,
}

/// The histograms (microseconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub unit: String,
    pub connect: HistSummary,
    pub handshake: HistSummary,
    pub rtt: HistSummary,
    pub pong: HistSummary,
    /// Broadcast fan-out or push delivery latency (receipt − the stamp's intended send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<HistSummary>,
    /// Push: HTTP POST round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HistSummary>,
    /// wss://: TCP connected to TLS handshake done (`handshake` is then the upgrade alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HistSummary>,
    /// Replies and deliveries left out of rtt/delivery because their message was intended
    /// during --warmup.
    #[serde(default)]
    pub warmup_excluded: u64,
}

impl Latency {
    pub fn of(h: &Hists) -> Self {
        let some = |x: &hdrhistogram::Histogram<u64>| (!x.is_empty()).then(|| HistSummary::of(x));
        Self {
            unit: "us".into(),
            connect: HistSummary::of(&h.connect),
            handshake: HistSummary::of(&h.handshake),
            rtt: HistSummary::of(&h.rtt),
            pong: HistSummary::of(&h.pong),
            delivery: some(&h.delivery),
            http: some(&h.http),
            tls: some(&h.tls),
            warmup_excluded: 0,
        }
    }
}

/// `--scenario broadcast` figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BroadcastReport {
    /// The URL's `room` query parameter.
    pub room: String,
    /// Whether publishers receive their own messages (no `echo=false` in the URL).
    pub echo: bool,
    pub publishers: u32,
    /// Most connections (all subscribers) open at once.
    pub subscribers_peak: u32,
    /// Messages the publishers sent.
    pub published: u64,
    /// Messages sent by each publisher (global publisher index).
    pub published_per_publisher: Vec<u64>,
    /// Per message, the connections open when it was published (less its publisher when
    /// the room does not echo), or the deliveries received if more (subscribers that joined
    /// while it was on its way were in the room), summed: received + missing, unless some
    /// deliveries were late.
    pub deliveries_expected: u64,
    /// Deliveries of our publishers' messages received.
    pub deliveries_received: u64,
    /// Per message, expected − received when it was settled (a few seconds after its send
    /// time, or at the end of the run), summed over the messages short of their count.
    pub deliveries_missing: u64,
    /// Per message, received − the count expected at publication, summed (subscribers
    /// that joined while it was on its way); included in deliveries_expected.
    pub deliveries_extra: u64,
    /// Of all deliveries, those to a subscriber whose upgrade ws-loadgen saw complete after
    /// the message was published: the server had already put it in the room (it answers
    /// the upgrade, then subscribes, and the message overtook ws-loadgen's bookkeeping).
    /// They explain `deliveries_extra`; extra beyond them is a server sending more than
    /// its room holds.
    #[serde(default)]
    pub deliveries_joined_in_flight: u64,
    /// Deliveries that arrived after their message was settled (which counted them
    /// missing): expected + late = received + missing.
    pub deliveries_late: u64,
    /// Deliveries received per second over the load phase.
    pub deliveries_per_s: f64,
    /// Most deliveries received in one second.
    pub peak_deliveries_per_s: u64,
    /// Sequences subscribers skipped (per subscriber and publisher).
    pub sequence_gaps: u64,
    /// Skipped sequences never seen late: gaps − out_of_order.
    pub sequence_lost: u64,
    /// Deliveries below the next sequence expected that filled a gap.
    pub out_of_order: u64,
    /// Deliveries below the next sequence expected with no gap open.
    pub duplicates: u64,
    /// Data messages without a stamp of one of our publishers.
    pub unexpected: u64,
    /// Publishes skipped because the publisher's unsent backlog was full.
    pub skipped_backpressure: u64,
    /// Messages every expected subscriber received.
    pub messages_complete: u64,
    /// Messages still short of their expected count when settled.
    pub messages_incomplete: u64,
    /// Messages published while no other connection was open.
    pub messages_no_subscriber: u64,
    /// Messages received but never reported published (0 unless something is wrong).
    pub messages_unmatched: u64,
    /// complete / (complete + incomplete).
    pub all_delivered_ratio: Option<f64>,
    /// Per delivery: receipt − the publisher's intended send time, µs.
    pub fanout_latency: HistSummary,
    /// Per complete message: the last expected subscriber's receipt − the intended send
    /// time, µs.
    pub all_delivered_latency: HistSummary,
}

/// `--scenario push` figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PushReport {
    /// Most connections (users) open at once.
    pub users_peak: u32,
    /// POSTs started.
    pub pushes: u64,
    pub pushes_per_s: f64,
    /// POST outcomes: HTTP status (`200`, `404`, `413`, ...) or failure class
    /// (`timeout`, `ECONNREFUSED`, `malformed_response`, ...).
    pub statuses: BTreeMap<String, u64>,
    /// POSTs not answered 200.
    pub failed: u64,
    /// Deliveries the server reported in its 200 answers.
    pub deliveries_expected: u64,
    /// Pushes received on the WebSocket connections.
    pub deliveries_received: u64,
    pub deliveries_per_s: f64,
    /// Pushes answered 200 whose message never reached its connection (it closed, or the
    /// run ended after the drain).
    pub lost: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// Receipt on the WebSocket − the intended send time, µs.
    pub delivery_latency: HistSummary,
    /// `connect()` to the HTTP answer read, µs.
    pub http_rtt: HistSummary,
}

/// A scripted run (`--script`): how its steps and loop went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScriptReport {
    /// The scenario file.
    pub file: String,
    /// `--conn-offset`: the first connection's `{{conn}}`.
    pub conn_offset: u64,
    /// Rows in the data file (0 without one).
    pub data_rows: usize,
    pub steps: Vec<StepReport>,
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_: Option<LoopReport>,
    /// Messages that arrived during the steps and matched no expect.
    pub ignored: u64,
}

/// One `[[open]]` step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    pub name: String,
    /// Connections that completed it.
    pub ok: u64,
    /// Connections lost during it (classes in drop_classes, `CLASS:NAME`).
    pub failed: u64,
    /// Send → expect matched, µs (steps with an expect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<HistSummary>,
    /// The first message that arrived during the step and did not match its expect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_sample: Option<String>,
}

/// The `[loop]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoopReport {
    pub name: String,
    /// Messages sent (the rate: per connection, or the --rate total).
    pub sent: u64,
    pub rate_per_connection: Option<f64>,
    pub rate_total: Option<f64>,
    /// Whether each send expects its own message back.
    pub echo: bool,
    /// Own messages back (round trip from the intended send time).
    pub replies: u64,
    /// Other connections' stamped messages received.
    pub deliveries: u64,
    /// Unstamped messages that matched (push-only, or replies told by order).
    pub matched: u64,
    pub lost: u64,
    /// Sequences receivers skipped from a sender.
    pub gaps: u64,
    /// Deliveries at or below a sequence already seen (duplicates, late after a gap).
    pub behind: u64,
    pub untracked: u64,
    pub unexpected: u64,
    pub skipped_backpressure: u64,
    pub rtt: HistSummary,
    pub delivery: HistSummary,
}

/// One stage of the plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageReport {
    pub index: usize,
    pub target: u32,
    pub duration_s: f64,
    /// Most connections open at once during the stage.
    pub peak_open: u32,
    /// The scenario's latency (rtt for echo, pong for hold, fan-out for broadcast, delivery
    /// for push), µs.
    pub latency: HistSummary,
    pub msgs_per_s: f64,
    pub bytes_per_s: f64,
    pub error_rate: f64,
    pub failed_connects: u64,
    pub counters: Counters,
    /// Broadcast: "all delivered" latency of the messages published in this stage, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_delivered: Option<HistSummary>,
    /// Script: every latency row in this stage (steps, `LOOP rtt`, `LOOP delivery`), µs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, HistSummary>,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecondReport {
    pub t: u32,
    pub open: u32,
    pub pending: u32,
    pub established: u64,
    pub failed: u64,
    pub drops: u64,
    pub msgs_sent: u64,
    pub msgs_received: u64,
    pub bytes_received: u64,
    /// p99 of the scenario's latency in this second, µs (0 without samples).
    pub latency_p99_us: u64,
    /// The second's main-latency histogram (V2-deflate, base64), so merged reports get an
    /// exact per-second p99.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latency_hist: String,
}

pub use crate::limits::sampler::ServerSample;

/// What the kernel knew of a host's clock at the end of its run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ClockSync {
    /// Kept synchronised by NTP/PTP (no STA_UNSYNC).
    pub synced: bool,
    /// The kernel's estimated error of the wall clock, µs.
    pub est_error_us: i64,
    /// Its maximum error, µs.
    pub max_error_us: i64,
}

/// A histogram row that may be absent.
pub type HistSummaryRef<'a> = Option<&'a HistSummary>;

/// One load generator of a merged report (or of a single run: itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostRow {
    /// `--host-label` (default: the hostname; a Kubernetes pod's name).
    pub label: String,
    pub url: String,
    pub started_unix_ms: u64,
    /// How late it started against `--start-at`, ms (None: no --start-at).
    #[serde(default)]
    pub start_late_ms: Option<f64>,
    pub conn_offset: u64,
    pub target: u32,
    pub established: u64,
    pub failed: u64,
    pub drops: u64,
    pub peak_open: u32,
    pub msgs_sent: u64,
    pub msgs_received: u64,
    pub error_rate: f64,
    pub cpu_seconds: f64,
    pub rss_peak_bytes: u64,
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockSync>,
}

/// Process figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Process {
    pub workers: usize,
    pub cpu_seconds: f64,
    pub rss_start_bytes: u64,
    pub rss_peak_bytes: u64,
    /// (peak RSS - start RSS) / peak open connections: user-space bytes per connection.
    pub rss_per_open_conn_bytes: Option<f64>,
    /// Heap bytes held by connection slots (partial frames, unsent bytes) at the end.
    pub slot_heap_bytes_at_end: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub url: String,
    pub server_addr: String,
    pub scenario: ScenarioKind,
    /// The main latency's name (`rtt`, `pong`, `fanout`, `push`, `say rtt`): the one the
    /// stage table, the per-second p99 and a plain --max-p99 use.
    #[serde(default)]
    pub main_latency: String,
    pub config: ConfigEcho,
    pub started_unix_ms: u64,
    /// Length of the load (connect and send phase), seconds.
    pub elapsed_s: f64,
    /// Ended early by SIGINT.
    pub interrupted: bool,
    pub connections: Connections,
    /// Failed connects by class (errno name, http_STATUS, handshake_timeout, ...).
    pub failures: BTreeMap<String, u64>,
    /// Dropped connections by class (close_CODE, ECONNRESET, eof, protocol_error_...).
    pub drop_classes: BTreeMap<String, u64>,
    /// Close codes the server sent on its own initiative.
    pub close_codes: BTreeMap<String, u64>,
    pub messages: Messages,
    pub heartbeat: Heartbeat,
    pub latency: Latency,
    /// errors / operations: (failed connects + drops + lost messages + unanswered pings) /
    /// (connect attempts + messages sent + pings sent).
    pub error_rate: f64,
    pub totals: Counters,
    pub stages: Vec<StageReport>,
    pub per_second: Vec<SecondReport>,
    pub process: Process,
    pub thresholds: Vec<Outcome>,
    /// The process exit code: 0 pass, 1 a threshold failed, 2 could not start.
    pub exit_code: i32,
    /// Why the run could not start, when exit_code is 2.
    pub error: Option<String>,
    /// `--scenario broadcast` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastReport>,
    /// `--scenario push` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushReport>,
    /// wss:// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsReport>,
    /// --script only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptReport>,
    /// `--host-label`: which load generator this is (default: the hostname).
    #[serde(default)]
    pub host_label: String,
    /// `--start-at`, Unix ms (None: started when run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at_unix_ms: Option<u64>,
    /// How late this generator started against --start-at, ms (it was launched after the
    /// time, or its clock is behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_late_ms: Option<f64>,
    /// This host's clock as the kernel reports it (adjtimex), for cross-host latencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockSync>,
    /// `ws-loadgen merge`: the load generators this report was merged from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostRow>,
    /// The server's CPU and RSS once a second, from its /metrics (`--metrics-url`, or
    /// the admin listener with `--html`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_samples: Vec<ServerSample>,
    /// `ws-loadgen merge`: how far cross-host latencies can be trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_note: Option<String>,
}

/// How a wss:// run spoke TLS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TlsReport {
    /// The name sent as SNI and checked against the certificate.
    pub server_name: String,
    /// Certificates were not checked (`--insecure`).
    pub insecure: bool,
    /// Where the trusted roots came from.
    pub roots: String,
    pub client_cert: bool,
    /// `--tls-resume`.
    pub resume: bool,
    pub handshakes_full: u64,
    pub handshakes_resumed: u64,
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e3)
}

fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

fn classes(m: &BTreeMap<String, u64>) -> String {
    crate::fmt::classes(m, " ×")
}

impl Report {
    /// Human-readable text for stdout.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let c = &self.connections;
        let m = &self.messages;
        let _ = writeln!(
            s,
            "ws-loadgen {} → {} ({}), scenario {:?}, {} worker(s) on cores {:?}, {:.1} s{}",
            self.version,
            self.url,
            self.server_addr,
            self.scenario,
            self.process.workers,
            self.config.cores,
            self.elapsed_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "Connections  target {}  attempted {}  established {}  failed {}  peak open {}  open at end {}{}",
            c.target,
            c.attempted,
            c.established,
            c.failed,
            c.peak_open,
            c.open_at_end,
            c.alive_at_end_ratio
                .map(|r| format!(" ({:.1}% of established)", r * 100.0))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "             peak {} established/s ({:.0}/s over the run)  drops {}  reconnects {}  retries {}  gave up {}",
            c.peak_established_per_s, c.established_per_s, c.drops, c.reconnects, c.retries, c.gave_up
        );
        let _ = writeln!(s, "Failures     {}", classes(&self.failures));
        if !self.drop_classes.is_empty() {
            let _ = writeln!(s, "Drops        {}", classes(&self.drop_classes));
        }
        if !self.close_codes.is_empty() {
            let _ = writeln!(s, "Close codes  {}", classes(&self.close_codes));
        }
        if let Some(b) = &self.broadcast {
            let (lo, hi) = (
                b.published_per_publisher.iter().min().copied().unwrap_or(0),
                b.published_per_publisher.iter().max().copied().unwrap_or(0),
            );
            let _ = writeln!(
                s,
                "Broadcast    room {:?}{}  publishers {}  subscribers peak {}  published {} ({}–{} per publisher)  skipped (backpressure) {}",
                b.room,
                if b.echo { "" } else { " (echo=false)" },
                b.publishers,
                b.subscribers_peak,
                b.published,
                lo,
                hi,
                b.skipped_backpressure
            );
            let _ = writeln!(
                s,
                "Deliveries   expected {}  received {}  missing {}  extra {}  late {}  {}/s (peak {}/s)",
                b.deliveries_expected,
                b.deliveries_received,
                b.deliveries_missing,
                b.deliveries_extra,
                b.deliveries_late,
                si(b.deliveries_per_s),
                b.peak_deliveries_per_s
            );
            if b.deliveries_extra > 0 || b.deliveries_joined_in_flight > 0 {
                let _ = writeln!(s, "             {}", extra_note(b));
            }
            let _ = writeln!(
                s,
                "Sequences    gaps {}  lost {}  out of order {}  duplicates {}  unexpected {}",
                b.sequence_gaps, b.sequence_lost, b.out_of_order, b.duplicates, b.unexpected
            );
            let _ = writeln!(
                s,
                "All delivered {} of {} messages{}  incomplete {}  no subscriber {}{}",
                b.messages_complete,
                b.messages_complete + b.messages_incomplete,
                b.all_delivered_ratio
                    .map(|r| format!(" ({:.2}%)", r * 100.0))
                    .unwrap_or_default(),
                b.messages_incomplete,
                b.messages_no_subscriber,
                if b.messages_unmatched > 0 {
                    format!("  unmatched {}", b.messages_unmatched)
                } else {
                    String::new()
                }
            );
        } else if let Some(p) = &self.push {
            let _ = writeln!(
                s,
                "Push         users peak {}  pushes {} ({}/s)  statuses {}",
                p.users_peak,
                p.pushes,
                si(p.pushes_per_s),
                classes(&p.statuses)
            );
            let _ = writeln!(
                s,
                "Deliveries   expected (200 answers) {}  received {}  lost {}  failed pushes {}  out of order {}  unexpected {}  {}/s",
                p.deliveries_expected,
                p.deliveries_received,
                p.lost,
                p.failed,
                p.out_of_order,
                p.unexpected,
                si(p.deliveries_per_s)
            );
        } else if let Some(sc) = &self.script {
            script_text(&mut s, sc);
        } else if self.scenario == ScenarioKind::Echo || m.received + m.unexpected > 0 {
            let _ = writeln!(
                s,
                "Messages     sent {}  received {}  lost {}  out of order {}  unexpected {}  skipped (backpressure) {}",
                m.sent, m.received, m.lost, m.out_of_order, m.unexpected, m.skipped_backpressure
            );
            let _ = writeln!(
                s,
                "Throughput   {} msgs/s  {}B/s received (payload)",
                si(m.received_per_s),
                si(m.bytes_received_per_s)
            );
        }
        if let Some(t) = &self.tls {
            let _ = writeln!(
                s,
                "TLS          handshakes full {}  resumed {}  server name {}  roots {}{}{}",
                t.handshakes_full,
                t.handshakes_resumed,
                t.server_name,
                t.roots,
                if t.client_cert {
                    "  client certificate"
                } else {
                    ""
                },
                if t.insecure {
                    "  INSECURE: server certificates not checked"
                } else {
                    ""
                }
            );
        }
        let h = &self.heartbeat;
        if self.scenario == ScenarioKind::Hold || h.pings_sent > 0 {
            let _ = writeln!(
                s,
                "Heartbeat    pings {}  pongs {}  survival {}",
                h.pings_sent,
                h.pongs_received,
                h.survival_rate
                    .map(|r| format!("{:.2}%", r * 100.0))
                    .unwrap_or_else(|| "n/a (no ping was due)".into())
            );
        }
        let _ = writeln!(
            s,
            "Latency (ms)      count       p50       p90       p95       p99     p99.9       max"
        );
        let l = &self.latency;
        let delivery_name = match self.scenario {
            ScenarioKind::Broadcast | ScenarioKind::Push => self.scenario.latency_name(),
            _ => "delivery",
        };
        let steps: Vec<(String, Option<&HistSummary>)> = self
            .script
            .iter()
            .flat_map(|sc| sc.steps.iter())
            .map(|st| (st.name.clone(), st.latency.as_ref()))
            .collect();
        let lp = self.script.as_ref().and_then(|sc| sc.loop_.as_ref());
        let rtt_name = lp.map_or("rtt".to_string(), |l| format!("{} rtt", l.name));
        let del_name = lp.map_or(delivery_name.to_string(), |l| {
            format!("{} delivery", l.name)
        });
        let mut rows: Vec<(String, Option<&HistSummary>)> = vec![
            ("connect".into(), Some(&l.connect)),
            ("tls".into(), l.tls.as_ref()),
            ("handshake".into(), Some(&l.handshake)),
        ];
        rows.extend(steps);
        rows.extend([
            (rtt_name, Some(&l.rtt)),
            ("pong".into(), Some(&l.pong)),
            (del_name, l.delivery.as_ref()),
            ("http".into(), l.http.as_ref()),
        ]);
        if let Some(b) = &self.broadcast {
            rows.push(("all-delivered".into(), Some(&b.all_delivered_latency)));
        }
        let w = rows
            .iter()
            .map(|r| r.0.len() + 1)
            .max()
            .unwrap_or(12)
            .max(12);
        for (name, hs) in rows {
            let Some(hs) = hs.filter(|h| h.count > 0) else {
                continue;
            };
            let _ = writeln!(
                s,
                "  {:<w$}{:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                hs.count,
                ms(hs.p50),
                ms(hs.p90),
                ms(hs.p95),
                ms(hs.p99),
                ms(hs.p999),
                ms(hs.max)
            );
        }
        if self.config.warmup_ms > 0 {
            let _ = writeln!(
                s,
                "  (messages intended in the first {} ms, --warmup: {} replies/deliveries \
                 counted but not timed)",
                self.config.warmup_ms, l.warmup_excluded
            );
        }
        let lat = if self.main_latency.is_empty() {
            self.scenario.latency_name()
        } else {
            &self.main_latency
        };
        let all = self.broadcast.is_some();
        let _ = writeln!(
            s,
            "Stages ({lat} ms)\n  stage  target  peak open   avg ms   p95 ms   p99 ms      msgs/s  error rate  failed connects{}",
            if all { "  all-delivered p50/p99 ms" } else { "" }
        );
        for st in &self.stages {
            let _ = writeln!(
                s,
                "  {:>5} {:>7} {:>10} {:>8} {:>8} {:>8} {:>11} {:>10.4}% {:>16}{}",
                st.index + 1,
                st.target,
                st.peak_open,
                format!("{:.3}", st.latency.mean / 1e3),
                ms(st.latency.p95),
                ms(st.latency.p99),
                si(st.msgs_per_s),
                st.error_rate * 100.0,
                st.failed_connects,
                match (&st.all_delivered, all) {
                    (Some(h), true) if h.count > 0 => format!("  {:>11}/{}", ms(h.p50), ms(h.p99)),
                    (_, true) => "  -".to_string(),
                    _ => String::new(),
                }
            );
        }
        if let Some(first) = self.stages.first().filter(|st| !st.steps.is_empty()) {
            // In the script's order: steps, then the loop's rows.
            let mut names: Vec<&String> = Vec::new();
            if let Some(sc) = &self.script {
                let mut order: Vec<String> = sc.steps.iter().map(|st| st.name.clone()).collect();
                if let Some(l) = &sc.loop_ {
                    order.push(format!("{} rtt", l.name));
                    order.push(format!("{} delivery", l.name));
                }
                for n in &order {
                    if let Some((k, _)) = first.steps.get_key_value(n) {
                        names.push(k);
                    }
                }
            }
            for k in first.steps.keys() {
                if !names.contains(&k) {
                    names.push(k);
                }
            }
            let _ = write!(s, "Stages by row (p99 ms)\n  stage");
            for n in &names {
                let _ = write!(s, " {:>14}", n);
            }
            let _ = writeln!(s);
            for st in &self.stages {
                let _ = write!(s, "  {:>5}", st.index + 1);
                for n in &names {
                    let v = st
                        .steps
                        .get(*n)
                        .filter(|h| h.count > 0)
                        .map_or("-".to_string(), |h| ms(h.p99));
                    let _ = write!(s, " {:>14}", v);
                }
                let _ = writeln!(s);
            }
        }
        let p = &self.process;
        let _ = writeln!(
            s,
            "Process      cpu {:.2} s  rss {:.1} MiB → peak {:.1} MiB{}  slot heap at end {} B  RLIMIT_NOFILE {}/{}",
            p.cpu_seconds,
            p.rss_start_bytes as f64 / 1048576.0,
            p.rss_peak_bytes as f64 / 1048576.0,
            p.rss_per_open_conn_bytes
                .map(|b| format!(" (~{b:.0} B per open connection)"))
                .unwrap_or_default(),
            p.slot_heap_bytes_at_end,
            self.config.nofile_soft,
            self.config.nofile_hard
        );
        if let Some(late) = self.start_late_ms.filter(|l| *l >= 1.0) {
            let _ = writeln!(s, "Start        {late:.0} ms after --start-at");
        }
        if !self.hosts.is_empty() {
            let _ = writeln!(
                s,
                "Hosts        {} load generators\n  host                   target  established   failed    drops      received    cpu s  peak RSS MiB  late ms  exit",
                self.hosts.len()
            );
            for h in &self.hosts {
                let _ = writeln!(
                    s,
                    "  {:<20} {:>8} {:>12} {:>8} {:>8} {:>13} {:>8.2} {:>13.1} {:>8} {:>5}",
                    h.label,
                    h.target,
                    h.established,
                    h.failed,
                    h.drops,
                    h.msgs_received,
                    h.cpu_seconds,
                    h.rss_peak_bytes as f64 / 1048576.0,
                    h.start_late_ms.map_or("-".into(), |l| format!("{l:.0}")),
                    h.exit_code
                );
            }
        }
        if let Some(n) = &self.clock_note {
            let _ = writeln!(s, "Clocks       {n}");
        }
        let _ = writeln!(s, "Error rate   {:.4}%", self.error_rate * 100.0);
        for t in &self.thresholds {
            let _ = writeln!(
                s,
                "Threshold    {:<16} {}  limit {}  actual {}",
                t.name,
                if t.pass { "PASS" } else { "FAIL" },
                t.limit,
                t.actual
            );
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "Error        {e}");
        }
        s
    }
}

/// The Steps and Loop lines of a scripted run.
fn script_text(s: &mut String, sc: &ScriptReport) {
    let _ = writeln!(
        s,
        "Script       {}{}",
        sc.file,
        if sc.data_rows > 0 {
            format!("  data rows {}", sc.data_rows)
        } else {
            String::new()
        }
    );
    for st in &sc.steps {
        let _ = writeln!(
            s,
            "Step         {:<14} ok {}  failed {}",
            st.name, st.ok, st.failed
        );
        if let Some(m) = &st.unmatched_sample {
            let _ = writeln!(s, "             first message that did not match: {m}");
        }
    }
    if sc.ignored > 0 {
        let _ = writeln!(
            s,
            "             {} message(s) during the steps matched no expect (ignored)",
            sc.ignored
        );
    }
    if let Some(l) = &sc.loop_ {
        let rate = match (l.rate_total, l.rate_per_connection) {
            (Some(t), _) => format!("{t}/s in total"),
            (None, Some(r)) => format!("{r}/s per connection"),
            (None, None) => "push-only".into(),
        };
        let _ = writeln!(
            s,
            "Loop         {:<14} {rate}  sent {}  replies {}{}  deliveries {}  matched {}  lost {}",
            l.name,
            l.sent,
            l.replies,
            if l.echo { "" } else { " (echo = false)" },
            l.deliveries,
            l.matched,
            l.lost
        );
        let _ = writeln!(
            s,
            "             sequence gaps {}  behind (duplicate or late) {}  untracked {}  unexpected {}  skipped (backpressure) {}",
            l.gaps, l.behind, l.untracked, l.unexpected, l.skipped_backpressure
        );
        if l.echo && l.sent > 0 && l.replies == 0 {
            let _ = writeln!(
                s,
                "             no message came back to its sender: if the server does not send a \
                 connection its own messages, set echo = false in [loop]"
            );
        }
    }
}

/// What `extra` deliveries are: a message's expected count is the connections ws-loadgen
/// had open when it was published, but a server puts a subscriber in the room when it
/// answers the upgrade, before ws-loadgen has read that answer; a message published in
/// between reaches one more subscriber than counted.
fn extra_note(b: &BroadcastReport) -> String {
    let joined = b.deliveries_joined_in_flight;
    let unexplained = b.deliveries_extra.saturating_sub(joined);
    let mut s = if joined >= b.deliveries_extra {
        format!(
            "extra: {joined} deliver{} reached subscribers before ws-loadgen had read their \
             upgrade answer (the server had joined them to the room already), which covers \
             the {} extra; counted as expected",
            if joined == 1 { "y" } else { "ies" },
            b.deliveries_extra
        )
    } else {
        format!(
            "extra: {joined} of the {} extra deliveries reached subscribers before ws-loadgen \
             had read their upgrade answer (the server had joined them to the room already)",
            b.deliveries_extra
        )
    };
    if unexplained > 0 {
        s.push_str(&format!(
            "; {unexplained} more than any subscriber open at publication can explain: \
             the server sent some messages to more connections than its room held"
        ));
    }
    s
}

/// The p99 of every latency row of a report, by the names `--max-p99 NAME=` takes.
fn rows(r: &Report) -> Vec<(String, Option<u64>)> {
    let p = |h: HistSummaryRef| h.filter(|h| h.count > 0).map(|h| h.p99);
    let l = &r.latency;
    let mut v = vec![
        ("connect".to_string(), p(Some(&l.connect))),
        ("tls".into(), p(l.tls.as_ref())),
        ("handshake".into(), p(Some(&l.handshake))),
        ("http".into(), p(l.http.as_ref())),
        ("rtt".into(), p(Some(&l.rtt))),
        ("pong".into(), p(Some(&l.pong))),
        ("delivery".into(), p(l.delivery.as_ref())),
    ];
    if let Some(s) = &r.script {
        for st in &s.steps {
            v.push((st.name.clone(), p(st.latency.as_ref())));
        }
        if let Some(lp) = &s.loop_ {
            let main = if lp.echo { &lp.rtt } else { &lp.delivery };
            v.push((lp.name.clone(), p(Some(main))));
            v.push((format!("{}.rtt", lp.name), p(Some(&lp.rtt))));
            v.push((format!("{}.delivery", lp.name), p(Some(&lp.delivery))));
        }
    }
    v
}

/// The p99 of a report's main latency (`main_latency` names it: `fanout` and `push` are
/// the delivery row, `LOOP rtt` is `LOOP.rtt`).
fn main_p99(name: &str, rows: &[(String, Option<u64>)]) -> Option<u64> {
    let key = match name {
        "fanout" | "push" => "delivery".to_string(),
        n => match n.rsplit_once(' ') {
            Some((lp, kind)) => format!("{lp}.{kind}"),
            None => n.to_string(),
        },
    };
    rows.iter().find(|(n, _)| *n == key).and_then(|r| r.1)
}

impl Observed {
    /// The figures of a run's (or a merged) report: what `run` and `merge` both check.
    pub fn of(r: &Report) -> Self {
        let latency_name = if r.main_latency.is_empty() {
            r.scenario.latency_name().to_string()
        } else {
            r.main_latency.clone()
        };
        let rows = rows(r);
        Self {
            error_rate: r.error_rate,
            p99_us: main_p99(&latency_name, &rows),
            latency_name,
            rows,
            peak_open: r.connections.peak_open,
        }
    }
}
