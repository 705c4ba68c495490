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
    pub allow_origin: Vec<String>,
    /// Bytes a connection may have queued unsent before it is closed (1008).
    pub send_queue_bytes: usize,
    pub slow_consumer: SlowConsumer,
    /// Executor numbers -> core ids (for metrics labels).
    pub cores: Vec<usize>,
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
            allow_origin: c.allow_origin.clone(),
            // The echo of one maximal message always fits: the policy is for a peer that
            // falls behind, not for one that was sent a single large message.
            send_queue_bytes: c
                .send_queue_bytes
                .max(c.max_message_size + ws_common::frame::MAX_HEADER_LEN),
            slow_consumer: c.slow_consumer,
            cores,
        }
    }
}
