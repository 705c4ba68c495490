//! What open connections do. Each scenario is one file that answers the engine's
//! questions ([`crate::engine::scenario::Scenario`]): what to do when a connection opens,
//! what drives its sends (the constant-rate schedule, the previous reply, a heartbeat) and
//! how a received message is judged.
//!
//! - [`hold`]: idle connections with a heartbeat; pong latency.
//! - [`echo`]: stamped messages echoed back; round trip from the intended send time.
//! - [`broadcast`]: every connection subscribes to a room, some publish; fan-out latency,
//!   per-publisher sequence checks, expected against received deliveries ([`fanout`]).
//! - [`push`]: connections register as users, HTTP POSTs ([`http_post`]) deliver to them.
//! - [`script`]: a scenario file: steps after the upgrade (login, join), then a loop of
//!   templated messages judged by their text stamps.
//!
//! [`worker`] builds the worker of a run for its scenario; the engine is generic over the
//! scenario, so none of this costs a dynamic call per message.

use std::sync::Arc;

use crossbeam_channel::Sender;
use ws_common::payload::{self, Stamp};

use crate::config::ScenarioKind;
use crate::engine::delta::Report;
use crate::engine::io::Io;
use crate::engine::schedule::share;
use crate::engine::shared::Shared;
use crate::engine::worker::Worker;

pub mod broadcast;
pub mod echo;
pub mod fanout;
pub mod hold;
pub mod http_post;
pub mod push;
pub mod script;

/// Drain, for scenarios whose messages reach other connections than they left from
/// (broadcast, a script's deliveries): how long a worker must have received nothing
/// before it stops waiting.
pub const QUIET_NS: u64 = 50_000_000;

/// A worker ready to run on its thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// Builds worker `id` of the run in `sh` for the run's scenario.
pub fn worker(id: usize, sh: Arc<Shared>, tx: Sender<Report>) -> Result<Job, String> {
    let slots = share(sh.cfg.plan.max_target(), id, sh.cfg.cores.len()) as usize;
    fn job<S: crate::engine::scenario::Scenario>(w: Worker<S>) -> Job {
        Box::new(move || w.run())
    }
    let cfg = &sh.cfg;
    Ok(match cfg.scenario {
        ScenarioKind::Hold => job(Worker::new(id, sh.clone(), tx, hold::Hold::new(cfg))?),
        ScenarioKind::Echo => {
            let sc = echo::Echo::new(cfg, slots);
            job(Worker::new(id, sh.clone(), tx, sc)?)
        }
        ScenarioKind::Broadcast => {
            let sc = broadcast::Broadcast::new(cfg, id, slots);
            job(Worker::new(id, sh.clone(), tx, sc)?)
        }
        ScenarioKind::Push => {
            let sc = push::Push::new(cfg, slots);
            job(Worker::new(id, sh.clone(), tx, sc)?)
        }
        ScenarioKind::Script => {
            let sc = script::Scripted::new(cfg, id, slots)?;
            job(Worker::new(id, sh.clone(), tx, sc)?)
        }
    })
}

/// This worker's part of `rate` msgs/s in total, in proportion to its `slots` of the run's
/// largest target (None: not rate-driven, `rate` 0 is the closed loop).
pub fn rate_part(cfg: &crate::config::RunConfig, slots: usize) -> Option<f64> {
    let max = cfg.plan.max_target().max(1) as f64;
    (cfg.rate > 0.0).then(|| cfg.rate * slots as f64 / max)
}

/// The stamp in `payload` if it is a reply to a message slot `idx` sent (its own sender id,
/// a sequence it has used).
pub fn own_stamp(io: &Io, idx: usize, payload: &[u8]) -> Option<Stamp> {
    payload::read(payload).filter(|s| s.sender == io.sender_id(idx) && s.seq < io.conns[idx].sent)
}
