//! One connection slot of a worker: a compact state record, kept in a `Vec` indexed by slot
//! number. Slot `i` of worker `w` is one "virtual user": it connects, and reconnects after a
//! drop, for as long as the current stage wants it.
//!
//! Memory: an idle open connection owns no heap buffer. `rbuf` holds only a partial frame
//! (or a partial handshake response) and `wbuf` only bytes the kernel would not take; both
//! are freed as soon as they empty. The record itself is ~130 bytes (see the test).

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not wanted (yet, or any more), or finished.
    Idle,
    /// Waiting out a back-off before the next connect attempt.
    Backoff,
    /// `connect()` issued, waiting for writable.
    Connecting,
    /// wss://: TCP is up, the TLS handshake is under way.
    Tls,
    /// Upgrade request sent, waiting for the `101`.
    Handshaking,
    /// Upgraded: the scenario runs.
    Open,
    /// We sent a Close and wait for the server's.
    Closing,
    /// Stopped retrying after `--reconnect-max-tries`.
    GaveUp,
}

/// A connection slot.
#[derive(Debug)]
pub struct Conn {
    /// Socket, or -1.
    pub fd: i32,
    /// Bumped each time the socket is closed, so stale timers and events are ignored.
    pub gen: u32,
    pub state: State,
    /// Consecutive failures (connects or drops) since the last established connection.
    pub tries: u32,
    /// The last connection of this slot was dropped: the next established one is a reconnect.
    pub dropped: bool,
    /// Opcode of the fragmented message being received (0: none).
    pub frag_op: u8,
    /// Position in the worker's list of open connections (`u32::MAX`: not in it).
    pub open_pos: u32,
    /// Start of the current phase: `connect()` or handshake request sent.
    pub t_ns: u64,
    /// The `Sec-WebSocket-Key` sent (raw 16 bytes), to verify the accept key.
    pub key: [u8; 16],
    /// Messages sent on this connection (also the next sequence number).
    pub sent: u64,
    /// Echo replies received.
    pub recv: u64,
    /// Highest sequence number seen plus one (replies below it are out of order).
    pub hi: u64,
    /// Send time of the outstanding ping (0: none outstanding).
    pub ping_ns: u64,
    /// Received bytes not yet a whole frame (empty, unallocated, when idle).
    pub rbuf: Vec<u8>,
    /// Bytes the kernel would not take yet (empty, unallocated, when idle).
    pub wbuf: Vec<u8>,
    /// wss://: the TLS session (None over ws://).
    pub tls: Option<Box<crate::engine::tls::Tls>>,
}

impl Default for Conn {
    fn default() -> Self {
        Self {
            fd: -1,
            gen: 0,
            state: State::Idle,
            tries: 0,
            dropped: false,
            frag_op: 0,
            open_pos: u32::MAX,
            t_ns: 0,
            key: [0; 16],
            sent: 0,
            recv: 0,
            hi: 0,
            ping_ns: 0,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            tls: None,
        }
    }
}

impl Conn {
    /// Replies still expected on this connection.
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.recv)
    }

    /// Whether the socket is connecting or handshaking.
    pub fn is_pending(&self) -> bool {
        matches!(
            self.state,
            State::Connecting | State::Tls | State::Handshaking
        )
    }

    /// Heap bytes owned by this slot.
    pub fn heap_bytes(&self) -> usize {
        self.rbuf.capacity() + self.wbuf.capacity()
    }
}

/// The epoll token of slot `idx` in generation `gen`.
pub fn token(idx: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | idx as u64
}

/// Inverse of [`token`].
pub fn untoken(t: u64) -> (usize, u32) {
    ((t & 0xFFFF_FFFF) as usize, (t >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_bufferless_when_idle() {
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 160, "Conn is {size} bytes");
        assert_eq!(Conn::default().heap_bytes(), 0);
    }

    #[test]
    fn tokens_roundtrip() {
        assert_eq!(untoken(token(12345, 7)), (12345, 7));
        assert_eq!(untoken(token(0, u32::MAX)), (0, u32::MAX));
    }
}
