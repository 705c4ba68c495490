//! `--scenario push`: each connection registers as a user (`user=u<sender>-<generation>`
//! appended to the URL query, or the `sub` of its token with `--token-secret`; unique
//! across workers and reconnects); the worker sends its share of `--rate` as
//! `POST /push/<user>` to the server's admin listener (`--admin-url`, `--api-key`) to random open connections of its own, so the
//! worker that receives a push also knows what it expects: a push is judged like an echo
//! (sender and sequence of that connection), its latency is receipt − intended time. The
//! POSTs are [`http_post`](super::http_post) sockets in the same epoll; a push not answered
//! 200 is a failed push and is written off its connection's outstanding messages.

use ws_common::payload::{self, Stamp};

use crate::config::RunConfig;
use crate::engine::conn::untoken;
use crate::engine::io::{Io, Lat};
use crate::engine::scenario::{Scenario, SIDE_BIT};
use crate::engine::stats::{bump, record_ns};
use crate::engine::user_id;
use crate::scenario::http_post::{self, Outcome, PushWorker};

pub struct Push {
    rate: Option<f64>,
    msg: Vec<u8>,
    req: Vec<u8>,
    posts: PushWorker,
    /// The admin listener's Host and `Authorization` (`--api-key`) lines.
    host_header: String,
    authorization: Option<String>,
    outcomes: Vec<Outcome>,
}

impl Push {
    pub fn new(cfg: &RunConfig, slots: usize) -> Self {
        Self {
            rate: super::rate_part(cfg, slots),
            msg: vec![b'x'; cfg.payload],
            req: Vec::new(),
            posts: PushWorker::new(cfg.push_concurrency, cfg.handshake_timeout_ns),
            host_header: cfg.admin.host_header.clone(),
            authorization: cfg.admin.authorization(),
            outcomes: Vec::new(),
        }
    }

    /// A POST of a stamped message to open connection `idx`'s user.
    fn push_to(&mut self, io: &mut Io, idx: usize, intended_ns: u64, now: u64) {
        let sender = io.sender_id(idx);
        let gen = io.conns[idx].gen;
        let stamp = Stamp {
            sender,
            seq: io.expect_reply(idx),
            sent_ns: intended_ns,
        };
        io.stats.c.msgs_sent += 1;
        io.stats.c.bytes_sent += self.msg.len() as u64;
        payload::write(&mut self.msg, stamp);
        http_post::request(
            &self.host_header,
            self.authorization.as_deref(),
            &user_id(sender, gen),
            &self.msg,
            &mut self.req,
        );
        let src = io.next_source_ip();
        let dest = io.sh.cfg.admin.addr;
        let conn = (idx as u32, gen);
        if let Some(o) = self.posts.start(&io.ep, &dest, src, &self.req, conn, now) {
            Self::on_outcome(io, o);
        }
    }

    /// A POST ended: count its status; a push that will not be delivered is written off
    /// its connection's outstanding messages (it is counted as a failed push instead).
    fn on_outcome(io: &mut Io, o: Outcome) {
        let s = &mut io.stats;
        let failed = match &o.result {
            Ok((200, count)) => {
                record_ns(&mut s.h.http, o.elapsed_ns);
                bump(&mut s.push_status, "200");
                s.c.push_deliveries_expected += count;
                false
            }
            Ok((status, _)) => {
                record_ns(&mut s.h.http, o.elapsed_ns);
                bump(&mut s.push_status, &status.to_string());
                true
            }
            Err(class) => {
                bump(&mut s.push_status, class);
                true
            }
        };
        if failed {
            s.c.push_failed += 1;
            io.write_off(o.conn.0 as usize, o.conn.1);
        }
    }
}

impl Scenario for Push {
    fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// POST round trips are timed when their answer is read.
    fn batches(&self) -> bool {
        false
    }

    /// Each connection registers its own user id: pushes are addressed to it.
    fn registers_user(&self) -> bool {
        true
    }

    /// With every POST slot busy the schedule falls behind (up to 1 s, then forgiven) and
    /// the delay shows in the latency from the intended time.
    fn can_send(&self, io: &Io) -> bool {
        !io.open.is_empty() && self.posts.has_room()
    }

    fn send_scheduled(&mut self, io: &mut Io, intended: u64, now: u64) {
        let pick = io.random() as usize % io.open.len().max(1);
        if let Some(&idx) = io.open.get(pick) {
            self.push_to(io, idx as usize, intended, now);
        }
    }

    fn on_message(&mut self, io: &mut Io, idx: usize, _text: bool, payload: &[u8], now: u64) {
        match super::own_stamp(io, idx, payload) {
            Some(s) => io.reply(idx, s.seq, s.sent_ns, Lat::Delivery, now),
            None => io.stats.c.msgs_unexpected += 1,
        }
    }

    fn on_side_event(&mut self, io: &mut Io, token: u64, flags: u32, now: u64) {
        let (i, gen) = untoken(token);
        if let Some(o) = self.posts.on_event(i & !SIDE_BIT, gen, flags, now) {
            Self::on_outcome(io, o);
        }
    }

    fn timers(&mut self, io: &mut Io, now: u64) {
        let mut out = std::mem::take(&mut self.outcomes);
        self.posts.timers(now, &mut out);
        for o in out.drain(..) {
            Self::on_outcome(io, o);
        }
        self.outcomes = out;
    }

    fn next_deadline(&self) -> Option<u64> {
        self.posts.next_deadline()
    }

    fn finish(&mut self, _io: &mut Io) {
        self.posts.close_all();
    }
}
