//! Parsing of server→client frames (RFC 6455 §5.2): the server never masks, so the client
//! only needs the header to know where each frame's payload is.
//!
//! [`parse`] never panics and never trusts a length: a header announcing more than
//! `max_payload` bytes is an error, so a hostile server cannot make us allocate gigabytes.

use ws_common::frame::op;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    pub opcode: u8,
    /// Bytes of header (2, 4 or 10 for an unmasked frame).
    pub header_len: usize,
    pub payload_len: usize,
}

impl Head {
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }

    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Why a server frame is refused (we answer with Close 1002, or 1009 for `TooBig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Server frames must not be masked (§5.1).
    Masked,
    /// RSV bits set without a negotiated extension.
    Reserved,
    /// Opcode 3-7 or 0xB-0xF.
    UnknownOpcode,
    /// Control frame fragmented or longer than 125 bytes.
    BadControl,
    /// Payload longer than we accept.
    TooBig,
}

impl FrameError {
    /// The close code to answer with.
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TooBig => ws_common::frame::close::TOO_BIG,
            _ => ws_common::frame::close::PROTOCOL,
        }
    }

    /// Short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            FrameError::Masked => "masked_server_frame",
            FrameError::Reserved => "reserved_bits",
            FrameError::UnknownOpcode => "unknown_opcode",
            FrameError::BadControl => "bad_control_frame",
            FrameError::TooBig => "frame_too_big",
        }
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` if more bytes are needed.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<Head>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let len7 = (b1 & 0x7F) as usize;
    match opcode {
        op::CONTINUATION | op::TEXT | op::BINARY => {}
        op::CLOSE | op::PING | op::PONG => {
            if !fin || len7 > 125 {
                return Err(FrameError::BadControl);
            }
        }
        _ => return Err(FrameError::UnknownOpcode),
    }
    let (header_len, payload_len) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([buf[2], buf[3]]) as u64)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(b))
        }
        n => (2, n as u64),
    };
    if payload_len > max_payload as u64 {
        return Err(FrameError::TooBig);
    }
    Ok(Some(Head {
        fin,
        opcode,
        header_len,
        payload_len: payload_len as usize,
    }))
}

/// The status code of a Close payload (`None` for an empty or 1-byte payload).
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ws_common::frame::{write_frame, write_header};

    #[test]
    fn lengths_and_opcodes() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 200_000] {
            let mut v = Vec::new();
            write_frame(&mut v, op::BINARY, &vec![7u8; len]);
            let h = parse(&v, 1 << 20).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
            assert_eq!(h.total_len(), v.len());
            assert!(h.fin);
            assert_eq!(h.opcode, op::BINARY);
            // Every strict prefix of the header asks for more.
            for cut in 0..h.header_len {
                assert_eq!(parse(&v[..cut], 1 << 20).unwrap(), None);
            }
        }
    }

    #[test]
    fn refusals() {
        let mut masked = Vec::new();
        write_header(&mut masked, true, op::TEXT, 1, Some([1, 2, 3, 4]));
        assert_eq!(parse(&masked, 100), Err(FrameError::Masked));
        assert_eq!(parse(&[0xC1, 0x00], 100), Err(FrameError::Reserved));
        assert_eq!(parse(&[0x83, 0x00], 100), Err(FrameError::UnknownOpcode));
        assert_eq!(parse(&[0x09, 0x00], 100), Err(FrameError::BadControl));
        assert_eq!(
            parse(&[0x89, 126, 0, 200], 100),
            Err(FrameError::BadControl)
        );
        let mut big = Vec::new();
        write_header(&mut big, true, op::BINARY, 1 << 30, None);
        assert_eq!(parse(&big, 1 << 20), Err(FrameError::TooBig));
        // u64::MAX length must not overflow anything.
        let huge = [0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse(&huge, 1 << 20), Err(FrameError::TooBig));
        let h = parse(&huge, usize::MAX).unwrap().unwrap();
        assert_eq!(h.total_len(), usize::MAX);
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(&[0x03, 0xE9, b'x']), Some(1001));
        assert_eq!(close_code(&[0x03]), None);
        assert_eq!(close_code(&[]), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let n = (x % 11) as usize;
            let _ = parse(&b[..n.min(8)], 1 << 16);
        }
    }
}
