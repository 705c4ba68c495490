//! One worker per core: an edge-triggered epoll loop that owns its connection slots.
//!
//! Nothing on the hot path is shared: each worker has its own epoll instance, slots,
//! scratch buffers, timers and statistics, and sends statistics deltas to the main thread
//! at each second and stage boundary. The only shared state is the read-only
//! configuration, the stop flag (an atomic read once per loop turn) and a few relaxed
//! counters touched at connect and close ([`Shared`]).
//!
//! The loop, once per turn: cut a delta if a second has passed; in the run phase follow
//! the stage plan, open the connections the connect pacer allows and send the messages the
//! message pacer says are due; run due timers; sleep in `epoll_pwait2` until the next
//! paced event or timer; handle the ready sockets. Connecting is `connect.rs`, reading and
//! frames `input.rs`; what a connection does once open is the scenario's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;
use ws_common::errno::errno_name;
use ws_common::frame::op;
use ws_common::handshake::client_request;
use ws_common::payload;

use crate::engine::conn::State;
use crate::engine::delta::Report;
use crate::engine::io::{Io, Phase};
use crate::engine::scenario::Scenario;
use crate::engine::schedule::{share, Pacer};
use crate::engine::shared::Shared;
use crate::engine::sys::{self, Epoll};
use crate::engine::timers::Timers;

/// Per-worker read buffer.
const SCRATCH: usize = 64 * 1024;
/// Connects in flight per worker when `--connect-rate 0`.
const MAX_UNPACED_INFLIGHT: u32 = 1024;
/// Most connects or sends started per loop turn, so I/O is never starved.
const BATCH: usize = 512;
/// How far the connect pacer may fall behind before the deficit is forgiven.
const CONNECT_MAX_LAG_NS: u64 = 10_000_000;
/// How far the message pacer may fall behind: falling behind shows as latency (from the
/// intended time), never as a silently lower rate, for up to this long.
const SEND_MAX_LAG_NS: u64 = 1_000_000_000;
/// Longest sleep of the loop.
const MAX_SLEEP_NS: u64 = 10_000_000;
/// CLOCK_REALTIME − CLOCK_MONOTONIC now.
fn clock_offset() -> i64 {
    sys::realtime_ns() as i64 - payload::now_ns() as i64
}

/// Placeholder key in the pre-built request (24 base64 characters, like a real key).
pub(super) const KEY_PLACEHOLDER: &str = "AAAAAAAAAAAAAAAAAAAAAA==";

pub struct Worker<S> {
    pub(super) io: Io,
    pub(super) sc: S,
    tx: Sender<Report>,
    pub(super) scratch: Vec<u8>,
    /// The upgrade request with a placeholder key at `key_at`.
    pub(super) request: Vec<u8>,
    pub(super) key_at: usize,
    /// Where a connection's request is assembled.
    pub(super) reqbuf: Vec<u8>,
    /// Plaintext out of TLS, for the frame parser.
    pub(super) plain: Vec<u8>,
    /// wss://: this worker's TLS client configuration (its own session cache) and the
    /// server name.
    pub(super) tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub(super) timers: Timers,
    connect_pacer: Pacer,
    msg_pacer: Option<Pacer>,
    /// `--tick` (0: off).
    tick_ns: u64,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, ns: converts kernel receive timestamps.
    pub(super) real_minus_mono: i64,
    /// Next slot the stage may want opened.
    cursor: usize,
    second: u32,
    open_at_end: Option<u32>,
    heap_at_end: Option<u64>,
}

