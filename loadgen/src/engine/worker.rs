//! One worker per core: an edge-triggered epoll loop that owns its connection slots.
//!
//! Nothing on the hot path is shared: each worker has its own epoll instance, slots,
//! scratch buffers, timers and statistics, and sends statistics deltas to the main thread
//! over a channel at each second and stage boundary. The only shared state is a read-only
//! configuration and the stop flag (an atomic read once per loop turn).
//!
//! Timers need no wheel: connect timeouts, handshake timeouts and pings all have constant
//! delays, so pushing them in creation order keeps each FIFO sorted. Back-offs vary and
//! live in a small binary heap. Stale entries are skipped by comparing the slot's
//! generation, which is bumped whenever a socket is closed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use ws_common::errno::errno_name;
use ws_common::frame::{op, write_masked_frame};
use ws_common::handshake::{
    accept_key, client_request, encode_key, parse_response, ClientHandshakeError,
};
use ws_common::payload::{self, Stamp};

use crate::config::RunConfig;
use crate::engine::conn::{token, untoken, Conn, State};
use crate::engine::frame::{self, FrameError, Head};
use crate::engine::schedule::{share, Pacer};
use crate::engine::stats::{bump, record_ns, Stats};
use crate::engine::sys::{self, Epoll, EV_ERR, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};
use crate::scenario::fanout::{BcWorker, FanoutDelta, Published, SeqVerdict};
use crate::scenario::push::{self, Outcome, PushWorker, POST_BIT};
use crate::scenario::{self, OnOpen, Scenario, Verdict};

/// Per-worker read buffer.
const SCRATCH: usize = 64 * 1024;
/// Unsent bytes a connection may queue before scheduled sends are skipped.
const WBUF_LIMIT: usize = 1 << 20;
/// Connects in flight per worker when `--connect-rate 0`.
const MAX_UNPACED_INFLIGHT: u32 = 1024;
/// Most connects or sends started per loop turn, so I/O is never starved.
const BATCH: usize = 512;
/// How far a pacer may fall behind before the deficit is forgiven (no catch-up burst).
const CONNECT_MAX_LAG_NS: u64 = 10_000_000;
/// Back-off: first delay and cap.
const BACKOFF_BASE_NS: u64 = 100_000_000;
const BACKOFF_MAX_NS: u64 = 5_000_000_000;
/// Placeholder key in the pre-built request (24 base64 characters, like a real key).
const KEY_PLACEHOLDER: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
/// Broadcast drain: once every expected delivery has arrived, how long a worker must have
/// received nothing before it stops waiting.
const FANOUT_QUIET_NS: u64 = 50_000_000;

/// What the main thread needs to run and account for the workers.
pub struct Shared {
    pub cfg: RunConfig,
    pub scenario: Scenario,
    /// CLOCK_MONOTONIC ns at which the run started.
    pub start_ns: u64,
    /// Set on SIGINT: workers stop as if the run had ended.
    pub stop: Arc<AtomicBool>,
    /// Broadcast figures every worker needs (untouched in other scenarios).
    pub fan: FanShared,
}

impl Shared {
    /// The shared state of a run starting now-ish (`start_ns`) with configuration `cfg`.
    pub fn new(cfg: RunConfig, start_ns: u64, stop: Arc<AtomicBool>) -> Self {
        Self {
            scenario: Scenario::from_config(&cfg),
            start_ns,
            stop,
            fan: FanShared::default(),
            cfg,
        }
    }
}

/// The few broadcast figures that cross workers: updated at connect and close, once per
/// published message, and once per loop turn with the deliveries received since the last.
#[derive(Debug, Default)]
pub struct FanShared {
    /// Connections open, all workers: the subscribers a message published now should reach.
    pub open: AtomicU64,
    /// Deliveries expected so far, all publishers.
    pub expected: AtomicU64,
    /// Deliveries received so far, all subscribers.
    pub received: AtomicU64,
}

/// A statistics delta from one worker.
#[derive(Debug)]
pub struct Report {
    pub worker: usize,
    /// Second of the run the delta belongs to.
    pub second: u32,
    pub stage: usize,
    pub stats: Stats,
    /// Connections open when the delta was cut.
    pub open: u32,
    /// Connects in progress (TCP or handshake) when the delta was cut.
    pub pending: u32,
    /// Set on the last report: connections open when the run's end was reached.
    pub open_at_end: Option<u32>,
    /// Set on the last report: heap bytes connection slots held at the end of the run.
    pub slot_heap_bytes: Option<u64>,
    /// Broadcast: messages published and delivered in the interval, for the main thread's
    /// "all delivered" merge.
    pub fanout: Option<Box<FanoutDelta>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Run,
    /// No new sends or connects; waiting for outstanding replies until the deadline.
    Drain(u64),
    /// Our Close sent; waiting for the server's until the deadline.
    Close(u64),
}

type Timer = (u64, u32, u32); // (due ns, slot, generation)

/// Takes the first timer of a FIFO timer queue if it is due by `now`: (slot, generation).
/// Each queue has one fixed delay, so timers fall due in the order they were queued.
#[inline]
fn pop_due(q: &mut VecDeque<Timer>, now: u64) -> Option<(u32, u32)> {
    match q.front() {
        Some(&(due, idx, gen)) if due <= now => {
            q.pop_front();
            Some((idx, gen))
        }
        _ => None,
    }
}

