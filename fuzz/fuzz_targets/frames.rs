//! The frame decoder as the servers drive it: a connection's byte stream in arbitrary
//! chunks through `message::feed`. Must never panic, and never hold more than one frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ws_common::frame::MAX_HEADER_LEN;
use ws_common::message::{feed, Decoder, Event, Flow};

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size.
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = chunk as usize + 1;
    let mut decoder = Decoder::default();
    let mut pending = Vec::new();
    for piece in stream.chunks(chunk) {
        let mut piece = piece.to_vec();
        let r = feed(&mut decoder, &mut pending, &mut piece, MAX, |e| match e {
            Event::Close { .. } => Flow::Stop,
            Event::Message { text: true, payload } => {
                assert!(std::str::from_utf8(payload).is_ok());
                Flow::Continue
            }
            _ => Flow::Continue,
        });
        match r {
            Ok(d) if d.stopped => return,
            Ok(_) => {}
            Err(_) => return,
        }
        assert!(pending.len() < MAX + MAX_HEADER_LEN);
    }
});
