//! The frame loop of an open connection: decode what arrived, answer it, keep only what
//! an unfinished frame needs.
//!
//! Bytes are decoded where the kernel put them (a provided receive buffer) whenever no partial
//! frame is pending, so the common case copies nothing; replies for everything decoded in
//! one read are staged in the core's `tx` buffer and leave in one send(). Routes other than
//! echo (broadcast, push) plug in where a data message is handled.

use std::sync::Arc;

use ws_common::frame::{self, op};
use ws_common::message::{self, Decoder, Event, Flow};

use crate::conn::{flag, Phase};
use crate::core::Core;

impl Core {
    pub(crate) fn on_frame_bytes(&mut self, slot: u32, gen: u32, data: &mut [u8]) {
        let max = self.settings.max_message_size;
        let tick = self.tick;
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        let closing = conn.phase == Phase::Closing;
        let broadcast = conn.has(flag::BROADCAST);
        let echo_self = !conn.has(flag::NO_ECHO);
        let (mut decoder, mut pending) = match conn.extra.as_mut() {
            Some(ex) => (
                std::mem::take(&mut ex.decoder),
                std::mem::take(&mut ex.inbuf),
            ),
            None => (Decoder::default(), Vec::new()),
        };

        let stats = &self.all_stats[self.idx];
        let tx = &mut self.tx;
        let bcast_out = &mut self.bcast_out;
        let mut peer_close: Option<Option<u16>> = None;
        let mut completed = false;
        let result = message::feed(&mut decoder, &mut pending, data, max, |ev| {
            match ev {
                Event::Message { text, payload } => {
                    stats.messages_in.inc();
                    completed = true;
                    if broadcast {
                        if !closing {
                            // Encoded once here, shared by every recipient on every core.
                            let opcode = if text { op::TEXT } else { op::BINARY };
                            bcast_out.push(Arc::from(frame::encode(opcode, payload)));
                        }
                    } else if !closing {
                        let before = tx.len();
                        frame::write_frame(tx, if text { op::TEXT } else { op::BINARY }, payload);
                        stats.messages_out.inc();
                        stats.bytes_out.add((tx.len() - before) as u64);
                    }
                }
                Event::Ping(p) => {
                    if !closing {
                        frame::write_frame(tx, op::PONG, p);
                    }
                }
                Event::Pong(_) => stats.pongs_received.inc(),
                Event::Close { code, .. } => {
                    peer_close = Some(code);
                    return Flow::Stop;
                }
            }
            Flow::Continue
        });

        // Messages decoded before a violation still count: they go out first.
        self.send_staged(slot, gen);
        for f in std::mem::take(&mut self.bcast_out) {
            self.broadcast_from(slot, f, echo_self);
        }
        if result.is_err() || peer_close.is_some() {
            // A Close follows: what this read delivered (to the sender too) must precede it.
            self.flush_fanout();
        }
        if let Err(v) = result {
            self.stats().protocol_close(v.code());
            self.close_with(slot, gen, v.code(), v.reason());
            return;
        }
        if let Some(code) = peer_close {
            self.on_peer_close(slot, gen, code, closing);
            return;
        }
        // Keep the unfinished frame (and fragment state) for the next read.
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        if !pending.is_empty() || !decoder.is_idle() {
            let ex = conn.extra();
            ex.inbuf = pending;
            ex.decoder = decoder;
            // --message-timeout runs from the start of the unfinished frame or message.
            if completed || ex.partial_since.is_none() {
                ex.partial_since = Some(tick);
            }
        } else if let Some(ex) = conn.extra.as_mut() {
            ex.partial_since = None;
        }
        conn.shed();
    }

    /// The client's Close: answer it (unless it answers ours), then end the connection.
    fn on_peer_close(&mut self, slot: u32, gen: u32, code: Option<u16>, we_started: bool) {
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        if !we_started && !conn.has(flag::CLOSE_SENT) {
            conn.flags |= flag::CLOSE_SENT;
            self.stats().client_closes.inc();
            let reply = match code {
                Some(c) => frame::encode(op::CLOSE, &c.to_be_bytes()),
                None => frame::encode(op::CLOSE, &[]),
            };
            self.send_control(slot, gen, &reply);
        }
        self.linger(slot, gen);
    }
}
