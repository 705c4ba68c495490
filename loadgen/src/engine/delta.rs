//! What a worker sends the main thread: a statistics delta at each second boundary, stage
//! change and at the end, over a crossbeam channel. Deltas merge (counters add,
//! HdrHistograms add), so the main thread builds per-second, per-stage and total figures
//! without any worker sharing a counter.

use crate::engine::stats::Stats;

/// A statistics delta from one worker.
#[derive(Debug)]
pub struct Report {
    pub worker: usize,
    /// Second of the run the delta belongs to.
    pub second: u32,
    pub stage: usize,
    pub stats: Stats,
    /// Connections open when the delta was cut.
    pub open: u32,
    /// Connects in progress (TCP or handshake) when the delta was cut.
    pub pending: u32,
    /// Set on the last report: connections open when the run's end was reached.
    pub open_at_end: Option<u32>,
    /// Set on the last report: heap bytes connection slots held at the end of the run.
    pub slot_heap_bytes: Option<u64>,
    /// Messages published and delivered in the interval, for the main thread's "all
    /// delivered" merge (scenarios whose messages reach many connections).
    pub fanout: Option<Box<FanoutDelta>>,
}

/// A message as its publisher's worker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Global publisher index.
    pub publisher: u32,
    pub seq: u64,
    /// Intended send time (the stamp's).
    pub sent_ns: u64,
    /// Subscribers that should receive it (connections open when it was published, less
    /// the publisher itself when the room does not echo).
    pub expected: u32,
    /// Stage it was published in.
    pub stage: u32,
}

/// Deliveries of one message to one worker's subscribers during one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
    pub count: u32,
    /// Latest receive time among them.
    pub last_ns: u64,
}

/// What a worker adds to its statistics delta in a broadcast run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FanoutDelta {
    pub published: Vec<Published>,
    pub received: Vec<Received>,
}
