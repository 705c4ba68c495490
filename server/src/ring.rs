//! The per-core io_uring that watches this core's sockets.
//!
//! glommio keeps one poll `Source` (~500 B on the heap) per waiting socket and re-arms a
//! fresh one-shot poll after every read. To make an idle connection cost almost nothing in
//! user space, each core instead owns this second ring: one *multishot* poll per connection
//! (kernel memory only, re-armed by the kernel, no per-read SQE) and one multishot accept
//! per listener. The ring signals an eventfd on every completion; the core's glommio task
//! awaits that eventfd through glommio's own ring, so the executor sleeps (0 % CPU) until
//! a socket or another core needs it.

use std::io;
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// What an operation was for, packed into the 64-bit user_data with the slot and its
/// generation, so a completion for a slot that has since been reused is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Accept = 1,
    PollIn = 2,
    PollOut = 3,
    /// Completions of cancellations: nothing to do.
    Ignore = 4,
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
            2 => Kind::PollIn,
            3 => Kind::PollOut,
            4 => Kind::Ignore,
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
}

pub struct Ring {
    ring: IoUring,
}

impl Ring {
    /// A ring with `entries` SQ slots that signals `eventfd` on completions.
    pub fn new(entries: u32, eventfd: RawFd) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 8)
            .setup_single_issuer()
            .build(entries)?;
        ring.submitter().register_eventfd(eventfd)?;
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

    /// Multishot readability poll: a CQE each time data (or EOF/error) arrives.
    pub fn poll_in_multi(&mut self, fd: RawFd, token: Token) {
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let e = opcode::PollAdd::new(types::Fd(fd), mask)
            .multi(true)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// One-shot writability poll, armed only while a connection has unsent bytes.
    pub fn poll_out_once(&mut self, fd: RawFd, token: Token) {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Removes a poll (its file reference with it) by the token it was armed with.
    pub fn poll_remove(&mut self, token: Token) {
        let e = opcode::PollRemove::new(token.encode()).build().user_data(
            Token {
                kind: Kind::Ignore,
                gen: 0,
                slot: 0,
            }
            .encode(),
        );
        self.push(e);
    }

    /// Cancels any operation armed with `token` (used for the multishot accept).
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

    /// Submits queued entries without waiting.
    pub fn submit(&mut self) {
        if !self.ring.submission().is_empty() {
            let _ = self.ring.submit();
        }
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
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_roundtrip() {
        for kind in [Kind::Accept, Kind::PollIn, Kind::PollOut, Kind::Ignore] {
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
