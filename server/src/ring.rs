//! The per-core io_uring that watches this core's sockets.
//!
//! glommio keeps one poll `Source` (~500 B on the heap) per waiting socket and re-arms a
//! fresh one-shot poll after every read. To make an idle connection cost almost nothing in
//! user space, each core instead owns this second ring: one *multishot receive* per
//! connection (kernel memory only, re-armed by the kernel, no per-read SQE and no recv
//! syscall: the kernel copies arriving bytes into a buffer it picks from the core's
//! provided-buffer ring, [`BufRing`], and posts a completion naming it), and one multishot
//! accept per listener. No buffer belongs to a connection: an idle one pins nothing. The
//! core's thread sleeps in this ring ([`Ring::wait`]; 0 % CPU) until a socket, a deadline,
//! or another core (through a multishot poll on the core's eventfd) needs it.

use std::io;
use std::os::fd::RawFd;

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// What an operation was for, packed into the 64-bit user_data with the slot and its
/// generation, so a completion for a slot that has since been reused is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Accept = 1,
    /// Multishot receive with a provided buffer.
    Recv = 2,
    PollOut = 3,
    /// Completions of cancellations: nothing to do.
    Ignore = 4,
    /// The multishot poll on the core's eventfd: another core posted to its inbox.
    Wake = 5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub gen: u32,
    pub slot: u32,
}

impl Token {
    pub fn encode(self) -> u64 {
        ((self.kind as u64) << 56) | (((self.gen & 0xFF_FFFF) as u64) << 32) | self.slot as u64
    }

    pub fn decode(v: u64) -> Option<Token> {
        let kind = match v >> 56 {
            1 => Kind::Accept,
            2 => Kind::Recv,
            3 => Kind::PollOut,
            4 => Kind::Ignore,
            5 => Kind::Wake,
            _ => return None,
        };
        Some(Token {
            kind,
            gen: ((v >> 32) & 0xFF_FFFF) as u32,
            slot: v as u32,
        })
    }
}

/// One completion, copied out so the ring is free while it is handled.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub token: Option<Token>,
    pub result: i32,
    pub more: bool,
    /// The provided buffer holding a receive's bytes.
    pub buffer: Option<u16>,
}

pub struct Ring {
    ring: IoUring,
}

