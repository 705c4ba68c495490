//! The half of a worker a scenario may touch: its connection slots, its epoll instance and
//! the operations on them — send a frame, queue what the kernel refused, expect and match
//! replies, count. Nothing here closes a socket: a write that fails is queued in
//! [`Io::errors`] and the worker closes the slot after the current call, so a scenario
//! never sees a slot vanish under its feet and every close goes through one place (which
//! tells the scenario).

use std::net::IpAddr;
use std::sync::Arc;

use ws_common::frame::{op, write_masked_frame};

use crate::engine::conn::{Conn, State};
use crate::engine::shared::Shared;
use crate::engine::stats::{record_ns, Stats};
use crate::engine::sys::{self, Epoll};

/// Unsent bytes a connection may queue before scheduled sends are skipped.
pub const WBUF_LIMIT: usize = 1 << 20;

/// A stamp's sender id is `worker << SENDER_SHIFT | slot`.
pub const SENDER_SHIFT: u32 = 20;

/// The stamp sender id of worker `w`'s slot `idx`.
pub fn sender_id(w: usize, idx: usize) -> u32 {
    ((w as u32) << SENDER_SHIFT).wrapping_add(idx as u32)
}

/// Where the worker is in the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Run,
    /// No new sends or connects; waiting for outstanding replies until the deadline.
    Drain(u64),
    /// Our Close sent; waiting for the server's until the deadline.
    Close(u64),
}

/// Which histogram a reply's latency goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lat {
    /// Round trip of a message this connection sent.
    Rtt,
    /// A message that reached this connection from elsewhere (a push, a broadcast).
    Delivery,
}

pub struct Io {
    pub id: usize,
    pub sh: Arc<Shared>,
    pub ep: Epoll,
    pub conns: Vec<Conn>,
    /// Slots in state Open (each knows its position: `Conn::open_pos`).
    pub open: Vec<u32>,
    /// Slots connecting or handshaking.
    pub pending: u32,
    /// Slots in state Closing.
    pub closing: u32,
    /// Replies (and pongs) still expected on live connections.
    pub in_flight: u64,
    pub stats: Stats,
    pub phase: Phase,
    /// Current stage (`usize::MAX` before the first).
    pub stage: usize,
    /// This worker's share of the current stage's target: slots `0..target` are wanted.
    pub target: usize,
    /// Sockets that failed during a write: (slot, generation, errno), closed by the worker.
    pub errors: Vec<(u32, u32, i32)>,
    /// Connections a scenario gave up on: (slot, generation, class), closed by the worker
    /// and counted as drops of that class.
    pub failed: Vec<(u32, u32, String)>,
    out: Vec<u8>,
    /// TLS records being sent.
    sealed: Vec<u8>,
    rng: u64,
    src: Vec<IpAddr>,
    src_next: usize,
}

fn xorshift(s: &mut u64) -> u64 {
    let mut x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    x
}

impl Io {
    pub fn new(id: usize, sh: Arc<Shared>, ep: Epoll, slots: usize) -> Self {
        let mut conns = Vec::with_capacity(slots);
        conns.resize_with(slots, Conn::default);
        let mut rng = rand::random::<u64>() | 1;
        xorshift(&mut rng);
        let src = sh.cfg.source_ips.clone();
        Self {
            id,
            ep,
            conns,
            open: Vec::new(),
            pending: 0,
            closing: 0,
            in_flight: 0,
            stats: Stats::default(),
            phase: Phase::Run,
            stage: usize::MAX,
            target: 0,
            errors: Vec::new(),
            failed: Vec::new(),
            out: Vec::with_capacity(64 * 1024),
            sealed: Vec::new(),
            rng,
            src_next: id,
            src,
            sh,
        }
    }

    /// The stamp sender id of slot `idx`.
    pub fn sender_id(&self, idx: usize) -> u32 {
        sender_id(self.id, idx)
    }

    /// Whether the run still wants new sends.
    pub fn running(&self) -> bool {
        self.phase == Phase::Run
    }

    pub fn is_open(&self, idx: usize) -> bool {
        self.conns.get(idx).is_some_and(|c| c.state == State::Open)
    }

