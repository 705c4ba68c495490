//! The main thread's merge of the workers' deltas: per second (a second is complete once
//! every worker has reported a later one), per stage and in total, plus the peaks the
//! report quotes and the broadcast "all delivered" merge.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use ws_common::payload::now_ns;

use crate::config::Main;
use crate::engine::delta::Report as Delta;
use crate::engine::stats::Stats;
use crate::report::hdr_log::HdrLog;
use crate::report::run::SecondReport;
use crate::scenario::fanout::AllDelivered;

/// Histogram `m` of `s` (an empty one for a step nobody reached).
pub fn latency_of(m: Main, s: &Stats) -> &Histogram<u64> {
    match m {
        Main::Rtt => &s.h.rtt,
        Main::Pong => &s.h.pong,
        Main::Delivery => &s.h.delivery,
        Main::Step(i) => match s.steps.get(i) {
            Some(st) => &st.h,
            None => {
                static EMPTY: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
                EMPTY.get_or_init(crate::engine::stats::new_hist)
            }
        },
    }
}

/// One second being assembled from the workers' deltas.
#[derive(Default)]
pub struct SecondAgg {
    pub stats: Stats,
    pub open: BTreeMap<usize, u32>,
    pub pending: BTreeMap<usize, u32>,
}

/// Everything merged so far.
pub struct Agg {
    pub workers: usize,
    pub total: Stats,
    pub stages: Vec<Stats>,
    pub stage_peak: Vec<u32>,
    pub seconds: BTreeMap<u32, SecondAgg>,
    /// Last second each worker has reported (a later one means that one is complete).
    pub last_second: Vec<Option<u32>>,
    pub done: Vec<bool>,
    pub done_seconds: Vec<SecondReport>,
    pub latest_open: Vec<u32>,
    pub latest_pending: Vec<u32>,
    pub peak_open: u32,
    pub open_at_end: u32,
    pub slot_heap: u64,
    pub hdr: Option<HdrLog>,
    /// Which histogram is the run's main latency.
    pub main: Main,
    /// Broadcast: the "all delivered" merge.
    pub fan: Option<AllDelivered>,
}

impl Agg {
    pub fn new(workers: usize, stages: usize, hdr: Option<HdrLog>, main: Main) -> Self {
        Self {
            workers,
            total: Stats::default(),
            stages: (0..stages).map(|_| Stats::default()).collect(),
            stage_peak: vec![0; stages],
            seconds: BTreeMap::new(),
            last_second: vec![None; workers],
            done: vec![false; workers],
            done_seconds: Vec::new(),
            latest_open: vec![0; workers],
            latest_pending: vec![0; workers],
            peak_open: 0,
            open_at_end: 0,
            slot_heap: 0,
            hdr,
            main,
            fan: None,
        }
    }

    pub fn latency<'a>(&self, s: &'a Stats) -> &'a Histogram<u64> {
        latency_of(self.main, s)
    }

    pub fn add(&mut self, r: Delta, plan_stage_count: usize) {
        let w = r.worker.min(self.workers - 1);
        self.total.merge(&r.stats);
        let stage = r.stage.min(plan_stage_count.saturating_sub(1));
        if let Some(s) = self.stages.get_mut(stage) {
            s.merge(&r.stats);
        }
        self.latest_open[w] = r.open;
        self.latest_pending[w] = r.pending;
        let open_now: u32 = self.latest_open.iter().sum();
        self.peak_open = self.peak_open.max(open_now);
        if let Some(p) = self.stage_peak.get_mut(stage) {
            *p = (*p).max(open_now);
        }
        let sec = self.seconds.entry(r.second).or_default();
        sec.stats.merge(&r.stats);
        sec.open.insert(w, r.open);
        sec.pending.insert(w, r.pending);
        if let Some(e) = r.open_at_end {
            self.open_at_end += e;
            self.done[w] = true;
        }
        if let Some(h) = r.slot_heap_bytes {
            self.slot_heap += h;
        }
        self.last_second[w] = Some(r.second);
        if let (Some(f), Some(d)) = (self.fan.as_mut(), r.fanout.as_deref()) {
            f.add(d, now_ns());
        }
        self.finalize_seconds(false);
    }

    /// Moves seconds every worker has moved past into the per-second list (and the log).
    pub fn finalize_seconds(&mut self, all: bool) {
        let complete_below = if all {
            u32::MAX
        } else {
            self.last_second
                .iter()
                .zip(&self.done)
                .map(|(s, d)| if *d { u32::MAX } else { s.unwrap_or(0) })
                .min()
                .unwrap_or(0)
        };
        while let Some((&t, _)) = self.seconds.first_key_value() {
            if t >= complete_below {
                break;
            }
            let Some((_, s)) = self.seconds.pop_first() else {
                break;
            };
            let lat = self.latency(&s.stats);
            let p99 = if lat.is_empty() {
                0
            } else {
                lat.value_at_quantile(0.99)
            };
            self.done_seconds.push(SecondReport {
                t,
                open: s.open.values().sum(),
                pending: s.pending.values().sum(),
                established: s.stats.c.connects_established,
                failed: s.stats.c.connects_failed,
                drops: s.stats.c.drops,
                msgs_sent: s.stats.c.msgs_sent,
                msgs_received: s.stats.c.msgs_received,
                bytes_received: s.stats.c.bytes_received,
                latency_p99_us: p99,
                latency_hist: if lat.is_empty() {
                    String::new()
                } else {
                    crate::engine::stats::encode_hist(lat)
                },
            });
            if let Some(log) = &mut self.hdr {
                log.add_second(t, &s.stats);
            }
        }
    }
}
