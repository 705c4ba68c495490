//! The cross-core path: one inbox per core.
//!
//! An inbox is a crossbeam channel plus the core's eventfd, the same eventfd its io_uring
//! signals. A sender pushes a message and bumps the eventfd; the receiving executor, asleep
//! in glommio waiting for that eventfd, wakes and drains the channel along with its
//! completions. No core ever polls another in a loop, so an idle server uses no CPU.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// Messages a core can receive from outside. The broadcast and push issue adds its
/// messages here; each is handled by the receiving core for its own connections.
#[derive(Debug)]
pub enum CoreMsg {
    /// Stop accepting, send Close 1001 to every connection, exit when drained.
    Shutdown,
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
    pub fn send(&self, m: CoreMsg) {
        if self.tx.send(m).is_ok() {
            self.waker.wake();
        }
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
