//! The handshake phase: bytes of a connection that has not upgraded yet.
//!
//! Parsing and validation are `ws_common::handshake` (shared with the tokio baseline, so
//! both refuse the same requests with the same status); this file routes the request:
//! `/ws` and `/broadcast` upgrade, `/metrics` and `/healthz` answer plain HTTP,
//! `POST /push/ID` and `POST /broadcast/NAME` hand their body to `fanout.rs`, anything
//! else is refused.
//! Bytes that arrived after the request head (a first frame in the same packet) go straight
//! to the frame loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ws_common::auth::unix_now;
use ws_common::handshake::{self, parse_request, Reject, Request};
use ws_common::route::{Route, Side};

use crate::conn::{flag, Phase};
use crate::core::Core;
use crate::fanout::Ask;
use crate::inbox::Target;

impl Core {
    pub(crate) fn on_handshake_bytes(&mut self, slot: u32, gen: u32, data: &mut [u8]) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        // The common case, a whole request in one read, is parsed where the kernel put it:
        // no per-connection buffer. Only a request split over reads is gathered in `inbuf`.
        let mut gathered = match conn.extra.as_mut() {
            Some(ex) if !ex.inbuf.is_empty() => {
                let mut b = std::mem::take(&mut ex.inbuf);
                b.extend_from_slice(data);
                Some(b)
            }
            _ => None,
        };
        let buf: &mut [u8] = match gathered.as_mut() {
            Some(b) => b,
            None => data,
        };
        let req = match parse_request(buf) {
            Ok(None) => {
                // Wait for more; the sweep enforces the deadline.
                let keep = match gathered {
                    Some(b) => b,
                    None => data.to_vec(),
                };
                if let Some(conn) = self.conns.get(slot, gen) {
                    conn.extra().inbuf = keep;
                }
                return;
            }
            Ok(Some(r)) => r,
            Err(rej) => return self.reject(slot, gen, rej),
        };
        let side = if self
            .conns
            .get(slot, gen)
            .is_some_and(|c| c.has(flag::ADMIN))
        {
            Side::Admin
        } else {
            Side::Public
        };
        let up = match self.settings.policy.route(&req, side, unix_now()) {
            Err(rej) => return self.reject(slot, gen, rej),
            Ok(Route::Upgrade(up)) => up,
            Ok(Route::Healthz) => {
                let resp = handshake::http_response(200, "", "text/plain", b"ok\n");
                return self.finish_http(slot, gen, &resp);
            }
            Ok(Route::Metrics) => {
                let body = crate::stats::render(&self.all_stats, &self.settings.cores);
                let resp =
                    handshake::http_response(200, "", "text/plain; version=0.0.4", body.as_bytes());
                return self.finish_http(slot, gen, &resp);
            }
            Ok(Route::Push { user, len }) => {
                let target = Target::User(Arc::from(user));
                return self.on_post(slot, gen, &req, len, Ask::Push, target, gathered, data);
            }
            Ok(Route::Publish { room, len }) => {
                let target = Target::Room(Arc::from(room));
                return self.on_post(slot, gen, &req, len, Ask::Broadcast, target, gathered, data);
            }
        };
        let accept = up.accept;
        let max = self.settings.max_conns;
        let admitted = self
            .global_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return self.reject(slot, gen, Reject::Unavailable);
        }
        let tick = self.tick;
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        conn.phase = Phase::Open;
        conn.flags |= flag::COUNTED;
        if up.room.is_some() {
            conn.flags |= flag::BROADCAST;
            if !up.echo {
                conn.flags |= flag::NO_ECHO;
            }
        }
        conn.last_rx = tick;
        conn.last_ping = tick;
        conn.shed();
        let s = self.stats();
        s.upgraded.inc();
        s.connections_open.inc();
        s.pending_open.dec();
        if let Some(room) = &up.room {
            self.registry.join_room(slot, room);
        }
        if let Some(user) = &up.user {
            self.registry.join_user(slot, user);
        }
        let resp = handshake::switching_protocols(&accept);
        self.send_bytes(slot, gen, &resp);
        if buf.len() > req.head_len {
            let first = &mut buf[req.head_len..];
            self.stats().bytes_in.add(first.len() as u64);
            self.on_frame_bytes(slot, gen, first);
        }
    }

    /// `POST /push/ID` and `POST /broadcast/NAME` (already routed and authorised, `len`
    /// within `--max-body`): wait for the whole body, then deliver. What has arrived is kept
    /// in one buffer that only grows by what each read adds (never re-copied, never sized
    /// from the announced length).
    #[allow(clippy::too_many_arguments)]
    fn on_post(
        &mut self,
        slot: u32,
        gen: u32,
        req: &Request,
        len: usize,
        ask: Ask,
        target: Target,
        gathered: Option<Vec<u8>>,
        data: &[u8],
    ) {
        let have = gathered.as_ref().map_or(data.len(), |b| b.len());
        if have < req.head_len + len {
            // The rest of the body is still on its way: keep what came.
            let keep = gathered.unwrap_or_else(|| data.to_vec());
            if let Some(conn) = self.conns.get(slot, gen) {
                conn.extra().inbuf = keep;
            }
            return;
        }
        let buf: &[u8] = gathered.as_deref().unwrap_or(data);
        self.start_ask(
            slot,
            gen,
            ask,
            target,
            &buf[req.head_len..req.head_len + len],
        );
    }

    fn reject(&mut self, slot: u32, gen: u32, rej: Reject) {
        self.stats().reject(rej);
        self.finish_http(slot, gen, &rej.response());
    }

    /// Sends a complete HTTP response, then half-closes and lingers.
    fn finish_http(&mut self, slot: u32, gen: u32, resp: &[u8]) {
        if let Some(conn) = self.conns.get(slot, gen) {
            if let Some(ex) = conn.extra.as_mut() {
                ex.inbuf = Vec::new();
            }
            conn.phase = Phase::Lingering;
        }
        self.send_bytes(slot, gen, resp);
        self.linger(slot, gen);
    }
}
