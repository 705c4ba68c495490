//! ws-loadgen: a thread-per-core raw-socket WebSocket load generator that tells the truth.
//!
//! Map of the modules, in layers; each layer uses only the ones above it:
//! - [`config`]: a checked run configuration (target, stage plan, scenario settings) and
//!   the parsers of typed values (durations, counts, ratios, source-address lists).
//! - [`engine`]: sockets and syscalls, the per-core worker loop, connection slots, the
//!   constant-rate schedule, frame parsing, the counters workers fill. Knows nothing about
//!   what a scenario means.
//! - [`scenario`]: hold, echo, broadcast, push — each answers the engine's questions (what
//!   to do on open, what drives sends, how a received message is judged).
//! - [`fmt`]: how counts, latencies and failure classes read in text (a leaf: everyone
//!   prints).
//! - [`limits`]: what this box and the server allow (sysctls, /proc, /metrics) and which
//!   limit stops N connections (pure arithmetic).
//! - [`report`]: the run, ceiling and doctor reports (text, JSON, HTML), the HdrHistogram
//!   log, progress, thresholds.
//! - [`commands`]: `run`, `doctor`, `ceiling`, each with its own arguments.
//! - [`cli`]: assembles the commands' arguments into one command line.
//!
//! See `docs/ARCHITECTURE.md` for why the engine is built this way.

pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod fmt;
pub mod limits;
pub mod report;
pub mod scenario;
