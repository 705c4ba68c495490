//! The message layer a server drives with its own I/O: frames in, messages out.
//!
//! [`Decoder::decode`] walks the complete frames in a mutable buffer, unmasks them in place
//! and hands each event to a callback: a whole data message, a ping, a pong, or a close.
//! An unfragmented message is handed out as a slice of the input (no copy); only a
//! fragmented message is assembled in the decoder's own `Vec`, which is freed as soon as
//! the message is complete, so an idle connection's decoder owns no heap memory.
//!
//! Violations map to close codes: 1002 (unmasked client frame, reserved bits, unknown
//! opcode, bad control frame, bad continuation), 1007 (invalid UTF-8 in text or a close
//! reason, found as early as possible, also across fragments), 1009 (message over the limit,
//! refused from the header before the payload is read).

use crate::frame::{close, is_valid_close_code, op};

/// One decoded event. Slices borrow either the input buffer or the decoder's assembly buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text (`text == true`) or binary message.
    Message {
        text: bool,
        payload: &'a [u8],
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer's Close: its code (None for an empty close) and reason.
    Close {
        code: Option<u16>,
        reason: &'a [u8],
    },
}

/// What the caller does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop decoding (e.g. after a Close): the rest of the input is ignored.
    Stop,
}

/// A protocol violation: close the connection with [`Violation::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Protocol,
    InvalidUtf8,
    TooBig,
}

impl Violation {
    pub fn code(self) -> u16 {
        match self {
            Violation::Protocol => close::PROTOCOL,
            Violation::InvalidUtf8 => close::INVALID_PAYLOAD,
            Violation::TooBig => close::TOO_BIG,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Violation::Protocol => "protocol error",
            Violation::InvalidUtf8 => "invalid utf-8",
            Violation::TooBig => "message too big",
        }
    }
}

/// Result of a decode pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of input fully consumed; the rest is an incomplete frame to keep for later.
    pub consumed: usize,
    /// Bytes the incomplete frame at the end will need in all (header + payload), if known:
    /// lets the caller size its buffer once.
    pub frame_needs: Option<usize>,
    /// The callback asked to stop.
    pub stopped: bool,
}

/// Per-connection decoder state: empty (no heap) between messages.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Fragmented message so far (empty when none is in progress).
    assembly: Vec<u8>,
    /// Opcode of the fragmented message in progress (0 when none).
    fragment_opcode: u8,
    /// For text: how many leading bytes of `assembly` are known-valid UTF-8.
    utf8_valid: usize,
    /// Payload bytes of the incomplete text frame at the front of the input already checked
    /// (ending on a character boundary): each read checks only the bytes that are new.
    partial_checked: usize,
}

/// Parsed fixed part of a header.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: u64,
}

/// Parses a frame header from the start of `buf`: Ok(None) if incomplete.
/// Client-to-server rules: masked, no reserved bits, known opcodes, valid control frames.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(Violation::Protocol); // RSV1-3: no extension negotiated
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        op::CONTINUATION | op::TEXT | op::BINARY => {}
        op::CLOSE | op::PING | op::PONG => {
            if !fin || (b1 & 0x7F) > 125 {
                return Err(Violation::Protocol);
            }
        }
        _ => return Err(Violation::Protocol),
    }
    if b1 & 0x80 == 0 {
        return Err(Violation::Protocol); // client frames must be masked
    }
    let (payload_len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 {
                return Err(Violation::Protocol);
            }
            (l, 10)
        }
        n => (n as u64, 2),
    };
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len: at,
        payload_len,
    }))
}

/// Checks the UTF-8 of `bytes`; `complete` says whether a truncated sequence at the end is
/// an error (message complete) or just not here yet. Returns the valid prefix length.
fn check_utf8(bytes: &[u8], complete: bool) -> Result<usize, Violation> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(bytes.len()),
        Err(e) if e.error_len().is_none() && !complete => Ok(e.valid_up_to()),
        Err(_) => Err(Violation::InvalidUtf8),
    }
}

impl Decoder {
    /// True when no fragmented message is in progress (nothing to keep per connection).
    pub fn is_idle(&self) -> bool {
        self.fragment_opcode == 0
    }

    /// Heap bytes this decoder holds.
    pub fn heap_bytes(&self) -> usize {
        self.assembly.capacity()
    }