impl<S: Scenario> Worker<S> {
    pub fn new(id: usize, sh: Arc<Shared>, tx: Sender<Report>, sc: S) -> Result<Self, String> {
        let ep = Epoll::new().map_err(|e| format!("epoll_create1: {}", errno_name(e)))?;
        let n = sh.cfg.cores.len();
        let slots = share(sh.cfg.plan.max_target(), id, n) as usize;
        let t = &sh.cfg.target;
        let request = client_request(
            &t.host_header,
            &t.path_and_query,
            KEY_PLACEHOLDER,
            sh.cfg.origin.as_deref(),
            &sh.cfg.headers,
        );
        let key_at = request
            .windows(KEY_PLACEHOLDER.len())
            .position(|w| w == KEY_PLACEHOLDER.as_bytes())
            .ok_or("request template has no key")?;
        let msg_pacer = sc
            .rate()
            .map(|r| Pacer::new(r, sh.start_ns, SEND_MAX_LAG_NS));
        let connect_pacer = Pacer::new(
            sh.cfg.connect_rate / n as f64,
            sh.start_ns,
            CONNECT_MAX_LAG_NS,
        );
        let tick_ns = if sc.batches() { sh.cfg.tick_ns } else { 0 };
        let tls = match &sh.cfg.tls {
            Some(t) => Some((t.config()?, t.server_name.clone())),
            None => None,
        };
        Ok(Self {
            io: Io::new(id, sh, ep, slots),
            sc,
            tx,
            scratch: vec![0; SCRATCH],
            request,
            key_at,
            reqbuf: Vec::new(),
            plain: Vec::new(),
            tls,
            timers: Timers::default(),
            connect_pacer,
            msg_pacer,
            tick_ns,
            real_minus_mono: clock_offset(),
            cursor: 0,
            second: 0,
            open_at_end: None,
            heap_at_end: None,
        })
    }

    /// Runs until the plan ends (or the stop flag), then drains and closes. Bounded: every
    /// phase has a deadline.
    pub fn run(mut self) {
        let mut events = sys::event_buffer(1024);
        let (start_ns, total_ns) = (self.io.sh.start_ns, self.io.sh.cfg.plan.total_ns());
        loop {
            let now = payload::now_ns();
            let elapsed = now.saturating_sub(start_ns);
            let sec = (elapsed / 1_000_000_000).min(u32::MAX as u64) as u32;
            if sec != self.second {
                self.flush(false);
                self.second = sec;
                self.real_minus_mono = clock_offset();
            }
            let mut busy = false;
            let ticking = self.ticking();
            self.sc.turn(&self.io);
            match self.io.phase {
                Phase::Run => {
                    if elapsed >= total_ns || self.io.sh.stop.load(Ordering::Relaxed) {
                        self.begin_drain(now);
                        continue;
                    }
                    let stage = self.io.sh.cfg.plan.stage_at(elapsed);
                    if stage != self.io.stage {
                        self.set_stage(stage, now);
                    }
                    busy |= self.open_due(now);
                    let horizon = if ticking { now + self.tick_ns } else { now };
                    busy |= self.send_due(now, horizon);
                }
                Phase::Drain(until) => {
                    if (self.io.in_flight == 0 && self.sc.settled(&self.io, now)) || now >= until {
                        self.begin_close(now);
                        continue;
                    }
                }
                Phase::Close(until) => {
                    if (self.io.open.is_empty() && self.io.closing == 0) || now >= until {
                        break;
                    }
                }
            }
            self.timers(now);
            self.close_failed(now);
            let n = if busy {
                self.io.ep.wait_ns(&mut events, 0)
            } else if self.ticking() {
                let tick = self.tick_ns;
                let next_tick = start_ns + (elapsed / tick + 1) * tick;
                let wake = [self.sc.next_deadline(), self.timers.next_due()]
                    .into_iter()
                    .flatten()
                    .fold(next_tick, u64::min);
                sys::sleep_until(wake);
                self.io.ep.wait_ns(&mut events, 0)
            } else {
                self.io.ep.wait_ns(&mut events, self.next_wake(now))
            };
            if n > 0 {
                let now = payload::now_ns();
                for ev in events.iter().take(n) {
                    let (flags, tok) = (ev.events, ev.u64);
                    self.on_event(tok, flags, now);
                }
                self.close_failed(now);
            }
        }
        self.finish();
    }

