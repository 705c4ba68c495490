//! The handshake phase: bytes of a connection that has not upgraded yet.
//!
//! Parsing and validation are `ws_common::handshake` (shared with the tokio baseline, so
//! both refuse the same requests with the same status); this file routes the request:
//! `/ws` upgrades, `/metrics` and `/healthz` answer plain HTTP, anything else is refused.
//! Bytes that arrived after the request head (a first frame in the same packet) go straight
//! to the frame loop.

use std::sync::atomic::Ordering;

use ws_common::handshake::{self, parse_request, Method, Reject};

use crate::conn::{flag, Phase};
use crate::core::Core;

impl Core {
    pub(crate) fn on_handshake_bytes(&mut self, slot: u32, gen: u32, data: &mut [u8]) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let ex = conn.extra();
        ex.inbuf.extend_from_slice(data);
        let req = match parse_request(&ex.inbuf) {
            Ok(None) => return, // wait for more; the sweep enforces the deadline
            Ok(Some(r)) => r,
            Err(rej) => return self.reject(slot, gen, rej),
        };
        match req.path.as_str() {
            "/ws" => {}
            "/metrics" | "/healthz" => {
                if req.method != Method::Get {
                    return self.reject(slot, gen, Reject::MethodNotAllowed);
                }
                let resp = if req.path == "/metrics" {
                    let body = crate::stats::render(&self.all_stats, &self.settings.cores);
                    handshake::http_response(200, "", "text/plain; version=0.0.4", body.as_bytes())
                } else {
                    handshake::http_response(200, "", "text/plain", b"ok\n")
                };
                self.finish_http(slot, gen, &resp);
                return;
            }
            _ => return self.reject(slot, gen, Reject::NotFound),
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
        conn.last_rx = tick;
        conn.last_ping = tick;
        let mut rest = conn
            .extra
            .as_mut()
            .map(|e| std::mem::take(&mut e.inbuf))
            .unwrap_or_default();
        conn.shed();
        let s = self.stats();
        s.upgraded.inc();
        s.connections_open.inc();
        s.pending_open.dec();
        let resp = handshake::switching_protocols(&accept);
        self.send_bytes(slot, gen, &resp);
        if rest.len() > req.head_len {
            let first = &mut rest[req.head_len..];
            self.stats().bytes_in.add(first.len() as u64);
            self.on_frame_bytes(slot, gen, first);
        }
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
