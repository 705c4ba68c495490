//! `--script FILE`: a scenario from a file (compiled in [`crate::config::script`]). Each
//! connection runs the `[[open]]` steps in order after its upgrade (again after every
//! reconnect): send, wait for a matching message (timed: send → match), or sleep. Then it
//! joins the `[loop]`: sends on a constant-rate schedule — `rate` per connection, each
//! connection with its own random phase, or the CLI's `--rate` in total round-robin — and
//! judges what arrives.
//!
//! What arrives in the loop is scanned once for text stamps (`{{stamp}}`): one of the
//! connection's own is an echo (`LOOP rtt`, from the intended send time), another
//! connection's is a delivery (`LOOP delivery`), sequence-checked per receiver and sender.
//! A loop whose sends carry no stamp matches replies by order (the oldest send waiting is
//! the one answered); a push-only loop counts what matches its `expect`.
//!
//! Steady state costs no allocation: templates render into one reused buffer, the stamp
//! scan is one memmem pass, and the sequence table only grows when a new sender appears.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use ws_common::payload::Stamp;
use ws_common::text_stamp::Scanner;

use crate::config::script::template::Vars;
use crate::config::script::{Payload, Script};
use crate::config::RunConfig;
use crate::engine::io::{Io, Lat};
use crate::engine::scenario::Scenario;
use crate::engine::schedule::share;
use crate::engine::stats::record_ns;

/// Request → reply by order: sends waiting for their reply, per connection, at most.
const MAX_WAITING: usize = 1024;
/// (receiver, sender) pairs a worker sequence-checks at most (~32 B each).
const MAX_TRACKED: usize = 1 << 21;
/// How far behind its schedule a connection's sends may fall before the schedule is
/// moved on (the latency of the late ones still shows it).
const MAX_LAG_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// The step's expect has waited its timeout.
    Expect,
    /// The step's sleep is over.
    Wake,
    /// The connection's next loop message (per-connection rate).
    Send,
}

/// What one connection slot is doing.
#[derive(Debug)]
struct Slot {
    /// Index of the open step under way; `open.len()` once in the loop.
    step: u16,
    /// Waiting for the step's expect since `t_ns`.
    waiting: bool,
    /// Bumped when a step ends or the connection closes: older timers are stale.
    epoch: u32,
    t_ns: u64,
    /// Position in the ready list (`u32::MAX`: not in the loop).
    ready_pos: u32,
    /// `{{seq}}`: messages this connection has sent.
    seq: u64,
    /// Stamp sequence of the next loop message; kept across reconnects so receivers see
    /// one sequence per sender.
    loop_seq: u64,
    /// First stamp sequence of the current connection (older ones are not its echoes).
    first_loop_seq: u64,
    /// Unstamped loop sends waiting for their reply: intended send times, oldest first.
    waiting_replies: VecDeque<u64>,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            step: 0,
            waiting: false,
            epoch: 0,
            t_ns: 0,
            ready_pos: u32::MAX,
            seq: 0,
            loop_seq: 0,
            first_loop_seq: 0,
            waiting_replies: VecDeque::new(),
        }
    }
}

