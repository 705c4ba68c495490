//! What arrives on a slot: readiness from epoll, bytes read until the socket is empty,
//! the handshake response, then frames. Control frames are the engine's (a ping is
//! answered, a pong timed, a Close answered and counted); data messages go to the
//! scenario. Only an incomplete frame is kept per connection, sized once from its header.

use ws_common::errno::errno_name;
use ws_common::frame::op;

use crate::engine::conn::{untoken, State};
use crate::engine::frame::{self, FrameError, Head};
use crate::engine::scenario::{Scenario, SIDE_BIT};
use crate::engine::stats::{bump, record_ns};
use crate::engine::sys::{self, EV_ERR, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};
use crate::engine::worker::Worker;

impl<S: Scenario> Worker<S> {
    pub(super) fn on_event(&mut self, tok: u64, flags: u32, now: u64) {
        let (idx, gen) = untoken(tok);
        if idx & SIDE_BIT != 0 {
            return self.sc.on_side_event(&mut self.io, tok, flags, now);
        }
        let Some(c) = self.io.conns.get(idx) else {
            return;
        };
        if c.gen != gen || c.fd < 0 {
            return;
        }
        if c.state == State::Connecting {
            if flags & (EV_OUT | EV_ERR | EV_HUP) == 0 {
                return;
            }
            match sys::so_error(c.fd) {
                0 => self.on_connected(idx, now),
                e => return self.connect_failed(idx, &errno_name(e), now),
            }
        } else if flags & EV_OUT != 0 {
            self.io.flush_wbuf(idx);
        }
        if flags & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0 && self.io.conns[idx].gen == gen {
            self.read_all(idx, gen, now);
        }
    }