pub struct Worker {
    id: usize,
    sh: Arc<Shared>,
    tx: Sender<Report>,
    ep: Epoll,
    conns: Vec<Conn>,
    /// Slots in state Open, for round-robin sends.
    open: Vec<u32>,
    rr: usize,
    /// Slots connecting or handshaking.
    pending: u32,
    /// Slots in state Closing.
    closing: u32,
    /// Replies (and pongs) still expected on live connections.
    in_flight: u64,
    scratch: Vec<u8>,
    out: Vec<u8>,
    msg: Vec<u8>,
    request: Vec<u8>,
    key_at: usize,
    rng: u64,
    src: Vec<IpAddr>,
    src_next: usize,
    connect_timeouts: VecDeque<Timer>,
    handshake_timeouts: VecDeque<Timer>,
    close_timeouts: VecDeque<Timer>,
    pings: VecDeque<Timer>,
    backoffs: BinaryHeap<Reverse<Timer>>,
    connect_pacer: Pacer,
    msg_pacer: Option<Pacer>,
    /// This worker's share of the current stage's target.
    target: usize,
    stage: usize,
    cursor: usize,
    phase: Phase,
    stats: Stats,
    second: u32,
    open_at_end: Option<u32>,
    heap_at_end: Option<u64>,
    /// Broadcast state (None in other scenarios).
    bc: Option<Box<BcWorker>>,
    /// Broadcast: local publishers (slots `0..n`) open now.
    open_publishers: u32,
    /// Push state (None in other scenarios).
    push: Option<Box<PushWorker>>,
    outcomes: Vec<Outcome>,
}

fn xorshift(s: &mut u64) -> u64 {
    let mut x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    x
}

impl Worker {
    pub fn new(id: usize, sh: Arc<Shared>, tx: Sender<Report>) -> Result<Self, String> {
        let ep = Epoll::new().map_err(|e| format!("epoll_create1: {}", errno_name(e)))?;
        let n = sh.cfg.cores.len();
        let slots = share(sh.cfg.plan.max_target(), id, n) as usize;
        let mut conns = Vec::with_capacity(slots);
        conns.resize_with(slots, Conn::default);
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
        let total_rate = sh.scenario.open_loop_rate();
        let max = sh.cfg.plan.max_target().max(1) as f64;
        let local_pubs = sh.scenario.local_publishers(id);
        let msg_pacer = total_rate.map(|r| {
            // This worker's part of the total rate, in proportion to its connections (to
            // its publishers for broadcast).
            let part = match sh.scenario {
                Scenario::Broadcast { publishers, .. } => {
                    r * local_pubs as f64 / publishers.max(1) as f64
                }
                _ => r * slots as f64 / max,
            };
            // Sends may be caught up for up to 1 s: falling behind shows as latency (from
            // the intended time), never as a silently lower rate.
            Pacer::new(part, sh.start_ns, 1_000_000_000)
        });
        let connect_pacer = Pacer::new(
            sh.cfg.connect_rate / n as f64,
            sh.start_ns,
            CONNECT_MAX_LAG_NS,
        );
        let msg = sh
            .scenario
            .payload()
            .map(|p| vec![b'x'; p])
            .unwrap_or_default();
        let mut rng = rand::random::<u64>() | 1;
        xorshift(&mut rng);
        let src = sh.cfg.source_ips.clone();
        let bc = match sh.scenario {
            Scenario::Broadcast { publishers, .. } => {
                Some(Box::new(BcWorker::new(slots, publishers, local_pubs)))
            }
            _ => None,
        };
        let push = sh.scenario.is_push().then(|| {
            Box::new(PushWorker::new(
                sh.cfg.push_concurrency,
                sh.cfg.target.host_header.clone(),
                sh.cfg.handshake_timeout_ns,
            ))
        });
        Ok(Self {
            id,
            target: 0,
            stage: usize::MAX,
            tx,
            ep,
            conns,
            open: Vec::new(),
            rr: 0,
            pending: 0,
            closing: 0,
            in_flight: 0,
            scratch: vec![0; SCRATCH],
            out: Vec::with_capacity(SCRATCH),
            msg,
            request,
            key_at,
            rng,
            src_next: id,
            src,
            connect_timeouts: VecDeque::new(),
            handshake_timeouts: VecDeque::new(),
            close_timeouts: VecDeque::new(),
            pings: VecDeque::new(),
            backoffs: BinaryHeap::new(),
            connect_pacer,
            msg_pacer,
            cursor: 0,
            phase: Phase::Run,
            stats: Stats::default(),
            second: 0,
            open_at_end: None,
            heap_at_end: None,
            bc,
            open_publishers: 0,
            push,
            outcomes: Vec::new(),
            sh,
        })
    }

    fn sender_id(&self, idx: usize) -> u32 {
        scenario::sender_id(self.id, idx)
    }

    /// Runs until the plan ends (or the stop flag), then drains and closes. Bounded: every
    /// phase has a deadline.
    pub fn run(mut self) {
        let mut events = sys::event_buffer(1024);
        loop {
            let now = payload::now_ns();
            let elapsed = now.saturating_sub(self.sh.start_ns);
            let sec = (elapsed / 1_000_000_000).min(u32::MAX as u64) as u32;
            if sec != self.second {
                self.flush(false);
                self.second = sec;
            }
            let mut busy = false;
            self.fan_sync();
            match self.phase {
                Phase::Run => {
                    if elapsed >= self.sh.cfg.plan.total_ns()
                        || self.sh.stop.load(Ordering::Relaxed)
                    {
                        self.begin_drain(now);
                        continue;
                    }
                    let stage = self.sh.cfg.plan.stage_at(elapsed);
                    if stage != self.stage {
                        self.set_stage(stage, now);
                    }
                    busy |= self.open_due(now);
                    busy |= self.send_due(now);
                }
                Phase::Drain(until) => {
                    if (self.in_flight == 0 && self.fan_settled(now)) || now >= until {
                        self.begin_close(now);
                        continue;
                    }
                }
                Phase::Close(until) => {
                    if (self.open.is_empty() && self.closing == 0) || now >= until {
                        break;
                    }
                }
            }
            self.timers(now);
            let timeout_ns = if busy { 0 } else { self.next_wake(now) };
            let n = self.ep.wait_ns(&mut events, timeout_ns);
            if n > 0 {
                let now = payload::now_ns();
                for ev in events.iter().take(n) {
                    let (flags, tok) = (ev.events, ev.u64);
                    self.on_event(tok, flags, now);
                }
            }
        }
        self.finish();
    }

