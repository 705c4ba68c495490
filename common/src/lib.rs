//! What ws-server, ws-server-tokio and ws-loadgen share.
//!
//! Map of the modules:
//! - [`handshake`]: the HTTP/1.1 Upgrade handshake, both sides: request parsing and
//!   validation with the exact status to refuse with, `Sec-WebSocket-Accept`, the client's
//!   request bytes and response check.
//! - [`frame`]: RFC 6455 frame headers (parsed by tungstenite), masking, encoding into a
//!   caller's buffer, close payloads.
//! - [`message`]: the incremental message decoder the servers drive with their own I/O:
//!   reassembly, control frames, UTF-8 and size checks, close codes.
//! - [`payload`]: the binary payload the load generator sends (sequence number, timestamps)
//!   so latency, loss and order can be checked end to end.
//! - [`text_stamp`]: the same stamp as 39 ASCII characters, for text protocols (JSON) that
//!   a server may wrap in its own envelope.
//! - [`cores`]: `--cores 0-3,6` lists.
//! - [`errno`]: errno names for error classes (`ECONNREFUSED`, `EMFILE`, ...).
//! - [`metrics`]: Prometheus text exposition helpers and process figures from /proc.
//! - [`net`]: `sockaddr` for code that calls `bind(2)`/`connect(2)` itself.
//! - [`limits`]: defaults both servers use.
//! - [`auth`]: HS256 tokens (verify and mint) and constant-time API-key comparison.
//! - [`route`]: which request may do what on the public and the admin listener (both
//!   servers route through it).

pub mod auth;
pub mod cores;
pub mod errno;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod net;
pub mod payload;
pub mod route;
pub mod text_stamp;
