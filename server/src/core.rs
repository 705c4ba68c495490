//! Per-core state and its event loop: the heart of ws-server.
//!
//! A [`Core`] is owned by one executor thread and is the only thing that touches its
//! connections. Its thread sleeps in the core's io_uring (`executor::drive`); whenever the
//! ring posts completions (accepts, readable sockets, writable sockets, or the poll on the
//! eventfd another core writes after dropping a message into the inbox), it wakes and
//! [`Core::on_wake`] handles everything pending. Once a second the same loop runs the
//! heartbeat sweep ([`Core::sweep`]).
//!
//! What happens to bytes once read lives elsewhere: `handshake.rs` (HTTP upgrade and the
//! plain HTTP routes) and `frames.rs` (the frame loop of open connections).

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ws_common::frame::{self, close, op};

use crate::cli::SlowConsumer;
use crate::conn::{flag, Phase, Slab};
use crate::fanout::{Pending, Registry};
use crate::inbox::{CoreMsg, Inbox, Mailbox, Waker};
use crate::ring::{BufRing, Completion, Kind, Ring, Token};
use crate::settings::Settings;
use crate::stats::{AllStats, CoreStats};
use crate::tls_session::TlsConn;

/// Ticks a lingering connection gets to send EOF after our last bytes.
const LINGER_TICKS: u32 = 2;