    /// How long the loop may sleep: until the next paced event or timer, at most 10 ms.
    fn next_wake(&self, now: u64) -> u64 {
        let mut next = now + 10_000_000;
        if self.phase == Phase::Run {
            if self.cursor < self.target && !self.connect_pacer.unpaced() {
                next = next.min(self.connect_pacer.next_due_ns());
            }
            if let Some(p) = &self.msg_pacer {
                let room = self.push.as_ref().is_none_or(|p| p.has_room());
                if self.has_sender() && room {
                    next = next.min(p.next_due_ns());
                }
            }
        }
        if let Some(d) = self.push.as_ref().and_then(|p| p.next_deadline()) {
            next = next.min(d);
        }
        let fronts = [
            self.connect_timeouts.front(),
            self.handshake_timeouts.front(),
            self.close_timeouts.front(),
            self.pings.front(),
            self.backoffs.peek().map(|r| &r.0),
        ];
        for t in fronts.into_iter().flatten() {
            next = next.min(t.0);
        }
        next.saturating_sub(now)
    }

    fn flush(&mut self, last: bool) {
        let stats = std::mem::take(&mut self.stats);
        let heap = if last { self.heap_at_end } else { None };
        let _ = self.tx.send(Report {
            worker: self.id,
            second: self.second,
            stage: if self.stage == usize::MAX {
                0
            } else {
                self.stage
            },
            stats,
            open: self.open.len() as u32,
            pending: self.pending,
            open_at_end: if last { self.open_at_end } else { None },
            slot_heap_bytes: heap,
            fanout: self.bc.as_mut().and_then(|b| b.take_delta()),
        });
    }

    /// Broadcast: adds the deliveries received since the last call to the shared count.
    fn fan_sync(&mut self) {
        if let Some(bc) = self.bc.as_mut() {
            if bc.unsynced > 0 {
                self.sh
                    .fan
                    .received
                    .fetch_add(bc.unsynced, Ordering::Relaxed);
                bc.unsynced = 0;
            }
        }
    }

    /// Broadcast drain: every expected delivery has arrived (all workers) and this worker
    /// has been quiet for a moment. Always true in other scenarios.
    fn fan_settled(&self, now: u64) -> bool {
        let Some(bc) = self.bc.as_ref() else {
            return true;
        };
        let f = &self.sh.fan;
        f.received.load(Ordering::Relaxed) >= f.expected.load(Ordering::Relaxed)
            && now.saturating_sub(bc.last_recv_ns) >= FANOUT_QUIET_NS
    }

    /// Whether a scheduled message has a connection to go on: any open connection (echo,
    /// push) or an open local publisher (broadcast).
    fn has_sender(&self) -> bool {
        if self.bc.is_some() {
            self.open_publishers > 0
        } else {
            !self.open.is_empty()
        }
    }

    /// Bookkeeping when slot `idx` enters (`opened`) or leaves the Open state.
    fn open_changed(&mut self, idx: usize, opened: bool) {
        let Some(bc) = self.bc.as_ref() else {
            return;
        };
        let publisher = idx < bc.local_publishers();
        let open = &self.sh.fan.open;
        if opened {
            open.fetch_add(1, Ordering::Relaxed);
            self.open_publishers += u32::from(publisher);
        } else {
            let _ = open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
            self.open_publishers -= u32::from(publisher).min(self.open_publishers);
        }
    }

    fn set_stage(&mut self, stage: usize, now: u64) {
        if self.stage != usize::MAX {
            self.flush(false);
        }
        self.stage = stage;
        let n = self.sh.cfg.cores.len();
        let total = self.sh.cfg.plan.stages.get(stage).map_or(0, |s| s.target);
        let new = (share(total, self.id, n) as usize).min(self.conns.len());
        for idx in new..self.target.max(new) {
            self.retire(idx, now);
        }
        self.target = new;
        self.cursor = 0;
        self.connect_pacer.rebase(now);
    }

    /// Stops a slot the stage no longer wants: open connections get a Close 1000.
    fn retire(&mut self, idx: usize, now: u64) {
        match self.conns[idx].state {
            State::Open => self.start_close(idx, now),
            State::Connecting | State::Handshaking | State::Backoff => {
                self.close_fd(idx);
                self.conns[idx].state = State::Idle;
            }
            _ => {}
        }
    }