    /// Whether sends and reads are batched per tick now (see `--tick`): only in an open
    /// loop while no connect is due or in progress, since connect and handshake times are
    /// taken in user space.
    fn ticking(&self) -> bool {
        self.tick_ns > 0
            && (self.msg_pacer.is_some() || self.sc.own_schedule())
            && self.io.phase == Phase::Run
            && self.io.pending == 0
            && self.cursor >= self.io.target
    }

    /// How long the loop may sleep: until the next paced event or timer, at most 10 ms.
    fn next_wake(&self, now: u64) -> u64 {
        let mut next = now + MAX_SLEEP_NS;
        if self.io.phase == Phase::Run {
            if self.cursor < self.io.target && !self.connect_pacer.unpaced() {
                next = next.min(self.connect_pacer.next_due_ns());
            }
            if let Some(p) = &self.msg_pacer {
                if self.sc.can_send(&self.io) {
                    next = next.min(p.next_due_ns());
                }
            }
        }
        for t in [self.sc.next_deadline(), self.timers.next_due()]
            .into_iter()
            .flatten()
        {
            next = next.min(t);
        }
        next.saturating_sub(now)
    }

    fn flush(&mut self, last: bool) {
        let stats = std::mem::take(&mut self.io.stats);
        let io = &self.io;
        let _ = self.tx.send(Report {
            worker: io.id,
            second: self.second,
            stage: if io.stage == usize::MAX { 0 } else { io.stage },
            stats,
            open: io.open.len() as u32,
            pending: io.pending,
            open_at_end: if last { self.open_at_end } else { None },
            slot_heap_bytes: if last { self.heap_at_end } else { None },
            fanout: self.sc.delta(),
        });
    }

    fn set_stage(&mut self, stage: usize, now: u64) {
        if self.io.stage != usize::MAX {
            self.flush(false);
        }
        self.io.stage = stage;
        let cfg = &self.io.sh.cfg;
        let total = cfg.plan.stages.get(stage).map_or(0, |s| s.target);
        let new = (share(total, self.io.id, cfg.cores.len()) as usize).min(self.io.conns.len());
        for idx in new..self.io.target.max(new) {
            self.retire(idx, now);
        }
        self.io.target = new;
        self.cursor = 0;
        self.connect_pacer.rebase(now);
    }

    /// Stops a slot the stage no longer wants: open connections get a Close 1000.
    fn retire(&mut self, idx: usize, now: u64) {
        match self.io.conns[idx].state {
            State::Open => self.start_close(idx, now),
            State::Connecting | State::Tls | State::Handshaking | State::Backoff => {
                self.close_fd(idx);
                self.io.conns[idx].state = State::Idle;
            }
            _ => {}
        }
    }

    /// Opens connections the schedule says are due. Returns whether work is left right now.
    fn open_due(&mut self, now: u64) -> bool {
        for _ in 0..BATCH {
            while self.cursor < self.io.target && self.io.conns[self.cursor].state != State::Idle {
                self.cursor += 1;
            }
            if self.cursor >= self.io.target {
                self.connect_pacer.rebase(now);
                return false;
            }
            if self.connect_pacer.unpaced() {
                if self.io.pending >= MAX_UNPACED_INFLIGHT {
                    return false;
                }
            } else if self.connect_pacer.take(now).is_none() {
                return false;
            }
            let idx = self.cursor;
            self.cursor += 1;
            self.start_connect(idx, now, false);
        }
        true
    }

    /// Sends the messages the constant-rate schedule says are due. Returns whether more are
    /// due right now.
    /// Messages intended up to `horizon` (≥ `now`) go now; one intended later than `now`
    /// is timed from `now`, when it is really sent.
    fn send_due(&mut self, now: u64, horizon: u64) -> bool {
        let Some(mut pacer) = self.msg_pacer.take() else {
            return false;
        };
        let mut more = false;
        if !self.sc.can_send(&self.io) {
            pacer.rebase(now); // no debt accumulates while nothing can send
        } else {
            let mut n = 0;
            while let Some(intended) = pacer.take(horizon) {
                self.sc.send_scheduled(&mut self.io, intended.min(now), now);
                n += 1;
                if n >= BATCH {
                    more = true;
                    break;
                }
                if !self.sc.can_send(&self.io) {
                    break;
                }
            }
        }
        self.msg_pacer = Some(pacer);
        more
    }