    /// A pseudo-random number (xorshift, per worker).
    pub fn random(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.random() as u32).to_ne_bytes()
    }

    /// The next `--source-ip` address, round-robin (None without any).
    pub fn next_source_ip(&mut self) -> Option<IpAddr> {
        if self.src.is_empty() {
            return None;
        }
        let ip = self.src[self.src_next % self.src.len()];
        self.src_next = self.src_next.wrapping_add(1);
        Some(ip)
    }

    /// Whether slot `idx` has so much unsent that a scheduled send should be skipped
    /// (counted): a server that does not read must not grow our memory without bound.
    pub fn backlogged(&mut self, idx: usize) -> bool {
        if self.conns[idx].wbuf.len() > WBUF_LIMIT {
            self.stats.c.sends_skipped_backpressure += 1;
            true
        } else {
            false
        }
    }

    /// Whether a message intended at `sent_ns` is timed (not in `--warmup`); counts the
    /// ones that are not.
    pub fn timed(&mut self, sent_ns: u64) -> bool {
        if sent_ns >= self.sh.start_ns + self.sh.cfg.warmup_ns {
            true
        } else {
            self.stats.c.latency_warmup_excluded += 1;
            false
        }
    }

    /// Records `now - sent_ns` in histogram `lat`, unless the message is in the warm-up.
    pub fn record(&mut self, lat: Lat, sent_ns: u64, now: u64) {
        if self.timed(sent_ns) {
            let h = match lat {
                Lat::Rtt => &mut self.stats.h.rtt,
                Lat::Delivery => &mut self.stats.h.delivery,
            };
            record_ns(h, now.saturating_sub(sent_ns));
        }
    }

    /// Slot `idx` sends a message that expects a reply: returns its sequence number.
    pub fn expect_reply(&mut self, idx: usize) -> u64 {
        let c = &mut self.conns[idx];
        c.sent += 1;
        self.in_flight += 1;
        c.sent - 1
    }

    /// The reply to message `seq` of slot `idx`, intended at `sent_ns`, arrived now.
    pub fn reply(&mut self, idx: usize, seq: u64, sent_ns: u64, lat: Lat, now: u64) {
        let c = &mut self.conns[idx];
        c.recv += 1;
        if seq >= c.hi {
            c.hi = seq + 1;
        } else {
            self.stats.c.msgs_out_of_order += 1;
        }
        self.stats.c.msgs_received += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.record(lat, sent_ns, now);
    }

    /// A message slot `idx` was waiting for will not come (its push failed): no longer
    /// outstanding, and not lost either (it is counted where it failed).
    pub fn write_off(&mut self, idx: usize, gen: u32) {
        if let Some(c) = self.conns.get_mut(idx) {
            if c.gen == gen && c.fd >= 0 && c.in_flight() > 0 {
                c.recv += 1;
                self.in_flight = self.in_flight.saturating_sub(1);
            }
        }
    }

    /// The scenario gives up on slot `idx` (an expected message did not come): the worker
    /// closes it after the current call and counts a drop of `class`.
    pub fn fail(&mut self, idx: usize, class: &str) {
        if let Some(c) = self.conns.get(idx) {
            self.failed.push((idx as u32, c.gen, class.to_string()));
        }
    }

    /// Frames `payload` as one masked data message and sends it on slot `idx`.
    pub fn send_data(&mut self, idx: usize, text: bool, payload: &[u8]) {
        let opcode = if text { op::TEXT } else { op::BINARY };
        self.stats.c.msgs_sent += 1;
        self.stats.c.bytes_sent += payload.len() as u64;
        self.send_frame(idx, opcode, payload);
    }

    /// Sends a control frame (payload cut to the 125 bytes a control frame may carry).
    pub fn send_control(&mut self, idx: usize, opcode: u8, payload: &[u8]) {
        self.send_frame(idx, opcode, &payload[..payload.len().min(125)]);
    }

    fn send_frame(&mut self, idx: usize, opcode: u8, payload: &[u8]) {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let mask = self.mask();
        write_masked_frame(&mut out, opcode, payload, mask);
        self.send_bytes(idx, &out);
        self.out = out;
    }

    /// Sends `data` on slot `idx` (sealed into TLS records over wss://).
    pub fn send_bytes(&mut self, idx: usize, data: &[u8]) {
        let Some(t) = self.conns[idx].tls.as_mut() else {
            return self.send_raw(idx, data);
        };
        let mut out = std::mem::take(&mut self.sealed);
        out.clear();
        t.seal(data, &mut out);
        self.send_raw(idx, &out);
        self.sealed = out;
    }

    /// wss://: sends the records TLS has ready (handshake messages, alerts).
    pub(super) fn send_records(&mut self, idx: usize) {
        let Some(t) = self.conns[idx].tls.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.sealed);
        out.clear();
        t.records(&mut out);
        if !out.is_empty() {
            self.send_raw(idx, &out);
        }
        self.sealed = out;
    }

    /// Writes now what the kernel takes; queues the rest in the slot's `wbuf`.
    fn send_raw(&mut self, idx: usize, data: &[u8]) {
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
            Err(e) => self.errors.push((idx as u32, c.gen, e)),
        }
    }

    /// The socket is writable again: sends what was queued.
    pub fn flush_wbuf(&mut self, idx: usize) {
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
            Err(e) => self.errors.push((idx as u32, c.gen, e)),
        }
    }

    /// Heap bytes the slots hold.
    pub fn slot_heap_bytes(&self) -> u64 {
        self.conns.iter().map(|c| c.heap_bytes() as u64).sum()
    }

    /// Takes slot `idx` off the open list.
    pub(super) fn unlist(&mut self, idx: usize) {
        let pos = self.conns[idx].open_pos as usize;
        self.conns[idx].open_pos = u32::MAX;
        if pos < self.open.len() {
            self.open.swap_remove(pos);
            if let Some(&moved) = self.open.get(pos) {
                self.conns[moved as usize].open_pos = pos as u32;
            }
        }
    }
}
