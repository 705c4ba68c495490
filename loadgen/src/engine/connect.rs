//! Opening a slot's connection: socket, optional source address, non-blocking connect,
//! the upgrade request with a fresh key, the `101` checked, and on failure a class, a
//! close and a retry after an exponential back-off with jitter.

use std::sync::atomic::Ordering;

use ws_common::errno::errno_name;
use ws_common::handshake::{
    accept_key, client_request, encode_key, parse_response, ClientHandshakeError,
};

use crate::config::auth::TokenVia;
use crate::config::RunConfig;

use crate::engine::conn::{token, State};
use crate::engine::io::Phase;
use crate::engine::scenario::Scenario;
use crate::engine::stats::record_ns;
use crate::engine::sys;
use crate::engine::tls::Tls;
use crate::engine::worker::Worker;

/// Back-off: first delay and cap.
const BACKOFF_BASE_NS: u64 = 100_000_000;
const BACKOFF_MAX_NS: u64 = 5_000_000_000;

/// The failure class of a refused upgrade.
pub fn handshake_class(e: ClientHandshakeError) -> String {
    match e {
        ClientHandshakeError::Status(s) => format!("http_{s}"),
        ClientHandshakeError::BadAccept => "bad_accept".into(),
        ClientHandshakeError::Malformed => "malformed_response".into(),
        ClientHandshakeError::TooLarge => "response_too_large".into(),
    }
}

/// The user id of the slot with stamp sender `sender` in generation `gen`: unique across
/// workers and reconnects (the generation changes at every close). It is what a push
/// run registers as (`?user=`) and what a minted token's `sub` says.
pub fn user_id(sender: u32, gen: u32) -> String {
    format!("u{sender}-{gen}")
}