pub struct Core {
    /// Executor number (index into the stats array).
    pub idx: usize,
    pub settings: Rc<Settings>,
    pub ring: Ring,
    pub conns: Slab,
    pub all_stats: AllStats,
    /// WebSocket connections open on all cores, for `--max-conns`.
    pub global_open: Arc<AtomicU64>,
    pub inbox: Inbox,
    pub waker: Waker,
    /// The public listener and, on the core that serves it, the admin listener (-1 if
    /// none); an accept's token carries the index in its slot field.
    listeners: [RawFd; 2],
    accept_armed: [bool; 2],
    /// Set when accept failed: the driver re-arms it after a short back-off.
    pub accept_backoff: bool,
    started: Instant,
    /// Seconds since start, advanced by the sweep.
    pub tick: u32,
    bufs: BufRing,
    /// Output staged for the connection being handled, sent with one send().
    pub tx: Vec<u8>,
    completions: Vec<Completion>,
    /// Connections whose multishot receive must be armed again (it ran out of buffers).
    rearm: Vec<(u32, u32)>,
    /// Drain deadline (tick) once shutdown began.
    pub shutdown_at: Option<u32>,
    /// Connections at the moment shutdown began, and how many we had to cut at the deadline.
    pub drained_from: usize,
    pub forced: usize,
    /// Set when shut down and drained: the driver stops.
    pub done: bool,
    /// Rooms and users of this core's connections.
    pub registry: Registry,
    /// Every core's inbox (ours included, unused), and messages batched for each.
    pub mailboxes: Vec<Mailbox>,
    pub outbox: Vec<Vec<CoreMsg>>,
    /// Scratch list of fan-out targets.
    pub fan_slots: Vec<u32>,
    /// Frames delivered to our connections this wake, and who gets which: (slot, gen,
    /// index into `fan_frames`). Written at the end of the wake, one send per connection.
    pub fan_frames: Vec<std::sync::Arc<[u8]>>,
    pub fan_queue: Vec<(u32, u32, u32)>,
    /// The frames of the last recipient written, concatenated: the next recipients of the
    /// same frames (a room) get the same bytes in one contiguous send.
    pub fan_coalesced: crate::fanout::Coalesced,
    /// The fan-out's sends, submitted together, and the connections they are for:
    /// (slot, gen, range in `fan_queue`), indexed by the send's tag.
    pub send_ring: crate::ring::SendRing,
    pub fan_batch: Vec<(u32, u32, usize, usize)>,
    pub fan_results: Vec<(u64, i32)>,
    /// Frames from this read's broadcast messages, fanned out after decoding.
    pub bcast_out: Vec<std::sync::Arc<[u8]>>,
    /// HTTP requests waiting for other cores' delivery counts.
    pub pending: std::collections::HashMap<u64, Pending>,
    pub next_request: u64,
    /// Publishers not read while another core is congested.
    pub paused: Vec<(u32, u32)>,
    /// Our inbox drained below the low mark: wake the others so they resume.
    pub wake_others: bool,
    /// TLS scratch: plaintext of one read, records to send, frames joined to seal as one.
    tls_plain: Vec<u8>,
    tls_out: Vec<u8>,
    tls_join: Vec<u8>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        idx: usize,
        settings: Rc<Settings>,
        ring: Ring,
        listeners: [RawFd; 2],
        all_stats: AllStats,
        global_open: Arc<AtomicU64>,
        inbox: Inbox,
        waker: Waker,
        mailboxes: Vec<Mailbox>,
        bufs: BufRing,
        send_ring: crate::ring::SendRing,
    ) -> Core {
        let ncores = mailboxes.len();
        Core {
            idx,
            settings,
            ring,
            conns: Slab::default(),
            all_stats,
            global_open,
            inbox,
            waker,
            listeners,
            accept_armed: [false; 2],
            accept_backoff: false,
            started: Instant::now(),
            tick: 0,
            bufs,
            tx: Vec::with_capacity(64 * 1024),
            completions: Vec::with_capacity(1024),
            rearm: Vec::new(),
            shutdown_at: None,
            drained_from: 0,
            forced: 0,
            done: false,
            registry: Registry::default(),
            mailboxes,
            outbox: (0..ncores).map(|_| Vec::new()).collect(),
            fan_slots: Vec::new(),
            fan_frames: Vec::new(),
            fan_queue: Vec::new(),
            fan_coalesced: Default::default(),
            send_ring,
            fan_batch: Vec::new(),
            fan_results: Vec::new(),
            bcast_out: Vec::new(),
            pending: Default::default(),
            next_request: 0,
            paused: Vec::new(),
            wake_others: false,
            tls_plain: Vec::new(),
            tls_out: Vec::new(),
            tls_join: Vec::new(),
        }
    }

    pub fn stats(&self) -> &CoreStats {
        &self.all_stats[self.idx]
    }

    /// Arms the multishot accepts (at start and after a back-off).
    pub fn arm_accept(&mut self) {
        for i in 0..2 {
            let fd = self.listeners[i];
            if fd >= 0 && !self.accept_armed[i] && self.shutdown_at.is_none() {
                self.ring.accept_multi(
                    fd,
                    Token {
                        kind: Kind::Accept,
                        gen: 0,
                        slot: i as u32,
                    },
                );
                self.accept_armed[i] = true;
                self.ring.submit();
            }
        }
    }

    /// Arms the multishot poll that turns another core's eventfd write into a completion
    /// (at start, and again if the kernel ever ends it).
    pub fn arm_wake(&mut self) {
        let fd = self.waker.fd();
        self.ring.poll_wake(fd);
        self.ring.submit();
    }

    /// Handles everything pending: completions, connections with leftover data, inbox.
    pub fn on_wake(&mut self) {
        self.resume_paused();
        // Other cores' messages first: they have waited longest (a cross-core hop).
        self.drain_inbox();
        // Bounded so a flood of completions cannot starve the inbox or the timer task.
        for _ in 0..64 {
            let mut batch = std::mem::take(&mut self.completions);
            self.ring.drain(&mut batch);
            if batch.is_empty() {
                self.completions = batch;
                break;
            }
            for c in batch.drain(..) {
                self.on_completion(c);
            }
            self.completions = batch;
            // Receives that stopped for want of buffers restart now that they are back.
            for (slot, gen) in std::mem::take(&mut self.rearm) {
                self.arm_recv(slot, gen);
            }
            self.ring.submit();
            // Hand messages to the other cores now, so they fan out in parallel with us.
            self.flush_outbox();
        }
        self.drain_inbox();
        // Other cores before our own writes: their fan-out then overlaps ours.
        self.flush_outbox();
        self.flush_fanout();
        self.ring.submit();
        if std::mem::take(&mut self.wake_others) {
            for (i, m) in self.mailboxes.iter().enumerate() {
                if i != self.idx {
                    m.wake();
                }
            }
        }
        self.check_drained();
    }

    fn drain_inbox(&mut self) {
        while let Some(m) = self.inbox.try_recv() {
            self.on_message(m);
        }
    }

    /// Publishers paused for congestion go back to being read once it has cleared.
    fn resume_paused(&mut self) {
        if !self.paused.is_empty() && self.drained() {
            for (slot, gen) in std::mem::take(&mut self.paused) {
                if let Some(conn) = self.conns.get(slot, gen) {
                    conn.flags &= !flag::PAUSED;
                    self.arm_recv(slot, gen);
                }
            }
        }
    }

    /// Arms the multishot receive of a connection.
    fn arm_recv(&mut self, slot: u32, gen: u32) {
        let group = self.bufs.group();
        if let Some(conn) = self.conns.get(slot, gen) {
            // One receive at a time: a second would hold the socket past close_now's cancel.
            if !conn.has(flag::PAUSED) && !conn.has(flag::RECV_ARMED) {
                conn.flags |= flag::RECV_ARMED;
                let fd = conn.fd;
                self.ring.recv_multi(
                    fd,
                    group,
                    Token {
                        kind: Kind::Recv,
                        gen,
                        slot,
                    },
                );
            }
        }
    }

    fn on_message(&mut self, m: CoreMsg) {
        match m {
            CoreMsg::Shutdown => self.begin_shutdown(),
            CoreMsg::Deliver {
                target,
                frame,
                reply,
                sent_ns,
            } => self.on_deliver(target, frame, reply, sent_ns),
            CoreMsg::Delivered { request, count } => self.on_delivered(request, count),
        }
    }

    fn on_completion(&mut self, c: Completion) {
        let Some(t) = c.token else { return };
        match t.kind {
            Kind::Accept => self.on_accept(t.slot as usize & 1, c),
            Kind::Recv => self.on_recv(t, c),
            Kind::PollOut => {
                if let Some(conn) = self.conns.get(t.slot, t.gen) {
                    conn.flags &= !flag::POLL_OUT;
                    self.flush(t.slot, t.gen);
                }
            }
            Kind::Ignore => {}
            // The inbox itself is drained at the end of every wake-up.
            Kind::Wake => {
                if !c.more {
                    self.arm_wake();
                }
            }
        }
    }

    fn on_accept(&mut self, which: usize, c: Completion) {
        if !c.more {
            self.accept_armed[which] = false;
        }
        if c.result < 0 {
            let errno = -c.result;
            if errno == libc::ECANCELED {
                return;
            }
            self.stats().accept_error(errno);
            // EMFILE & co: the listener stays readable, so retrying at once would spin.
            // Stop the multishot and come back after a back-off; existing connections
            // keep being served meanwhile.
            if c.more {
                self.ring.cancel(Token {
                    kind: Kind::Accept,
                    gen: 0,
                    slot: which as u32,
                });
                self.accept_armed[which] = false;
            }
            self.accept_backoff = true;
            return;
        }
        let fd = c.result;
        if self.shutdown_at.is_some() {
            // SAFETY: fd was just returned by accept and is ours.
            unsafe { libc::close(fd) };
            return;
        }
        let slot = self.conns.insert(fd, self.tick);
        let gen = self.conns.by_slot(slot).map_or(0, |c| c.gen);
        let mut tls_failed = false;
        if which == 1 {
            if let Some(conn) = self.conns.get(slot, gen) {
                conn.flags |= flag::ADMIN;
            }
        } else if let Some(cfg) = &self.settings.tls {
            match crate::tls_session::TlsConn::new(cfg.clone()) {
                Ok(t) => {
                    self.conns.set_tls(slot, t);
                    if let Some(conn) = self.conns.get(slot, gen) {
                        conn.flags |= flag::TLS;
                    }
                }
                Err(_) => tls_failed = true,
            }
        }
        self.arm_recv(slot, gen);
        let s = self.stats();
        s.accepted.inc();
        s.pending_open.inc();
        if tls_failed {
            s.tls_failure("other");
            self.close_now(slot, gen);
        } else if s.pending_open.get() > u64::from(self.settings.max_pending) {
            // Refused at once, before reading anything: a flood of idle or slow sockets
            // cannot hold more than --max-pending per core.
            self.reject_now(slot, gen, ws_common::handshake::Reject::Busy);
        }
        if !c.more && !self.accept_backoff {
            self.arm_accept();
        }
    }

    /// A multishot receive completed: bytes in a provided buffer, EOF, or an error.
    fn on_recv(&mut self, t: Token, c: Completion) {
        let (slot, gen) = (t.slot, t.gen);
        if c.result > 0 {
            let Some(bid) = c.buffer else {
                self.close_now(slot, gen);
                return;
            };
            if self.conns.get(slot, gen).is_some() {
                // SAFETY: the kernel handed us `bid` and does not touch it until recycled,
                // which happens right after the bytes have been handled.
                let data = unsafe { self.bufs.bytes(bid, c.result as usize) };
                if self.conns.get(slot, gen).is_some_and(|c| c.has(flag::TLS)) {
                    self.on_tls_bytes(slot, gen, data);
                } else {
                    self.on_bytes(slot, gen, data);
                }
            }
            self.bufs.recycle(bid);
        } else if let Some(bid) = c.buffer {
            self.bufs.recycle(bid);
        }
        let congested = c.result > 0 && self.congested();
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        if !c.more {
            conn.flags &= !flag::RECV_ARMED; // this receive is over
        }
        if c.result > 0 {
            let publisher = conn.has(flag::BROADCAST) && conn.phase == Phase::Open;
            if publisher && !conn.has(flag::PAUSED) && congested {
                // Another core is behind: stop reading this publisher until it catches up.
                conn.flags |= flag::PAUSED;
                self.paused.push((slot, gen));
                if c.more {
                    self.ring.cancel(t);
                }
            } else if !c.more {
                self.arm_recv(slot, gen); // the kernel ended the multishot: arm a new one
            }
            return;
        }
        match -c.result {
            0 => self.on_eof(slot, gen),
            libc::ENOBUFS => self.rearm.push((slot, gen)),
            // A pause's cancel: if the pause has been lifted meanwhile, read again.
            libc::ECANCELED => self.arm_recv(slot, gen),
            _ => {
                self.stats().resets.inc();
                self.close_now(slot, gen);
            }
        }
    }

    fn on_bytes(&mut self, slot: u32, gen: u32, data: &mut [u8]) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        match conn.phase {
            Phase::Handshake => self.on_handshake_bytes(slot, gen, data),
            Phase::Open | Phase::Closing => {
                conn.last_rx = self.tick;
                self.stats().bytes_in.add(data.len() as u64);
                self.on_frame_bytes(slot, gen, data);
            }
            // Discarded: we only wait for EOF, or for other cores to answer.
            Phase::Lingering | Phase::Waiting => {}
        }
    }

    /// Ciphertext from a TLS connection: decrypted, then on to [`Core::on_bytes`] as if it
    /// had come from a plain socket; handshake records (and alerts) go out first.
    fn on_tls_bytes(&mut self, slot: u32, gen: u32, data: &mut [u8]) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        if matches!(conn.phase, Phase::Lingering | Phase::Waiting) {
            return; // discarded, as on a plain connection
        }
        let Some(mut tls) = self.conns.take_tls(slot) else {
            self.close_now(slot, gen);
            return;
        };
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let mut out = std::mem::take(&mut self.tls_out);
        let mut n = 0;
        let r = tls.receive(data, &mut plain, &mut out, &mut n);
        if r.is_err() {
            tls.alert(&mut out, &mut n);
        }
        self.conns.put_tls(slot, tls);
        if n > 0 {
            self.send_sealed(slot, gen, &out[..n]);
        }
        self.tls_out = out;
        match r {
            Err(e) => {
                self.stats().tls_failure(crate::tls_config::classify(&e));
                self.linger(slot, gen);
            }
            Ok(rx) => {
                match rx.established {
                    Some(true) => self.stats().tls_resumed.inc(),
                    Some(false) => self.stats().tls_full.inc(),
                    None => {}
                }
                if !plain.is_empty() {
                    self.on_bytes(slot, gen, &mut plain);
                }
                if rx.peer_closed {
                    self.on_eof(slot, gen);
                }
            }
        }
        if plain.capacity() > 64 * 1024 {
            plain = Vec::new(); // one large message does not pin its size for good
        }
        self.tls_plain = plain;
    }

    /// Whether `slot` speaks TLS and is still in its TLS handshake (a lingering one has
    /// failed already and been counted).
    fn tls_handshaking(&mut self, slot: u32) -> bool {
        self.conns
            .by_slot(slot)
            .is_some_and(|c| c.phase == Phase::Handshake)
            && self.conns.tls(slot).is_some_and(|t| !t.established())
    }

    fn on_eof(&mut self, slot: u32, gen: u32) {
        if self.tls_handshaking(slot) {
            self.stats().tls_failure("eof");
        }
        if let Some(conn) = self.conns.get(slot, gen) {
            match conn.phase {
                Phase::Open => self.stats().resets.inc(),
                // A client that half-closed after its request still gets the answer: the
                // push/broadcast reply, or the bytes still queued; linger/sweep end it.
                Phase::Waiting => return,
                Phase::Lingering if conn.extra.as_ref().is_some_and(|e| e.unsent() > 0) => return,
                _ => {}
            }
        }
        self.close_now(slot, gen);
    }

    /// Sends `self.tx` (staged output) on the connection, queueing what the socket refuses.
    pub fn send_staged(&mut self, slot: u32, gen: u32) {
        if self.tx.is_empty() {
            return;
        }
        let tx = std::mem::take(&mut self.tx);
        self.send_bytes(slot, gen, &tx);
        let mut tx = tx;
        tx.clear();
        self.tx = tx;
    }

    /// Writes `bytes` now if nothing is queued, else queues them; arms POLLOUT as needed.
    /// Returns false when the bytes were not taken: the connection is gone, or its queue is
    /// full and the slow-consumer policy dropped them or closed it.
    pub fn send_bytes(&mut self, slot: u32, gen: u32, bytes: &[u8]) -> bool {
        let limit = self.settings.send_queue_bytes;
        let Some(conn) = self.conns.get(slot, gen) else {
            return false;
        };
        if conn.has(flag::TLS) {
            return self.send_tls(slot, gen, bytes);
        }
        let Some((sent, queued)) = self.send_unqueued(slot, gen, bytes) else {
            return false;
        };
        if sent == bytes.len() {
            return true;
        }
        if queued + bytes.len() - sent > limit {
            // A client that does not read what it is sent: its queue is bounded.
            return match self.settings.slow_consumer {
                SlowConsumer::Drop if sent == 0 => {
                    self.stats().slow_consumer_drops.inc();
                    false
                }
                _ => {
                    // Close (or a frame already half on the wire, which cannot be dropped).
                    self.stats().slow_consumer_closes.inc();
                    self.stats().protocol_close(close::POLICY);
                    self.enqueue(slot, gen, &bytes[sent..]);
                    self.close_with(slot, gen, close::POLICY, "slow consumer");
                    false
                }
            };
        }
        self.enqueue(slot, gen, &bytes[sent..]);
        true
    }

    /// [`Core::send_bytes`] for a TLS connection. The slow-consumer policy is decided
    /// before sealing: a sealed record can no longer be dropped (the client could not
    /// decrypt the records after it).
    fn send_tls(&mut self, slot: u32, gen: u32, bytes: &[u8]) -> bool {
        let limit = self.settings.send_queue_bytes;
        let queued = self
            .conns
            .get(slot, gen)
            .and_then(|c| c.extra.as_ref())
            .map_or(0, |e| e.unsent());
        if queued > 0 && queued + bytes.len() > limit {
            if self.settings.slow_consumer == SlowConsumer::Drop {
                self.stats().slow_consumer_drops.inc();
            } else {
                self.stats().slow_consumer_closes.inc();
                self.stats().protocol_close(close::POLICY);
                self.close_with(slot, gen, close::POLICY, "slow consumer");
            }
            return false;
        }
        let Some(n) = self.seal(slot, gen, bytes) else {
            return false;
        };
        self.send_tls_out(slot, gen, n)
    }

    /// Sends the records [`Core::tls_write`] left in `self.tls_out[..n]`.
    fn send_tls_out(&mut self, slot: u32, gen: u32, n: usize) -> bool {
        let out = std::mem::take(&mut self.tls_out);
        let ok = self.send_sealed(slot, gen, &out[..n]);
        self.tls_out = out;
        ok
    }

    /// Runs `write` on the TLS state of `slot` (taken out meanwhile: `write` cannot reach
    /// the core), into `self.tls_out` from its start; `Some(Ok(n))`: `n` bytes of records.
    /// `None`: the connection has no TLS state.
    fn tls_write(
        &mut self,
        slot: u32,
        write: impl FnOnce(&mut TlsConn, &mut Vec<u8>, &mut usize) -> Result<(), rustls::Error>,
    ) -> Option<Result<usize, rustls::Error>> {
        let mut tls = self.conns.take_tls(slot)?;
        let mut n = 0;
        let r = write(&mut tls, &mut self.tls_out, &mut n);
        self.conns.put_tls(slot, tls);
        Some(r.map(|()| n))
    }

    /// Seals `plain` for the TLS connection at `slot`: the records are `self.tls_out[..n]`.
    /// `None`: TLS failed and the connection is closed.
    pub(crate) fn seal(&mut self, slot: u32, gen: u32, plain: &[u8]) -> Option<usize> {
        match self.tls_write(slot, |t, out, n| t.seal(plain, out, n)) {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                self.stats().tls_failure(crate::tls_config::classify(&e));
                self.close_now(slot, gen);
                None
            }
            None => {
                self.close_now(slot, gen);
                None
            }
        }
    }

    /// Seals, for a TLS connection, the frames `parts` as one run of records and sends them
    /// (one send), behind whatever is queued.
    pub(crate) fn send_tls_joined<'a>(
        &mut self,
        slot: u32,
        gen: u32,
        parts: impl IntoIterator<Item = &'a [u8]>,
    ) {
        let mut join = std::mem::take(&mut self.tls_join);
        join.clear();
        for p in parts {
            join.extend_from_slice(p);
        }
        self.send_tls(slot, gen, &join);
        if join.capacity() > 256 * 1024 {
            join = Vec::new();
        }
        self.tls_join = join;
    }

    /// The first step of every send: one non-blocking `send` when nothing is queued ahead
    /// of `bytes`. Returns (bytes the socket took, bytes that were queued before); `None`
    /// when the connection is gone or broke (then closed and counted as a reset).
    fn send_unqueued(&mut self, slot: u32, gen: u32, bytes: &[u8]) -> Option<(usize, usize)> {
        let conn = self.conns.get(slot, gen)?;
        let fd = conn.fd;
        let queued = conn.extra.as_ref().map_or(0, |e| e.unsent());
        if queued > 0 {
            return Some((0, queued));
        }
        match send_now(fd, bytes) {
            Ok(n) => Some((n, 0)),
            Err(_) => {
                self.stats().resets.inc();
                self.close_now(slot, gen);
                None
            }
        }
    }

    /// Writes ciphertext now if nothing is queued, else queues it (no policy: it was
    /// applied before sealing).
    fn send_sealed(&mut self, slot: u32, gen: u32, bytes: &[u8]) -> bool {
        let Some((sent, _)) = self.send_unqueued(slot, gen, bytes) else {
            return false;
        };
        if sent < bytes.len() {
            self.enqueue(slot, gen, &bytes[sent..]);
        }
        true
    }

    /// Sends a control frame (Close) past the queue limit: it is small and ends the
    /// connection anyway, so no policy may drop it.
    pub(crate) fn send_control(&mut self, slot: u32, gen: u32, frame: &[u8]) {
        if self.conns.get(slot, gen).is_some_and(|c| c.has(flag::TLS)) {
            let Some(n) = self.seal(slot, gen, frame) else {
                return;
            };
            let out = std::mem::take(&mut self.tls_out);
            self.enqueue(slot, gen, &out[..n]);
            self.tls_out = out;
        } else {
            self.enqueue(slot, gen, frame);
        }
        self.flush(slot, gen);
    }

    /// Appends to the connection's outbound queue (no limit check) and arms POLLOUT.
    pub(crate) fn enqueue(&mut self, slot: u32, gen: u32, bytes: &[u8]) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let ex = conn.extra();
        if ex.out_pos > 0 && ex.out_pos >= ex.outbuf.len() / 2 {
            // Forget what was sent, so a queue that never quite empties cannot grow forever.
            ex.outbuf.drain(..ex.out_pos);
            ex.out_pos = 0;
        }
        ex.outbuf.extend_from_slice(bytes);
        want_pollout(&mut self.ring, conn, slot, gen);
    }

    /// Writes queued bytes after POLLOUT; finishes a linger once everything is out.
    fn flush(&mut self, slot: u32, gen: u32) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let fd = conn.fd;
        if let Some(ex) = conn.extra.as_mut() {
            while ex.out_pos < ex.outbuf.len() {
                let n = match send_now(fd, &ex.outbuf[ex.out_pos..]) {
                    Ok(0) => {
                        want_pollout(&mut self.ring, conn, slot, gen);
                        return;
                    }
                    Ok(n) => n,
                    Err(_) => {
                        self.stats().resets.inc();
                        self.close_now(slot, gen);
                        return;
                    }
                };
                ex.out_pos += n;
            }
            ex.outbuf = Vec::new();
            ex.out_pos = 0;
        }
        conn.shed();
        if conn.phase == Phase::Lingering {
            self.half_close(slot, gen);
        }
    }

    /// Ends the connection after what is queued has been sent: half-close, then wait
    /// (briefly) for the client's EOF so it reads our answer rather than a reset.
    pub fn linger(&mut self, slot: u32, gen: u32) {
        let tick = self.tick;
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let was = conn.phase;
        conn.phase = Phase::Lingering;
        conn.last_ping = tick;
        if conn.has(flag::TLS) && was != Phase::Lingering {
            // close_notify before the FIN, so the client knows the stream was not cut.
            if let Some(Ok(n)) = self.tls_write(slot, |t, out, n| t.close_notify(out, n)) {
                if n > 0 {
                    self.send_tls_out(slot, gen, n);
                }
            }
        }
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let queued = conn.extra.as_ref().map_or(0, |e| e.unsent());
        if queued == 0 {
            self.half_close(slot, gen);
        }
    }

    fn half_close(&mut self, slot: u32, gen: u32) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        if !conn.has(flag::WR_SHUT) {
            conn.flags |= flag::WR_SHUT;
            // SAFETY: plain syscall on our fd.
            unsafe { libc::shutdown(conn.fd, libc::SHUT_WR) };
        }
    }

    /// Closes the socket and frees the slot now.
    pub fn close_now(&mut self, slot: u32, gen: u32) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let fd = conn.fd;
        let flags = conn.flags;
        self.ring.cancel(Token {
            kind: Kind::Recv,
            gen,
            slot,
        });
        if flags & flag::POLL_OUT != 0 {
            self.ring.cancel(Token {
                kind: Kind::PollOut,
                gen,
                slot,
            });
        }
        // SAFETY: fd is ours; the slot forgets it below.
        unsafe { libc::close(fd) };
        self.registry.leave(slot);
        if flags & flag::COUNTED != 0 {
            self.stats().connections_open.dec();
            self.global_open.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.stats().pending_open.dec();
        }
        self.conns.remove(slot);
    }

    /// Answers `rej` with one non-blocking send and closes at once: for a connection refused
    /// before anything was read (`--max-pending`), which must not hold a slot any longer.
    pub fn reject_now(&mut self, slot: u32, gen: u32, rej: ws_common::handshake::Reject) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let fd = conn.fd;
        let resp = rej.response();
        if conn.has(flag::TLS) {
            // No TLS session yet to answer in: the client sees the connection close.
            self.stats().reject(rej);
            self.close_now(slot, gen);
            return;
        }
        // SAFETY: plain syscall on our fd with a valid buffer.
        unsafe {
            libc::send(
                fd,
                resp.as_ptr().cast(),
                resp.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        self.stats().reject(rej);
        self.close_now(slot, gen);
    }

    /// Sends a Close frame with `code` and lingers (used for violations and timeouts).
    pub fn close_with(&mut self, slot: u32, gen: u32, code: u16, reason: &str) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        if !conn.has(flag::CLOSE_SENT) {
            conn.flags |= flag::CLOSE_SENT;
            self.send_control(slot, gen, &frame::close_frame(code, reason));
        }
        self.linger(slot, gen);
    }

    /// Once a second: heartbeat pings, idle and handshake timeouts, linger and drain ends.
    pub fn sweep(&mut self) {
        self.tick = self.started.elapsed().as_secs() as u32;
        let tick = self.tick;
        let s = self.settings.clone();
        let slots: Vec<u32> = self.conns.live_slots().collect();
        for slot in slots {
            let Some(conn) = self.conns.by_slot(slot) else {
                continue;
            };
            let gen = conn.gen;
            let since_rx = tick.saturating_sub(conn.last_rx);
            let since_ping = tick.saturating_sub(conn.last_ping);
            match conn.phase {
                Phase::Handshake => {
                    if since_ping >= s.handshake_timeout {
                        if self.tls_handshaking(slot) {
                            self.stats().tls_failure("timeout");
                        }
                        self.stats().handshake_timeout_closes.inc();
                        self.close_now(slot, gen);
                    }
                }
                Phase::Open => {
                    let partial_since = conn.extra.as_ref().and_then(|e| e.partial_since);
                    if s.message_timeout > 0
                        && partial_since
                            .is_some_and(|t| tick.saturating_sub(t) >= s.message_timeout)
                    {
                        // A frame or fragmented message started and never finished: bytes
                        // trickling in keep the idle timer fresh, this one does not.
                        self.stats().message_timeout_closes.inc();
                        self.close_with(slot, gen, close::POLICY, "message timeout");
                    } else if s.idle_timeout > 0 && since_rx >= s.idle_timeout {
                        self.stats().idle_timeout_closes.inc();
                        self.close_with(slot, gen, close::GOING_AWAY, "idle timeout");
                    } else if s.ping_interval > 0 && since_ping >= s.ping_interval {
                        conn.last_ping = tick;
                        let ping = frame::encode(op::PING, &[]);
                        self.stats().pings_sent.inc();
                        self.send_bytes(slot, gen, &ping);
                    }
                }
                Phase::Closing => {
                    let deadline = self
                        .shutdown_at
                        .unwrap_or_else(|| conn.last_ping.saturating_add(s.drain_timeout));
                    if tick >= deadline {
                        if self.shutdown_at.is_some() {
                            self.forced += 1;
                        }
                        self.close_now(slot, gen);
                    }
                }
                Phase::Waiting => {
                    if since_ping >= s.handshake_timeout {
                        self.close_now(slot, gen);
                    }
                }
                Phase::Lingering => {
                    if since_ping >= LINGER_TICKS {
                        self.close_now(slot, gen);
                    }
                }
            }
        }
        let state = self.conns.state_bytes();
        self.stats().conn_state_bytes.set(state as u64);
        let (tls_open, tls_bytes) = self.conns.tls_state();
        self.stats().tls_open.set(tls_open as u64);
        self.stats().tls_state_bytes.set(tls_bytes as u64);
        if state > s.memory_budget {
            self.enforce_memory_budget(state);
        }
        self.resume_paused();
        self.forget_orphan_requests();
        if self.conns.live() == 0 && self.conns.capacity() > 4096 {
            // Everyone left after a big run: return the slab and what malloc holds.
            self.conns.release_memory();
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        self.ring.submit();
        self.check_drained();
    }

    /// Over `--memory-budget`: closes the connections holding the most (partial messages,
    /// unsent output) with 1008 until the rest fits. Their buffers are freed at once, so the
    /// budget holds again from this sweep on.
    fn enforce_memory_budget(&mut self, mut state: usize) {
        let mut holders: Vec<(usize, u32, u32)> = self
            .conns
            .live_slots()
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|slot| {
                let c = self.conns.by_slot(slot)?;
                let bytes = c.extra.as_ref()?.heap_bytes();
                Some((bytes, slot, c.gen))
            })
            .collect();
        holders.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
        for (bytes, slot, gen) in holders {
            if state <= self.settings.memory_budget {
                break;
            }
            state = state.saturating_sub(bytes);
            self.stats().memory_budget_closes.inc();
            if let Some(conn) = self.conns.get(slot, gen) {
                // Drop what it holds: the Close goes out alone, the memory is back now.
                if let Some(ex) = conn.extra.as_mut() {
                    ex.inbuf = Vec::new();
                    ex.outbuf = Vec::new();
                    ex.out_pos = 0;
                    ex.decoder = Default::default();
                    ex.partial_since = None;
                }
                let open = conn.phase == Phase::Open;
                if open {
                    self.close_with(slot, gen, close::POLICY, "memory budget");
                } else {
                    self.close_now(slot, gen);
                }
            }
        }
    }

    /// SIGINT/SIGTERM: stop accepting, Close 1001 to everyone, finish when all are gone.
    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_some() {
            return;
        }
        self.tick = self.started.elapsed().as_secs() as u32;
        self.shutdown_at = Some(self.tick.saturating_add(self.settings.drain_timeout));
        for i in 0..2 {
            if self.accept_armed[i] {
                self.ring.cancel(Token {
                    kind: Kind::Accept,
                    gen: 0,
                    slot: i as u32,
                });
            }
            if self.listeners[i] >= 0 {
                // SAFETY: the listener is ours and no longer used.
                unsafe { libc::close(self.listeners[i]) };
                self.listeners[i] = -1;
            }
        }
        self.drained_from = self.conns.live();
        let slots: Vec<u32> = self.conns.live_slots().collect();
        for slot in slots {
            let Some(conn) = self.conns.by_slot(slot) else {
                continue;
            };
            let gen = conn.gen;
            match conn.phase {
                Phase::Handshake => self.close_now(slot, gen),
                Phase::Open => {
                    conn.phase = Phase::Closing;
                    conn.flags |= flag::CLOSE_SENT;
                    let f = frame::close_frame(close::GOING_AWAY, "server shutting down");
                    self.send_control(slot, gen, &f);
                }
                Phase::Waiting => self.close_now(slot, gen),
                Phase::Closing | Phase::Lingering => {}
            }
        }
        self.ring.submit();
    }

    fn check_drained(&mut self) {
        if self.shutdown_at.is_some() && self.conns.live() == 0 {
            self.done = true;
        }
    }
}

