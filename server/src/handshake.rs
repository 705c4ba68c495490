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

use ws_common::handshake::{self, parse_request, Method, Reject, Request};

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
        let path = req.path.as_str();
        let broadcast_route = path == "/broadcast";
        if path == "/metrics" || path == "/healthz" {
            if req.method != Method::Get {
                return self.reject(slot, gen, Reject::MethodNotAllowed);
            }
            let resp = if path == "/metrics" {
                let body = crate::stats::render(&self.all_stats, &self.settings.cores);
                handshake::http_response(200, "", "text/plain; version=0.0.4", body.as_bytes())
            } else {
                handshake::http_response(200, "", "text/plain", b"ok\n")
            };
            self.finish_http(slot, gen, &resp);
            return;
        } else if let Some(user) = path.strip_prefix("/push/") {
            let target = Target::User(Arc::from(handshake::percent_decode(user)));
            return self.on_post(slot, gen, &req, Ask::Push, target, buf);
        } else if let Some(room) = path.strip_prefix("/broadcast/") {
            let target = Target::Room(Arc::from(handshake::percent_decode(room)));
            return self.on_post(slot, gen, &req, Ask::Broadcast, target, buf);
        } else if path != "/ws" && !broadcast_route {
            return self.reject(slot, gen, Reject::NotFound);
        }
        let accept = match req.check_upgrade(&self.settings.allow_origin) {
            Ok(a) => a,
            Err(rej) => return self.reject(slot, gen, rej),
        };
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
        if broadcast_route {
            conn.flags |= flag::BROADCAST;
            if req.query_param("echo").as_deref() == Some("false") {
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
        if broadcast_route {
            self.registry
                .join_room(slot, &req.query_param("room").unwrap_or_default());
        }
        if let Some(user) = req.query_param("user").filter(|u| !u.is_empty()) {
            self.registry.join_user(slot, &user);
        }
        let resp = handshake::switching_protocols(&accept);
        self.send_bytes(slot, gen, &resp);
        if buf.len() > req.head_len {
            let first = &mut buf[req.head_len..];
            self.stats().bytes_in.add(first.len() as u64);
            self.on_frame_bytes(slot, gen, first);
        }
    }

    /// `POST /push/ID` and `POST /broadcast/NAME`: wait for the whole body, then deliver.
    fn on_post(
        &mut self,
        slot: u32,
        gen: u32,
        req: &Request,
        ask: Ask,
        target: Target,
        buf: &[u8],
    ) {
        if req.method != Method::Post {
            return self.reject(slot, gen, Reject::MethodNotAllowed);
        }
        let empty_name = match &target {
            Target::User(u) | Target::Room(u) => u.is_empty(),
        };
        if empty_name {
            return self.reject(slot, gen, Reject::NotFound);
        }
        let Some(len) = req.content_length else {
            return self.reject(slot, gen, Reject::BadRequest);
        };
        if len > self.settings.max_message_size {
            return self.reject(slot, gen, Reject::PayloadTooLarge);
        }
        if buf.len() < req.head_len + len {
            // The rest of the body is still on its way: keep what came.
            if let Some(conn) = self.conns.get(slot, gen) {
                conn.extra().inbuf = buf.to_vec();
            }
            return;
        }
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