/// A connection's own upgrade request (not the shared template): user `user` presented as
/// a signed token (`--token-secret`), or as `?user=` when the scenario registers users
/// and no secret is set; `own` is the scenario's own request target and headers.
fn own_request(
    cfg: &RunConfig,
    user: &str,
    registers: bool,
    own: Option<(String, Vec<String>)>,
    key: &str,
    out: &mut Vec<u8>,
) {
    let t = &cfg.target;
    let (mut path, mut headers) = match own {
        Some((p, mut h)) => {
            h.extend(cfg.headers.iter().cloned());
            (p, h)
        }
        None => (t.path_and_query.clone(), cfg.headers.clone()),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut bearer = None;
    match &cfg.tokens {
        Some(tokens) => {
            let tok = tokens.mint(user);
            match tokens.via {
                TokenVia::Query => {
                    // base64url and dots: nothing to escape in a query.
                    path.push(sep);
                    path.push_str("token=");
                    path.push_str(&tok);
                }
                TokenVia::Header => bearer = Some(format!("Authorization: Bearer {tok}")),
            }
        }
        None if registers => {
            path.push(sep);
            path.push_str("user=");
            path.push_str(user);
        }
        None => {}
    }
    headers.extend(bearer);
    out.extend_from_slice(&client_request(
        &t.host_header,
        &path,
        key,
        cfg.origin.as_deref(),
        &headers,
    ));
}

impl<S: Scenario> Worker<S> {
    pub(super) fn start_connect(&mut self, idx: usize, now: u64, retry: bool) {
        self.io.stats.c.connects_attempted += 1;
        if retry {
            self.io.stats.c.retries += 1;
        }
        let dest = self.io.sh.cfg.target.addr;
        let fd = match sys::tcp_socket(&dest) {
            Ok(fd) => fd,
            Err(e) => return self.connect_failed(idx, &errno_name(e), now),
        };
        let c = &mut self.io.conns[idx];
        c.fd = fd;
        c.state = State::Connecting;
        // Without timestamps latency is taken at read time, so this failing costs only
        // precision.
        let _ = sys::enable_rx_timestamps(fd);
        c.t_ns = now;
        self.io.pending += 1;
        if let Some(ip) = self.io.next_source_ip() {
            if let Err(e) = sys::bind_source(fd, ip) {
                return self.connect_failed(idx, &errno_name(e), now);
            }
        }
        let done = match sys::connect(fd, &dest) {
            Ok(done) => done,
            Err(e) => return self.connect_failed(idx, &errno_name(e), now),
        };
        let gen = self.io.conns[idx].gen;
        if let Err(e) = self.io.ep.add(fd, token(idx, gen)) {
            return self.connect_failed(idx, &errno_name(e), now);
        }
        if done {
            self.on_connected(idx, now);
        } else {
            let due = now + self.io.sh.cfg.connect_timeout_ns;
            self.timers.connect.push(due, idx, gen);
        }
    }

    /// TCP is up: start TLS (wss://) or send the upgrade request.
    pub(super) fn on_connected(&mut self, idx: usize, now: u64) {
        let c = &mut self.io.conns[idx];
        record_ns(&mut self.io.stats.h.connect, now.saturating_sub(c.t_ns));
        c.t_ns = now;
        let gen = c.gen;
        let due = now + self.io.sh.cfg.handshake_timeout_ns;
        self.timers.handshake.push(due, idx, gen);
        let Some((config, name)) = &self.tls else {
            return self.send_upgrade(idx, now);
        };
        match Tls::new(config.clone(), name.clone()) {
            Ok(t) => {
                let c = &mut self.io.conns[idx];
                c.tls = Some(t);
                c.state = State::Tls;
                self.io.send_records(idx); // the ClientHello
            }
            Err(class) => self.connect_failed(idx, &class, now),
        }
    }

    /// wss://: the TLS handshake is done (the records that finished it arrived at `now`).
    pub(super) fn tls_established(&mut self, idx: usize, now: u64) {
        let c = &mut self.io.conns[idx];
        record_ns(&mut self.io.stats.h.tls, now.saturating_sub(c.t_ns));
        if c.tls.as_ref().is_some_and(|t| t.resumed()) {
            self.io.stats.c.tls_resumed += 1;
        } else {
            self.io.stats.c.tls_full += 1;
        }
        self.send_upgrade(idx, now);
    }

    /// Sends the upgrade request with a fresh key.
    fn send_upgrade(&mut self, idx: usize, now: u64) {
        let c = &mut self.io.conns[idx];
        c.state = State::Handshaking;
        c.t_ns = now;
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.io.random().to_le_bytes());
        raw[8..].copy_from_slice(&self.io.random().to_le_bytes());
        self.io.conns[idx].key = raw;
        let key = encode_key(raw);
        let mut req = std::mem::take(&mut self.reqbuf);
        req.clear();
        let registers = self.sc.registers_user();
        let own = self.sc.request(&self.io, idx);
        let cfg = &self.io.sh.cfg;
        if cfg.tokens.is_none() && !registers && own.is_none() {
            req.extend_from_slice(&self.request);
            req[self.key_at..self.key_at + key.len()].copy_from_slice(key.as_bytes());
        } else {
            let user = user_id(self.io.sender_id(idx), self.io.conns[idx].gen);
            own_request(cfg, &user, registers, own, &key, &mut req);
        }
        self.io.send_bytes(idx, &req);
        self.reqbuf = req;
    }

    /// The handshake response at the start of `buf`: `Some(used)` once the `101` is
    /// verified (the slot is open), `None` if more bytes are needed or it failed.
    pub(super) fn handshake_response(&mut self, idx: usize, buf: &[u8], now: u64) -> Option<usize> {
        let accept = accept_key(encode_key(self.io.conns[idx].key).as_bytes());
        match parse_response(buf, &accept) {
            Ok(None) => None,
            Ok(Some(n)) => {
                self.established(idx, now);
                Some(n)
            }
            Err(e) => {
                self.connect_failed(idx, &handshake_class(e), now);
                None
            }
        }
    }

    /// A connect or handshake failed: count it by class, close, maybe retry.
    pub(super) fn connect_failed(&mut self, idx: usize, class: &str, now: u64) {
        self.io.stats.fail(class);
        self.close_fd(idx);
        self.retry_or_give_up(idx, now);
    }

    pub(super) fn retry_or_give_up(&mut self, idx: usize, now: u64) {
        let max_tries = self.io.sh.cfg.reconnect_max_tries;
        if self.io.phase != Phase::Run || idx >= self.io.target {
            self.io.conns[idx].state = State::Idle;
            return;
        }
        let tries = self.io.conns[idx].tries.saturating_add(1);
        self.io.conns[idx].tries = tries;
        if tries > max_tries {
            self.io.conns[idx].state = State::GaveUp;
            self.io.stats.c.gave_up += 1;
            return;
        }
        let exp = BACKOFF_BASE_NS.saturating_mul(1u64 << (tries - 1).min(20));
        let d = exp.min(BACKOFF_MAX_NS);
        let jitter = self.io.random() % (d / 2 + 1);
        let c = &mut self.io.conns[idx];
        c.state = State::Backoff;
        let gen = c.gen;
        self.timers.backoff(now + d / 2 + jitter, idx, gen);
    }

    fn established(&mut self, idx: usize, now: u64) {
        let c = &mut self.io.conns[idx];
        record_ns(&mut self.io.stats.h.handshake, now.saturating_sub(c.t_ns));
        c.state = State::Open;
        if self.sc.upgrade_resets_tries() {
            c.tries = 0;
        }
        if c.dropped {
            c.dropped = false;
            self.io.stats.c.reconnects += 1;
        }
        c.open_pos = self.io.open.len() as u32;
        let gen = c.gen;
        self.io.open.push(idx as u32);
        self.io.pending -= 1;
        self.io.stats.c.connects_established += 1;
        self.io.sh.open.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = self.sc.ping_interval_ns() {
            self.timers.ping.push(now + d, idx, gen);
        }
        self.sc.on_open(&mut self.io, idx, now);
    }
}
