//! `--scenario broadcast` (URL `ws://HOST/broadcast?room=R[&echo=false]`): every
//! connection subscribes; the first `share(--publishers, worker)` slots of each worker
//! publish, with stamp sender `worker << 20 | slot` and a sequence kept per publisher
//! across reconnects. `--rate` is the total over publishers, each worker pacing
//! `rate × its publishers / P` round-robin over its open publishers (intended send time in
//! the stamp); `--rate 0` is closed loop per publisher (next message when its own comes
//! back). Subscribers check each publisher's sequence and the main thread merges every
//! worker's deliveries into "all delivered" latency ([`fanout`](super::fanout)).

use std::sync::atomic::Ordering;

use ws_common::payload::{self, Stamp};

use crate::config::RunConfig;
use crate::engine::delta::{FanoutDelta, Published};
use crate::engine::io::{Io, Lat, SENDER_SHIFT};
use crate::engine::scenario::Scenario;
use crate::engine::schedule::share;
use crate::scenario::fanout::{BcWorker, SeqVerdict};

/// How the run's publishers are numbered: worker `w` owns slots `0..share(total, w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publishers {
    pub total: u32,
    pub workers: u32,
}

impl Publishers {
    /// Publishers worker `w` owns: its slots `0..n`.
    pub fn local(&self, w: usize) -> u32 {
        share(self.total, w, self.workers as usize)
    }

    /// The global index of the publisher whose stamps carry `sender` (worker `w`'s slot `k`
    /// has sender id `w << 20 | k`), or None if `sender` is not a publisher of this run.
    pub fn index(&self, sender: u32) -> Option<u32> {
        let (w, k) = (sender >> SENDER_SHIFT, sender & ((1 << SENDER_SHIFT) - 1));
        if w >= self.workers || k >= self.local(w as usize) {
            return None;
        }
        let n = self.workers.max(1);
        Some(w * (self.total / n) + w.min(self.total % n) + k)
    }
}

pub struct Broadcast {
    publishers: Publishers,
    /// Local publisher slots: `0..local`.
    local: usize,
    rate: Option<f64>,
    echo_self: bool,
    msg: Vec<u8>,
    bc: BcWorker,
    /// Local publishers open now.
    open_publishers: u32,
}

impl Broadcast {
    pub fn new(cfg: &RunConfig, id: usize, slots: usize) -> Self {
        let publishers = Publishers {
            total: cfg.publishers,
            workers: cfg.cores.len() as u32,
        };
        let local = publishers.local(id);
        Self {
            publishers,
            local: local as usize,
            rate: (cfg.rate > 0.0)
                .then(|| cfg.rate * local as f64 / publishers.total.max(1) as f64),
            echo_self: cfg.echo_self,
            msg: vec![b'x'; cfg.payload],
            bc: BcWorker::new(slots, publishers.total, local),
            open_publishers: 0,
        }
    }

    /// Publisher slot `idx` sends its next message, intended at `intended_ns`; the
    /// subscribers it should reach are the connections open now.
    fn publish(&mut self, io: &mut Io, idx: usize, intended_ns: u64) {
        if io.backlogged(idx) {
            return;
        }
        let sender = io.sender_id(idx);
        let Some(publisher) = self.publishers.index(sender) else {
            return;
        };
        let seq = self.bc.take_seq(idx);
        let open = io.sh.open.load(Ordering::Relaxed);
        let own = u64::from(!self.echo_self);
        let expected = open.saturating_sub(own).min(u32::MAX as u64) as u32;
        self.bc.on_publish(Published {
            publisher,
            seq,
            sent_ns: intended_ns,
            expected,
            stage: io.stage.min(u32::MAX as usize) as u32,
        });
        io.sh
            .deliveries
            .expected
            .fetch_add(expected as u64, Ordering::Relaxed);
        io.stats.c.fanout_expected += expected as u64;
        payload::write(
            &mut self.msg,
            Stamp {
                sender,
                seq,
                sent_ns: intended_ns,
            },
        );
        io.send_data(idx, false, &self.msg);
    }
}

