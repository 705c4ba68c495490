//! One connection's state, and the per-core slab that holds them.
//!
//! Memory layout (the point of the design): a slot is 32 bytes inline in the core's slab:
//! `fd`, `gen`, two coarse timestamps, the phase and a few flags, and one pointer to
//! [`Extra`], which exists only while the connection is mid-something: a handshake being
//! received, a frame split across reads, a fragmented message, or bytes the socket would not
//! take yet. An idle open connection has no `Extra`, no buffer and no task: its only other
//! cost is the kernel's (socket buffers and the io_uring multishot receive).

use std::os::fd::RawFd;

use ws_common::message::Decoder;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP accepted, HTTP request not complete yet.
    Handshake,
    /// Upgraded: frames flow.
    Open,
    /// We sent Close and wait for the client's Close (or the drain deadline).
    Closing,
    /// A plain HTTP request (push, server broadcast) waits for the other cores' counts.
    Waiting,
    /// Last bytes (an HTTP error, a Close) are being flushed; then half-close and drain
    /// the client's remaining bytes until EOF, so it reads our answer instead of a reset.
    Lingering,
}

/// Flag bits in [`Conn::flags`].
pub mod flag {
    /// A one-shot POLLOUT is armed.
    pub const POLL_OUT: u16 = 1;
    /// Counted in the open-WebSocket gauge (and the global --max-conns budget).
    pub const COUNTED: u16 = 2;
    /// We have sent a Close frame.
    pub const CLOSE_SENT: u16 = 4;
    /// Write side shut down (lingering).
    pub const WR_SHUT: u16 = 8;
    /// On `/broadcast`: data messages go to the room.
    pub const BROADCAST: u16 = 16;
    /// On `/broadcast?echo=false`: the sender does not get its own messages.
    pub const NO_ECHO: u16 = 32;
    /// Receive cancelled while another core is congested (see `Core::congested`).
    pub const PAUSED: u16 = 64;
    /// A multishot receive is armed (at most one at a time).
    pub const RECV_ARMED: u16 = 128;
    /// Has frames in this wake's fan-out queue: later ones must join them there, in order.
    pub const FANNED: u16 = 256;
    /// Accepted on the admin listener: only the admin routes.
    pub const ADMIN: u16 = 512;
    /// Speaks TLS: its bytes go through its [`crate::tls_session::TlsConn`] both ways.
    pub const TLS: u16 = 1024;
}

/// Per-connection heap state that exists only while needed.
#[derive(Debug, Default)]
pub struct Extra {
    /// Received bytes not consumed yet: an incomplete handshake or frame.
    pub inbuf: Vec<u8>,
    /// Bytes the socket would not take yet, from `out_pos` on.
    pub outbuf: Vec<u8>,
    pub out_pos: usize,
    /// Fragmented-message assembly (empty between messages).
    pub decoder: Decoder,
    /// Tick at which the frame or message now in progress started (`--message-timeout`);
    /// `None` between messages.
    pub partial_since: Option<u32>,
}

impl Extra {
    pub fn is_empty(&self) -> bool {
        self.inbuf.is_empty() && self.out_pos >= self.outbuf.len() && self.decoder.is_idle()
    }

    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Extra>()
            + self.inbuf.capacity()
            + self.outbuf.capacity()
            + self.decoder.heap_bytes()
    }

    pub fn unsent(&self) -> usize {
        self.outbuf.len() - self.out_pos
    }
}

/// One slab slot.
#[derive(Debug)]
pub struct Conn {
    /// Socket, or -1 when the slot is free.
    pub fd: RawFd,
    /// Bumped on every reuse of the slot; completions carry it.
    pub gen: u32,
    /// Tick (seconds since start) of the last frame received, or of the accept.
    pub last_rx: u32,
    /// Tick of the last ping we sent, or of the accept (handshake deadline base).
    pub last_ping: u32,
    pub phase: Phase,
    pub flags: u16,
    pub extra: Option<Box<Extra>>,
}

impl Conn {
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// The Extra, created on first need.
    pub fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Frees the Extra when it holds nothing, so an idle connection costs only its slot.
    pub fn shed(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.is_empty()) {
            self.extra = None;
        }
    }
}

/// The core's connections: a vector of slots and a free list, indexed by slot number.
#[derive(Default)]
pub struct Slab {
    slots: Vec<Conn>,
    free: Vec<u32>,
    live: usize,
    /// Generation of the next connection: one counter for the whole slab (not per slot),
    /// so a slot keeps getting fresh generations even after [`Slab::release_memory`].
    next_gen: u32,
    /// TLS state by slot, beside the slots rather than in them: a plain server's slot stays
    /// 32 bytes and this vector stays empty. Grown only as far as the highest TLS slot.
    tls: Vec<Option<Box<crate::tls_session::TlsConn>>>,
}

