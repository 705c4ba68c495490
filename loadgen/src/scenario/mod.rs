//! What an open connection does. A scenario decides three things: what happens when a
//! connection opens, what drives sends (a constant-rate schedule, the previous reply, a
//! heartbeat timer) and how a received data message is judged. The worker's event loop asks
//! these questions and does the I/O, so a new scenario (broadcast: judge messages a
//! publisher stamped, with latency from the publisher's send time) is a new variant here
//! plus its arms in `worker.rs`, without touching the connection machinery.

use crate::config::{RunConfig, ScenarioKind};
use crate::engine::schedule::share;

pub mod fanout;
pub mod push;

/// The scenario of a run, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    /// Idle connections; a ping every `interval_ns`, pong latency recorded.
    Hold { interval_ns: u64 },
    /// Stamped messages echoed back. `rate` is total msgs/s; 0 is closed loop.
    Echo { payload: usize, rate: f64 },
    /// Every connection subscribes to one room; the first connections of each worker
    /// (`publishers` in total, split like the connections) publish stamped messages at
    /// `rate` msgs/s in total (0: closed loop per publisher, on its own echo).
    Broadcast {
        payload: usize,
        rate: f64,
        publishers: u32,
        workers: u32,
        /// Whether a publisher receives its own messages.
        echo_self: bool,
    },
    /// Connections register as users; HTTP pushes at `rate` in total deliver stamped
    /// messages to them. A received push is judged like an echo (addressed to this
    /// connection, sequence below the pushes sent to it).
    Push { payload: usize, rate: f64 },
}

/// What to do right after a connection is upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOpen {
    Nothing,
    /// Schedule the first ping this long from now.
    PingIn(u64),
    /// Send a message now (closed loop).
    Send,
}

/// The verdict on a received data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An echo (or push) of message `seq` of this connection, sent (intended) at `sent_ns`.
    Echo { seq: u64, sent_ns: u64 },
    /// A broadcast message from publisher `publisher` (global index; stamp sender
    /// `sender`), sequence `seq`, published (intended) at `sent_ns`.
    Delivery {
        publisher: u32,
        sender: u32,
        seq: u64,
        sent_ns: u64,
    },
    /// Not an echo of ours.
    Unexpected,
}

impl Scenario {
    pub fn from_config(c: &RunConfig) -> Self {
        match c.scenario {
            ScenarioKind::Hold => Scenario::Hold {
                interval_ns: c.ping_interval_ns,
            },
            ScenarioKind::Echo => Scenario::Echo {
                payload: c.payload,
                rate: c.rate,
            },
            ScenarioKind::Broadcast => Scenario::Broadcast {
                payload: c.payload,
                rate: c.rate,
                publishers: c.publishers,
                workers: c.cores.len() as u32,
                echo_self: c.echo_self,
            },
            ScenarioKind::Push => Scenario::Push {
                payload: c.payload,
                rate: c.rate,
            },
        }
    }

    /// Publishers worker `w` owns: its slots `0..n` (broadcast only).
    pub fn local_publishers(&self, w: usize) -> u32 {
        match *self {
            Scenario::Broadcast {
                publishers,
                workers,
                ..
            } => share(publishers, w, workers as usize),
            _ => 0,
        }
    }

    /// The global index of the publisher whose stamps carry `sender` (worker `w`'s slot `k`
    /// has sender id `w << 20 | k`), or None if `sender` is not a publisher of this run.
    pub fn publisher_index(&self, sender: u32) -> Option<u32> {
        let Scenario::Broadcast {
            publishers,
            workers,
            ..
        } = *self
        else {
            return None;
        };
        let (w, k) = (sender >> SENDER_SHIFT, sender & ((1 << SENDER_SHIFT) - 1));
        if w >= workers || k >= share(publishers, w as usize, workers as usize) {
            return None;
        }
        let n = workers.max(1);
        Some(w * (publishers / n) + w.min(publishers % n) + k)
    }

    pub fn on_open(&self) -> OnOpen {
        match *self {
            Scenario::Hold { interval_ns } => OnOpen::PingIn(interval_ns),
            Scenario::Echo { rate, .. } | Scenario::Broadcast { rate, .. } if rate <= 0.0 => {
                OnOpen::Send
            }
            Scenario::Echo { .. } | Scenario::Broadcast { .. } | Scenario::Push { .. } => {
                OnOpen::Nothing
            }
        }
    }

    /// Total messages per second this scenario schedules (None: not rate driven).
    pub fn open_loop_rate(&self) -> Option<f64> {
        match *self {
            Scenario::Echo { rate, .. }
            | Scenario::Broadcast { rate, .. }
            | Scenario::Push { rate, .. }
                if rate > 0.0 =>
            {
                Some(rate)
            }
            _ => None,
        }
    }

    /// Whether a reply triggers the next send (closed loop).
    pub fn send_on_reply(&self) -> bool {
        matches!(
            *self,
            Scenario::Echo { rate, .. } | Scenario::Broadcast { rate, .. } if rate == 0.0
        )
    }

