//! Broadcast bookkeeping, in two halves.
//!
//! **In each worker** ([`BcWorker`], allocated in broadcast runs only, so hold and echo keep
//! their per-connection cost): the publishers' sequence numbers (they survive reconnects,
//! so subscribers never see a publisher restart at 0); per (subscriber, publisher) the next
//! sequence expected, which detects gaps, late arrivals and duplicates; and, per message,
//! how many of this worker's subscribers got it and when the last one did.
//!
//! **In the main thread** ([`AllDelivered`]): a worker only sees its own subscribers, so the
//! time until the *last* subscriber got message (publisher, seq) is found by merging: the
//! publisher's worker reports the message with the number of subscribers expected (the
//! connections open when it was published), every worker reports its count and latest
//! receive time, and once the merged count reaches the expected number the message's
//! "all delivered" latency (`latest receive − intended send`) is recorded. Messages are
//! settled (forgotten) once they are older than a minute, or older than a few seconds when
//! many are tracked, which bounds the memory to about max(200k, 5 s of publishing) entries;
//! a message still short of its expected count then is incomplete, and its shortfall is
//! counted as missing deliveries (a delivery that still comes later is counted late).

use std::collections::{BTreeMap, HashMap, VecDeque};

use hdrhistogram::Histogram;

use crate::engine::delta::{FanoutDelta, Published, Received};
use crate::engine::stats::{new_hist, record_ns};

/// Sequence check of one (subscriber, publisher) pair: 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    /// The next sequence expected (meaningful once `seen`).
    next: u64,
    /// Sequences skipped and not (yet) seen late.
    holes: u32,
    /// Something was received from this publisher.
    seen: bool,
}

/// How a delivery fits its (subscriber, publisher) sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next one expected (or the first one from this publisher).
    InOrder,
    /// Later than expected: this many sequences were skipped.
    Gap(u64),
    /// Below the next expected, filling an earlier gap: out of order.
    Late,
    /// Below the next expected with no gap open: a duplicate.
    Duplicate,
}

/// A worker's broadcast state.
#[derive(Debug)]
pub struct BcWorker {
    publishers: usize,
    /// `slot * publishers + publisher`.
    tracks: Vec<Track>,
    /// Next sequence of each local publisher (slot `k` < local publishers).
    pub_seq: Vec<u64>,
    pub_rr: usize,
    /// (publisher, seq) → (sent, count, latest receive) during the current interval.
    recv: HashMap<(u32, u64), (u64, u32, u64)>,
    published: Vec<Published>,
    /// Deliveries not yet added to the shared counter (see `Worker::fan_sync`).
    pub unsynced: u64,
    /// When this worker last received a delivery.
    pub last_recv_ns: u64,
    /// When each subscriber slot's upgrade completed here (8 B per slot, broadcast runs
    /// only): a delivery of a message published before that went to a subscriber the
    /// server had already put in the room while ws-loadgen still waited for its 101, so it
    /// was not in the message's expected count. That is the usual cause of `extra`.
    opened_ns: Vec<u64>,
}

impl BcWorker {
    pub fn new(slots: usize, publishers: u32, local_publishers: u32) -> Self {
        let publishers = publishers.max(1) as usize;
        Self {
            publishers,
            tracks: vec![Track::default(); slots.saturating_mul(publishers)],
            pub_seq: vec![0; local_publishers as usize],
            pub_rr: 0,
            recv: HashMap::new(),
            published: Vec::new(),
            unsynced: 0,
            last_recv_ns: 0,
            opened_ns: vec![0; slots],
        }
    }

    /// Subscriber `slot`'s upgrade completed at `now`.
    pub fn on_open(&mut self, slot: usize, now: u64) {
        if let Some(t) = self.opened_ns.get_mut(slot) {
            *t = now;
        }
    }

    /// A message published (intended) at `sent_ns` reached subscriber `slot`, which
    /// ws-loadgen only saw open later: the server subscribed it first.
    pub fn joined_in_flight(&self, slot: usize, sent_ns: u64) -> bool {
        self.opened_ns.get(slot).is_some_and(|&t| t > sent_ns)
    }

    /// Local publisher slots (`0..n`).
    pub fn local_publishers(&self) -> usize {
        self.pub_seq.len()
    }

    /// Round-robin: the next local publisher slot for which `open` holds.
    pub fn next_publisher(&mut self, open: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.pub_seq.len();
        for _ in 0..n {
            self.pub_rr = (self.pub_rr + 1) % n;
            if open(self.pub_rr) {
                return Some(self.pub_rr);
            }
        }
        None
    }

