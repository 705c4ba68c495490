//! The questions the engine asks a scenario. The engine owns the sockets and the loop; a
//! scenario (hold, echo, broadcast, push, in `crate::scenario`) answers what to do when a
//! connection opens, what drives sends, and how a received message is judged. Every
//! method gets the worker's [`Io`], through which it sends and counts; none of them may
//! block.
//!
//! The worker is generic over its scenario (`Worker<S: Scenario>`), so these calls are
//! static and inlined: a scenario costs what its own code costs, no dispatch per message.

use crate::engine::delta::FanoutDelta;
use crate::engine::io::Io;

pub trait Scenario: Send + 'static {
    /// Messages per second this worker schedules on its constant-rate pacer (None: sends
    /// are not rate-driven). Called once, when the worker starts.
    fn rate(&self) -> Option<f64> {
        None
    }

    /// Whether `--tick` may batch this scenario's sends and reads (false where a time is
    /// taken in user space on arrival, such as an HTTP answer).
    fn batches(&self) -> bool {
        true
    }

    /// Whether the scenario paces sends itself, on its own timers (a script's
    /// per-connection schedules): `--tick` then batches the worker's wake-ups as it does
    /// for the engine's pacer, and the scenario sends what falls due within the tick.
    fn own_schedule(&self) -> bool {
        false
    }

    /// Heartbeat: ping every open connection this often (None: no pings).
    fn ping_interval_ns(&self) -> Option<u64> {
        None
    }

    /// Whether each connection registers as its own user ([`user_id`]: `?user=`, or the
    /// `sub` of its token with `--token-secret`), so the worker cannot use one shared
    /// upgrade request for all.
    ///
    /// [`user_id`]: crate::engine::user_id
    fn registers_user(&self) -> bool {
        false
    }

    /// Slot `idx`'s own request target and extra headers (a scripted run renders them per
    /// connection); None: the run's URL and `-H` headers.
    fn request(&mut self, _io: &Io, _idx: usize) -> Option<(String, Vec<String>)> {
        None
    }

    /// Slot `idx` was lost while the run wanted it: what it was doing, appended to the
    /// drop class (`close_4001:join`), and counted as that step's failure.
    fn fail_label(&mut self, _io: &mut Io, _idx: usize) -> Option<&str> {
        None
    }

    /// Whether an upgrade ends a slot's run of failures (its retry count starts again).
    /// A script says no while it has steps: a connection that upgrades and then fails its
    /// login has not succeeded, and must not retry forever; it resets the count itself
    /// when the steps are done.
    fn upgrade_resets_tries(&self) -> bool {
        true
    }

    /// Slot `idx` has been upgraded.
    fn on_open(&mut self, _io: &mut Io, _idx: usize, _now: u64) {}

    /// Slot `idx` leaves the Open state (we started closing it, or it is gone).
    fn on_leave(&mut self, _io: &mut Io, _idx: usize) {}

    /// Slot `idx`'s socket was closed: forget what was kept per connection.
    fn on_closed(&mut self, _io: &mut Io, _idx: usize) {}

    /// Whether a scheduled message could go out now (something open to send on, room for
    /// it). While false, the schedule does not fall behind.
    fn can_send(&self, io: &Io) -> bool {
        !io.open.is_empty()
    }

    /// One scheduled message, intended at `intended` (latency is measured from it).
    fn send_scheduled(&mut self, _io: &mut Io, _intended: u64, _now: u64) {}

    /// A data message (or the first frame of a fragmented one) arrived on slot `idx`.
    fn on_message(&mut self, io: &mut Io, idx: usize, text: bool, payload: &[u8], now: u64);

    /// An epoll event for a socket of the scenario's own (token with `SIDE_BIT` set).
    fn on_side_event(&mut self, _io: &mut Io, _token: u64, _flags: u32, _now: u64) {}

    /// Runs the scenario's own timers that are due.
    fn timers(&mut self, _io: &mut Io, _now: u64) {}

    /// The scenario's earliest own deadline.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// Once per loop turn, before anything else (cheap: publish figures to other workers).
    fn turn(&mut self, _io: &Io) {}

    /// Drain: besides replies in flight, is everything the scenario waits for in?
    fn settled(&self, _io: &Io, _now: u64) -> bool {
        true
    }

    /// The scenario's part of the next statistics delta.
    fn delta(&mut self) -> Option<Box<FanoutDelta>> {
        None
    }

    /// The run is over: close the scenario's own sockets.
    fn finish(&mut self, _io: &mut Io) {}
}

/// Set in the slot half of an epoll token for sockets a scenario owns (push POSTs).
pub const SIDE_BIT: usize = 1 << 31;
