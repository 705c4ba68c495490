//! The `/metrics` page: ws-server's page (same names, same labels), then the broadcast/push
//! families this binary adds.
//!
//! Gauges need care on a work-stealing runtime: a connection can be opened on one worker
//! and closed on another, so a per-thread single-writer gauge would go negative on one slot
//! and stay high on the other. Each connection therefore charges its gauges to one *home*
//! slot (the worker that accepted or upgraded it) with real atomic add/sub, and the scrape
//! copies them into the `CoreStats` gauges just before rendering (the scrape is the only
//! writer of those fields).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ws_common::metrics::Page;
use ws_server::stats::Counter;

use crate::ctx::Ctx;

/// The broadcast/push counters of one slot (single writer, like `CoreStats`).
#[derive(Default, Debug)]
pub struct HubStats {
    /// Messages published into a room (by a client or by `POST /broadcast/NAME`).
    pub broadcasts_in: Counter,
    /// Messages queued to a connection by a broadcast or a push.
    pub deliveries: Counter,
    pub slow_closes: Counter,
    pub slow_drops: Counter,
    /// `POST /push/ID` that found at least one connection, and those that found none.
    pub push_hits: Counter,
    pub push_misses: Counter,
}

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

/// One of this binary's counter families: name, help, and the counter in a slot.
type Family = (&'static str, &'static str, fn(&HubStats) -> &Counter);

/// Renders the whole page.
pub fn render(ctx: &Ctx) -> String {
    for (s, g) in ctx.stats.iter().zip(ctx.gauges.iter()) {
        s.connections_open.set(g.ws_open.load(Relaxed));
        s.pending_open.set(g.pending.load(Relaxed));
        s.conn_state_bytes.set(g.state_bytes.load(Relaxed));
    }
    let mut out = ws_server::stats::render(&ctx.stats, &ctx.labels);
    let mut p = Page::new();
    let families: [Family; 6] = [
        (
            "ws_broadcasts_in_total",
            "Messages published into a room, by clients or POST /broadcast/NAME.",
            |h| &h.broadcasts_in,
        ),
        (
            "ws_deliveries_total",
            "Messages queued to a connection by a broadcast or a push.",
            |h| &h.deliveries,
        ),
        (
            "ws_slow_consumer_closes_total",
            "Connections closed (1008) because their outbound queue was full.",
            |h| &h.slow_closes,
        ),
        (
            "ws_slow_consumer_drops_total",
            "Messages dropped for one connection because its outbound queue was full.",
            |h| &h.slow_drops,
        ),
        (
            "ws_push_hits_total",
            "POST /push/ID requests that found at least one connection of the user.",
            |h| &h.push_hits,
        ),
        (
            "ws_push_misses_total",
            "POST /push/ID requests for a user with no connection (404).",
            |h| &h.push_misses,
        ),
    ];
    for (name, help, get) in families {
        p.family(name, "counter", help);
        for (i, h) in ctx.hub_stats.iter().enumerate() {
            let core = ctx.labels.get(i).copied().unwrap_or(i).to_string();
            p.sample(name, &[("core", &core)], get(h).get());
        }
    }
    out.push_str(&p.finish());
    out
}