    /// Decodes every complete frame in `buf`, calling `on_event` for each event.
    /// `max_message` bounds a message after reassembly (1009 beyond it).
    pub fn decode<F>(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        mut on_event: F,
    ) -> Result<Decoded, Violation>
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            let h = match parse_header(rest)? {
                Some(h) => h,
                None => {
                    return Ok(Decoded {
                        consumed: pos,
                        frame_needs: None,
                        stopped: false,
                    });
                }
            };
            // Refuse oversize from the header alone, before buffering any of it.
            let so_far = if h.opcode == op::CONTINUATION {
                self.assembly.len() as u64
            } else {
                0
            };
            if h.opcode < op::CLOSE && so_far + h.payload_len > max_message as u64 {
                return Err(Violation::TooBig);
            }
            // Early sequencing checks, so a bad continuation is refused before its payload.
            match h.opcode {
                op::CONTINUATION if self.fragment_opcode == 0 => return Err(Violation::Protocol),
                op::TEXT | op::BINARY if self.fragment_opcode != 0 => {
                    return Err(Violation::Protocol)
                }
                _ => {}
            }
            let total = h.header_len + h.payload_len as usize;
            if rest.len() < total {
                // Text fragments: fail fast on invalid UTF-8 already received (Autobahn 6.4.x).
                if h.opcode == op::TEXT
                    || (h.opcode == op::CONTINUATION && self.fragment_opcode == op::TEXT)
                {
                    self.check_partial_text(&h, rest)?;
                }
                return Ok(Decoded {
                    consumed: pos,
                    frame_needs: Some(total),
                    stopped: false,
                });
            }
            self.partial_checked = 0;
            let payload = &mut buf[pos + h.header_len..pos + total];
            crate::frame::apply_mask(payload, h.mask);
            pos += total;
            let flow = match h.opcode {
                op::PING => on_event(Event::Ping(payload)),
                op::PONG => on_event(Event::Pong(payload)),
                op::CLOSE => {
                    let (code, reason) = parse_close(payload)?;
                    on_event(Event::Close { code, reason })
                }
                op::TEXT | op::BINARY if h.fin => {
                    if h.opcode == op::TEXT {
                        check_utf8(payload, true)?;
                    }
                    on_event(Event::Message {
                        text: h.opcode == op::TEXT,
                        payload,
                    })
                }
                op::TEXT | op::BINARY => {
                    self.fragment_opcode = h.opcode;
                    self.append(payload, false)?;
                    Flow::Continue
                }
                _ => {
                    // Continuation of the message in progress.
                    self.append(payload, h.fin)?;
                    if h.fin {
                        let text = self.fragment_opcode == op::TEXT;
                        let flow = on_event(Event::Message {
                            text,
                            payload: &self.assembly,
                        });
                        self.assembly = Vec::new(); // free: idle connections hold no buffer
                        self.fragment_opcode = 0;
                        self.utf8_valid = 0;
                        flow
                    } else {
                        Flow::Continue
                    }
                }
            };
            if flow == Flow::Stop {
                return Ok(Decoded {
                    consumed: pos,
                    frame_needs: None,
                    stopped: true,
                });
            }
        }
    }

    fn append(&mut self, payload: &[u8], fin: bool) -> Result<(), Violation> {
        self.assembly.extend_from_slice(payload);
        if self.fragment_opcode == op::TEXT {
            let n = check_utf8(&self.assembly[self.utf8_valid..], fin)?;
            self.utf8_valid += n;
        }
        Ok(())
    }

    /// Validates the UTF-8 of the part of an incomplete text frame already received, from
    /// where the previous call for this frame stopped (linear in the frame, not quadratic).
    fn check_partial_text(&mut self, h: &Header, rest: &[u8]) -> Result<(), Violation> {
        let have = rest.len().saturating_sub(h.header_len);
        let from = self.partial_checked.min(have);
        if have == from {
            return Ok(());
        }
        // A continuation starts with the incomplete character its message ended on so far.
        let mut tmp = Vec::with_capacity(4 + have - from);
        if from == 0 && h.opcode == op::CONTINUATION {
            tmp.extend_from_slice(&self.assembly[self.utf8_valid..]);
        }
        let carried = tmp.len();
        tmp.extend_from_slice(&rest[h.header_len + from..]);
        let m = h.mask;
        let k = from % 4;
        let mask = [m[k], m[(k + 1) % 4], m[(k + 2) % 4], m[(k + 3) % 4]];
        crate::frame::apply_mask(&mut tmp[carried..], mask);
        let valid = check_utf8(&tmp, false)?;
        self.partial_checked = from + valid.saturating_sub(carried);
        Ok(())
    }
}

