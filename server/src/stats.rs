//! Per-core counters and the `/metrics` page.
//!
//! Each core owns one [`CoreStats`] and is its only writer, so an increment is a relaxed
//! load and store (a plain `mov`, no locked instruction, no shared cache line written by two
//! cores). `/metrics`, served by whichever core accepted the scrape, only reads them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use ws_common::handshake::Reject;
use ws_common::metrics::{self, Page};

/// A counter written by one thread only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    #[inline]
    pub fn dec(&self) {
        self.0
            .store(self.0.load(Relaxed).saturating_sub(1), Relaxed);
    }
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed)
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Close codes counted by `ws_protocol_closes_total{code}`.
pub const PROTOCOL_CLOSE_CODES: [u16; 4] = [1002, 1007, 1008, 1009];
/// Accept errnos counted by name; anything else is `other`.
pub const ACCEPT_ERRNOS: [i32; 5] = [
    libc::EMFILE,
    libc::ENFILE,
    libc::ENOBUFS,
    libc::ENOMEM,
    libc::ECONNABORTED,
];

/// One core's counters.
#[derive(Default, Debug)]
pub struct CoreStats {
    /// WebSocket connections open now (gauge).
    pub connections_open: Counter,
    /// TCP connections not yet upgraded, or answering plain HTTP (gauge).
    pub pending_open: Counter,
    pub accepted: Counter,
    pub upgraded: Counter,
    pub rejections: [Counter; Reject::ALL.len()],
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    pub pings_sent: Counter,
    pub pongs_received: Counter,
    pub idle_timeout_closes: Counter,
    pub handshake_timeout_closes: Counter,
    pub protocol_closes: [Counter; PROTOCOL_CLOSE_CODES.len()],
    pub client_closes: Counter,
    pub resets: Counter,
    pub accept_errors: [Counter; ACCEPT_ERRNOS.len() + 1],
    /// Bytes of per-connection state this core holds (slab + heap extras), a gauge.
    pub conn_state_bytes: Counter,
    /// Data messages to fan out that entered on this core (client on /broadcast, POST).
    pub broadcasts_in: Counter,
    /// Messages this core delivered to its connections (broadcast and push).
    pub deliveries: Counter,
    /// Messages this core posted to other cores' inboxes.
    pub cross_core_out: Counter,
    pub slow_consumer_closes: Counter,
    /// Closed 1008: a frame or fragmented message not finished within --message-timeout.
    pub message_timeout_closes: Counter,
    /// Closed 1008: among the largest holders when the core exceeded --memory-budget.
    pub memory_budget_closes: Counter,
    pub slow_consumer_drops: Counter,
    pub push_hits: Counter,
    pub push_misses: Counter,
    /// Cross-core hop latency histogram (post → handled), cumulative buckets + sum + count.
    pub hop_buckets: [Counter; HOP_BUCKETS_US.len()],
    pub hop_sum_ns: Counter,
    pub hop_count: Counter,
    /// TLS handshakes completed: full, and resumed from a session ticket.
    pub tls_full: Counter,
    pub tls_resumed: Counter,
    /// TLS failures by [`crate::tls_config::TLS_FAILURES`] class.
    pub tls_failures: [Counter; crate::tls_config::TLS_FAILURES.len()],
    /// TLS connections held, and the user-space bytes of their TLS state (gauges; set by
    /// the once-a-second sweep).
    pub tls_open: Counter,
    pub tls_state_bytes: Counter,
}

/// Upper bounds (µs) of the cross-core hop histogram buckets.
pub const HOP_BUCKETS_US: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 100_000,
];

impl CoreStats {
    pub fn reject(&self, r: Reject) {
        self.rejections[r.index()].inc();
    }

    pub fn protocol_close(&self, code: u16) {
        if let Some(i) = PROTOCOL_CLOSE_CODES.iter().position(|c| *c == code) {
            self.protocol_closes[i].inc();
        }
    }

    /// Records one cross-core hop of `ns` nanoseconds.
    pub fn record_hop(&self, ns: u64) {
        let us = ns / 1000;
        for (i, le) in HOP_BUCKETS_US.iter().enumerate() {
            if us <= *le {
                self.hop_buckets[i].inc();
            }
        }
        self.hop_sum_ns.add(ns);
        self.hop_count.inc();
    }

    pub fn tls_failure(&self, class: &str) {
        self.tls_failures[crate::tls_config::failure_index(class)].inc();
    }

    pub fn accept_error(&self, errno: i32) {
        let i = ACCEPT_ERRNOS
            .iter()
            .position(|e| *e == errno)
            .unwrap_or(ACCEPT_ERRNOS.len());
        self.accept_errors[i].inc();
    }
}

/// Every core's counters, indexed by executor number; shared read-only.
pub type AllStats = Arc<[CoreStats]>;

