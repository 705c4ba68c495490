//! RFC 6455 frame headers: parsing is tungstenite's `FrameHeader::parse`; this module adds
//! what a server and a load generator driving their own I/O need around it: encoding a frame
//! into a caller's buffer (once, so a broadcast can share it), masking, close payloads.

pub use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
pub use tungstenite::protocol::frame::FrameHeader;

/// Opcode byte values (RFC 6455 §5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Close codes we send (RFC 6455 §7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
}

/// Largest header: 2 bytes + 8 length bytes + 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// Appends a frame header for `len` payload bytes to `out`.
pub fn write_header(out: &mut Vec<u8>, fin: bool, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(opcode | if fin { 0x80 } else { 0 });
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// Appends a whole unfragmented frame (server side: unmasked).
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    write_header(out, true, opcode, payload.len(), None);
    out.extend_from_slice(payload);
}

/// Appends a whole masked frame (client side).
pub fn write_masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    write_header(out, true, opcode, payload.len(), Some(mask));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// An encoded frame ready to send: header and payload in one buffer.
pub fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + MAX_HEADER_LEN);
    write_frame(&mut v, opcode, payload);
    v
}

/// XORs `buf` with the 4-byte mask (masking and unmasking are the same operation).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let m = u32::from_ne_bytes(mask);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let w = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&w.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// A close frame with `code` and a short reason (truncated to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    let mut r = &reason.as_bytes()[..reason.len().min(123)];
    while std::str::from_utf8(r).is_err() {
        r = &r[..r.len() - 1];
    }
    p.extend_from_slice(r);
    encode(op::CLOSE, &p)
}

/// Whether `code` may appear in a Close frame on the wire (RFC 6455 §7.4).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn header_lengths_roundtrip_through_tungstenite() {
        for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut v = Vec::new();
                write_header(&mut v, true, op::BINARY, len, mask);
                let (h, l) = FrameHeader::parse(&mut Cursor::new(&v)).unwrap().unwrap();
                assert_eq!(l as usize, len);
                assert_eq!(h.mask, mask);
                assert!(h.is_final);
                assert_eq!(h.opcode, OpCode::Data(Data::Binary));
            }
        }
    }

    #[test]
    fn mask_is_involution() {
        let orig: Vec<u8> = (0..37).collect();
        let mut b = orig.clone();
        apply_mask(&mut b, [9, 8, 7, 6]);
        assert_ne!(b, orig);
        apply_mask(&mut b, [9, 8, 7, 6]);
        assert_eq!(b, orig);
    }

    #[test]
    fn close_codes() {
        assert!(is_valid_close_code(1000));
        assert!(!is_valid_close_code(1005));
        assert!(!is_valid_close_code(999));
        assert!(is_valid_close_code(4999));
        let f = close_frame(1001, "bye");
        assert_eq!(f, vec![0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);
    }
}