    /// Opens connections the schedule says are due. Returns whether work is left right now.
    fn open_due(&mut self, now: u64) -> bool {
        for _ in 0..BATCH {
            while self.cursor < self.target && self.conns[self.cursor].state != State::Idle {
                self.cursor += 1;
            }
            if self.cursor >= self.target {
                self.connect_pacer.rebase(now);
                return false;
            }
            if self.connect_pacer.unpaced() {
                if self.pending >= MAX_UNPACED_INFLIGHT {
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

    /// Sends the messages the constant-rate schedule says are due: round-robin over the
    /// open connections (echo), over the open publishers (broadcast), or as POSTs to random
    /// open connections (push). Returns whether more are due right now.
    fn send_due(&mut self, now: u64) -> bool {
        let Some(mut pacer) = self.msg_pacer.take() else {
            return false;
        };
        let mut more = false;
        if !self.has_sender() {
            pacer.rebase(now); // no debt accumulates while nothing can send
        } else {
            let mut n = 0;
            // Push: with every POST slot busy, the schedule falls behind (up to 1 s, then
            // forgiven) and the delay shows in the latency from the intended time.
            while self.push.as_ref().is_none_or(|p| p.has_room()) {
                let Some(intended) = pacer.take(now) else {
                    break;
                };
                if !self.has_sender() {
                    break;
                }
                self.send_scheduled(intended, now);
                n += 1;
                if n >= BATCH {
                    more = true;
                    break;
                }
            }
        }
        self.msg_pacer = Some(pacer);
        more
    }

    /// One scheduled message, intended at `intended`.
    fn send_scheduled(&mut self, intended: u64, now: u64) {
        match self.sh.scenario {
            Scenario::Broadcast { .. } => {
                let conns = &self.conns;
                let next = self
                    .bc
                    .as_mut()
                    .and_then(|bc| bc.next_publisher(|k| conns[k].state == State::Open));
                if let Some(idx) = next {
                    self.publish(idx, intended);
                }
            }
            Scenario::Push { .. } => {
                let pick = xorshift(&mut self.rng) as usize % self.open.len().max(1);
                if let Some(&idx) = self.open.get(pick) {
                    self.push_to(idx as usize, intended, now);
                }
            }
            _ => {
                self.rr = (self.rr + 1) % self.open.len().max(1);
                if let Some(&idx) = self.open.get(self.rr) {
                    self.send_message(idx as usize, intended);
                }
            }
        }
    }

    fn timers(&mut self, now: u64) {
        while let Some((idx, gen)) = pop_due(&mut self.connect_timeouts, now) {
            if self.live(idx, gen, State::Connecting) {
                self.connect_failed(idx as usize, "connect_timeout", now);
            }
        }
        while let Some((idx, gen)) = pop_due(&mut self.handshake_timeouts, now) {
            if self.live(idx, gen, State::Handshaking) {
                self.connect_failed(idx as usize, "handshake_timeout", now);
            }
        }
        while let Some((idx, gen)) = pop_due(&mut self.close_timeouts, now) {
            if self.live(idx, gen, State::Closing) {
                self.finish_close(idx as usize);
            }
        }
        while let Some((idx, gen)) = pop_due(&mut self.pings, now) {
            if self.phase == Phase::Run && self.live(idx, gen, State::Open) {
                self.send_ping(idx as usize, now);
                if let Scenario::Hold { interval_ns } = self.sh.scenario {
                    self.pings.push_back((now + interval_ns, idx, gen));
                }
            }
        }
        while let Some(&Reverse((due, idx, gen))) = self.backoffs.peek() {
            if due > now {
                break;
            }
            self.backoffs.pop();
            if self.phase == Phase::Run && self.live(idx, gen, State::Backoff) {
                self.start_connect(idx as usize, now, true);
            }
        }
        if let Some(p) = self.push.as_mut() {
            let mut out = std::mem::take(&mut self.outcomes);
            p.timers(now, &mut out);
            for o in out.drain(..) {
                self.on_push_outcome(o);
            }
            self.outcomes = out;
        }
    }

    fn live(&self, idx: u32, gen: u32, state: State) -> bool {
        self.conns
            .get(idx as usize)
            .is_some_and(|c| c.gen == gen && c.state == state)
    }

    // ---------------------------------------------------------------------------------
    // Connecting
    // ---------------------------------------------------------------------------------

    fn start_connect(&mut self, idx: usize, now: u64, retry: bool) {
        self.stats.c.connects_attempted += 1;
        if retry {
            self.stats.c.retries += 1;
        }
        let dest = self.sh.cfg.target.addr;
        let fd = match sys::tcp_socket(&dest) {
            Ok(fd) => fd,
            Err(e) => return self.connect_failed(idx, &errno_name(e), now),
        };
        let c = &mut self.conns[idx];
        c.fd = fd;
        c.state = State::Connecting;
        c.t_ns = now;
        self.pending += 1;
        if !self.src.is_empty() {
            let ip = self.src[self.src_next % self.src.len()];
            self.src_next = self.src_next.wrapping_add(1);
            if let Err(e) = sys::bind_source(fd, ip) {
                return self.connect_failed(idx, &errno_name(e), now);
            }
        }
        let done = match sys::connect(fd, &dest) {
            Ok(done) => done,
            Err(e) => return self.connect_failed(idx, &errno_name(e), now),
        };
        let gen = self.conns[idx].gen;
        if let Err(e) = self.ep.add(fd, token(idx, gen)) {
            return self.connect_failed(idx, &errno_name(e), now);
        }
        if done {
            self.on_connected(idx, now);
        } else {
            self.connect_timeouts.push_back((
                now + self.sh.cfg.connect_timeout_ns,
                idx as u32,
                gen,
            ));
        }
    }

    fn on_connected(&mut self, idx: usize, now: u64) {
        let c = &mut self.conns[idx];
        record_ns(&mut self.stats.h.connect, now.saturating_sub(c.t_ns));
        c.state = State::Handshaking;
        c.t_ns = now;
        let gen = c.gen;
        self.handshake_timeouts.push_back((
            now + self.sh.cfg.handshake_timeout_ns,
            idx as u32,
            gen,
        ));
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&xorshift(&mut self.rng).to_le_bytes());
        raw[8..].copy_from_slice(&xorshift(&mut self.rng).to_le_bytes());
        self.conns[idx].key = raw;
        let key = encode_key(raw);
        let mut req = std::mem::take(&mut self.out);
        req.clear();
        if self.push.is_some() {
            // Push: each connection registers its own user id, so no shared template.
            let t = &self.sh.cfg.target;
            let user = push::user_id(self.sender_id(idx), gen);
            let sep = if t.path_and_query.contains('?') {
                '&'
            } else {
                '?'
            };
            let path = format!("{}{sep}user={user}", t.path_and_query);
            req.extend_from_slice(&client_request(
                &t.host_header,
                &path,
                &key,
                self.sh.cfg.origin.as_deref(),
                &self.sh.cfg.headers,
            ));
        } else {
            req.extend_from_slice(&self.request);
            req[self.key_at..self.key_at + key.len()].copy_from_slice(key.as_bytes());
        }
        self.send_bytes(idx, &req);
        self.out = req;
    }

    /// A connect or handshake failed: count it by class, close, maybe retry.
    fn connect_failed(&mut self, idx: usize, class: &str, now: u64) {
        self.stats.fail(class);
        self.close_fd(idx);
        self.retry_or_give_up(idx, now);
    }

    fn retry_or_give_up(&mut self, idx: usize, now: u64) {
        let max_tries = self.sh.cfg.reconnect_max_tries;
        let c = &mut self.conns[idx];
        if self.phase != Phase::Run || idx >= self.target {
            c.state = State::Idle;
            return;
        }
        c.tries = c.tries.saturating_add(1);
        if c.tries > max_tries {
            c.state = State::GaveUp;
            self.stats.c.gave_up += 1;
            return;
        }
        let exp = BACKOFF_BASE_NS.saturating_mul(1u64 << (c.tries - 1).min(20));
        let d = exp.min(BACKOFF_MAX_NS);
        let jitter = xorshift(&mut self.rng) % (d / 2 + 1);
        c.state = State::Backoff;
        self.backoffs
            .push(Reverse((now + d / 2 + jitter, idx as u32, c.gen)));
    }

    fn established(&mut self, idx: usize, now: u64) {
        let c = &mut self.conns[idx];
        record_ns(&mut self.stats.h.handshake, now.saturating_sub(c.t_ns));
        c.state = State::Open;
        c.tries = 0;
        if c.dropped {
            c.dropped = false;
            self.stats.c.reconnects += 1;
        }
        c.open_pos = self.open.len() as u32;
        let gen = c.gen;
        self.open.push(idx as u32);
        self.pending -= 1;
        self.stats.c.connects_established += 1;
        self.open_changed(idx, true);
        match self.sh.scenario.on_open() {
            OnOpen::Nothing => {}
            OnOpen::PingIn(d) => self.pings.push_back((now + d, idx as u32, gen)),
            OnOpen::Send => {
                if self.phase == Phase::Run {
                    if self.bc.is_some() {
                        if idx < self.bc.as_ref().map_or(0, |b| b.local_publishers()) {
                            self.publish(idx, now);
                        }
                    } else {
                        self.send_message(idx, now);
                    }
                }
            }
        }
    }

    /// Closes the slot's socket and forgets its per-connection state; replies still
    /// outstanding are counted lost.
    fn close_fd(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if c.fd < 0 {
            return;
        }
        sys::close(c.fd);
        c.fd = -1;
        c.gen = c.gen.wrapping_add(1);
        let lost = c.in_flight();
        self.stats.c.msgs_lost += lost;
        self.in_flight -= lost.min(self.in_flight);
        if c.ping_ns != 0 {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        c.sent = 0;
        c.recv = 0;
        c.hi = 0;
        c.ping_ns = 0;
        c.frag_op = 0;
        c.rbuf = Vec::new();
        c.wbuf = Vec::new();
        if let Some(bc) = self.bc.as_mut() {
            bc.reset_slot(idx);
        }
        match c.state {
            State::Connecting | State::Handshaking => self.pending -= 1,
            State::Closing => self.closing -= 1,
            State::Open => {
                let pos = c.open_pos as usize;
                c.open_pos = u32::MAX;
                self.open.swap_remove(pos);
                if let Some(&moved) = self.open.get(pos) {
                    self.conns[moved as usize].open_pos = pos as u32;
                }
                self.open_changed(idx, false);
            }
            _ => {}
        }
    }

    /// An established connection was lost (server close, reset, EOF, protocol error).
    fn lost(&mut self, idx: usize, class: &str, now: u64) {
        let c = &self.conns[idx];
        let closing = c.state == State::Closing;
        let wanted = self.phase == Phase::Run && !closing && idx < self.target;
        if wanted {
            self.stats.drop_conn(class);
        }
        self.close_fd(idx);
        if wanted {
            self.conns[idx].dropped = true;
            self.retry_or_give_up(idx, now);
        } else {
            self.conns[idx].state = State::Idle;
        }
    }

    // ---------------------------------------------------------------------------------
    // I/O
    // ---------------------------------------------------------------------------------

    fn on_event(&mut self, tok: u64, flags: u32, now: u64) {
        let (idx, gen) = untoken(tok);
        if idx & POST_BIT != 0 {
            let o = self
                .push
                .as_mut()
                .and_then(|p| p.on_event(idx & !POST_BIT, gen, flags, now));
            if let Some(o) = o {
                self.on_push_outcome(o);
            }
            return;
        }
        let Some(c) = self.conns.get(idx) else {
            return;
        };
        if c.gen != gen || c.fd < 0 {
            return;
        }
        if c.state == State::Connecting {
            if flags & (EV_OUT | EV_ERR | EV_HUP) == 0 {
                return;
            }
            match sys::so_error(c.fd) {
                0 => self.on_connected(idx, now),
                e => return self.connect_failed(idx, &errno_name(e), now),
            }
        } else if flags & EV_OUT != 0 {
            self.flush_wbuf(idx, now);
        }
        if flags & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0 && self.conns[idx].gen == gen {
            self.read_all(idx, gen, now);
        }
    }

    fn read_all(&mut self, idx: usize, gen: u32, now: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            let fd = self.conns[idx].fd;
            match sys::read(fd, &mut scratch) {
                Ok(0) => {
                    self.on_eof(idx, now);
                    break;
                }
                Ok(n) => {
                    self.on_bytes(idx, gen, &scratch[..n], now);
                    if self.conns[idx].gen != gen || n < scratch.len() {
                        break;
                    }
                }
                Err(libc::EAGAIN) => break,
                Err(e) => {
                    self.on_io_error(idx, e, now);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_eof(&mut self, idx: usize, now: u64) {
        match self.conns[idx].state {
            State::Handshaking => self.connect_failed(idx, "closed_during_handshake", now),
            State::Closing => self.finish_close(idx),
            _ => self.lost(idx, "eof", now),
        }
    }

    fn on_io_error(&mut self, idx: usize, e: i32, now: u64) {
        match self.conns[idx].state {
            State::Connecting | State::Handshaking => self.connect_failed(idx, &errno_name(e), now),
            State::Closing => self.finish_close(idx),
            _ => self.lost(idx, &errno_name(e), now),
        }
    }

    /// New bytes for slot `idx`: handshake response first, then frames.
    fn on_bytes(&mut self, idx: usize, gen: u32, data: &[u8], now: u64) {
        if self.conns[idx].rbuf.is_empty() {
            let used = self.process(idx, gen, data, now);
            if self.conns[idx].gen == gen && used < data.len() {
                self.stash(idx, &data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.conns[idx].rbuf);
            buf.extend_from_slice(data);
            let used = self.process(idx, gen, &buf, now);
            if self.conns[idx].gen == gen && used < buf.len() {
                buf.drain(..used);
                self.conns[idx].rbuf = buf;
            }
        }
    }

    /// Keeps an incomplete frame; sized once for the whole frame when its header is known.
    fn stash(&mut self, idx: usize, rest: &[u8]) {
        let want = match frame::parse(rest, self.sh.cfg.max_frame) {
            Ok(Some(h)) => h.total_len(),
            _ => rest.len(),
        };
        let rb = &mut self.conns[idx].rbuf;
        // Sized for the whole frame when it is announced, but never more than 1 MiB up front:
        // a server announcing huge frames makes us grow as bytes arrive, not allocate at once.
        rb.reserve_exact(want.min(1 << 20).max(rest.len()));
        rb.extend_from_slice(rest);
    }

    /// Consumes what it can of `buf`; returns the bytes used (the rest is incomplete).
    fn process(&mut self, idx: usize, gen: u32, buf: &[u8], now: u64) -> usize {
        let mut pos = 0;
        if self.conns[idx].state == State::Handshaking {
            let accept = accept_key(encode_key(self.conns[idx].key).as_bytes());
            match parse_response(buf, &accept) {
                Ok(None) => return 0,
                Ok(Some(n)) => {
                    pos = n;
                    self.established(idx, now);
                }
                Err(e) => {
                    let class = match e {
                        ClientHandshakeError::Status(s) => format!("http_{s}"),
                        ClientHandshakeError::BadAccept => "bad_accept".into(),
                        ClientHandshakeError::Malformed => "malformed_response".into(),
                        ClientHandshakeError::TooLarge => "response_too_large".into(),
                    };
                    self.connect_failed(idx, &class, now);
                    return buf.len();
                }
            }
        }
        while pos < buf.len() {
            let h = match frame::parse(&buf[pos..], self.sh.cfg.max_frame) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    self.violation(idx, e, now);
                    return buf.len();
                }
            };
            if buf.len() - pos < h.total_len() {
                break;
            }
            let payload = &buf[pos + h.header_len..pos + h.total_len()];
            pos += h.total_len();
            self.on_frame(idx, h, payload, now);
            if self.conns[idx].gen != gen {
                return buf.len();
            }
        }
        pos
    }

    fn violation(&mut self, idx: usize, e: FrameError, now: u64) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let mut p = e.close_code().to_be_bytes().to_vec();
        p.extend_from_slice(e.label().as_bytes());
        let mask = self.mask();
        write_masked_frame(&mut out, op::CLOSE, &p, mask);
        self.send_bytes(idx, &out);
        self.out = out;
        if self.conns[idx].fd >= 0 {
            self.lost(idx, &format!("protocol_error_{}", e.label()), now);
        }
    }

    fn on_frame(&mut self, idx: usize, h: Head, payload: &[u8], now: u64) {
        match h.opcode {
            op::TEXT | op::BINARY => {
                if self.conns[idx].frag_op != 0 {
                    return self.violation(idx, FrameError::UnknownOpcode, now);
                }
                if !h.fin {
                    self.conns[idx].frag_op = h.opcode;
                }
                self.on_data(idx, payload, now);
            }
            op::CONTINUATION => {
                if self.conns[idx].frag_op == 0 {
                    return self.violation(idx, FrameError::UnknownOpcode, now);
                }
                self.stats.c.bytes_received += payload.len() as u64;
                if h.fin {
                    self.conns[idx].frag_op = 0;
                }
            }
            op::PING => self.send_control(idx, op::PONG, payload),
            op::PONG => {
                let c = &mut self.conns[idx];
                if c.ping_ns != 0 && payload == c.ping_ns.to_le_bytes() {
                    record_ns(&mut self.stats.h.pong, now.saturating_sub(c.ping_ns));
                    c.ping_ns = 0;
                    self.stats.c.pongs_received += 1;
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
            }
            _ => {
                // Close.
                let code = frame::close_code(payload);
                if self.conns[idx].state == State::Closing {
                    self.stats.c.clean_closes += 1;
                    self.finish_close(idx);
                    return;
                }
                let label = code.map_or_else(|| "none".to_string(), |c| c.to_string());
                bump(&mut self.stats.close_codes, &label);
                // Answer with the same code (RFC 6455 §5.5.1), then let go.
                let echo: Vec<u8> = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                self.send_control(idx, op::CLOSE, &echo);
                if self.conns[idx].fd >= 0 {
                    self.lost(idx, &format!("close_{label}"), now);
                }
            }
        }
    }

    fn on_data(&mut self, idx: usize, payload: &[u8], now: u64) {
        self.stats.c.bytes_received += payload.len() as u64;
        let sender = self.sender_id(idx);
        let c = &mut self.conns[idx];
        match self.sh.scenario.judge(sender, c.sent, payload) {
            Verdict::Echo { seq, sent_ns } => {
                c.recv += 1;
                self.stats.c.msgs_received += 1;
                self.in_flight = self.in_flight.saturating_sub(1);
                if seq >= c.hi {
                    c.hi = seq + 1;
                } else {
                    self.stats.c.msgs_out_of_order += 1;
                }
                // A push is judged like an echo; its latency is a delivery latency.
                let h = if self.push.is_some() {
                    &mut self.stats.h.delivery
                } else {
                    &mut self.stats.h.rtt
                };
                if sent_ns >= self.sh.start_ns + self.sh.cfg.warmup_ns {
                    record_ns(h, now.saturating_sub(sent_ns));
                } else {
                    self.stats.c.latency_warmup_excluded += 1;
                }
                if self.sh.scenario.send_on_reply()
                    && self.phase == Phase::Run
                    && c.state == State::Open
                {
                    self.send_message(idx, now);
                }
            }
            Verdict::Delivery {
                publisher,
                sender: from,
                seq,
                sent_ns,
            } => {
                self.stats.c.msgs_received += 1;
                if sent_ns >= self.sh.start_ns + self.sh.cfg.warmup_ns {
                    record_ns(&mut self.stats.h.delivery, now.saturating_sub(sent_ns));
                } else {
                    self.stats.c.latency_warmup_excluded += 1;
                }
                let Some(bc) = self.bc.as_mut() else {
                    return;
                };
                match bc.on_delivery(idx, publisher, seq, sent_ns, now) {
                    SeqVerdict::InOrder => {}
                    SeqVerdict::Gap(n) => self.stats.c.fanout_gaps += n,
                    SeqVerdict::Late => self.stats.c.msgs_out_of_order += 1,
                    SeqVerdict::Duplicate => self.stats.c.fanout_duplicates += 1,
                }
                // Closed loop: a publisher's own latest message is back; send the next.
                if from == sender
                    && bc.last_seq(idx) == Some(seq)
                    && self.sh.scenario.send_on_reply()
                    && self.phase == Phase::Run
                    && self.conns[idx].state == State::Open
                {
                    self.publish(idx, now);
                }
            }
            Verdict::Unexpected => self.stats.c.msgs_unexpected += 1,
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        (xorshift(&mut self.rng) as u32).to_ne_bytes()
    }

    /// Sends one stamped message, intended at `intended_ns` (the RTT is measured from it).
    fn send_message(&mut self, idx: usize, intended_ns: u64) {
        let c = &self.conns[idx];
        if c.wbuf.len() > WBUF_LIMIT {
            self.stats.c.sends_skipped_backpressure += 1;
            return;
        }
        let stamp = Stamp {
            sender: self.sender_id(idx),
            seq: c.sent,
            sent_ns: intended_ns,
        };
        self.conns[idx].sent += 1;
        self.in_flight += 1;
        self.write_stamped(idx, stamp);
    }

    /// Broadcast: publisher slot `idx` sends its next message, intended at `intended_ns`;
    /// the subscribers it should reach are the connections open now.
    fn publish(&mut self, idx: usize, intended_ns: u64) {
        if self.conns[idx].wbuf.len() > WBUF_LIMIT {
            self.stats.c.sends_skipped_backpressure += 1;
            return;
        }
        let sender = self.sender_id(idx);
        let Some(publisher) = self.sh.scenario.publisher_index(sender) else {
            return;
        };
        let Some(bc) = self.bc.as_mut() else {
            return;
        };
        let seq = bc.take_seq(idx);
        let open = self.sh.fan.open.load(Ordering::Relaxed);
        let own = u64::from(!self.sh.cfg.echo_self);
        let expected = open.saturating_sub(own).min(u32::MAX as u64) as u32;
        bc.on_publish(Published {
            publisher,
            seq,
            sent_ns: intended_ns,
            expected,
            stage: self.stage.min(u32::MAX as usize) as u32,
        });
        self.sh
            .fan
            .expected
            .fetch_add(expected as u64, Ordering::Relaxed);
        self.stats.c.fanout_expected += expected as u64;
        self.write_stamped(
            idx,
            Stamp {
                sender,
                seq,
                sent_ns: intended_ns,
            },
        );
    }

    /// Push: a POST of a stamped message to open connection `idx`'s user.
    fn push_to(&mut self, idx: usize, intended_ns: u64, now: u64) {
        let sender = self.sender_id(idx);
        let c = &mut self.conns[idx];
        let gen = c.gen;
        let stamp = Stamp {
            sender,
            seq: c.sent,
            sent_ns: intended_ns,
        };
        c.sent += 1;
        self.in_flight += 1;
        self.stats.c.msgs_sent += 1;
        self.stats.c.bytes_sent += self.msg.len() as u64;
        payload::write(&mut self.msg, stamp);
        let Some(p) = self.push.as_mut() else {
            return;
        };
        push::request(
            &p.host_header,
            &push::user_id(sender, gen),
            &self.msg,
            &mut self.out,
        );
        let src = if self.src.is_empty() {
            None
        } else {
            self.src_next = self.src_next.wrapping_add(1);
            Some(self.src[self.src_next % self.src.len()])
        };
        let dest = self.sh.cfg.target.addr;
        if let Some(o) = p.start(&self.ep, &dest, src, &self.out, (idx as u32, gen), now) {
            self.on_push_outcome(o);
        }
    }

    /// A POST ended: count its status; a push that will not be delivered is written off
    /// its connection's outstanding messages (it is counted as a failed push instead).
    fn on_push_outcome(&mut self, o: Outcome) {
        let failed = match &o.result {
            Ok((200, count)) => {
                record_ns(&mut self.stats.h.http, o.elapsed_ns);
                bump(&mut self.stats.push_status, "200");
                self.stats.c.push_deliveries_expected += count;
                false
            }
            Ok((status, _)) => {
                record_ns(&mut self.stats.h.http, o.elapsed_ns);
                bump(&mut self.stats.push_status, &status.to_string());
                true
            }
            Err(class) => {
                bump(&mut self.stats.push_status, class);
                true
            }
        };
        if failed {
            self.stats.c.push_failed += 1;
            let (idx, gen) = (o.conn.0 as usize, o.conn.1);
            if let Some(c) = self.conns.get_mut(idx) {
                if c.gen == gen && c.fd >= 0 && c.in_flight() > 0 {
                    c.recv += 1;
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
            }
        }
    }

    /// Frames and sends a stamped message of `--payload` bytes.
    fn write_stamped(&mut self, idx: usize, stamp: Stamp) {
        let mut msg = std::mem::take(&mut self.msg);
        payload::write(&mut msg, stamp);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let mask = self.mask();
        write_masked_frame(&mut out, op::BINARY, &msg, mask);
        self.stats.c.msgs_sent += 1;
        self.stats.c.bytes_sent += msg.len() as u64;
        self.send_bytes(idx, &out);
        self.out = out;
        self.msg = msg;
    }

    fn send_ping(&mut self, idx: usize, now: u64) {
        let c = &mut self.conns[idx];
        if c.ping_ns == 0 {
            self.in_flight += 1;
        }
        c.ping_ns = now.max(1);
        let p = c.ping_ns.to_le_bytes();
        self.stats.c.pings_sent += 1;
        self.send_control(idx, op::PING, &p);
    }

    fn send_control(&mut self, idx: usize, opcode: u8, payload: &[u8]) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let mask = self.mask();
        write_masked_frame(&mut out, opcode, &payload[..payload.len().min(125)], mask);
        self.send_bytes(idx, &out);
        self.out = out;
    }

    /// Writes now what the kernel takes; queues the rest in the slot's `wbuf`.
    fn send_bytes(&mut self, idx: usize, data: &[u8]) {
        let c = &mut self.conns[idx];
        if c.fd < 0 {
            return;
        }
        if !c.wbuf.is_empty() {
            c.wbuf.extend_from_slice(data);
            return;
        }
        match sys::write(c.fd, data) {
            Ok(n) if n == data.len() => {}
            Ok(n) => c.wbuf.extend_from_slice(&data[n..]),
            Err(libc::EAGAIN) => c.wbuf.extend_from_slice(data),
            Err(e) => {
                let now = payload::now_ns();
                self.on_io_error(idx, e, now);
            }
        }
    }

    fn flush_wbuf(&mut self, idx: usize, now: u64) {
        let c = &mut self.conns[idx];
        if c.wbuf.is_empty() || c.fd < 0 {
            return;
        }
        match sys::write(c.fd, &c.wbuf) {
            Ok(n) if n == c.wbuf.len() => c.wbuf = Vec::new(),
            Ok(n) => {
                c.wbuf.drain(..n);
            }
            Err(libc::EAGAIN) => {}
            Err(e) => self.on_io_error(idx, e, now),
        }
    }

    // ---------------------------------------------------------------------------------
    // Ending
    // ---------------------------------------------------------------------------------

    fn start_close(&mut self, idx: usize, now: u64) {
        let payload = ws_common::frame::close::NORMAL.to_be_bytes();
        self.send_control(idx, op::CLOSE, &payload);
        let c = &mut self.conns[idx];
        if c.fd < 0 || c.state != State::Open {
            return;
        }
        let pos = c.open_pos as usize;
        c.open_pos = u32::MAX;
        c.state = State::Closing;
        let gen = c.gen;
        self.open.swap_remove(pos);
        if let Some(&moved) = self.open.get(pos) {
            self.conns[moved as usize].open_pos = pos as u32;
        }
        self.open_changed(idx, false);
        self.closing += 1;
        self.close_timeouts.push_back((
            now + self.sh.cfg.drain_ns.max(100_000_000),
            idx as u32,
            gen,
        ));
    }

    fn finish_close(&mut self, idx: usize) {
        self.close_fd(idx);
        self.conns[idx].state = State::Idle;
    }

    fn begin_drain(&mut self, now: u64) {
        self.open_at_end = Some(self.open.len() as u32);
        self.heap_at_end = Some(self.conns.iter().map(|c| c.heap_bytes() as u64).sum());
        for idx in 0..self.conns.len() {
            if matches!(
                self.conns[idx].state,
                State::Connecting | State::Handshaking | State::Backoff
            ) {
                self.close_fd(idx);
                self.conns[idx].state = State::Idle;
            }
        }
        self.phase = Phase::Drain(now + self.sh.cfg.drain_ns);
    }

    fn begin_close(&mut self, now: u64) {
        let open: Vec<u32> = self.open.clone();
        for idx in open {
            self.start_close(idx as usize, now);
        }
        self.phase = Phase::Close(now + self.sh.cfg.drain_ns.max(100_000_000));
    }

    fn finish(mut self) {
        if let Some(p) = self.push.as_mut() {
            p.close_all();
        }
        for idx in 0..self.conns.len() {
            if self.conns[idx].fd >= 0 {
                self.finish_close(idx);
            }
        }
        self.flush(true);
    }
}