/// Renders the Prometheus text page.
pub fn render(all: &[CoreStats], cores: &[usize]) -> String {
    let mut p = Page::new();
    let per_core =
        |p: &mut Page, name: &str, kind: &str, help: &str, f: &dyn Fn(&CoreStats) -> u64| {
            p.family(name, kind, help);
            for (i, s) in all.iter().enumerate() {
                let core = cores.get(i).copied().unwrap_or(i).to_string();
                p.sample(name, &[("core", &core)], f(s));
            }
        };
    per_core(
        &mut p,
        "ws_connections_open",
        "gauge",
        "WebSocket connections open now.",
        &|s| s.connections_open.get(),
    );
    per_core(
        &mut p,
        "ws_pending_connections",
        "gauge",
        "TCP connections accepted but not (yet) upgraded.",
        &|s| s.pending_open.get(),
    );
    per_core(
        &mut p,
        "ws_accepted_total",
        "counter",
        "TCP connections accepted.",
        &|s| s.accepted.get(),
    );
    per_core(
        &mut p,
        "ws_upgraded_total",
        "counter",
        "Handshakes completed with 101.",
        &|s| s.upgraded.get(),
    );
    p.family(
        "ws_handshake_rejections_total",
        "counter",
        "Handshakes refused, by reason (HTTP status).",
    );
    for (i, s) in all.iter().enumerate() {
        let core = cores.get(i).copied().unwrap_or(i).to_string();
        for r in Reject::ALL {
            let status = r.status().to_string();
            p.sample(
                "ws_handshake_rejections_total",
                &[("core", &core), ("reason", r.label()), ("status", &status)],
                s.rejections[r.index()].get(),
            );
        }
    }
    per_core(
        &mut p,
        "ws_messages_in_total",
        "counter",
        "Data messages received.",
        &|s| s.messages_in.get(),
    );
    per_core(
        &mut p,
        "ws_bytes_in_total",
        "counter",
        "Bytes received on WebSocket connections.",
        &|s| s.bytes_in.get(),
    );
    per_core(
        &mut p,
        "ws_messages_out_total",
        "counter",
        "Data messages sent.",
        &|s| s.messages_out.get(),
    );
    per_core(
        &mut p,
        "ws_bytes_out_total",
        "counter",
        "Bytes sent on WebSocket connections.",
        &|s| s.bytes_out.get(),
    );
    per_core(
        &mut p,
        "ws_pings_sent_total",
        "counter",
        "Heartbeat pings sent.",
        &|s| s.pings_sent.get(),
    );
    per_core(
        &mut p,
        "ws_pongs_received_total",
        "counter",
        "Pongs received.",
        &|s| s.pongs_received.get(),
    );
    per_core(
        &mut p,
        "ws_idle_timeout_closes_total",
        "counter",
        "Connections closed for silence past --idle-timeout.",
        &|s| s.idle_timeout_closes.get(),
    );
    per_core(
        &mut p,
        "ws_handshake_timeout_closes_total",
        "counter",
        "Connections closed for not completing the handshake in time.",
        &|s| s.handshake_timeout_closes.get(),
    );
    p.family(
        "ws_protocol_closes_total",
        "counter",
        "Connections closed for a protocol violation, by close code.",
    );
    for (i, s) in all.iter().enumerate() {
        let core = cores.get(i).copied().unwrap_or(i).to_string();
        for (j, code) in PROTOCOL_CLOSE_CODES.iter().enumerate() {
            p.sample(
                "ws_protocol_closes_total",
                &[("core", &core), ("code", &code.to_string())],
                s.protocol_closes[j].get(),
            );
        }
    }
    per_core(
        &mut p,
        "ws_client_closes_total",
        "counter",
        "Close handshakes started by the client.",
        &|s| s.client_closes.get(),
    );
    per_core(
        &mut p,
        "ws_resets_total",
        "counter",
        "Connections that ended without a close handshake (EOF, reset).",
        &|s| s.resets.get(),
    );
    p.family(
        "ws_accept_errors_total",
        "counter",
        "accept() failures, by errno.",
    );
    for (i, s) in all.iter().enumerate() {
        let core = cores.get(i).copied().unwrap_or(i).to_string();
        for (j, e) in ACCEPT_ERRNOS.iter().enumerate() {
            p.sample(
                "ws_accept_errors_total",
                &[
                    ("core", &core),
                    ("errno", &ws_common::errno::errno_name(*e)),
                ],
                s.accept_errors[j].get(),
            );
        }
        p.sample(
            "ws_accept_errors_total",
            &[("core", &core), ("errno", "other")],
            s.accept_errors[ACCEPT_ERRNOS.len()].get(),
        );
    }
    per_core(
        &mut p,
        "ws_broadcasts_in_total",
        "counter",
        "Messages to fan out that entered on this core (client broadcasts and POST /broadcast).",
        &|s| s.broadcasts_in.get(),
    );
    per_core(
        &mut p,
        "ws_deliveries_total",
        "counter",
        "Broadcast and push messages delivered to connections.",
        &|s| s.deliveries.get(),
    );
    per_core(
        &mut p,
        "ws_cross_core_messages_total",
        "counter",
        "Messages posted to other cores' inboxes.",
        &|s| s.cross_core_out.get(),
    );
    per_core(
        &mut p,
        "ws_slow_consumer_closes_total",
        "counter",
        "Connections closed (1008) because their outbound queue was full.",
        &|s| s.slow_consumer_closes.get(),
    );
    per_core(
        &mut p,
        "ws_message_timeout_closes_total",
        "counter",
        "Connections closed (1008) because a started frame or message did not complete within --message-timeout.",
        &|s| s.message_timeout_closes.get(),
    );
    per_core(
        &mut p,
        "ws_memory_budget_closes_total",
        "counter",
        "Connections closed (1008) as the largest holders when the core exceeded --memory-budget.",
        &|s| s.memory_budget_closes.get(),
    );
    per_core(
        &mut p,
        "ws_slow_consumer_drops_total",
        "counter",
        "Messages dropped for a connection whose outbound queue was full.",
        &|s| s.slow_consumer_drops.get(),
    );
    per_core(
        &mut p,
        "ws_push_hits_total",
        "counter",
        "POST /push requests delivered to at least one connection.",
        &|s| s.push_hits.get(),
    );
    per_core(
        &mut p,
        "ws_push_misses_total",
        "counter",
        "POST /push requests for a user with no connection (404).",
        &|s| s.push_misses.get(),
    );
    p.family(
        "ws_cross_core_hop_seconds",
        "histogram",
        "Time from a core posting a message to another core handling it.",
    );
    for (i, s) in all.iter().enumerate() {
        let core = cores.get(i).copied().unwrap_or(i).to_string();
        for (j, le) in HOP_BUCKETS_US.iter().enumerate() {
            let le = format!("{}", *le as f64 / 1e6);
            p.sample(
                "ws_cross_core_hop_seconds_bucket",
                &[("core", &core), ("le", &le)],
                s.hop_buckets[j].get(),
            );
        }
        p.sample(
            "ws_cross_core_hop_seconds_bucket",
            &[("core", &core), ("le", "+Inf")],
            s.hop_count.get(),
        );
        p.sample(
            "ws_cross_core_hop_seconds_sum",
            &[("core", &core)],
            s.hop_sum_ns.get() as f64 / 1e9,
        );
        p.sample(
            "ws_cross_core_hop_seconds_count",
            &[("core", &core)],
            s.hop_count.get(),
        );
    }
    per_core(
        &mut p,
        "ws_connection_state_bytes",
        "gauge",
        "User-space bytes of per-connection state held (slots + buffers).",
        &|s| s.conn_state_bytes.get(),
    );
    p.family(
        "ws_tls_handshakes_total",
        "counter",
        "TLS handshakes completed, full or resumed (session ticket).",
    );
    for (i, s) in all.iter().enumerate() {
        let core = cores.get(i).copied().unwrap_or(i).to_string();
        for (kind, v) in [("full", s.tls_full.get()), ("resumed", s.tls_resumed.get())] {
            p.sample(
                "ws_tls_handshakes_total",
                &[("core", &core), ("kind", kind)],
                v,
            );
        }
    }
    p.family(
        "ws_tls_failures_total",
        "counter",
        "TLS connections that failed, by reason (alert_unknown_ca: the client does not trust our certificate; not_tls: plain bytes on a wss port; timeout: stalled in the handshake).",
    );
    for (i, s) in all.iter().enumerate() {
        let core = cores.get(i).copied().unwrap_or(i).to_string();
        for (j, reason) in crate::tls_config::TLS_FAILURES.iter().enumerate() {
            p.sample(
                "ws_tls_failures_total",
                &[("core", &core), ("reason", reason)],
                s.tls_failures[j].get(),
            );
        }
    }
    per_core(
        &mut p,
        "ws_tls_connections",
        "gauge",
        "Connections holding TLS state now (updated every second).",
        &|s| s.tls_open.get(),
    );
    per_core(
        &mut p,
        "ws_tls_state_bytes",
        "gauge",
        "User-space bytes of TLS state (library state, keys, split records), measured by allocation; per connection = this / ws_tls_connections.",
        &|s| s.tls_state_bytes.get(),
    );
    let (soft, _hard) = metrics::nofile_limit();
    p.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    )
    .sample(
        "process_resident_memory_bytes",
        &[],
        metrics::resident_bytes(),
    );
    p.family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
    )
    .sample("process_open_fds", &[], open_fds(all));
    p.family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors (soft RLIMIT_NOFILE).",
    )
    .sample("process_max_fds", &[], soft);
    p.family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent in seconds.",
    )
    .sample(
        "process_cpu_seconds_total",
        &[],
        format!("{:.3}", metrics::cpu_seconds()),
    );
    p.finish()
}

/// Descriptors open before the first connection (listeners, rings, eventfds, stdio), set
/// once by the executor when every core is up.
pub static BASE_FDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Open descriptors without listing `/proc/self/fd` on the event loop at every scrape (a
/// directory of a million entries): the start-up baseline plus one per connection, which
/// the gauges already count.
fn open_fds(all: &[CoreStats]) -> u64 {
    let base = BASE_FDS.load(std::sync::atomic::Ordering::Relaxed);
    if base == 0 {
        return metrics::open_fds();
    }
    base + all
        .iter()
        .map(|s| s.connections_open.get() + s.pending_open.get())
        .sum::<u64>()
}
