//! What a worker counts, in a form that merges: counters, failure classes and
//! HdrHistograms. Workers send deltas to the main thread, which merges them per second, per
//! stage and in total; the JSON report carries the histograms so later runs can be merged.
//!
//! Latencies are recorded in microseconds.

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant figures kept by every histogram.
pub const SIGFIG: u8 = 3;

/// A new auto-resizing histogram (it only grows to the largest value recorded).
pub fn new_hist() -> Histogram<u64> {
    // 3 significant figures is always a valid precision.
    Histogram::new(SIGFIG).unwrap_or_else(|_| Histogram::new(2).expect("sigfig 2 is valid"))
}

/// Records `ns` as microseconds (rounded, at least 0).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    // Auto-resize histograms accept any u64; saturate rather than fail.
    let _ = h.record((ns + 500) / 1000);
}

/// The latency histograms, in microseconds.
#[derive(Debug, Clone)]
pub struct Hists {
    /// TCP connect: `connect()` to writable.
    pub connect: Histogram<u64>,
    /// Upgrade request written to `101` verified.
    pub handshake: Histogram<u64>,
    /// Echo round trip from the message's *intended* send time.
    pub rtt: Histogram<u64>,
    /// Ping to pong.
    pub pong: Histogram<u64>,
    /// Broadcast fan-out latency, or push delivery latency: receipt of a message on a
    /// subscriber (or user) connection minus its stamp's intended send time.
    pub delivery: Histogram<u64>,
    /// Push: HTTP POST round trip, `connect()` to the answer read.
    pub http: Histogram<u64>,
    /// wss://: TCP connected to the TLS handshake done (before the upgrade).
    pub tls: Histogram<u64>,
}

impl Default for Hists {
    fn default() -> Self {
        Self {
            connect: new_hist(),
            handshake: new_hist(),
            rtt: new_hist(),
            pong: new_hist(),
            delivery: new_hist(),
            http: new_hist(),
            tls: new_hist(),
        }
    }
}

impl Hists {
    pub fn merge(&mut self, o: &Hists) {
        let _ = self.connect.add(&o.connect);
        let _ = self.handshake.add(&o.handshake);
        let _ = self.rtt.add(&o.rtt);
        let _ = self.pong.add(&o.pong);
        let _ = self.delivery.add(&o.delivery);
        let _ = self.http.add(&o.http);
        let _ = self.tls.add(&o.tls);
    }

