//! `--scenario hold`: connections stay open and idle; the engine pings each one every
//! `--ping-interval` and times the pong. Any data message is unexpected.

use crate::config::RunConfig;
use crate::engine::io::Io;
use crate::engine::scenario::Scenario;

pub struct Hold {
    interval_ns: u64,
}

impl Hold {
    pub fn new(cfg: &RunConfig) -> Self {
        Self {
            interval_ns: cfg.ping_interval_ns,
        }
    }
}

impl Scenario for Hold {
    fn ping_interval_ns(&self) -> Option<u64> {
        Some(self.interval_ns)
    }

    fn on_message(&mut self, io: &mut Io, _idx: usize, _text: bool, _payload: &[u8], _now: u64) {
        io.stats.c.msgs_unexpected += 1;
    }
}