/// A multiplicative hash: the keys are small integers we made ourselves.
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn write(&mut self, b: &[u8]) {
        for &x in b {
            self.write_u64(x as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let h = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub struct Scripted {
    script: Arc<Script>,
    /// `{{conn}}` of this worker's slot 0.
    base: u64,
    slots: Vec<Slot>,
    /// Slots in the loop.
    ready: Vec<u32>,
    rr: usize,
    /// `--rate` given: this worker's share of the total.
    total_rate: Option<f64>,
    /// Per-connection rate: the interval between one connection's messages.
    interval_ns: Option<u64>,
    /// Heartbeat (the script's ping_interval or --ping-interval).
    ping_ns: Option<u64>,
    /// `--tick`: per-connection sends due within it leave together.
    tick_ns: u64,
    timers: BinaryHeap<Reverse<(u64, u32, u32, Due)>>,
    buf: Vec<u8>,
    scanner: Scanner,
    /// (receiver slot << 32 | sender) → (receiver's generation, next sequence expected).
    seqs: HashMap<u64, (u32, u64), BuildHasherDefault<Mix>>,
    /// Steps whose first unmatched message this worker has reported.
    sampled: Vec<bool>,
    /// Last time a loop message arrived (drain waits for a quiet moment).
    last_rx_ns: u64,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, ns, refreshed every second: text stamps carry
    /// wall-clock send times, so a receiver on another host (clocks in sync) can time them.
    wall: i64,
    wall_at: u64,
}

/// Renders `p` for connection `conn` (its `seq`, CSV `row`, and the stamp's sequence and
/// wall-clock send time) into `buf` and sends it on slot `idx`.
#[allow(clippy::too_many_arguments)]
fn send_rendered(
    io: &mut Io,
    buf: &mut Vec<u8>,
    idx: usize,
    p: &Payload,
    conn: u64,
    seq: u64,
    row: &[String],
    (stamp_seq, sent_ns): (u64, u64),
) {
    match p {
        Payload::Text(t) => {
            buf.clear();
            let stamp = Stamp {
                sender: conn as u32,
                seq: stamp_seq,
                sent_ns,
            };
            t.render(
                &Vars {
                    conn,
                    seq,
                    row,
                    stamp,
                },
                buf,
            );
            io.send_data(idx, true, buf);
        }
        Payload::Binary(b) => io.send_data(idx, false, b),
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, ns.
fn wall_offset() -> i64 {
    crate::engine::sys::realtime_ns() as i64 - ws_common::payload::now_ns() as i64
}

/// `{{conn}}` of worker `w`'s slot 0: the slots of the workers before it, plus the
/// process's `--conn-offset`.
pub fn conn_base(cfg: &RunConfig, w: usize) -> u64 {
    let n = cfg.cores.len();
    let max = cfg.plan.max_target();
    cfg.conn_offset + (0..w).map(|j| share(max, j, n) as u64).sum::<u64>()
}

impl Scripted {
    pub fn new(cfg: &RunConfig, w: usize, slots: usize) -> Result<Self, String> {
        let script = cfg.script.clone().ok_or("no script")?;
        let sends = script.lp.as_ref().is_some_and(|l| l.send.is_some());
        let total_rate = if sends {
            super::rate_part(cfg, slots)
        } else {
            None
        };
        let per_conn = script.lp.as_ref().and_then(|l| l.rate);
        let interval_ns = match (sends, total_rate, per_conn) {
            (true, None, Some(r)) => Some(((1e9 / r) as u64).max(1)),
            _ => None,
        };
        let mut v = Vec::with_capacity(slots);
        v.resize_with(slots, Slot::default);
        Ok(Self {
            base: conn_base(cfg, w),
            script,
            slots: v,
            ready: Vec::new(),
            rr: 0,
            total_rate,
            interval_ns,
            ping_ns: (cfg.ping_interval_ns > 0).then_some(cfg.ping_interval_ns),
            tick_ns: cfg.tick_ns,
            timers: BinaryHeap::new(),
            buf: Vec::with_capacity(1024),
            scanner: Scanner::default(),
            seqs: HashMap::default(),
            sampled: Vec::new(),
            last_rx_ns: 0,
            wall: wall_offset(),
            wall_at: ws_common::payload::now_ns(),
        })
    }

    fn conn(&self, idx: usize) -> u64 {
        self.base + idx as u64
    }

    /// Sends a step's payload (stamped now, if it has a stamp).
    fn send_payload(&mut self, io: &mut Io, idx: usize, p: &Payload, now: u64) {
        let conn = self.conn(idx);
        let s = &mut self.slots[idx];
        // Not a loop message: a sequence no loop message has.
        let stamp = (0xffff_ffff_ffff, now.wrapping_add_signed(self.wall));
        let row = self.script.row(conn);
        send_rendered(io, &mut self.buf, idx, p, conn, s.seq, row, stamp);
        s.seq += 1;
    }

    /// Runs slot `idx`'s steps from the current one until one has to wait.
    fn advance(&mut self, io: &mut Io, idx: usize, now: u64) {
        let script = self.script.clone();
        loop {
            let k = self.slots[idx].step as usize;
            let Some(st) = script.open.get(k) else {
                return self.join_loop(io, idx, now);
            };
            if let Some(p) = &st.send {
                self.send_payload(io, idx, p, now);
            }
            let s = &mut self.slots[idx];
            if st.expect.is_some() {
                s.waiting = true;
                s.t_ns = now;
                let due = now + st.timeout_ns;
                self.timers
                    .push(Reverse((due, idx as u32, s.epoch, Due::Expect)));
                return;
            }
            if st.sleep_ns > 0 {
                let due = now + st.sleep_ns;
                self.timers
                    .push(Reverse((due, idx as u32, s.epoch, Due::Wake)));
                return;
            }
            io.stats.step(k).ok += 1;
            s.step += 1;
        }
    }

    /// Step `k` of slot `idx` is done.
    fn step_done(&mut self, io: &mut Io, idx: usize, now: u64) {
        let s = &mut self.slots[idx];
        let k = s.step as usize;
        io.stats.step(k).ok += 1;
        s.waiting = false;
        s.epoch = s.epoch.wrapping_add(1);
        s.step += 1;
        self.advance(io, idx, now);
    }

    fn join_loop(&mut self, io: &mut Io, idx: usize, now: u64) {
        // The steps are done: this connection has succeeded (see upgrade_resets_tries).
        io.conns[idx].tries = 0;
        if self.script.lp.is_none() {
            return; // nothing after the steps: the connection is held
        }
        let s = &mut self.slots[idx];
        s.ready_pos = self.ready.len() as u32;
        self.ready.push(idx as u32);
        if let Some(iv) = self.interval_ns {
            // A random phase: connections opened together do not send together.
            let due = now + io.random() % iv;
            self.timers
                .push(Reverse((due, idx as u32, s.epoch, Due::Send)));
        }
    }

    fn unready(&mut self, idx: usize) {
        let pos = self.slots[idx].ready_pos as usize;
        self.slots[idx].ready_pos = u32::MAX;
        if pos < self.ready.len() {
            self.ready.swap_remove(pos);
            if let Some(&moved) = self.ready.get(pos) {
                self.slots[moved as usize].ready_pos = pos as u32;
            }
        }
    }

    /// One loop message from slot `idx`, intended at `intended`.
    fn send_loop(&mut self, io: &mut Io, idx: usize, intended: u64) {
        let Some(lp) = self.script.lp.as_ref() else {
            return;
        };
        let Some(p) = lp.send.as_ref() else {
            return;
        };
        if io.backlogged(idx) {
            return;
        }
        let conn = self.base + idx as u64;
        let s = &mut self.slots[idx];
        let stamp = (s.loop_seq, intended.wrapping_add_signed(self.wall));
        let row = self.script.row(conn);
        send_rendered(io, &mut self.buf, idx, p, conn, s.seq, row, stamp);
        s.seq += 1;
        s.loop_seq += 1;
        if lp.echo {
            io.expect_reply(idx);
            if !lp.stamped() {
                if s.waiting_replies.len() >= MAX_WAITING {
                    // The server is not answering: the oldest is lost, not kept forever.
                    s.waiting_replies.pop_front();
                    let gen = io.conns[idx].gen;
                    io.write_off(idx, gen);
                    io.stats.c.msgs_lost += 1;
                }
                s.waiting_replies.push_back(intended);
            }
        }
    }

    /// A message on a slot in the loop.
    fn on_loop_message(&mut self, io: &mut Io, idx: usize, payload: &[u8], now: u64) {
        self.last_rx_ns = now;
        let Some(lp) = self.script.lp.as_ref() else {
            io.stats.c.msgs_unexpected += 1;
            return;
        };
        if let Some(m) = &lp.expect {
            if !m.matches(payload) {
                io.stats.c.msgs_unexpected += 1;
                return;
            }
        }
        let me = (self.base + idx as u64) as u32;
        let (first, next) = {
            let s = &self.slots[idx];
            (s.first_loop_seq, s.loop_seq)
        };
        let echo = lp.echo;
        let wall = self.wall;
        let gen = io.conns[idx].gen;
        let seqs = &mut self.seqs;
        let mut room = MAX_TRACKED.saturating_sub(seqs.len());
        let found = self.scanner.scan(payload, |mut st| {
            // Back from the sender's wall clock to our monotonic one.
            st.sent_ns = st.sent_ns.wrapping_add_signed(-wall);
            if st.sender == me {
                if st.seq >= first && st.seq < next {
                    if echo {
                        io.reply(idx, st.seq, st.sent_ns, Lat::Rtt, now);
                    } else {
                        io.stats.c.msgs_received += 1;
                        io.record(Lat::Rtt, st.sent_ns, now);
                    }
                } else {
                    io.stats.c.msgs_unexpected += 1;
                }
                return;
            }
            io.stats.c.msgs_received += 1;
            io.stats.c.script_deliveries += 1;
            io.record(Lat::Delivery, st.sent_ns, now);
            let key = ((idx as u64) << 32) | st.sender as u64;
            match seqs.get_mut(&key) {
                Some(e) if e.0 == gen => {
                    if st.seq == e.1 {
                        e.1 += 1;
                    } else if st.seq > e.1 {
                        io.stats.c.script_gaps += st.seq - e.1;
                        e.1 = st.seq + 1;
                    } else {
                        io.stats.c.script_behind += 1;
                    }
                }
                Some(e) => *e = (gen, st.seq + 1),
                None if room > 0 => {
                    room -= 1;
                    seqs.insert(key, (gen, st.seq + 1));
                }
                None => io.stats.c.script_untracked += 1,
            }
        });
        if found > 0 {
            return;
        }
        if echo && !lp.stamped() {
            if let Some(sent) = self.slots[idx].waiting_replies.pop_front() {
                let seq = io.conns[idx].recv;
                io.reply(idx, seq, sent, Lat::Rtt, now);
                return;
            }
        }
        io.stats.c.msgs_received += 1;
        io.stats.c.script_matched += 1;
    }
}

impl Scenario for Scripted {
    fn rate(&self) -> Option<f64> {
        self.total_rate
    }

    fn ping_interval_ns(&self) -> Option<u64> {
        self.ping_ns
    }

    fn own_schedule(&self) -> bool {
        self.interval_ns.is_some()
    }

    fn upgrade_resets_tries(&self) -> bool {
        self.script.open.is_empty()
    }

    fn can_send(&self, _io: &Io) -> bool {
        !self.ready.is_empty()
    }

    fn request(&mut self, _io: &Io, idx: usize) -> Option<(String, Vec<String>)> {
        if self.script.constant_request() {
            return None; // the run's URL and headers are the script's
        }
        let conn = self.conn(idx);
        let v = Vars {
            conn,
            seq: 0,
            row: self.script.row(conn),
            stamp: Stamp {
                sender: conn as u32,
                seq: 0,
                sent_ns: 0,
            },
        };
        let path = self.script.path_template.render_string(&v);
        let headers = self
            .script
            .headers
            .iter()
            .map(|(n, t)| format!("{n}: {}", t.render_string(&v)))
            .collect();
        Some((path, headers))
    }

    fn fail_label(&mut self, io: &mut Io, idx: usize) -> Option<&str> {
        let k = self.slots.get(idx)?.step as usize;
        match self.script.open.get(k) {
            Some(st) => {
                io.stats.step(k).failed += 1;
                Some(&st.name)
            }
            None => self.script.lp.as_ref().map(|l| l.name.as_str()),
        }
    }

    fn on_open(&mut self, io: &mut Io, idx: usize, now: u64) {
        let s = &mut self.slots[idx];
        s.step = 0;
        s.waiting = false;
        s.seq = 0;
        s.first_loop_seq = s.loop_seq;
        self.advance(io, idx, now);
    }

    fn on_leave(&mut self, _io: &mut Io, idx: usize) {
        self.unready(idx);
    }

    fn on_closed(&mut self, _io: &mut Io, idx: usize) {
        self.unready(idx);
        let s = &mut self.slots[idx];
        s.epoch = s.epoch.wrapping_add(1);
        s.waiting = false;
        s.step = 0;
        s.waiting_replies = VecDeque::new();
    }

    fn send_scheduled(&mut self, io: &mut Io, intended: u64, _now: u64) {
        self.rr = (self.rr + 1) % self.ready.len().max(1);
        if let Some(&idx) = self.ready.get(self.rr) {
            self.send_loop(io, idx as usize, intended);
        }
    }

    fn on_message(&mut self, io: &mut Io, idx: usize, _text: bool, payload: &[u8], now: u64) {
        let k = self.slots[idx].step as usize;
        match self.script.open.get(k) {
            None => self.on_loop_message(io, idx, payload, now),
            Some(st) => {
                let s = &self.slots[idx];
                if s.waiting && st.expect.as_ref().is_some_and(|m| m.matches(payload)) {
                    io.stats.c.msgs_received += 1;
                    let t = s.t_ns;
                    record_ns(&mut io.stats.step(k).h, now.saturating_sub(t));
                    self.step_done(io, idx, now);
                } else {
                    io.stats.c.script_ignored += 1;
                    if !self.sampled.get(k).copied().unwrap_or(false) {
                        if self.sampled.len() <= k {
                            self.sampled.resize(k + 1, false);
                        }
                        self.sampled[k] = true;
                        let cut = &payload[..payload.len().min(200)];
                        io.stats.step(k).unmatched =
                            Some(String::from_utf8_lossy(cut).into_owned());
                    }
                }
            }
        }
    }

    fn timers(&mut self, io: &mut Io, now: u64) {
        // Sends due within the tick go now (one wake-up per tick, as with the pacer), each
        // timed from when it really leaves if that is before its schedule.
        let horizon = now + self.tick_ns;
        if now.saturating_sub(self.wall_at) >= 1_000_000_000 {
            self.wall = wall_offset();
            self.wall_at = now;
        }
        while let Some(&Reverse((due, idx, epoch, what))) = self.timers.peek() {
            if due > now && (what != Due::Send || due > horizon) {
                break;
            }
            self.timers.pop();
            let i = idx as usize;
            if self.slots[i].epoch != epoch || !io.is_open(i) {
                continue;
            }
            match what {
                Due::Expect => {
                    if self.slots[i].waiting {
                        io.fail(i, "expect_timeout");
                    }
                }
                Due::Wake => {
                    let k = self.slots[i].step as usize;
                    io.stats.step(k).ok += 1;
                    let s = &mut self.slots[i];
                    s.epoch = s.epoch.wrapping_add(1);
                    s.step += 1;
                    self.advance(io, i, now);
                }
                Due::Send => {
                    if !io.running() || self.slots[i].ready_pos == u32::MAX {
                        continue;
                    }
                    self.send_loop(io, i, due.min(now));
                    let iv = self.interval_ns.unwrap_or(1_000_000_000);
                    let next = (due + iv).max(now.saturating_sub(MAX_LAG_NS));
                    self.timers.push(Reverse((next, idx, epoch, Due::Send)));
                }
            }
        }
    }

    fn settled(&self, _io: &Io, now: u64) -> bool {
        // Deliveries to other connections are not counted in flight: wait until nothing
        // has arrived for a moment, as the broadcast scenario does.
        now.saturating_sub(self.last_rx_ns) >= super::QUIET_NS
    }

    fn next_deadline(&self) -> Option<u64> {
        self.timers.peek().map(|r| r.0 .0)
    }
}