    /// `(name, histogram)` pairs in a fixed order.
    pub fn named(&self) -> [(&'static str, &Histogram<u64>); 7] {
        [
            ("connect", &self.connect),
            ("handshake", &self.handshake),
            ("rtt", &self.rtt),
            ("pong", &self.pong),
            ("delivery", &self.delivery),
            ("http", &self.http),
            ("tls", &self.tls),
        ]
    }
}

/// Counters of one worker over one interval (or merged over many).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub connects_attempted: u64,
    pub connects_established: u64,
    pub connects_failed: u64,
    /// Connect attempts that were retries after a failure or a drop.
    pub retries: u64,
    /// Established connections that were re-established after a drop.
    pub reconnects: u64,
    /// Slots that stopped retrying after `--reconnect-max-tries`.
    pub gave_up: u64,
    /// Established connections lost while the run wanted them (server close, reset, EOF).
    pub drops: u64,
    pub msgs_sent: u64,
    pub msgs_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Sent messages whose reply never came (connection lost, or run ended after the drain).
    pub msgs_lost: u64,
    /// Replies that arrived after a later one.
    pub msgs_out_of_order: u64,
    /// Replies and deliveries of messages intended during --warmup: counted, not timed.
    #[serde(default)]
    pub latency_warmup_excluded: u64,
    /// Data messages that carry no stamp of this connection (not an echo of ours).
    pub msgs_unexpected: u64,
    /// Scheduled sends skipped because the connection's unsent backlog was full.
    pub sends_skipped_backpressure: u64,
    pub pings_sent: u64,
    pub pongs_received: u64,
    /// Our closes the server answered with a Close frame at the end of the run.
    pub clean_closes: u64,
    /// Broadcast: deliveries expected (per message, the connections open when it was
    /// published, less its publisher when the room does not echo).
    #[serde(default)]
    pub fanout_expected: u64,
    /// Broadcast: deliveries short of the expected count, per message, when the message was
    /// settled (a few seconds after its send, or at the end). Set by the main thread.
    #[serde(default)]
    pub fanout_missing: u64,
    /// Broadcast: sequences a subscriber skipped from a publisher (gaps; a skipped one
    /// seen later also counts as out of order).
    #[serde(default)]
    pub fanout_gaps: u64,
    /// Broadcast: deliveries below a publisher's next expected sequence with no gap open.
    #[serde(default)]
    pub fanout_duplicates: u64,
    /// Broadcast: deliveries to a subscriber whose upgrade completed here after the
    /// message was published (the server had it in the room first; see `extra`).
    #[serde(default)]
    pub fanout_joined: u64,
    /// Push: deliveries the server reported for POSTs it answered 200.
    #[serde(default)]
    pub push_deliveries_expected: u64,
    /// Push: POSTs not answered 200 (404 no such user, 413, other statuses, failures).
    #[serde(default)]
    pub push_failed: u64,
    /// wss://: full TLS handshakes, and resumed ones (`--tls-resume`).
    #[serde(default)]
    pub tls_full: u64,
    #[serde(default)]
    pub tls_resumed: u64,
    /// Script: messages from other connections' stamps (deliveries, timed from the stamp).
    #[serde(default)]
    pub script_deliveries: u64,
    /// Script: loop messages without a stamp that matched (push-only counts, request →
    /// reply by order).
    #[serde(default)]
    pub script_matched: u64,
    /// Script: sequences a receiver skipped from a sender (per receiving connection).
    #[serde(default)]
    pub script_gaps: u64,
    /// Script: deliveries at or below a sender's sequence already seen (duplicates, or
    /// late after a gap).
    #[serde(default)]
    pub script_behind: u64,
    /// Script: deliveries not sequence-checked (the per-worker tracking table was full).
    #[serde(default)]
    pub script_untracked: u64,
    /// Script: messages that arrived during the open steps and matched no expect.
    #[serde(default)]
    pub script_ignored: u64,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.connects_attempted += o.connects_attempted;
        self.connects_established += o.connects_established;
        self.connects_failed += o.connects_failed;
        self.retries += o.retries;
        self.reconnects += o.reconnects;
        self.gave_up += o.gave_up;
        self.drops += o.drops;
        self.msgs_sent += o.msgs_sent;
        self.msgs_received += o.msgs_received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.msgs_lost += o.msgs_lost;
        self.msgs_out_of_order += o.msgs_out_of_order;
        self.latency_warmup_excluded += o.latency_warmup_excluded;
        self.msgs_unexpected += o.msgs_unexpected;
        self.sends_skipped_backpressure += o.sends_skipped_backpressure;
        self.pings_sent += o.pings_sent;
        self.pongs_received += o.pongs_received;
        self.clean_closes += o.clean_closes;
        self.fanout_expected += o.fanout_expected;
        self.fanout_missing += o.fanout_missing;
        self.fanout_gaps += o.fanout_gaps;
        self.fanout_duplicates += o.fanout_duplicates;
        self.fanout_joined += o.fanout_joined;
        self.push_deliveries_expected += o.push_deliveries_expected;
        self.push_failed += o.push_failed;
        self.tls_full += o.tls_full;
        self.tls_resumed += o.tls_resumed;
        self.script_deliveries += o.script_deliveries;
        self.script_matched += o.script_matched;
        self.script_gaps += o.script_gaps;
        self.script_behind += o.script_behind;
        self.script_untracked += o.script_untracked;
        self.script_ignored += o.script_ignored;
    }

    /// Failed operations: failed connects, drops, lost messages, missing broadcast
    /// deliveries, failed pushes, scripted deliveries skipped and unanswered pings.
    pub fn errors(&self) -> u64 {
        self.connects_failed
            + self.drops
            + self.msgs_lost
            + self.fanout_missing
            + self.push_failed
            + self.script_gaps
            + self.pings_sent.saturating_sub(self.pongs_received)
    }

    /// Operations attempted: connects, messages sent (published, pushed), broadcast
    /// deliveries expected, scripted deliveries (received and skipped) and pings.
    pub fn operations(&self) -> u64 {
        self.connects_attempted
            + self.msgs_sent
            + self.fanout_expected
            + self.script_deliveries
            + self.script_gaps
            + self.pings_sent
    }

    /// errors / operations (0 when nothing was attempted).
    pub fn error_rate(&self) -> f64 {
        let ops = self.operations();
        if ops == 0 {
            0.0
        } else {
            self.errors() as f64 / ops as f64
        }
    }
}

/// Everything a worker reports for one interval.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub c: Counters,
    /// Failed connects by class: `ECONNREFUSED`, `http_403`, `handshake_timeout`, ...
    pub failures: BTreeMap<String, u64>,
    /// Drops by class: `close_1001`, `ECONNRESET`, `eof`, `protocol_error`, ...
    pub drop_classes: BTreeMap<String, u64>,
    /// Close codes the server sent on its own initiative (`none` for an empty Close).
    pub close_codes: BTreeMap<String, u64>,
    /// Push: POST outcomes by HTTP status (`200`, `404`, ...) or failure class.
    pub push_status: BTreeMap<String, u64>,
    pub h: Hists,
    /// Script: per `[[open]]` step (by index), completions, failures and latency.
    pub steps: Vec<StepStats>,
}

