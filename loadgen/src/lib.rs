//! ws-loadgen: a thread-per-core raw-socket WebSocket load generator that tells the truth.
//!
//! Map of the modules, from the command line down to the sockets:
//! - [`cli`]: clap arguments; `run` is the default subcommand.
//! - [`config`]: arguments checked into a [`config::RunConfig`]: URL resolved, stage
//!   plan built, impossible settings (descriptors, ephemeral ports) refused up front.
//! - [`run`]: the main thread: starts the workers, merges their statistics, progress,
//!   SIGINT, report, thresholds, exit code.
//! - [`worker`]: one pinned thread per core with its own edge-triggered epoll loop, timers
//!   and statistics; connects, handshakes, scenario traffic, reconnects, drain.
//! - [`conn`]: the compact per-connection slot and its states.
//! - [`client_frame`]: parsing server→client frames.
//! - [`scenario`]: what open connections do (hold, echo, broadcast, push).
//! - [`broadcast`]: publishers' sequences, per-subscriber sequence checks, and the main
//!   thread's merge of deliveries into "all delivered" latency.
//! - [`push`]: HTTP `POST /push/ID` requests from the worker's epoll loop.
//! - [`schedule`]: durations, stages, per-worker shares, constant-rate pacers.
//! - [`stats`]: mergeable counters, failure classes and HdrHistograms.
//! - [`report`]: the JSON/text report and the HdrHistogram interval log.
//! - [`thresholds`]: `--max-error-rate`, `--max-p99`, `--min-connections`.
//! - [`fmt`]: how counts, latencies and failure classes read in text output.
//! - [`progress`]: live progress on stderr.
//! - [`source_ip`]: `--source-ip` lists and ranges.
//! - [`sys`]: the few raw syscalls (sockets, `IP_BIND_ADDRESS_NO_PORT`, epoll).
//! - [`doctor`]: `ws-loadgen doctor`: which limit (descriptors, ports, conntrack, accept
//!   queue, memory) stops N connections, by arithmetic over [`limits`].
//! - [`limits`]: sysctls, meminfo, sockstat, /proc/PID limits and fds, /metrics scrapes.
//! - [`ceiling`]: `ws-loadgen ceiling`: ramp held connections over agent processes until a
//!   limit stops them, hold, name the limit from the evidence, report text/JSON/HTML.
//!
//! See `loadgen/ARCHITECTURE.md` for why the engine is built this way.

pub mod broadcast;
pub mod ceiling;
pub mod cli;
pub mod client_frame;
pub mod config;
pub mod conn;
pub mod doctor;
pub mod fmt;
pub mod limits;
pub mod progress;
pub mod push;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod source_ip;
pub mod stats;
pub mod sys;
pub mod thresholds;
pub mod worker;