/// Arms the one-shot POLLOUT of a connection with queued bytes, unless it is armed.
fn want_pollout(ring: &mut Ring, conn: &mut crate::conn::Conn, slot: u32, gen: u32) {
    if !conn.has(flag::POLL_OUT) {
        conn.flags |= flag::POLL_OUT;
        ring.poll_out_once(
            conn.fd,
            Token {
                kind: Kind::PollOut,
                gen,
                slot,
            },
        );
    }
}

/// send(2) without blocking or SIGPIPE: `Ok(bytes taken)`, 0 when the socket is full;
/// `Err(errno)` when the connection is broken.
pub(crate) fn send_now(fd: RawFd, bytes: &[u8]) -> Result<usize, i32> {
    // SAFETY: bytes is a valid readable buffer of its length.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    taken_or_errno(n)
}

/// sendmsg(2) of several buffers at once, with the same contract as [`send_now`].
pub(crate) fn sendmsg_now(fd: RawFd, iov: &[libc::iovec]) -> Result<usize, i32> {
    // SAFETY: msghdr points at iovecs whose buffers the caller keeps alive for the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    taken_or_errno(n)
}

/// A send's return value: bytes taken (0 for EAGAIN/EINTR), or the errno of a broken socket.
fn taken_or_errno(n: isize) -> Result<usize, i32> {
    if n >= 0 {
        return Ok(n as usize);
    }
    would_block_or(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A failed send's errno: 0 bytes taken for EAGAIN/EINTR (try again later), else the errno
/// of a broken socket.
pub(crate) fn would_block_or(errno: i32) -> Result<usize, i32> {
    match errno {
        libc::EAGAIN | libc::EINTR => Ok(0),
        errno => Err(errno),
    }
}
