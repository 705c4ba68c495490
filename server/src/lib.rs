//! ws-server: a thread-per-core io_uring WebSocket server, built to be the target of
//! connection-ceiling tests.
//!
//! Map of the modules (where to find what):
//! - [`cli`]: the command line; [`settings`]: the same, as the cores use it.
//! - [`executor`]: start-up, one pinned glommio executor per core, signals, shutdown summary.
//! - [`listener`]: the per-core SO_REUSEPORT listeners, and the stale-server check.
//! - [`core`]: **per-core state** and its event loop (completions, reads, writes, sweep).
//! - [`ring`]: the per-core io_uring (multishot accept and receive) the core sleeps in.
//! - [`conn`]: one connection's state and the slab that holds a core's connections.
//! - [`handshake`]: **the handshake** phase: routing, upgrade, plain HTTP answers.
//! - [`frames`]: **the frame loop** of open connections (echo, ping, close).
//! - [`inbox`]: **the cross-core path**: one channel + eventfd per core.
//! - [`fanout`]: broadcast to rooms and push to users: per-core indexes, one message per
//!   core, frames encoded once and shared.
//! - [`stats`]: per-core counters and the `/metrics` page.
//! - [`tls_config`]: `--tls-cert`/`--tls-key`, the rustls config and session tickets both
//!   servers use, and the names TLS failures are counted under.
//! - [`tls_session`]: **TLS on a connection**, sans-I/O on rustls's unbuffered API: what
//!   the core decrypts before the handshake and frame loops, and seals after them.
//! - [`tls_record`]: the records after the handshake, with the keys rustls hands over
//!   (where kernel TLS would slot in).
//! - [`alloc_count`]: the counting allocator that measures what rustls holds per connection.
//!
//! Protocol logic shared with other binaries (handshake parsing, frame decoding) is in
//! `ws-common`.

pub mod alloc_count;
pub mod cli;
pub mod conn;
pub mod core;
pub mod executor;
pub mod fanout;
pub mod frames;
pub mod handshake;
pub mod inbox;
pub mod listener;
pub mod ring;
pub mod settings;
pub mod stats;
pub mod tls_config;
pub mod tls_record;
pub mod tls_session;