impl Ring {
    /// A ring with `entries` SQ slots (the CQ is 8x).
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 8)
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(entries)?;
        Ok(Ring { ring })
    }

    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry we push references only fds and no user memory.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            // SQ full: hand what we have to the kernel and retry.
            let _ = self.ring.submit();
        }
    }

    /// Multishot accept on a listener: one CQE per accepted connection until it stops.
    pub fn accept_multi(&mut self, listener: RawFd, token: Token) {
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Multishot receive into buffers of `group`: a CQE per chunk of data (0 at EOF).
    pub fn recv_multi(&mut self, fd: RawFd, group: u16, token: Token) {
        let e = opcode::RecvMulti::new(types::Fd(fd), group)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Registers a provided-buffer ring with this io_uring.
    pub fn register_buffers(&self, bufs: &BufRing) -> io::Result<()> {
        // SAFETY: the ring memory is page aligned, `entries` long, and lives as long as the
        // BufRing, which the core keeps as long as this Ring.
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                bufs.entries,
                bufs.group,
                0,
            )
        }
    }

    /// One-shot writability poll, armed only while a connection has unsent bytes.
    pub fn poll_out_once(&mut self, fd: RawFd, token: Token) {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Multishot poll for input on the core's eventfd: one completion each time another
    /// core writes it. The counter is never read: eventfd wakes its pollers on every write,
    /// whatever the count, so reading it back would only cost a syscall per wake-up (and at
    /// one write per wake-up it cannot reach 2^64).
    pub fn poll_wake(&mut self, eventfd: RawFd) {
        let e = opcode::PollAdd::new(types::Fd(eventfd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(
                Token {
                    kind: Kind::Wake,
                    gen: 0,
                    slot: 0,
                }
                .encode(),
            );
        self.push(e);
    }

    /// Cancels any operation armed with `token` (accept, receive, poll), releasing the
    /// file reference it holds.
    pub fn cancel(&mut self, token: Token) {
        let e = opcode::AsyncCancel::new(token.encode()).build().user_data(
            Token {
                kind: Kind::Ignore,
                gen: 0,
                slot: 0,
            }
            .encode(),
        );
        self.push(e);
    }

    /// Submits queued entries without waiting. Also enters the kernel when completions
    /// overflowed the CQ: the kernel keeps those back until an enter flushes them, and a
    /// multishot receive's last completion could otherwise wait there indefinitely.
    pub fn submit(&mut self) {
        let sq = self.ring.submission();
        let needed = !sq.is_empty() || sq.cq_overflow();
        drop(sq);
        if needed {
            let _ = self.ring.submit();
        }
    }

    /// Submits queued entries and sleeps until at least one completion is ready or
    /// `timeout` has passed: the only place the core's thread blocks. Receive completions
    /// that the kernel deferred (COOP_TASKRUN) are posted on the way in.
    pub fn wait(&mut self, timeout: std::time::Duration) {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        // ETIME (timeout) and EINTR (a signal) both just mean: look again.
        let _ = self.ring.submitter().submit_with_args(1, &args);
    }

    /// Moves every available completion into `out`.
    pub fn drain(&mut self, out: &mut Vec<Completion>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for c in &mut cq {
            out.push(Completion {
                token: Token::decode(c.user_data()),
                result: c.result(),
                more: cqueue::more(c.flags()),
                buffer: cqueue::buffer_select(c.flags()),
            });
        }
    }
}

/// A small second ring for the fan-out's sends: one `io_uring_enter` submits the sends of
/// a whole room and reaps their results, instead of a `send()` syscall per recipient.
///
/// Every send carries MSG_DONTWAIT, so the kernel completes it inline (bytes taken, or
/// EAGAIN) rather than waiting for room in the socket, and [`SendRing::complete`] returns
/// only when every send it submitted has completed: the caller's buffers are free again.
pub struct SendRing {
    ring: IoUring,
    queued: u32,
}

impl SendRing {
    pub fn new(entries: u32) -> io::Result<SendRing> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(entries)?;
        Ok(SendRing { ring, queued: 0 })
    }

    /// Queues a send of `len` bytes at `ptr` on `fd`; false (nothing queued) when the ring
    /// is full, so call [`SendRing::complete`] first.
    ///
    /// # Safety
    /// The `len` bytes at `ptr` must stay valid until `complete` has returned.
    pub unsafe fn push(&mut self, fd: RawFd, ptr: *const u8, len: usize, tag: u64) -> bool {
        let e = opcode::Send::new(types::Fd(fd), ptr, len as u32)
            .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag);
        // SAFETY: the caller keeps the buffer alive until complete() (see above).
        if unsafe { self.ring.submission().push(&e) }.is_err() {
            return false;
        }
        self.queued += 1;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Submits what is queued, waits until every one of those sends has completed, and
    /// appends (tag, result) to `out`: bytes taken, or -errno.
    pub fn complete(&mut self, out: &mut Vec<(u64, i32)>) {
        let mut left = self.queued;
        self.queued = 0;
        let mut cancelled = false;
        while left > 0 {
            let ts = types::Timespec::new().nsec(100_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(left as usize, &args);
            let mut cq = self.ring.completion();
            cq.sync();
            for c in &mut cq {
                if c.user_data() == CANCEL_TAG {
                    continue;
                }
                out.push((c.user_data(), c.result()));
                left = left.saturating_sub(1);
            }
            drop(cq);
            if left > 0 && !cancelled {
                // Not expected with MSG_DONTWAIT; if a kernel ever parks a send, take it
                // back rather than wait for a client that may never read.
                cancelled = true;
                let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                    .build()
                    .user_data(CANCEL_TAG);
                // SAFETY: a cancellation references no memory.
                let _ = unsafe { self.ring.submission().push(&e) };
            }
        }
    }
}

const CANCEL_TAG: u64 = u64::MAX;

/// A provided-buffer ring: `entries` buffers of `size` bytes the kernel fills with received
/// bytes, handed back with [`BufRing::recycle`] as soon as they have been decoded.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    group: u16,
    size: usize,
    tail: u16,
    memory: Vec<u8>,
}

impl BufRing {
    /// `entries` must be a power of two.
    pub fn new(entries: u16, size: usize, group: u16) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two());
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping; page aligned as the kernel requires.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut b = BufRing {
            ring: ring as *mut BufRingEntry,
            ring_bytes,
            entries,
            group,
            size,
            tail: 0,
            // Touched now, so the resident size at start already includes them: they are a
            // fixed cost per core, and RSS after a run comes back to where it started.
            memory: vec![0x55u8; entries as usize * size],
        };
        for bid in 0..entries {
            b.push(bid);
        }
        b.publish();
        Ok(b)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: idx < entries; the entry is ours to write until the tail is published.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(self.memory.as_ptr() as u64 + bid as u64 * self.size as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry; the kernel reads it atomically.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// The bytes the kernel put in buffer `bid`.
    ///
    /// # Safety
    /// `bid` must come from a completion of this ring's group and not have been recycled:
    /// until then the kernel does not write to it.
    pub unsafe fn bytes<'a>(&self, bid: u16, len: usize) -> &'a mut [u8] {
        let start = bid as usize * self.size;
        let len = len.min(self.size);
        std::slice::from_raw_parts_mut(self.memory.as_ptr().add(start) as *mut u8, len)
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        if bid < self.entries {
            self.push(bid);
            self.publish();
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.ring as *mut libc::c_void, self.ring_bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The send ring's contract: a send to a socket with no room completes at once with
    /// EAGAIN (MSG_DONTWAIT), it is not parked until the peer reads; a send with room
    /// completes with its length. `complete` returns both.
    #[test]
    fn send_ring_completes_a_full_socket_with_eagain() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut full = std::net::TcpStream::connect(addr).unwrap();
        let (_full_peer, _) = listener.accept().unwrap();
        let roomy = std::net::TcpStream::connect(addr).unwrap();
        let (roomy_peer, _) = listener.accept().unwrap();
        full.set_nonblocking(true).unwrap();
        let chunk = vec![0u8; 1 << 16];
        let mut filled = 0usize;
        // Nobody reads `full`'s peer: write until the kernel refuses (bounded, 256 MiB).
        while filled < 256 << 20 {
            match full.write(&chunk) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mut ring = SendRing::new(8).unwrap();
        let data = b"hello";
        // SAFETY: `data` outlives complete() below.
        unsafe {
            assert!(ring.push(full.as_raw_fd(), data.as_ptr(), data.len(), 7));
            assert!(ring.push(roomy.as_raw_fd(), data.as_ptr(), data.len(), 9));
        }
        let mut out = Vec::new();
        ring.complete(&mut out);
        out.sort();
        assert_eq!(out, vec![(7, -libc::EAGAIN), (9, 5)]);
        assert!(ring.is_empty());
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut &roomy_peer, &mut got).unwrap();
        assert_eq!(&got, data);
    }

    #[test]
    fn token_roundtrip() {
        for kind in [
            Kind::Accept,
            Kind::Recv,
            Kind::PollOut,
            Kind::Ignore,
            Kind::Wake,
        ] {
            let t = Token {
                kind,
                gen: 0xAB_CDEF,
                slot: u32::MAX,
            };
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(0), None);
    }
}
