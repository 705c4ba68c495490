//! The `/metrics` page: ws-server's own renderer over our per-worker `CoreStats`, so the
//! names, labels and families are the same. (Families that describe ws-server's cross-core
//! machinery, the inbox hop histogram and `ws_cross_core_out_total`, stay at zero here:
//! tokio has no such hop.)
//!
//! Gauges need care on a work-stealing runtime: a connection can be opened on one worker
//! and closed on another, so a per-thread single-writer gauge would go negative on one slot
//! and stay high on the other. Each connection therefore charges its gauges to one *home*
//! slot (the worker that accepted or upgraded it) with real atomic add/sub, and the scrape
//! copies them into the `CoreStats` gauges just before rendering (the scrape is the only
//! writer of those fields).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::ctx::Ctx;

/// Gauges of one slot, charged by each connection to its home slot.
#[derive(Default, Debug)]
pub struct Gauges {
    pub ws_open: AtomicU64,
    pub pending: AtomicU64,
    pub state_bytes: AtomicU64,
}

/// An amount charged to a gauge until dropped.
pub struct Charge {
    gauge: &'static AtomicU64,
    amount: u64,
}

impl Charge {
    pub fn new(gauge: &'static AtomicU64, amount: u64) -> Charge {
        gauge.fetch_add(amount, Relaxed);
        Charge { gauge, amount }
    }

    /// Changes the charged amount.
    pub fn set(&mut self, amount: u64) {
        if amount > self.amount {
            self.gauge.fetch_add(amount - self.amount, Relaxed);
        } else {
            self.gauge.fetch_sub(self.amount - amount, Relaxed);
        }
        self.amount = amount;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.amount, Relaxed);
    }
}

/// Renders the whole page (ws-server's renderer, so names and labels are identical).
pub fn render(ctx: &Ctx) -> String {
    for (s, g) in ctx.stats.iter().zip(ctx.gauges.iter()) {
        s.connections_open.set(g.ws_open.load(Relaxed));
        s.pending_open.set(g.pending.load(Relaxed));
        s.conn_state_bytes.set(g.state_bytes.load(Relaxed));
    }
    ws_server::stats::render(&ctx.stats, &ctx.labels)
}