impl Slab {
    /// Takes a slot for `fd`; returns its index.
    pub fn insert(&mut self, fd: RawFd, tick: u32) -> u32 {
        self.live += 1;
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & 0xFF_FFFF;
        if let Some(i) = self.free.pop() {
            let c = &mut self.slots[i as usize];
            c.fd = fd;
            c.gen = gen;
            c.last_rx = tick;
            c.last_ping = tick;
            c.phase = Phase::Handshake;
            c.flags = 0;
            c.extra = None;
            return i;
        }
        self.slots.push(Conn {
            fd,
            gen,
            last_rx: tick,
            last_ping: tick,
            phase: Phase::Handshake,
            flags: 0,
            extra: None,
        });
        (self.slots.len() - 1) as u32
    }

    /// The live connection at `slot` with generation `gen`, if it is still that one.
    pub fn get(&mut self, slot: u32, gen: u32) -> Option<&mut Conn> {
        self.slots
            .get_mut(slot as usize)
            .filter(|c| c.fd >= 0 && c.gen == gen)
    }

    pub fn by_slot(&mut self, slot: u32) -> Option<&mut Conn> {
        self.slots.get_mut(slot as usize).filter(|c| c.fd >= 0)
    }

    /// Frees the slot (the caller has closed the fd).
    pub fn remove(&mut self, slot: u32) {
        if let Some(c) = self.slots.get_mut(slot as usize) {
            if c.fd >= 0 {
                c.fd = -1;
                c.extra = None;
                if let Some(t) = self.tls.get_mut(slot as usize) {
                    *t = None;
                }
                self.free.push(slot);
                self.live -= 1;
            }
        }
    }

    /// With no connection left, gives the slots' memory back (after a ceiling run the
    /// slab would otherwise keep its peak size for good).
    pub fn release_memory(&mut self) {
        if self.live == 0 {
            self.slots = Vec::new();
            self.free = Vec::new();
            self.tls = Vec::new();
        }
    }

    /// Gives the connection at `slot` its TLS state.
    pub fn set_tls(&mut self, slot: u32, tls: Box<crate::tls_session::TlsConn>) {
        let i = slot as usize;
        if self.tls.len() <= i {
            self.tls.resize_with(i + 1, || None);
        }
        self.tls[i] = Some(tls);
    }

    /// Takes the TLS state out while it works on bytes (the core is borrowed meanwhile);
    /// [`Slab::put_tls`] gives it back.
    pub fn take_tls(&mut self, slot: u32) -> Option<Box<crate::tls_session::TlsConn>> {
        self.tls.get_mut(slot as usize).and_then(Option::take)
    }

    pub fn put_tls(&mut self, slot: u32, tls: Box<crate::tls_session::TlsConn>) {
        if self.slots.get(slot as usize).is_some_and(|c| c.fd >= 0) {
            self.set_tls(slot, tls);
        }
    }

    pub fn tls(&self, slot: u32) -> Option<&crate::tls_session::TlsConn> {
        self.tls.get(slot as usize).and_then(|t| t.as_deref())
    }

    /// TLS connections held and the user-space bytes their TLS state costs.
    pub fn tls_state(&self) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = self.tls.capacity() * std::mem::size_of::<usize>();
        for t in self.tls.iter().flatten() {
            n += 1;
            bytes += t.state_bytes();
        }
        (n, bytes)
    }

    /// Slots allocated (live or free).
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// Slot numbers of live connections (for the sweep).
    pub fn live_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, c)| c.fd >= 0)
            .map(|(i, _)| i as u32)
    }

    /// User-space bytes held for connections: slots (capacity) plus live extras.
    pub fn state_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Conn>()
            + self.free.capacity() * 4
            + self
                .slots
                .iter()
                .filter_map(|c| c.extra.as_ref())
                .map(|e| e.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_small() {
        assert!(
            std::mem::size_of::<Conn>() <= 32,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }

    #[test]
    fn reuse_bumps_generation() {
        let mut s = Slab::default();
        let a = s.insert(10, 0);
        let g = s.get(a, 0).map(|c| c.gen);
        assert_eq!(g, Some(0));
        s.remove(a);
        assert!(s.get(a, 0).is_none());
        let b = s.insert(11, 0);
        assert_eq!(a, b);
        assert!(s.get(b, 0).is_none());
        assert!(s.get(b, 1).is_some());
        assert_eq!(s.live(), 1);
        // After the memory is released, generations keep counting: no stale match.
        s.remove(b);
        s.release_memory();
        assert_eq!(s.capacity(), 0);
        let c = s.insert(12, 0);
        assert_eq!(c, 0);
        assert!(s.get(c, 0).is_none() && s.get(c, 1).is_none());
        assert!(s.get(c, 2).is_some());
    }
}