    /// The sequence of local publisher `slot`'s next message (consumed).
    pub fn take_seq(&mut self, slot: usize) -> u64 {
        match self.pub_seq.get_mut(slot) {
            Some(s) => {
                *s += 1;
                *s - 1
            }
            None => 0,
        }
    }

    /// The sequence local publisher `slot` sent last (None before its first message).
    pub fn last_seq(&self, slot: usize) -> Option<u64> {
        self.pub_seq.get(slot).and_then(|&s| s.checked_sub(1))
    }

    pub fn on_publish(&mut self, p: Published) {
        self.published.push(p);
    }

    /// A delivery of (publisher, seq) to subscriber `slot` at `now`.
    pub fn on_delivery(
        &mut self,
        slot: usize,
        publisher: u32,
        seq: u64,
        sent_ns: u64,
        now: u64,
    ) -> SeqVerdict {
        let e = self.recv.entry((publisher, seq)).or_insert((sent_ns, 0, 0));
        e.1 = e.1.saturating_add(1);
        e.2 = e.2.max(now);
        self.unsynced += 1;
        self.last_recv_ns = now;
        let i = slot * self.publishers + publisher as usize;
        let Some(t) = self.tracks.get_mut(i) else {
            return SeqVerdict::InOrder;
        };
        if !t.seen {
            t.seen = true;
            t.next = seq.saturating_add(1);
            return SeqVerdict::InOrder;
        }
        if seq == t.next {
            t.next = t.next.saturating_add(1);
            SeqVerdict::InOrder
        } else if seq > t.next {
            let gap = seq - t.next;
            t.holes = t.holes.saturating_add(gap.min(u32::MAX as u64) as u32);
            t.next = seq.saturating_add(1);
            SeqVerdict::Gap(gap)
        } else if t.holes > 0 {
            t.holes -= 1;
            SeqVerdict::Late
        } else {
            SeqVerdict::Duplicate
        }
    }

    /// Forgets subscriber `slot`'s sequences (its connection closed; a new one starts over).
    pub fn reset_slot(&mut self, slot: usize) {
        let p = self.publishers;
        if let Some(ts) = self.tracks.get_mut(slot * p..(slot + 1) * p) {
            ts.fill(Track::default());
        }
    }

    /// What happened since the last call (None when nothing did).
    pub fn take_delta(&mut self) -> Option<Box<FanoutDelta>> {
        if self.recv.is_empty() && self.published.is_empty() {
            return None;
        }
        let received = self
            .recv
            .drain()
            .map(|((publisher, seq), (sent_ns, count, last_ns))| Received {
                publisher,
                seq,
                sent_ns,
                count,
                last_ns,
            })
            .collect();
        Some(Box::new(FanoutDelta {
            published: std::mem::take(&mut self.published),
            received,
        }))
    }

    /// Heap bytes of the per-subscriber tracking.
    pub fn tracking_bytes(&self) -> usize {
        self.tracks.capacity() * std::mem::size_of::<Track>()
    }
}

/// Stages with their own "all delivered" histogram (later ones only count in the total).
const MAX_STAGES: usize = 1024;

