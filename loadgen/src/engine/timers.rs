//! A worker's timers, without a wheel. Connect, handshake and close timeouts and pings all
//! have one constant delay each, so pushing them in creation order keeps each FIFO sorted;
//! back-offs vary and live in a small binary heap. A timer names a slot and the slot's
//! generation: one that outlived its socket (the generation is bumped at every close) is
//! skipped by the caller, so nothing is ever cancelled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// (due ns, slot, generation)
pub type Timer = (u64, u32, u32);

/// A queue of timers that all have the same delay.
#[derive(Debug, Default)]
pub struct Fifo(VecDeque<Timer>);

impl Fifo {
    pub fn push(&mut self, due: u64, idx: usize, gen: u32) {
        self.0.push_back((due, idx as u32, gen));
    }

    /// The first timer if it is due by `now`: (slot, generation).
    #[inline]
    pub fn pop_due(&mut self, now: u64) -> Option<(usize, u32)> {
        match self.0.front() {
            Some(&(due, idx, gen)) if due <= now => {
                self.0.pop_front();
                Some((idx as usize, gen))
            }
            _ => None,
        }
    }

    pub fn next_due(&self) -> Option<u64> {
        self.0.front().map(|t| t.0)
    }
}

/// Every timer a worker keeps for its slots.
#[derive(Debug, Default)]
pub struct Timers {
    pub connect: Fifo,
    pub handshake: Fifo,
    pub close: Fifo,
    pub ping: Fifo,
    backoff: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub fn backoff(&mut self, due: u64, idx: usize, gen: u32) {
        self.backoff.push(Reverse((due, idx as u32, gen)));
    }

    /// The first back-off if it is due by `now`: (slot, generation).
    pub fn pop_backoff(&mut self, now: u64) -> Option<(usize, u32)> {
        match self.backoff.peek() {
            Some(&Reverse((due, idx, gen))) if due <= now => {
                self.backoff.pop();
                Some((idx as usize, gen))
            }
            _ => None,
        }
    }

    /// The earliest timer of all.
    pub fn next_due(&self) -> Option<u64> {
        [
            self.connect.next_due(),
            self.handshake.next_due(),
            self.close.next_due(),
            self.ping.next_due(),
            self.backoff.peek().map(|r| r.0 .0),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_heap_fall_due_in_order() {
        let mut t = Timers::default();
        t.connect.push(10, 1, 0);
        t.connect.push(20, 2, 0);
        t.backoff(15, 3, 7);
        t.backoff(5, 4, 1);
        assert_eq!(t.next_due(), Some(5));
        assert_eq!(t.connect.pop_due(9), None);
        assert_eq!(t.connect.pop_due(10), Some((1, 0)));
        assert_eq!(t.pop_backoff(14), Some((4, 1)));
        assert_eq!(t.pop_backoff(14), None);
        assert_eq!(t.next_due(), Some(15));
    }
}
