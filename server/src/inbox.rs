//! The cross-core path: one inbox per core.
//!
//! An inbox is a crossbeam channel plus the core's eventfd, the same eventfd its io_uring
//! signals. A sender pushes a message and bumps the eventfd; the receiving executor, asleep
//! in glommio waiting for that eventfd, wakes and drains the channel along with its
//! completions. No core ever polls another in a loop, so an idle server uses no CPU.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

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

/// A core's eventfd: written to wake it, read by it to go back to sleep.
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
}

impl Mailbox {
    /// Posts one message and wakes the core.
    pub fn send(&self, m: CoreMsg) {
        if self.tx.send(m).is_ok() {
            self.waker.wake();
        }
    }

    /// Posts a batch and wakes the core once (one eventfd write for the whole batch).
    pub fn send_all(&self, batch: &mut Vec<CoreMsg>) {
        if batch.is_empty() {
            return;
        }
        for m in batch.drain(..) {
            let _ = self.tx.send(m);
        }
        self.waker.wake();
    }
}

/// The receiving side, owned by the core.
pub struct Inbox {
    rx: Receiver<CoreMsg>,
}

impl Inbox {
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
    (Mailbox { tx, waker }, Inbox { rx })
}
