//! The stamp ([`crate::payload::Stamp`]) as text, for scripted runs against services that
//! speak JSON: `WSC` then 36 lowercase hex digits (sender 8, sequence 12, intended send
//! time 16: ns on the wall clock, CLOCK_REALTIME, so that a receiver on another host whose
//! clock is in sync can time it). Nothing in it needs escaping in a JSON string, a URL or
//! HTML, so it survives whatever envelope a server wraps around the message; a receiver
//! finds every stamp in a message in one pass ([`Scanner::scan`]).

use memchr::memmem;

use crate::payload::Stamp;

/// Length of a text stamp.
pub const LEN: usize = 3 + 8 + 12 + 16;
const MAGIC: &[u8; 3] = b"WSC";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the stamp (the sequence keeps its low 48 bits).
pub fn write(out: &mut Vec<u8>, s: Stamp) {
    out.extend_from_slice(MAGIC);
    let mut put = |v: u64, digits: u32| {
        for i in (0..digits).rev() {
            out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
        }
    };
    put(s.sender as u64, 8);
    put(s.seq & 0xffff_ffff_ffff, 12);
    put(s.sent_ns, 16);
}

fn hex(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// Reads the stamp at the start of `b`.
pub fn read(b: &[u8]) -> Option<Stamp> {
    if b.len() < LEN || &b[..3] != MAGIC {
        return None;
    }
    Some(Stamp {
        sender: hex(&b[3..11])? as u32,
        seq: hex(&b[11..23])?,
        sent_ns: hex(&b[23..39])?,
    })
}

/// Finds text stamps. Built once per worker (the searcher is precomputed).
pub struct Scanner {
    finder: memmem::Finder<'static>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            finder: memmem::Finder::new(MAGIC),
        }
    }
}

impl Scanner {
    /// Calls `f` with every stamp in `msg`, in order; returns how many there were.
    pub fn scan(&self, msg: &[u8], mut f: impl FnMut(Stamp)) -> usize {
        let mut n = 0;
        let mut at = 0;
        while let Some(i) = self.finder.find(&msg[at..]) {
            let start = at + i;
            match read(&msg[start..]) {
                Some(s) => {
                    f(s);
                    n += 1;
                    at = start + LEN;
                }
                None => at = start + 1,
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_inside_an_envelope() {
        let s = Stamp {
            sender: 0x0010_0003,
            seq: 41,
            sent_ns: 1_234_567_890_123,
        };
        let mut out = Vec::new();
        write(&mut out, s);
        assert_eq!(out.len(), LEN);
        let text = String::from_utf8(out.clone()).unwrap();
        // JSON escaping leaves it alone.
        assert_eq!(serde_json::to_string(&text).unwrap(), format!("\"{text}\""));
        let env = format!(r#"{{"from":"WSCx","msg":{{"text":"hi {text}!"}},"b":"{text}"}}"#);
        let mut got = Vec::new();
        assert_eq!(Scanner::default().scan(env.as_bytes(), |s| got.push(s)), 2);
        assert_eq!(got, vec![s, s]);
        assert_eq!(read(b"WSC0000"), None);
        assert_eq!(Scanner::default().scan(b"WSCWSCzz", |_| {}), 0);
    }
}