    /// Message size, if this scenario sends messages.
    pub fn payload(&self) -> Option<usize> {
        match *self {
            Scenario::Echo { payload, .. }
            | Scenario::Broadcast { payload, .. }
            | Scenario::Push { payload, .. } => Some(payload),
            Scenario::Hold { .. } => None,
        }
    }

    /// Judges a data message received on connection `sender` that has sent `sent` messages.
    pub fn judge(&self, sender: u32, sent: u64, payload: &[u8]) -> Verdict {
        match self {
            Scenario::Echo { .. } | Scenario::Push { .. } => {
                match ws_common::payload::read(payload) {
                    Some(s) if s.sender == sender && s.seq < sent => Verdict::Echo {
                        seq: s.seq,
                        sent_ns: s.sent_ns,
                    },
                    _ => Verdict::Unexpected,
                }
            }
            Scenario::Broadcast { .. } => {
                let Some(s) = ws_common::payload::read(payload) else {
                    return Verdict::Unexpected;
                };
                match self.publisher_index(s.sender) {
                    Some(publisher) => Verdict::Delivery {
                        publisher,
                        sender: s.sender,
                        seq: s.seq,
                        sent_ns: s.sent_ns,
                    },
                    None => Verdict::Unexpected,
                }
            }
            Scenario::Hold { .. } => Verdict::Unexpected,
        }
    }

    /// Whether this is the broadcast scenario.
    pub fn is_broadcast(&self) -> bool {
        matches!(self, Scenario::Broadcast { .. })
    }

    /// Whether this is the push scenario.
    pub fn is_push(&self) -> bool {
        matches!(self, Scenario::Push { .. })
    }

    /// Name of the scenario's latency in reports and thresholds.
    pub fn latency_name(&self) -> &'static str {
        match self {
            Scenario::Hold { .. } => "pong",
            Scenario::Echo { .. } => "rtt",
            Scenario::Broadcast { .. } => "fanout",
            Scenario::Push { .. } => "push",
        }
    }
}

/// A stamp's sender id is `worker << SENDER_SHIFT | slot`.
pub const SENDER_SHIFT: u32 = 20;

/// The stamp sender id of worker `w`'s slot `idx`.
pub fn sender_id(w: usize, idx: usize) -> u32 {
    ((w as u32) << SENDER_SHIFT).wrapping_add(idx as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ws_common::payload::{build, Stamp};

    #[test]
    fn echo_judging() {
        let s = Scenario::Echo {
            payload: 64,
            rate: 0.0,
        };
        assert_eq!(s.on_open(), OnOpen::Send);
        assert!(s.send_on_reply());
        let p = build(
            64,
            Stamp {
                sender: 3,
                seq: 4,
                sent_ns: 99,
            },
        );
        assert_eq!(
            s.judge(3, 5, &p),
            Verdict::Echo {
                seq: 4,
                sent_ns: 99
            }
        );
        assert_eq!(s.judge(3, 4, &p), Verdict::Unexpected, "never sent");
        assert_eq!(s.judge(2, 5, &p), Verdict::Unexpected, "someone else's");
        assert_eq!(s.judge(3, 5, b"hello"), Verdict::Unexpected);
        let h = Scenario::Hold { interval_ns: 5 };
        assert_eq!(h.on_open(), OnOpen::PingIn(5));
        assert_eq!(h.judge(3, 5, &p), Verdict::Unexpected);
    }

    #[test]
    fn broadcast_publishers_are_numbered_across_workers() {
        // 5 publishers over 2 workers: worker 0 has slots 0..3, worker 1 slots 0..2.
        let s = Scenario::Broadcast {
            payload: 64,
            rate: 10.0,
            publishers: 5,
            workers: 2,
            echo_self: true,
        };
        assert_eq!((s.local_publishers(0), s.local_publishers(1)), (3, 2));
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
        .map(|&x| s.publisher_index(x))
        .collect();
        assert_eq!(ids, [Some(0), Some(2), None, Some(3), Some(4), None, None]);
        let p = build(
            64,
            Stamp {
                sender: sender_id(1, 1),
                seq: 9,
                sent_ns: 7,
            },
        );
        assert_eq!(
            s.judge(0, 0, &p),
            Verdict::Delivery {
                publisher: 4,
                sender: sender_id(1, 1),
                seq: 9,
                sent_ns: 7
            }
        );
        assert_eq!(s.judge(0, 0, b"server text"), Verdict::Unexpected);
        assert_eq!(s.on_open(), OnOpen::Nothing);
        assert_eq!(s.open_loop_rate(), Some(10.0));
        let push = Scenario::Push {
            payload: 64,
            rate: 5.0,
        };
        assert_eq!(
            push.judge(sender_id(1, 1), 10, &p),
            Verdict::Echo { seq: 9, sent_ns: 7 }
        );
        assert_eq!(push.publisher_index(0), None);
    }
}