/// Feeds one chunk of a connection's byte stream to its decoder, the way both servers drive
/// it: decode in place when nothing is pending (the common case copies nothing), else append
/// to the pending bytes and decode those. What an unfinished frame has so far stays in
/// `pending` (never more than one frame: at most `max_message` + 14 bytes).
pub fn feed<F>(
    decoder: &mut Decoder,
    pending: &mut Vec<u8>,
    chunk: &mut [u8],
    max_message: usize,
    on_event: F,
) -> Result<Decoded, Violation>
where
    F: FnMut(Event<'_>) -> Flow,
{
    if pending.is_empty() {
        let d = decoder.decode(chunk, max_message, on_event)?;
        if !d.stopped && d.consumed < chunk.len() {
            if let Some(need) = d.frame_needs {
                pending.reserve(need.min(max_message + crate::frame::MAX_HEADER_LEN));
            }
            pending.extend_from_slice(&chunk[d.consumed..]);
        }
        return Ok(d);
    }
    pending.extend_from_slice(chunk);
    let mut buf = std::mem::take(pending);
    let d = decoder.decode(&mut buf, max_message, on_event)?;
    if !d.stopped {
        buf.drain(..d.consumed);
        *pending = buf;
    }
    Ok(d)
}

fn parse_close(p: &[u8]) -> Result<(Option<u16>, &[u8]), Violation> {
    match p.len() {
        0 => Ok((None, &[])),
        1 => Err(Violation::Protocol),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !is_valid_close_code(code) {
                return Err(Violation::Protocol);
            }
            check_utf8(&p[2..], true)?;
            Ok((Some(code), &p[2..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{write_header, write_masked_frame};

    const M: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    fn collect(d: &mut Decoder, buf: &mut [u8]) -> Result<(Decoded, Vec<String>), Violation> {
        let mut ev = Vec::new();
        let r = d.decode(buf, 1000, |e| {
            ev.push(format!("{e:?}"));
            Flow::Continue
        })?;
        Ok((r, ev))
    }

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        if fin {
            write_masked_frame(&mut v, opcode, payload, M);
        } else {
            write_header(&mut v, false, opcode, payload.len(), Some(M));
            let s = v.len();
            v.extend_from_slice(payload);
            crate::frame::apply_mask(&mut v[s..], M);
        }
        v
    }

    #[test]
    fn single_and_fragmented_messages_with_interleaved_ping() {
        let mut buf = masked(op::TEXT, true, b"hi");
        buf.extend(masked(op::BINARY, false, b"ab"));
        buf.extend(masked(op::PING, true, b"p"));
        buf.extend(masked(op::CONTINUATION, true, b"cd"));
        let mut d = Decoder::default();
        let (r, ev) = collect(&mut d, &mut buf).unwrap();
        assert_eq!(r.consumed, buf.len());
        assert_eq!(ev.len(), 3);
        assert!(ev[0].contains("text: true") && ev[0].contains("[104, 105]"));
        assert!(ev[1].starts_with("Ping"));
        assert!(ev[2].contains("text: false") && ev[2].contains("[97, 98, 99, 100]"));
        assert!(d.is_idle());
        assert_eq!(d.heap_bytes(), 0);
    }

    #[test]
    fn incomplete_frame_is_left_for_later_byte_by_byte() {
        let whole = masked(op::TEXT, true, "héllo".as_bytes());
        let mut d = Decoder::default();
        for cut in 0..whole.len() {
            let mut b = whole[..cut].to_vec();
            let (r, ev) = collect(&mut d, &mut b).unwrap();
            assert_eq!(r.consumed, 0);
            assert!(ev.is_empty());
        }
    }

    #[test]
    fn violations() {
        let mut d = Decoder::default();
        let mut unmasked = vec![0x81, 0x01, b'a'];
        assert_eq!(
            collect(&mut d, &mut unmasked).unwrap_err(),
            Violation::Protocol
        );
        let mut rsv = masked(op::TEXT, true, b"a");
        rsv[0] |= 0x40;
        assert_eq!(collect(&mut d, &mut rsv).unwrap_err(), Violation::Protocol);
        let mut unknown = masked(3, true, b"a");
        assert_eq!(
            collect(&mut Decoder::default(), &mut unknown).unwrap_err(),
            Violation::Protocol
        );
        let mut bad = masked(op::TEXT, true, &[0xff, 0xfe]);
        assert_eq!(
            collect(&mut Decoder::default(), &mut bad).unwrap_err(),
            Violation::InvalidUtf8
        );
        let mut big = Vec::new();
        write_header(&mut big, true, op::BINARY, 5000, Some(M));
        assert_eq!(
            collect(&mut Decoder::default(), &mut big).unwrap_err(),
            Violation::TooBig
        );
        let mut cont = masked(op::CONTINUATION, true, b"x");
        assert_eq!(
            collect(&mut Decoder::default(), &mut cont).unwrap_err(),
            Violation::Protocol
        );
        let mut frag_ping = masked(op::PING, false, b"x");
        assert_eq!(
            collect(&mut Decoder::default(), &mut frag_ping).unwrap_err(),
            Violation::Protocol
        );
        let mut bad_close = masked(op::CLOSE, true, &[0x03, 0xED]); // 1005
        assert_eq!(
            collect(&mut Decoder::default(), &mut bad_close).unwrap_err(),
            Violation::Protocol
        );
    }

    #[test]
    fn invalid_utf8_fails_fast_across_fragments() {
        let mut d = Decoder::default();
        let mut a = masked(op::TEXT, false, "ok".as_bytes());
        a.extend(masked(op::CONTINUATION, false, &[0xce]));
        collect(&mut d, &mut a).unwrap();
        let mut b = masked(op::CONTINUATION, false, &[0xff]);
        assert_eq!(collect(&mut d, &mut b).unwrap_err(), Violation::InvalidUtf8);
    }

    #[test]
    fn close_with_code_and_reason() {
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        let mut c = masked(op::CLOSE, true, &p);
        let mut d = Decoder::default();
        let mut got = None;
        d.decode(&mut c, 10, |e| {
            if let Event::Close { code, reason } = e {
                got = Some((code, reason.to_vec()));
            }
            Flow::Stop
        })
        .unwrap();
        assert_eq!(got, Some((Some(1000), b"bye".to_vec())));
    }

    #[test]
    fn partial_text_is_checked_once_across_any_split() {
        let text = "héllo wörld ✓ 😀 ".repeat(40);
        for step in 1..8 {
            // Valid: every split (mask offsets and characters cut anywhere) passes, once.
            let whole = masked(op::TEXT, true, text.as_bytes());
            let (mut d, mut pending, mut got) = (Decoder::default(), Vec::new(), None);
            for c in whole.chunks(step) {
                let mut c = c.to_vec();
                feed(&mut d, &mut pending, &mut c, 1 << 20, |e| {
                    if let Event::Message { payload, .. } = e {
                        got = Some(payload.to_vec());
                    }
                    Flow::Continue
                })
                .unwrap();
            }
            assert_eq!(got.as_deref(), Some(text.as_bytes()));
            // Invalid in the middle of the frame: refused before the frame is complete.
            let mut bad = text.as_bytes().to_vec();
            bad[300] = 0xff;
            let whole = masked(op::TEXT, true, &bad);
            let (mut d, mut pending, mut fed) = (Decoder::default(), Vec::new(), 0);
            let err = whole.chunks(step).find_map(|c| {
                fed += c.len();
                let mut c = c.to_vec();
                feed(&mut d, &mut pending, &mut c, 1 << 20, |_| Flow::Continue).err()
            });
            assert_eq!(err, Some(Violation::InvalidUtf8));
            assert!(fed < whole.len(), "step {step}: found only when complete");
        }
        // A continuation frame completes the character its message ended on.
        let mut d = Decoder::default();
        let mut a = masked(op::TEXT, false, &[b'a', 0xe2, 0x9c]);
        collect(&mut d, &mut a).unwrap();
        let mut cont = masked(op::CONTINUATION, true, &[0x93, b'b', b'c', b'd']);
        let mut pending = Vec::new();
        for c in cont.chunks_mut(1) {
            feed(&mut d, &mut pending, c, 1000, |_| Flow::Continue).unwrap();
        }
        assert!(d.is_idle());
    }
}
