//! The commands: `run` (the default), `doctor`, `ceiling` (with its hidden
//! `ceiling-agent`) and `merge`. Each owns its argument struct; `cli.rs` only assembles them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub mod ceiling;
pub mod doctor;
pub mod merge;
pub mod run;

/// Exit codes, the same for every command.
pub const EXIT_OK: i32 = 0;
pub const EXIT_THRESHOLD: i32 = 1;
pub const EXIT_CANNOT_RUN: i32 = 2;

/// A flag the first SIGINT sets, so the run ends early with its report; a second SIGINT
/// ends the process at once (exit 130).
pub fn stop_on_sigint() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        stop.clone(),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone());
    stop
}
