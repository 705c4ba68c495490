//! Defaults shared by both servers, so their `--help` and behaviour cannot drift.

/// Largest message (after reassembly) a server accepts: larger ones close with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Seconds between server pings on an otherwise quiet connection.
pub const DEFAULT_PING_INTERVAL_SECS: u64 = 30;
/// Seconds of silence (no frame at all, pong included) before a connection is dropped.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Seconds a peer has to complete the HTTP upgrade (slowloris guard).
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// Seconds to wait for clients to answer our Close 1001 on shutdown.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 5;
/// Largest request head (request line + headers) accepted: larger gets 431.
pub const MAX_HANDSHAKE_BYTES: usize = 8 * 1024;
/// Most request headers accepted before answering 431.
pub const MAX_HEADERS: usize = 64;
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";
/// Default bounded outbound queue per connection (bytes).
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 1024 * 1024;
/// Connections per core in their handshake at once (`--max-pending`).
pub const DEFAULT_MAX_PENDING: u32 = 4096;