impl Scenario for Broadcast {
    fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn on_open(&mut self, io: &mut Io, idx: usize, now: u64) {
        self.bc.on_open(idx, now);
        if idx < self.local {
            self.open_publishers += 1;
            if self.rate.is_none() && io.running() {
                self.publish(io, idx, now);
            }
        }
    }

    fn on_leave(&mut self, _io: &mut Io, idx: usize) {
        if idx < self.local {
            self.open_publishers = self.open_publishers.saturating_sub(1);
        }
    }

    fn on_closed(&mut self, _io: &mut Io, idx: usize) {
        self.bc.reset_slot(idx);
    }

    fn can_send(&self, _io: &Io) -> bool {
        self.open_publishers > 0
    }

    fn send_scheduled(&mut self, io: &mut Io, intended: u64, _now: u64) {
        if let Some(idx) = self.bc.next_publisher(|k| io.is_open(k)) {
            self.publish(io, idx, intended);
        }
    }

    fn on_message(&mut self, io: &mut Io, idx: usize, _text: bool, payload: &[u8], now: u64) {
        let stamp = payload::read(payload);
        let Some((s, publisher)) = stamp.and_then(|s| Some((s, self.publishers.index(s.sender)?)))
        else {
            io.stats.c.msgs_unexpected += 1;
            return;
        };
        io.stats.c.msgs_received += 1;
        io.record(Lat::Delivery, s.sent_ns, now);
        if self.bc.joined_in_flight(idx, s.sent_ns) {
            io.stats.c.fanout_joined += 1;
        }
        match self.bc.on_delivery(idx, publisher, s.seq, s.sent_ns, now) {
            SeqVerdict::InOrder => {}
            SeqVerdict::Gap(n) => io.stats.c.fanout_gaps += n,
            SeqVerdict::Late => io.stats.c.msgs_out_of_order += 1,
            SeqVerdict::Duplicate => io.stats.c.fanout_duplicates += 1,
        }
        // Closed loop: a publisher's own latest message is back; send the next.
        if s.sender == io.sender_id(idx)
            && self.bc.last_seq(idx) == Some(s.seq)
            && self.rate.is_none()
            && io.running()
            && io.is_open(idx)
        {
            self.publish(io, idx, now);
        }
    }

    /// Adds the deliveries received since the last turn to the shared count.
    fn turn(&mut self, io: &Io) {
        if self.bc.unsynced > 0 {
            io.sh
                .deliveries
                .received
                .fetch_add(self.bc.unsynced, Ordering::Relaxed);
            self.bc.unsynced = 0;
        }
    }

    /// Every expected delivery has arrived (all workers) and this worker has been quiet for
    /// a moment.
    fn settled(&self, io: &Io, now: u64) -> bool {
        let d = &io.sh.deliveries;
        d.received.load(Ordering::Relaxed) >= d.expected.load(Ordering::Relaxed)
            && now.saturating_sub(self.bc.last_recv_ns) >= super::QUIET_NS
    }

    fn delta(&mut self) -> Option<Box<FanoutDelta>> {
        self.bc.take_delta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::io::sender_id;

    #[test]
    fn publishers_are_numbered_across_workers() {
        // 5 publishers over 2 workers: worker 0 has slots 0..3, worker 1 slots 0..2.
        let p = Publishers {
            total: 5,
            workers: 2,
        };
        assert_eq!((p.local(0), p.local(1)), (3, 2));
        let ids: Vec<Option<u32>> = [
            sender_id(0, 0),
            sender_id(0, 2),
            sender_id(0, 3),
            sender_id(1, 0),
            sender_id(1, 1),
            sender_id(1, 2),
            sender_id(2, 0),
        ]
        .iter()
        .map(|&x| p.index(x))
        .collect();
        assert_eq!(ids, [Some(0), Some(2), None, Some(3), Some(4), None, None]);
    }
}