    fn timers(&mut self, now: u64) {
        while let Some((idx, gen)) = self.timers.connect.pop_due(now) {
            if self.live(idx, gen, State::Connecting) {
                self.connect_failed(idx, "connect_timeout", now);
            }
        }
        while let Some((idx, gen)) = self.timers.handshake.pop_due(now) {
            if self.live(idx, gen, State::Tls) {
                self.connect_failed(idx, "tls_handshake_timeout", now);
            } else if self.live(idx, gen, State::Handshaking) {
                self.connect_failed(idx, "handshake_timeout", now);
            }
        }
        while let Some((idx, gen)) = self.timers.close.pop_due(now) {
            if self.live(idx, gen, State::Closing) {
                self.finish_close(idx);
            }
        }
        while let Some((idx, gen)) = self.timers.ping.pop_due(now) {
            if self.io.phase == Phase::Run && self.live(idx, gen, State::Open) {
                self.send_ping(idx, now);
                if let Some(d) = self.sc.ping_interval_ns() {
                    self.timers.ping.push(now + d, idx, gen);
                }
            }
        }
        while let Some((idx, gen)) = self.timers.pop_backoff(now) {
            if self.io.phase == Phase::Run && self.live(idx, gen, State::Backoff) {
                self.start_connect(idx, now, true);
            }
        }
        self.sc.timers(&mut self.io, now);
    }

    pub(super) fn live(&self, idx: usize, gen: u32, state: State) -> bool {
        self.io
            .conns
            .get(idx)
            .is_some_and(|c| c.gen == gen && c.state == state)
    }

    fn send_ping(&mut self, idx: usize, now: u64) {
        let c = &mut self.io.conns[idx];
        if c.ping_ns == 0 {
            self.io.in_flight += 1;
        }
        c.ping_ns = now.max(1);
        let p = c.ping_ns.to_le_bytes();
        self.io.stats.c.pings_sent += 1;
        self.io.send_control(idx, op::PING, &p);
    }

    // ---------------------------------------------------------------------------------
    // Closing: every socket of a slot is closed here, and the scenario hears of it.
    // ---------------------------------------------------------------------------------

    /// Closes the sockets whose writes failed since the last call.
    pub(super) fn close_failed(&mut self, now: u64) {
        while let Some((idx, gen, e)) = self.io.errors.pop() {
            let idx = idx as usize;
            if self.io.conns[idx].gen == gen && self.io.conns[idx].fd >= 0 {
                self.on_io_error(idx, e, now);
            }
        }
        while let Some((idx, gen, class)) = self.io.failed.pop() {
            let idx = idx as usize;
            if self.io.conns[idx].gen == gen && self.io.conns[idx].fd >= 0 {
                self.lost(idx, &class, now);
            }
        }
    }

    pub(super) fn on_io_error(&mut self, idx: usize, e: i32, now: u64) {
        match self.io.conns[idx].state {
            State::Connecting | State::Tls | State::Handshaking => {
                self.connect_failed(idx, &errno_name(e), now)
            }
            State::Closing => self.finish_close(idx),
            _ => self.lost(idx, &errno_name(e), now),
        }
    }

    /// Slot `idx` leaves the Open state: off the open list, the scenario told.
    fn leave_open(&mut self, idx: usize) {
        self.io.unlist(idx);
        let _ = self
            .io
            .sh
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        self.sc.on_leave(&mut self.io, idx);
    }

