//! The binary payload ws-loadgen sends, so every reply can be matched to its send.
//!
//! Layout (little endian), then padding up to `--payload` bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `WSC1` |
//! | 4..8 | sender id (connection or publisher) |
//! | 8..16 | sequence number, per sender |
//! | 16..24 | intended send time, ns on `CLOCK_MONOTONIC` (same clock in every process of a box) |

/// Smallest payload that carries the header.
pub const HEADER_LEN: usize = 24;
const MAGIC: &[u8; 4] = b"WSC1";

/// The fields a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes the stamp into the first bytes of `buf` (len ≥ HEADER_LEN); the rest is left as is.
pub fn write(buf: &mut [u8], s: Stamp) {
    buf[0..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&s.sender.to_le_bytes());
    buf[8..16].copy_from_slice(&s.seq.to_le_bytes());
    buf[16..24].copy_from_slice(&s.sent_ns.to_le_bytes());
}

/// A payload of `len` bytes (at least HEADER_LEN) carrying `s`.
pub fn build(len: usize, s: Stamp) -> Vec<u8> {
    let mut v = vec![b'x'; len.max(HEADER_LEN)];
    write(&mut v, s);
    v
}

/// Reads the stamp back; None if `buf` is not one of ours.
pub fn read(buf: &[u8]) -> Option<Stamp> {
    if buf.len() < HEADER_LEN || &buf[0..4] != MAGIC {
        return None;
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Some(Stamp {
        sender: u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]),
        seq: u64_at(8),
        sent_ns: u64_at(16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let s = Stamp {
            sender: 7,
            seq: 1 << 40,
            sent_ns: now_ns(),
        };
        let b = build(64, s);
        assert_eq!(b.len(), 64);
        assert_eq!(read(&b), Some(s));
        assert_eq!(read(&b[..10]), None);
        assert_eq!(read(b"not ours, not ours, not ours"), None);
    }
}
