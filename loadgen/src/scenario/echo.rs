//! `--scenario echo`: stamped `--payload`-byte messages that the server sends back. Open
//! loop (`--rate R`): the worker's share of R msgs/s, round-robin over its open
//! connections, each stamped with its *intended* send time, so the round trip includes
//! any delay the generator added (coordinated omission corrected). Closed loop (`--rate
//! 0`): each connection sends its next message when the reply to the previous arrives.

use ws_common::payload::{self, Stamp};

use crate::config::RunConfig;
use crate::engine::io::{Io, Lat};
use crate::engine::scenario::Scenario;

pub struct Echo {
    rate: Option<f64>,
    /// The message, rewritten with each stamp.
    msg: Vec<u8>,
    /// Round-robin position in the open list.
    rr: usize,
}

impl Echo {
    pub fn new(cfg: &RunConfig, slots: usize) -> Self {
        Self {
            rate: super::rate_part(cfg, slots),
            msg: vec![b'x'; cfg.payload],
            rr: 0,
        }
    }

    /// Slot `idx` sends its next message, intended at `intended_ns`.
    fn send(&mut self, io: &mut Io, idx: usize, intended_ns: u64) {
        if io.backlogged(idx) {
            return;
        }
        let stamp = Stamp {
            sender: io.sender_id(idx),
            seq: io.expect_reply(idx),
            sent_ns: intended_ns,
        };
        payload::write(&mut self.msg, stamp);
        io.send_data(idx, false, &self.msg);
    }
}

impl Scenario for Echo {
    fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn on_open(&mut self, io: &mut Io, idx: usize, now: u64) {
        if self.rate.is_none() && io.running() {
            self.send(io, idx, now);
        }
    }

    fn send_scheduled(&mut self, io: &mut Io, intended: u64, _now: u64) {
        self.rr = (self.rr + 1) % io.open.len().max(1);
        if let Some(&idx) = io.open.get(self.rr) {
            self.send(io, idx as usize, intended);
        }
    }

    fn on_message(&mut self, io: &mut Io, idx: usize, _text: bool, payload: &[u8], now: u64) {
        let Some(s) = super::own_stamp(io, idx, payload) else {
            io.stats.c.msgs_unexpected += 1;
            return;
        };
        io.reply(idx, s.seq, s.sent_ns, Lat::Rtt, now);
        if self.rate.is_none() && io.running() && io.is_open(idx) {
            self.send(io, idx, now);
        }
    }
}
