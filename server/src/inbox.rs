//! The cross-core path: one inbox per core.
//!
//! An inbox is a crossbeam channel plus the core's eventfd, on which the core's io_uring keeps
//! a multishot poll. A sender pushes a message and bumps the eventfd; the receiving core,
//! asleep in its ring, gets a completion, wakes and drains the channel along with its other
//! completions. No core ever polls another in a loop, so an idle server uses no CPU.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Frame bytes queued to one core above which senders stop reading from their publishers
/// (TCP then pushes back on the publishing clients): a core that cannot keep up must not
/// make its inbox, and the process, grow without bound.
pub const INBOX_HIGH_BYTES: u64 = 16 << 20;
/// ... and below which they resume.
pub const INBOX_LOW_BYTES: u64 = 8 << 20;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// Who a message is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every connection in the room.
    Room(Arc<str>),
    /// Every connection of the user.
    User(Arc<str>),
}

/// Where to report a delivery count: a core, and its request number there.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    pub core: usize,
    pub request: u64,
}

/// Messages a core can receive from another core (or the signal thread). Each is handled by
/// the receiving core for its own connections only.
#[derive(Debug)]
pub enum CoreMsg {
    /// Stop accepting, send Close 1001 to every connection, exit when drained.
    Shutdown,
    /// Deliver an encoded frame (shared, encoded once) to this core's connections of
    /// `target`; report the count to `reply` if given. `sent_ns` is for the hop-latency
    /// histogram.
    Deliver {
        target: Target,
        frame: Arc<[u8]>,
        reply: Option<ReplyTo>,
        sent_ns: u64,
    },
    /// Answer to a `Deliver` with a reply: how many connections got it on that core.
    Delivered { request: u64, count: u64 },
}

/// A core's eventfd: written to wake it (its ring polls it; the count is never read).
#[derive(Debug, Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Waker(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    pub fn fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// Wakes the core (adds 1 to the eventfd counter).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.fd(), &one as *const u64 as *const libc::c_void, 8) };
    }
}

/// The sending side of a core's inbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: Sender<CoreMsg>,
    waker: Waker,
    /// Frame bytes posted to this core and not yet handled by it.
    queued: Arc<AtomicU64>,
}

impl Mailbox {
    /// Posts one message and wakes the core.
    pub fn send(&self, m: CoreMsg) {
        if self.tx.send(m).is_ok() {
            self.waker.wake();
        }
    }

    /// Accounts `bytes` of frames about to be posted to this core.
    pub fn charge(&self, bytes: u64) {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
    }

    /// True when this core is behind by more than [`INBOX_HIGH_BYTES`].
    pub fn congested(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > INBOX_HIGH_BYTES
    }

    /// True when this core is back below [`INBOX_LOW_BYTES`].
    pub fn drained(&self) -> bool {
        self.queued.load(Ordering::Relaxed) <= INBOX_LOW_BYTES
    }

    /// Wakes the core without a message (e.g. to re-check congestion).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Posts a batch and wakes the core once (one eventfd write for the whole batch).
    pub fn send_all(&self, batch: &mut Vec<CoreMsg>) {
        if batch.is_empty() {
            return;
        }
        for m in batch.drain(..) {
            if let Err(crossbeam_channel::SendError(CoreMsg::Deliver { frame, .. })) =
                self.tx.send(m)
            {
                // That core is gone: what was charged for it will never be released.
                self.queued.fetch_sub(frame.len() as u64, Ordering::Relaxed);
            }
        }
        self.waker.wake();
    }
}

/// The receiving side, owned by the core.
pub struct Inbox {
    rx: Receiver<CoreMsg>,
    queued: Arc<AtomicU64>,
}

impl Inbox {
    /// Frame bytes handled; true when this crossed below [`INBOX_LOW_BYTES`] (senders that
    /// paused should be told).
    pub fn release(&self, bytes: u64) -> bool {
        let before = self.queued.fetch_sub(bytes, Ordering::Relaxed);
        let after = before.saturating_sub(bytes);
        before > INBOX_LOW_BYTES && after <= INBOX_LOW_BYTES
    }

    pub fn try_recv(&self) -> Option<CoreMsg> {
        match self.rx.try_recv() {
            Ok(m) => Some(m),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }
}

/// A new inbox for a core woken by `waker`.
pub fn inbox(waker: Waker) -> (Mailbox, Inbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let queued = Arc::new(AtomicU64::new(0));
    (
        Mailbox {
            tx,
            waker,
            queued: queued.clone(),
        },
        Inbox { rx, queued },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_marks_and_release_crossing() {
        let (mb, ib) = inbox(Waker::new().unwrap());
        assert!(!mb.congested());
        mb.charge(INBOX_HIGH_BYTES + 1);
        assert!(mb.congested());
        // Still above the low mark: no resume signal yet.
        assert!(!ib.release(INBOX_HIGH_BYTES - INBOX_LOW_BYTES));
        assert!(!mb.congested());
        // Crossing below the low mark signals once.
        assert!(ib.release(2));
        assert!(!ib.release(0));
    }

    #[test]
    fn batch_is_delivered_in_order_with_one_wake() {
        let w = Waker::new().unwrap();
        let (mb, ib) = inbox(w.clone());
        let mut batch = vec![
            CoreMsg::Delivered {
                request: 1,
                count: 1,
            },
            CoreMsg::Delivered {
                request: 2,
                count: 2,
            },
        ];
        mb.send_all(&mut batch);
        assert!(batch.is_empty());
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a u64.
        let n = unsafe { libc::read(w.fd(), &mut counter as *mut u64 as *mut libc::c_void, 8) };
        assert_eq!((n, counter), (8, 1));
        let got: Vec<u64> = std::iter::from_fn(|| ib.try_recv())
            .map(|m| match m {
                CoreMsg::Delivered { request, .. } => request,
                _ => 0,
            })
            .collect();
        assert_eq!(got, vec![1, 2]);
    }
}
