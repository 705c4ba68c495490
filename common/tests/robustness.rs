//! Randomised robustness of the parsers as the servers drive them: arbitrary bytes in
//! arbitrary chunks never panic, never hold more than one frame pending, and valid streams
//! decode to the same messages however they are split. Deterministic (seeded) so a failure
//! reproduces; the libFuzzer targets in `fuzz/` explore further.

use ws_common::frame::{self, op};
use ws_common::handshake;
use ws_common::message::{feed, Decoder, Event, Flow};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const MAX: usize = 4096;

/// Feeds `stream` in chunks chosen by `rng`; returns the events as text, or the violation.
fn drive(stream: &[u8], rng: &mut Rng) -> Result<Vec<String>, u16> {
    let mut decoder = Decoder::default();
    let mut pending = Vec::new();
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let n = 1 + rng.below(300) as usize;
        let mut chunk = stream[pos..(pos + n).min(stream.len())].to_vec();
        pos += chunk.len();
        let r = feed(&mut decoder, &mut pending, &mut chunk, MAX, |e| {
            let stop = matches!(e, Event::Close { .. });
            events.push(format!("{e:?}"));
            if stop {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        match r {
            Err(v) => return Err(v.code()),
            Ok(d) if d.stopped => return Ok(events),
            Ok(_) => {}
        }
        assert!(
            pending.len() < MAX + frame::MAX_HEADER_LEN,
            "pending grew to {}",
            pending.len()
        );
        assert!(
            decoder.heap_bytes() <= 2 * MAX + 64,
            "assembly grew to {}",
            decoder.heap_bytes()
        );
    }
    Ok(events)
}

fn masked(opcode_byte: u8, payload: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mask = [
        rng.next() as u8,
        rng.next() as u8,
        rng.next() as u8,
        rng.next() as u8,
    ];
    let mut v = Vec::new();
    frame::write_header(
        &mut v,
        opcode_byte & 0x80 != 0,
        opcode_byte & 0x0F,
        payload.len(),
        Some(mask),
    );
    let s = v.len();
    v.extend_from_slice(payload);
    frame::apply_mask(&mut v[s..], mask);
    v
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_bounded() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let len = rng.below(2000) as usize;
        let stream = rng.bytes(len);
        let _ = drive(&stream, &mut rng);
    }
}

#[test]
fn mutated_valid_streams_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let mut stream = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let kind = [0x81u8, 0x82, 0x01, 0x00, 0x80, 0x89, 0x8A, 0x88][rng.below(8) as usize];
            let len = rng.below(if kind & 0x08 != 0 { 126 } else { 600 }) as usize;
            let payload = if kind == 0x81 {
                "é".repeat(len / 2).into_bytes()
            } else {
                rng.bytes(len)
            };
            stream.extend(masked(kind, &payload, &mut rng));
        }
        for _ in 0..rng.below(4) {
            let i = rng.below(stream.len() as u64) as usize;
            stream[i] ^= 1 << rng.below(8);
        }
        let _ = drive(&stream, &mut rng);
    }
}

#[test]
fn valid_stream_decodes_the_same_however_it_is_split() {
    let mut rng = Rng(7);
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for i in 0..200 {
        let text = format!("message {i} ✓").repeat(1 + (i % 7));
        if i % 3 == 0 {
            // Fragmented, with a ping in the middle.
            let (a, b) = text.as_bytes().split_at(text.len() / 2);
            stream.extend(masked(0x01, a, &mut rng));
            stream.extend(masked(0x89, b"p", &mut rng));
            stream.extend(masked(0x80, b, &mut rng));
            want.push(format!("{:?}", Event::Ping(b"p")));
        } else {
            stream.extend(masked(0x81, text.as_bytes(), &mut rng));
        }
        want.push(format!(
            "{:?}",
            Event::Message {
                text: true,
                payload: text.as_bytes()
            }
        ));
    }
    for seed in 1..20 {
        let got = drive(&stream, &mut Rng(seed)).expect("valid stream");
        assert_eq!(got, want, "split with seed {seed}");
    }
}

#[test]
fn arbitrary_handshakes_never_panic() {
    let mut rng = Rng(1234);
    let good = handshake::client_request(
        "h",
        "/ws?user=a",
        &handshake::encode_key([1; 16]),
        Some("o"),
        &[],
    );
    for _ in 0..5000 {
        let n = rng.below(600) as usize;
        let mut req = if rng.below(2) == 0 {
            good.clone()
        } else {
            rng.bytes(n)
        };
        for _ in 0..rng.below(6) {
            if !req.is_empty() {
                let i = rng.below(req.len() as u64) as usize;
                req[i] = rng.next() as u8;
            }
        }
        let cut = rng.below(req.len() as u64 + 1) as usize;
        if let Ok(Some(r)) = handshake::parse_request(&req[..cut]) {
            assert!(r.head_len <= cut);
            let _ = r.check_upgrade(&["o".to_string()]);
            let _ = r.query_param("user");
        }
        let _ = handshake::parse_response(&req[..cut], "x");
    }
    let _ = op::TEXT;
}
