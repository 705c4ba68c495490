//! What an open connection does. A scenario decides three things: what happens when a
//! connection opens, what drives sends (a constant-rate schedule, the previous reply, a
//! heartbeat timer) and how a received data message is judged. The worker's event loop asks
//! these questions and does the I/O, so a new scenario (broadcast: judge messages a
//! publisher stamped, with latency from the publisher's send time) is a new variant here
//! plus its arms in `worker.rs`, without touching the connection machinery.

use crate::cli::ScenarioKind;
use crate::config::RunConfig;

/// The scenario of a run, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    /// Idle connections; a ping every `interval_ns`, pong latency recorded.
    Hold { interval_ns: u64 },
    /// Stamped messages echoed back. `rate` is total msgs/s; 0 is closed loop.
    Echo { payload: usize, rate: f64 },
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
    /// An echo of message `seq` of this connection, sent (intended) at `sent_ns`.
    Echo { seq: u64, sent_ns: u64 },
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
        }
    }

    pub fn on_open(&self) -> OnOpen {
        match *self {
            Scenario::Hold { interval_ns } => OnOpen::PingIn(interval_ns),
            Scenario::Echo { rate, .. } if rate <= 0.0 => OnOpen::Send,
            Scenario::Echo { .. } => OnOpen::Nothing,
        }
    }

    /// Total messages per second this scenario schedules (None: not rate driven).
    pub fn open_loop_rate(&self) -> Option<f64> {
        match *self {
            Scenario::Echo { rate, .. } if rate > 0.0 => Some(rate),
            _ => None,
        }
    }

    /// Whether a reply triggers the next send (closed loop).
    pub fn send_on_reply(&self) -> bool {
        matches!(*self, Scenario::Echo { rate, .. } if rate == 0.0)
    }

    /// Message size, if this scenario sends messages.
    pub fn payload(&self) -> Option<usize> {
        match *self {
            Scenario::Echo { payload, .. } => Some(payload),
            Scenario::Hold { .. } => None,
        }
    }

    /// Judges a data message received on connection `sender` that has sent `sent` messages.
    pub fn judge(&self, sender: u32, sent: u64, payload: &[u8]) -> Verdict {
        match self {
            Scenario::Echo { .. } => match ws_common::payload::read(payload) {
                Some(s) if s.sender == sender && s.seq < sent => Verdict::Echo {
                    seq: s.seq,
                    sent_ns: s.sent_ns,
                },
                _ => Verdict::Unexpected,
            },
            Scenario::Hold { .. } => Verdict::Unexpected,
        }
    }
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
}