    /// Closes the slot's socket and forgets its per-connection state; replies still
    /// outstanding are counted lost.
    pub(super) fn close_fd(&mut self, idx: usize) {
        let io = &mut self.io;
        let c = &mut io.conns[idx];
        if c.fd < 0 {
            return;
        }
        if let (Some(t), State::Closing) = (c.tls.as_mut(), c.state) {
            // A clean end: say so at the TLS layer too (best effort, nothing waits for it).
            let mut out = Vec::new();
            t.close_notify(&mut out);
            let _ = sys::write(c.fd, &out);
        }
        c.tls = None;
        sys::close(c.fd);
        c.fd = -1;
        c.gen = c.gen.wrapping_add(1);
        let lost = c.in_flight();
        io.stats.c.msgs_lost += lost;
        io.in_flight -= lost.min(io.in_flight);
        if c.ping_ns != 0 {
            io.in_flight = io.in_flight.saturating_sub(1);
        }
        c.sent = 0;
        c.recv = 0;
        c.hi = 0;
        c.ping_ns = 0;
        c.frag_op = 0;
        c.rbuf = Vec::new();
        c.wbuf = Vec::new();
        match c.state {
            State::Connecting | State::Tls | State::Handshaking => io.pending -= 1,
            State::Closing => io.closing -= 1,
            State::Open => self.leave_open(idx),
            _ => {}
        }
        self.sc.on_closed(&mut self.io, idx);
    }

    /// An established connection was lost (server close, reset, EOF, protocol error).
    pub(super) fn lost(&mut self, idx: usize, class: &str, now: u64) {
        let closing = self.io.conns[idx].state == State::Closing;
        let wanted = self.io.phase == Phase::Run && !closing && idx < self.io.target;
        if wanted {
            match self.sc.fail_label(&mut self.io, idx) {
                Some(step) => {
                    let class = format!("{class}:{step}");
                    self.io.stats.drop_conn(&class);
                }
                None => self.io.stats.drop_conn(class),
            }
        }
        self.close_fd(idx);
        if wanted {
            self.io.conns[idx].dropped = true;
            self.retry_or_give_up(idx, now);
        } else {
            self.io.conns[idx].state = State::Idle;
        }
    }

    /// Sends Close 1000 and waits (bounded) for the server's.
    fn start_close(&mut self, idx: usize, now: u64) {
        let payload = ws_common::frame::close::NORMAL.to_be_bytes();
        self.io.send_control(idx, op::CLOSE, &payload);
        let c = &mut self.io.conns[idx];
        if c.fd < 0 || c.state != State::Open {
            return;
        }
        c.state = State::Closing;
        let gen = c.gen;
        self.leave_open(idx);
        self.io.closing += 1;
        let wait = self.io.sh.cfg.drain_ns.max(100_000_000);
        self.timers.close.push(now + wait, idx, gen);
    }

    pub(super) fn finish_close(&mut self, idx: usize) {
        self.close_fd(idx);
        self.io.conns[idx].state = State::Idle;
    }

    fn begin_drain(&mut self, now: u64) {
        self.open_at_end = Some(self.io.open.len() as u32);
        self.heap_at_end = Some(self.io.slot_heap_bytes());
        for idx in 0..self.io.conns.len() {
            if matches!(
                self.io.conns[idx].state,
                State::Connecting | State::Tls | State::Handshaking | State::Backoff
            ) {
                self.close_fd(idx);
                self.io.conns[idx].state = State::Idle;
            }
        }
        self.io.phase = Phase::Drain(now + self.io.sh.cfg.drain_ns);
    }

    fn begin_close(&mut self, now: u64) {
        let open: Vec<u32> = self.io.open.clone();
        for idx in open {
            self.start_close(idx as usize, now);
        }
        self.close_failed(now);
        self.io.phase = Phase::Close(now + self.io.sh.cfg.drain_ns.max(100_000_000));
    }

    fn finish(mut self) {
        self.sc.finish(&mut self.io);
        for idx in 0..self.io.conns.len() {
            if self.io.conns[idx].fd >= 0 {
                self.finish_close(idx);
            }
        }
        self.flush(true);
    }
}