/// One scripted step's figures.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Connections that completed the step.
    pub ok: u64,
    /// Connections lost during it (expect timeout, a close, a reset).
    pub failed: u64,
    /// Its send to its expect matched, µs (steps with an expect).
    pub h: Histogram<u64>,
    /// The first message that arrived during the step and did not match (cut to 200
    /// bytes): what the server said instead, for the report.
    pub unmatched: Option<String>,
}

impl Default for StepStats {
    fn default() -> Self {
        Self {
            ok: 0,
            failed: 0,
            h: new_hist(),
            unmatched: None,
        }
    }
}

impl StepStats {
    pub fn merge(&mut self, o: &StepStats) {
        self.ok += o.ok;
        self.failed += o.failed;
        let _ = self.h.add(&o.h);
        if self.unmatched.is_none() {
            self.unmatched.clone_from(&o.unmatched);
        }
    }
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.c.merge(&o.c);
        merge_map(&mut self.failures, &o.failures);
        merge_map(&mut self.drop_classes, &o.drop_classes);
        merge_map(&mut self.close_codes, &o.close_codes);
        merge_map(&mut self.push_status, &o.push_status);
        self.h.merge(&o.h);
        if self.steps.len() < o.steps.len() {
            self.steps.resize_with(o.steps.len(), StepStats::default);
        }
        for (a, b) in self.steps.iter_mut().zip(&o.steps) {
            a.merge(b);
        }
    }

    /// Step `i`'s figures (created on first use in each interval).
    pub fn step(&mut self, i: usize) -> &mut StepStats {
        if self.steps.len() <= i {
            self.steps.resize_with(i + 1, StepStats::default);
        }
        &mut self.steps[i]
    }

    pub fn fail(&mut self, class: &str) {
        self.c.connects_failed += 1;
        bump(&mut self.failures, class);
    }

    pub fn drop_conn(&mut self, class: &str) {
        self.c.drops += 1;
        bump(&mut self.drop_classes, class);
    }
}

pub fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    match m.get_mut(k) {
        Some(v) => *v += 1,
        None => {
            m.insert(k.to_string(), 1);
        }
    }
}

pub fn merge_map(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, v) in b {
        *a.entry(k.clone()).or_insert(0) += v;
    }
}

/// A histogram as the JSON report carries it: summary figures (µs) plus the whole
/// histogram, V2-deflate encoded then base64 (the encoding of HdrHistogram interval logs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistSummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub encoded: String,
}

impl HistSummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        let empty = h.is_empty();
        let q = |p: f64| if empty { 0 } else { h.value_at_quantile(p) };
        Self {
            count: h.len(),
            min: if empty { 0 } else { h.min() },
            mean: if empty { 0.0 } else { h.mean() },
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: if empty { 0 } else { h.max() },
            encoded: encode_hist(h),
        }
    }

    /// Decodes the embedded histogram.
    pub fn decode(&self) -> Result<Histogram<u64>, String> {
        decode_hist(&self.encoded)
    }
}

/// V2-deflate + base64.
pub fn encode_hist(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(buf),
        Err(_) => String::new(),
    }
}

/// Inverse of [`encode_hist`]. The result resizes itself like [`new_hist`]'s: a decoded
/// histogram only spans the values it was sent with, and one that later takes larger
/// values (merging another host's, adding a later second's) must grow, not refuse.
pub fn decode_hist(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    let mut h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("histogram does not decode: {e:?}"))?;
    h.auto(true);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_rates() {
        let mut a = Stats::default();
        a.fail("ECONNREFUSED");
        a.c.connects_attempted = 4;
        a.c.connects_established = 3;
        record_ns(&mut a.h.rtt, 1_500_000);
        let mut b = Stats::default();
        b.fail("ECONNREFUSED");
        b.fail("http_403");
        b.c.connects_attempted = 2;
        record_ns(&mut b.h.rtt, 2_500_000);
        a.merge(&b);
        assert_eq!(a.failures["ECONNREFUSED"], 2);
        assert_eq!(a.failures["http_403"], 1);
        assert_eq!(a.c.connects_failed, 3);
        assert_eq!(a.h.rtt.len(), 2);
        assert!((a.c.error_rate() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn histogram_roundtrip() {
        let mut h = new_hist();
        for v in 1..10_000u64 {
            record_ns(&mut h, v * 1000);
        }
        let s = HistSummary::of(&h);
        assert_eq!(s.count, 9_999);
        let back = s.decode().unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
        assert!(decode_hist("!!!").is_err());
        assert!(decode_hist("AAAA").is_err());
        // A decoded histogram of small values takes a far larger one added to it.
        let mut small = new_hist();
        record_ns(&mut small, 1_000);
        let mut big = new_hist();
        record_ns(&mut big, 3_600_000_000_000);
        let mut d = decode_hist(&encode_hist(&small)).unwrap();
        d.add(&big).unwrap();
        assert_eq!(d.len(), 2);
        let e = HistSummary::of(&new_hist());
        assert_eq!((e.count, e.p99, e.max), (0, 0, 0));
        assert_eq!(e.decode().unwrap().len(), 0);
    }
}
