//! The configuration as the cores use it: validated, in ticks, shared read-only per core.

use crate::cli::{Config, SlowConsumer};

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_conns: u64,
    pub max_message_size: usize,
    pub ping_interval: u32,
    pub idle_timeout: u32,
    pub handshake_timeout: u32,
    pub drain_timeout: u32,
    /// Bytes a connection may have queued unsent before it is closed (1008).
    pub send_queue_bytes: usize,
    pub slow_consumer: SlowConsumer,
    /// Executor numbers -> core ids (for metrics labels).
    pub cores: Vec<usize>,
    /// Who may do what on which listener (shared with the tokio baseline).
    pub policy: ws_common::route::Policy,
    /// Pre-upgrade connections per core before 503.
    pub max_pending: u32,
    /// Seconds a started frame or fragmented message may take (0: no limit).
    pub message_timeout: u32,
    /// Bytes of partial messages and unsent output per core before the largest go.
    pub memory_budget: usize,
    /// wss:// on the public listener (`--tls-cert`/`--tls-key`); each core gets its own copy,
    /// so taking it for a connection touches no cache line another core writes.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Settings {
    pub fn from_config(c: &Config, cores: Vec<usize>) -> Settings {
        let secs = |v: u64| v.min(u32::MAX as u64) as u32;
        Settings {
            max_conns: c.max_conns.unwrap_or(u64::MAX),
            max_message_size: c.max_message_size,
            ping_interval: secs(c.ping_interval),
            idle_timeout: secs(c.idle_timeout),
            handshake_timeout: secs(c.handshake_timeout),
            drain_timeout: secs(c.drain_timeout),
            // One maximal message always fits (the same rule in both servers): the policy
            // is for a peer that falls behind, not for one sent a single large message.
            send_queue_bytes: c.send_queue_bound(),
            slow_consumer: c.slow_consumer,
            cores,
            policy: c.policy(),
            max_pending: c.max_pending,
            message_timeout: secs(c.message_timeout),
            memory_budget: c.memory_budget.min(usize::MAX as u64) as usize,
            tls: None,
        }
    }
}
