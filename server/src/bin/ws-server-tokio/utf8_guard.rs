//! Fail-fast UTF-8 for text frames still arriving (Autobahn 6.4.3, 6.4.4).
//!
//! tungstenite parses only complete frames, so invalid UTF-8 in a large text frame is found
//! when its last byte arrives. This follows the frames in the raw client bytes as they are
//! read (headers, masks, which frames carry text) and checks text payload bytes at once;
//! `Counted::poll_read` turns a violation into an `InvalidData` read error, which the
//! connection answers with Close 1007. Anything it does not understand (a malformed header)
//! switches it off: tungstenite reports that itself.

/// Why the guard stopped the stream.
pub const INVALID_UTF8: &str = "invalid utf-8";

#[derive(Default)]
pub struct Utf8Guard {
    /// Header bytes of the next frame collected so far.
    hdr: [u8; 14],
    hdr_len: usize,
    /// Payload bytes of the current frame still to come.
    left: u64,
    mask: [u8; 4],
    /// Payload offset in the current frame (for the mask).
    pos: u64,
    /// The current frame's payload is text.
    text: bool,
    /// The current frame ends its message.
    fin: bool,
    /// A fragmented message is in progress: Some(true) for text.
    frag_text: Option<bool>,
    /// The end of an incomplete UTF-8 sequence, carried to the next bytes of the message.
    carry: [u8; 3],
    carry_len: usize,
    off: bool,
    /// Bytes of the unfinished frame or fragmented message so far (what a trickle pins).
    msg_bytes: u64,
    /// A message (or a control frame outside one) ended since the last `take_completed`.
    completed: bool,
}

impl Utf8Guard {
    /// Follows `bytes`; Err(()) when a text message holds invalid UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        while !self.off && !bytes.is_empty() {
            if self.left == 0 && self.hdr_len < header_len(&self.hdr[..self.hdr_len]) {
                self.hdr[self.hdr_len] = bytes[0];
                self.hdr_len += 1;
                self.msg_bytes += 1;
                bytes = &bytes[1..];
                if self.hdr_len == header_len(&self.hdr[..self.hdr_len]) {
                    self.start_frame();
                }
                continue;
            }
            let n = self.left.min(bytes.len() as u64) as usize;
            if self.text {
                self.check(&bytes[..n])?;
            }
            bytes = &bytes[n..];
            self.msg_bytes += n as u64;
            self.left -= n as u64;
            self.pos += n as u64;
            if self.left == 0 {
                self.end_frame();
            }
        }
        Ok(())
    }

    fn start_frame(&mut self) {
        let h = &self.hdr[..self.hdr_len];
        let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0F);
        if h[1] & 0x80 == 0 || h[0] & 0x70 != 0 {
            self.off = true; // unmasked or reserved bits: tungstenite refuses it
            return;
        }
        let len = match h[1] & 0x7F {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap()),
            n => n as u64,
        };
        self.mask.copy_from_slice(&h[self.hdr_len - 4..]);
        self.text = match opcode {
            0x0 => self.frag_text == Some(true),
            0x1 | 0x2 => {
                self.carry_len = 0;
                self.frag_text = (!fin).then_some(opcode == 0x1);
                opcode == 0x1
            }
            0x8..=0xA => false,
            _ => {
                self.off = true;
                return;
            }
        };
        self.fin = fin || opcode >= 0x8;
        if opcode == 0x0 && fin {
            self.frag_text = None;
        }
        self.left = len;
        self.pos = 0;
        self.hdr_len = 0;
        if len == 0 {
            self.end_frame();
        }
    }

    fn end_frame(&mut self) {
        if self.text && self.fin {
            // An incomplete sequence at the end of a message: tungstenite reports it now.
            self.carry_len = 0;
        }
        self.text = false;
        if self.frag_text.is_none() {
            self.msg_bytes = 0;
            self.completed = true;
        }
    }

    /// A frame or fragmented message has started and not ended (`--message-timeout`).
    pub fn in_message(&self) -> bool {
        !self.off && (self.hdr_len > 0 || self.left > 0 || self.frag_text.is_some())
    }

    /// Bytes received of the unfinished frame or message (`--memory-budget`).
    pub fn partial_bytes(&self) -> u64 {
        if self.in_message() {
            self.msg_bytes
        } else {
            0
        }
    }

    /// Whether a message ended since the last call.
    pub fn take_completed(&mut self) -> bool {
        std::mem::take(&mut self.completed)
    }

    /// Checks `payload` (masked, starting at `self.pos`) as more of the message's UTF-8.
    fn check(&mut self, payload: &[u8]) -> Result<(), ()> {
        let mut buf = [0u8; 3 + 1024];
        let mut pos = self.pos as usize;
        for chunk in payload.chunks(1024) {
            let c = self.carry_len;
            buf[..c].copy_from_slice(&self.carry[..c]);
            for (i, b) in chunk.iter().enumerate() {
                buf[c + i] = b ^ self.mask[(pos + i) % 4];
            }
            pos += chunk.len();
            let all = &buf[..c + chunk.len()];
            match std::str::from_utf8(all) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => {
                    let rest = &all[e.valid_up_to()..];
                    self.carry[..rest.len()].copy_from_slice(rest);
                    self.carry_len = rest.len();
                }
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }
}

/// Length of the header that starts with `h` (2 until the length byte is known).
fn header_len(h: &[u8]) -> usize {
    if h.len() < 2 {
        return 2;
    }
    let ext = match h[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut v = Vec::new();
        ws_common::frame::write_header(&mut v, fin, opcode, payload.len(), Some(mask));
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    #[test]
    fn fails_before_the_frame_is_complete() {
        let mut g = Utf8Guard::default();
        let f = frame(true, 1, "κόσμε\u{1F600}".as_bytes());
        for b in &f {
            assert!(g.feed(&[*b]).is_ok()); // valid, byte by byte
        }
        let mut bad = frame(true, 1, b"hello\xf4\x90\x80\x80world");
        bad.truncate(bad.len() - 5);
        assert!(Utf8Guard::default().feed(&bad).is_err());
    }

    #[test]
    fn follows_fragments_and_control_frames() {
        let mut g = Utf8Guard::default();
        let mut s = frame(false, 1, b"ok \xce");
        s.extend(frame(true, 9, b"\xff\xff")); // a ping in between: not text
        s.extend(frame(true, 0, b"\xba!")); // completes the sequence split across frames
        s.extend(frame(true, 2, b"\xff\xfe")); // binary: not text
        assert!(g.feed(&s).is_ok());
        assert!(g.feed(&frame(false, 0, b"\xff")).is_ok()); // no text message in progress
        let mut g = Utf8Guard::default();
        let mut s = frame(false, 1, b"ok");
        s.extend(frame(false, 0, b"\xff"));
        assert!(g.feed(&s).is_err());
    }

    #[test]
    fn knows_when_a_message_is_unfinished() {
        let mut g = Utf8Guard::default();
        let f = frame(true, 2, &[7; 10]);
        g.feed(&f[..1]).unwrap();
        assert!(g.in_message());
        g.feed(&f[1..8]).unwrap();
        assert_eq!(g.partial_bytes(), 8);
        g.feed(&f[8..]).unwrap();
        assert!(!g.in_message() && g.take_completed());
        let mut s = frame(false, 2, b"ab");
        s.extend(frame(true, 9, b"")); // a ping between fragments
        g.feed(&s).unwrap();
        assert!(g.in_message() && !g.take_completed());
        g.feed(&frame(true, 0, b"c")).unwrap();
        assert!(!g.in_message() && g.take_completed());
    }
}
