//! What every worker of a run reads: the checked configuration, the start time, the stop
//! flag, and the few figures that cross workers (relaxed atomics, touched at connect and
//! close, or once per loop turn — never per message).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crate::config::RunConfig;

pub struct Shared {
    pub cfg: RunConfig,
    /// CLOCK_MONOTONIC ns at which the run started.
    pub start_ns: u64,
    /// Set on SIGINT: workers stop as if the run had ended.
    pub stop: Arc<AtomicBool>,
    /// Connections open, all workers (a message published now should reach them).
    pub open: AtomicU64,
    /// Deliveries of messages that arrive on other connections than they left from
    /// (broadcast): what the drain waits for.
    pub deliveries: Deliveries,
    /// `--start-at`: how late the run started against it, ms.
    pub start_late_ms: Option<f64>,
}

/// Deliveries expected and received so far, all workers.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub expected: AtomicU64,
    pub received: AtomicU64,
}

impl Shared {
    /// The shared state of a run starting now-ish (`start_ns`) with configuration `cfg`.
    pub fn new(cfg: RunConfig, start_ns: u64, stop: Arc<AtomicBool>) -> Self {
        Self {
            cfg,
            start_ns,
            stop,
            open: AtomicU64::new(0),
            deliveries: Deliveries::default(),
            start_late_ms: None,
        }
    }
}
