//! The engine: sockets and syscalls, the per-core worker loop, connection slots, the
//! constant-rate schedule, frame parsing and the counters a worker fills. It knows nothing
//! about what a scenario means: it asks a [`scenario::Scenario`] (the trait) what to do.

pub mod conn;
mod connect;
pub mod delta;
pub mod frame;
mod input;
pub mod io;
pub mod scenario;
pub mod schedule;
pub mod shared;
pub mod stats;
pub mod sys;
pub mod timers;
pub mod tls;
pub mod worker;

pub use connect::user_id;