    fn read_all(&mut self, idx: usize, gen: u32, now: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            let fd = self.io.conns[idx].fd;
            match sys::recv_stamped(fd, &mut scratch) {
                Ok((0, _)) => {
                    self.on_eof(idx, now);
                    break;
                }
                Ok((n, ts)) => {
                    // When the bytes reached the socket, not when we got to them: a late
                    // read (a tick, a busy loop) does not enter any latency.
                    let at = ts.map_or(now, |t| {
                        (t as i64 - self.real_minus_mono).clamp(0, now as i64) as u64
                    });
                    if self.io.conns[idx].tls.is_some() {
                        self.on_ciphertext(idx, gen, &scratch[..n], at);
                    } else {
                        self.on_bytes(idx, gen, &scratch[..n], at);
                    }
                    if self.io.conns[idx].gen != gen || n < scratch.len() {
                        break;
                    }
                }
                Err(libc::EAGAIN) => break,
                Err(e) => {
                    self.on_io_error(idx, e, now);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// wss://: records for slot `idx`; what they carry goes on as plaintext.
    fn on_ciphertext(&mut self, idx: usize, gen: u32, data: &[u8], now: u64) {
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let r = match self.io.conns[idx].tls.as_mut() {
            Some(t) => t.receive(data, &mut plain),
            None => Ok(()),
        };
        if let Err(class) = r {
            self.plain = plain;
            // An alert of ours may explain the failure to the server.
            self.io.send_records(idx);
            return match self.io.conns[idx].state {
                State::Tls | State::Handshaking => self.connect_failed(idx, &class, now),
                _ => self.lost(idx, &class, now),
            };
        }
        self.io.send_records(idx);
        let c = &self.io.conns[idx];
        if c.state == State::Tls && c.tls.as_ref().is_some_and(|t| !t.handshaking()) {
            self.tls_established(idx, now);
        }
        if !plain.is_empty() && self.io.conns[idx].gen == gen {
            self.on_bytes(idx, gen, &plain, now);
        }
        self.plain = plain;
    }

    fn on_eof(&mut self, idx: usize, now: u64) {
        match self.io.conns[idx].state {
            State::Tls => self.connect_failed(idx, "closed_during_tls_handshake", now),
            State::Handshaking => self.connect_failed(idx, "closed_during_handshake", now),
            State::Closing => self.finish_close(idx),
            _ => self.lost(idx, "eof", now),
        }
    }

    /// New bytes for slot `idx`: handshake response first, then frames.
    fn on_bytes(&mut self, idx: usize, gen: u32, data: &[u8], now: u64) {
        if self.io.conns[idx].rbuf.is_empty() {
            let used = self.process(idx, gen, data, now);
            if self.io.conns[idx].gen == gen && used < data.len() {
                self.stash(idx, &data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.io.conns[idx].rbuf);
            buf.extend_from_slice(data);
            let used = self.process(idx, gen, &buf, now);
            if self.io.conns[idx].gen == gen && used < buf.len() {
                buf.drain(..used);
                self.io.conns[idx].rbuf = buf;
            }
        }
    }

    /// Keeps an incomplete frame; sized once for the whole frame when its header is known.
    fn stash(&mut self, idx: usize, rest: &[u8]) {
        let want = match frame::parse(rest, self.io.sh.cfg.max_frame) {
            Ok(Some(h)) => h.total_len(),
            _ => rest.len(),
        };
        let rb = &mut self.io.conns[idx].rbuf;
        // Sized for the whole frame when it is announced, but never more than 1 MiB up front:
        // a server announcing huge frames makes us grow as bytes arrive, not allocate at once.
        rb.reserve_exact(want.min(1 << 20).max(rest.len()));
        rb.extend_from_slice(rest);
    }

    /// Consumes what it can of `buf`; returns the bytes used (the rest is incomplete).
    fn process(&mut self, idx: usize, gen: u32, buf: &[u8], now: u64) -> usize {
        let mut pos = 0;
        if self.io.conns[idx].state == State::Handshaking {
            match self.handshake_response(idx, buf, now) {
                Some(n) => pos = n,
                None if self.io.conns[idx].gen == gen => return 0,
                None => return buf.len(),
            }
            if self.io.conns[idx].gen != gen {
                return buf.len();
            }
        }
        while pos < buf.len() {
            let h = match frame::parse(&buf[pos..], self.io.sh.cfg.max_frame) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    self.violation(idx, e, now);
                    return buf.len();
                }
            };
            if buf.len() - pos < h.total_len() {
                break;
            }
            let payload = &buf[pos + h.header_len..pos + h.total_len()];
            pos += h.total_len();
            self.on_frame(idx, h, payload, now);
            if self.io.conns[idx].gen != gen {
                return buf.len();
            }
        }
        pos
    }

    /// The server broke the protocol: Close with the matching code, and the connection is
    /// counted as dropped by `protocol_error_<what>`.
    fn violation(&mut self, idx: usize, e: FrameError, now: u64) {
        let mut p = e.close_code().to_be_bytes().to_vec();
        p.extend_from_slice(e.label().as_bytes());
        self.io.send_control(idx, op::CLOSE, &p);
        if self.io.conns[idx].fd >= 0 {
            self.lost(idx, &format!("protocol_error_{}", e.label()), now);
        }
    }

    fn on_frame(&mut self, idx: usize, h: Head, payload: &[u8], now: u64) {
        match h.opcode {
            op::TEXT | op::BINARY => {
                if self.io.conns[idx].frag_op != 0 {
                    return self.violation(idx, FrameError::UnknownOpcode, now);
                }
                if !h.fin {
                    self.io.conns[idx].frag_op = h.opcode;
                }
                self.io.stats.c.bytes_received += payload.len() as u64;
                self.sc
                    .on_message(&mut self.io, idx, h.opcode == op::TEXT, payload, now);
            }
            op::CONTINUATION => {
                if self.io.conns[idx].frag_op == 0 {
                    return self.violation(idx, FrameError::UnknownOpcode, now);
                }
                self.io.stats.c.bytes_received += payload.len() as u64;
                if h.fin {
                    self.io.conns[idx].frag_op = 0;
                }
            }
            op::PING => self.io.send_control(idx, op::PONG, payload),
            op::PONG => {
                let c = &mut self.io.conns[idx];
                if c.ping_ns != 0 && payload == c.ping_ns.to_le_bytes() {
                    record_ns(&mut self.io.stats.h.pong, now.saturating_sub(c.ping_ns));
                    c.ping_ns = 0;
                    self.io.stats.c.pongs_received += 1;
                    self.io.in_flight = self.io.in_flight.saturating_sub(1);
                }
            }
            _ => {
                // Close.
                let code = frame::close_code(payload);
                if self.io.conns[idx].state == State::Closing {
                    self.io.stats.c.clean_closes += 1;
                    self.finish_close(idx);
                    return;
                }
                let label = code.map_or_else(|| "none".to_string(), |c| c.to_string());
                bump(&mut self.io.stats.close_codes, &label);
                // Answer with the same code (RFC 6455 §5.5.1), then let go.
                let echo: Vec<u8> = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                self.io.send_control(idx, op::CLOSE, &echo);
                if self.io.conns[idx].fd >= 0 {
                    self.lost(idx, &format!("close_{label}"), now);
                }
            }
        }
    }
}