enum Done {
    NotYet,
    NoSubscriber,
    Complete {
        stage: u32,
        sent_ns: u64,
        latency_ns: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    sent_ns: u64,
    /// None until the publisher's report arrives.
    expected: Option<u32>,
    stage: u32,
    count: u64,
    last_ns: u64,
    done: bool,
}

/// The main thread's merge of the workers' [`FanoutDelta`]s.
#[derive(Debug)]
pub struct AllDelivered {
    min_age_ns: u64,
    max_age_ns: u64,
    cap: usize,
    /// Latest send time of a settled message: an unknown message sent before is late.
    settled_upto_ns: u64,
    pending: HashMap<(u32, u64), Entry>,
    /// Keys in arrival order, with their send time, for eviction.
    order: VecDeque<(u64, u32, u64)>,
    /// Latest receive − intended send of messages every expected subscriber got, µs.
    pub hist: Histogram<u64>,
    /// The same per stage of publication.
    pub by_stage: Vec<Histogram<u64>>,
    /// Messages every expected subscriber got.
    pub complete: u64,
    /// Messages still short of their expected count when forgotten.
    pub incomplete: u64,
    /// Deliveries those were short by, per stage of publication.
    pub missing_by_stage: BTreeMap<u32, u64>,
    /// Deliveries beyond the count expected at publication (subscribers that joined while
    /// the message was on its way): they were in the room, so they count as expected too.
    pub extra: u64,
    /// Settled messages: per message, max(count expected at publication, received).
    pub expected_total: u64,
    /// Settled messages: deliveries received.
    pub received_total: u64,
    /// Deliveries reported after their message was forgotten.
    pub late: u64,
    /// Messages received but never reported published (should stay 0).
    pub unmatched: u64,
    /// Messages published, per publisher.
    pub per_publisher: Vec<u64>,
    /// Messages published with nobody to deliver to.
    pub no_subscriber: u64,
    /// Messages published before this (the end of --warmup) are not in the histograms.
    pub timed_from_ns: u64,
}

impl AllDelivered {
    /// Messages are settled `max_age_ns` after their send time, or already `min_age_ns` after
    /// it while more than `cap` are tracked.
    pub fn new(publishers: u32, min_age_ns: u64, max_age_ns: u64, cap: usize) -> Self {
        Self {
            min_age_ns,
            max_age_ns: max_age_ns.max(min_age_ns),
            cap,
            settled_upto_ns: 0,
            pending: HashMap::new(),
            order: VecDeque::new(),
            hist: new_hist(),
            by_stage: Vec::new(),
            complete: 0,
            incomplete: 0,
            missing_by_stage: BTreeMap::new(),
            extra: 0,
            expected_total: 0,
            received_total: 0,
            late: 0,
            unmatched: 0,
            per_publisher: vec![0; publishers as usize],
            no_subscriber: 0,
            timed_from_ns: 0,
        }
    }

    /// Merges one worker's delta; `now` is used to forget old messages.
    pub fn add(&mut self, d: &FanoutDelta, now: u64) {
        for p in &d.published {
            if let Some(n) = self.per_publisher.get_mut(p.publisher as usize) {
                *n += 1;
            }
            let e = Self::entry(
                &mut self.pending,
                &mut self.order,
                p.publisher,
                p.seq,
                p.sent_ns,
            );
            e.expected = Some(p.expected);
            e.stage = p.stage;
            e.sent_ns = p.sent_ns;
            let c = Self::check(e);
            self.count(c);
        }
        for r in &d.received {
            let key = (r.publisher, r.seq);
            if r.sent_ns <= self.settled_upto_ns && !self.pending.contains_key(&key) {
                self.late += r.count as u64;
                continue;
            }
            let e = Self::entry(
                &mut self.pending,
                &mut self.order,
                r.publisher,
                r.seq,
                r.sent_ns,
            );
            e.count += r.count as u64;
            e.last_ns = e.last_ns.max(r.last_ns);
            let c = Self::check(e);
            self.count(c);
        }
        self.evict(now);
    }

    fn entry<'a>(
        pending: &'a mut HashMap<(u32, u64), Entry>,
        order: &mut VecDeque<(u64, u32, u64)>,
        publisher: u32,
        seq: u64,
        sent_ns: u64,
    ) -> &'a mut Entry {
        pending.entry((publisher, seq)).or_insert_with(|| {
            order.push_back((sent_ns, publisher, seq));
            Entry {
                sent_ns,
                expected: None,
                stage: 0,
                count: 0,
                last_ns: 0,
                done: false,
            }
        })
    }

    /// Marks `e` done if it just became so.
    fn check(e: &mut Entry) -> Done {
        let Some(want) = e.expected else {
            return Done::NotYet;
        };
        if e.done {
            return Done::NotYet;
        }
        if want == 0 {
            e.done = true;
            Done::NoSubscriber
        } else if e.count >= want as u64 {
            e.done = true;
            Done::Complete {
                stage: e.stage,
                sent_ns: e.sent_ns,
                latency_ns: e.last_ns.saturating_sub(e.sent_ns),
            }
        } else {
            Done::NotYet
        }
    }

    fn count(&mut self, d: Done) {
        match d {
            Done::NotYet => {}
            Done::NoSubscriber => self.no_subscriber += 1,
            Done::Complete {
                stage,
                sent_ns,
                latency_ns,
            } => {
                self.complete += 1;
                if sent_ns < self.timed_from_ns {
                    // Published during --warmup: counted, not timed.
                    return;
                }
                record_ns(&mut self.hist, latency_ns);
                let i = stage as usize;
                if i < MAX_STAGES {
                    if self.by_stage.len() <= i {
                        self.by_stage.resize_with(i + 1, new_hist);
                    }
                    record_ns(&mut self.by_stage[i], latency_ns);
                }
            }
        }
    }

    /// Settles the messages old enough at `now`.
    pub fn evict(&mut self, now: u64) {
        while let Some(&(sent, p, s)) = self.order.front() {
            let age = now.saturating_sub(sent);
            let crowded = self.pending.len() > self.cap;
            if age <= self.max_age_ns && !(crowded && age > self.min_age_ns) {
                break;
            }
            self.order.pop_front();
            self.settled_upto_ns = self.settled_upto_ns.max(sent);
            if let Some(e) = self.pending.remove(&(p, s)) {
                self.finalize(e);
            }
        }
    }

    fn finalize(&mut self, e: Entry) {
        match e.expected {
            Some(want) => {
                let want = want as u64;
                if e.count > want {
                    self.extra += e.count - want;
                }
                self.expected_total += want.max(e.count);
                self.received_total += e.count;
                if !e.done {
                    self.incomplete += 1;
                    *self.missing_by_stage.entry(e.stage).or_insert(0) += want - e.count;
                }
            }
            None => self.unmatched += 1,
        }
    }

    /// Forgets every message (end of run): those short of their count are incomplete.
    pub fn finish(&mut self) {
        self.order.clear();
        let all: Vec<Entry> = self.pending.drain().map(|(_, e)| e).collect();
        for e in all {
            self.finalize(e);
        }
    }

    /// Missing deliveries over all stages.
    pub fn missing(&self) -> u64 {
        self.missing_by_stage.values().sum()
    }

    /// Messages being tracked.
    pub fn tracked(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publ(publisher: u32, seq: u64, sent_ns: u64, expected: u32) -> Published {
        Published {
            publisher,
            seq,
            sent_ns,
            expected,
            stage: 0,
        }
    }

    fn recv(publisher: u32, seq: u64, sent_ns: u64, count: u32, last_ns: u64) -> Received {
        Received {
            publisher,
            seq,
            sent_ns,
            count,
            last_ns,
        }
    }

    #[test]
    fn sequences_per_subscriber_and_publisher() {
        let mut w = BcWorker::new(3, 2, 1);
        assert_eq!(
            w.on_delivery(0, 0, 5, 0, 1),
            SeqVerdict::InOrder,
            "first seen"
        );
        assert_eq!(w.on_delivery(0, 0, 6, 0, 1), SeqVerdict::InOrder);
        assert_eq!(w.on_delivery(0, 0, 9, 0, 1), SeqVerdict::Gap(2));
        assert_eq!(w.on_delivery(0, 0, 7, 0, 1), SeqVerdict::Late);
        assert_eq!(w.on_delivery(0, 0, 8, 0, 1), SeqVerdict::Late);
        assert_eq!(w.on_delivery(0, 0, 8, 0, 1), SeqVerdict::Duplicate);
        assert_eq!(w.on_delivery(0, 0, 10, 0, 1), SeqVerdict::InOrder);
        // Another publisher and another subscriber are independent.
        assert_eq!(w.on_delivery(0, 1, 0, 0, 1), SeqVerdict::InOrder);
        assert_eq!(w.on_delivery(1, 0, 0, 0, 1), SeqVerdict::InOrder);
        assert_eq!(w.on_delivery(1, 0, 0, 0, 1), SeqVerdict::Duplicate);
        // A closed subscriber starts over.
        w.reset_slot(0);
        assert_eq!(w.on_delivery(0, 0, 3, 0, 1), SeqVerdict::InOrder);
        // Garbage does not panic.
        assert_eq!(w.on_delivery(2, 0, u64::MAX, 0, 1), SeqVerdict::InOrder);
        let _ = w.on_delivery(2, 0, u64::MAX, 0, 1);
        assert_eq!(w.on_delivery(2, 0, 0, 0, 1), SeqVerdict::Duplicate);
        assert_eq!(w.on_delivery(99, 0, 1, 0, 1), SeqVerdict::InOrder);
        assert_eq!(
            (w.take_seq(0), w.take_seq(0), w.last_seq(0)),
            (0, 1, Some(1))
        );
        let d = w.take_delta().unwrap();
        assert!(d.published.is_empty());
        let m: u32 = d
            .received
            .iter()
            .filter(|r| (r.publisher, r.seq) == (0, 8))
            .map(|r| r.count)
            .sum();
        assert_eq!(m, 2);
        assert!(w.take_delta().is_none());
    }

    #[test]
    fn all_delivered_merges_workers_by_max() {
        let s = 1_000_000_000u64;
        let mut a = AllDelivered::new(2, 5 * s, 60 * s, 0);
        // Message (0, 0): 3 subscribers over two workers; the receive report of one worker
        // arrives before the publisher's report.
        a.add(
            &FanoutDelta {
                published: vec![],
                received: vec![recv(0, 0, 100, 1, 300)],
            },
            s,
        );
        assert_eq!(a.complete, 0);
        a.add(
            &FanoutDelta {
                published: vec![publ(0, 0, 100, 3), publ(1, 0, 150, 2)],
                received: vec![recv(0, 0, 100, 1, 2_000_100)],
            },
            s,
        );
        assert_eq!(a.complete, 0, "2 of 3");
        // The third delivery, reported in a later interval by the first worker.
        a.add(
            &FanoutDelta {
                published: vec![],
                received: vec![recv(0, 0, 100, 1, 1_000_100), recv(1, 0, 150, 1, 500)],
            },
            2 * s,
        );
        assert_eq!(a.complete, 1);
        assert_eq!(a.hist.len(), 1);
        // The latest receive wins: 2 ms after the send.
        assert_eq!(a.hist.max(), 2000);
        // (1, 0) got 1 of 2; an extra (0, 0) arrives later.
        a.add(
            &FanoutDelta {
                published: vec![publ(0, 1, 200, 0)],
                received: vec![recv(0, 0, 100, 1, 3_000_000)],
            },
            3 * s,
        );
        assert_eq!((a.tracked(), a.incomplete), (3, 0));
        // Ten seconds later: everything is forgotten.
        a.evict(20 * s);
        assert_eq!(a.tracked(), 0);
        assert_eq!(a.incomplete, 1);
        assert_eq!(a.missing(), 1);
        assert_eq!(a.extra, 1);
        // (0, 0): 4 of 3 expected, (1, 0): 1 of 2, (0, 1): none expected.
        assert_eq!((a.expected_total, a.received_total), (6, 5));
        assert_eq!(a.no_subscriber, 1);
        assert_eq!(a.per_publisher, [2, 1]);
        // A delivery of a forgotten message is late, not a new message.
        a.add(
            &FanoutDelta {
                published: vec![],
                received: vec![recv(1, 0, 150, 1, 20 * s)],
            },
            20 * s,
        );
        assert_eq!((a.late, a.tracked()), (1, 0));
        // At the end, messages still tracked are settled; a received one never published
        // is unmatched.
        a.add(
            &FanoutDelta {
                published: vec![publ(0, 2, 21 * s, 4)],
                received: vec![
                    recv(0, 2, 21 * s, 4, 21 * s + 7_000),
                    recv(1, 9, 21 * s, 1, 0),
                ],
            },
            21 * s,
        );
        assert_eq!(a.complete, 2);
        assert_eq!((a.by_stage.len(), a.by_stage[0].len()), (1, 2));
        a.finish();
        assert_eq!((a.unmatched, a.incomplete, a.tracked()), (1, 1, 0));
    }

    #[test]
    fn settles_early_only_when_crowded() {
        let s = 1_000_000_000u64;
        let mut a = AllDelivered::new(1, 5 * s, 60 * s, 2);
        let d = |seq: u64, sent: u64| FanoutDelta {
            published: vec![publ(0, seq, sent, 1)],
            received: vec![],
        };
        a.add(&d(0, s), s);
        a.add(&d(1, 2 * s), 2 * s);
        // Ten seconds later, two tracked: not crowded, nothing settled.
        a.evict(12 * s);
        assert_eq!((a.tracked(), a.incomplete), (2, 0));
        // A delivery of message 0 still counts.
        a.add(
            &FanoutDelta {
                published: vec![],
                received: vec![recv(0, 0, s, 1, 12 * s)],
            },
            12 * s,
        );
        assert_eq!((a.complete, a.late), (1, 0));
        // A third one: crowded, so the oldest (older than 5 s) is settled until only the
        // cap is left: message 0, complete.
        a.add(&d(2, 12 * s), 12 * s);
        assert_eq!((a.tracked(), a.incomplete, a.complete), (2, 0, 1));
        // After a minute everything is settled regardless.
        a.evict(80 * s);
        assert_eq!((a.tracked(), a.incomplete), (0, 2));
    }
}
