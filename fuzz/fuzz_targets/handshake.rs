//! The handshake parser as the servers drive it: the request arrives in pieces, each prefix
//! is parsed, and a complete one is validated and routed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ws_common::handshake;

fuzz_target!(|data: &[u8]| {
    // First byte: how many pieces the request arrives in.
    let Some((&pieces, req)) = data.split_first() else { return };
    let step = (req.len() / (pieces as usize % 8 + 1)).max(1);
    let mut end = 0;
    while end < req.len() {
        end = (end + step).min(req.len());
        match handshake::parse_request(&req[..end]) {
            Ok(None) => continue,
            Ok(Some(r)) => {
                assert!(r.head_len <= end);
                let _ = r.check_upgrade(&[]);
                let _ = r.check_upgrade(&["https://a.example".to_string()]);
                let _ = r.query_param("room");
                let _ = r.query_param("user");
                let _ = handshake::percent_decode(&r.path);
                break;
            }
            Err(rej) => {
                let _ = rej.response();
                break;
            }
        }
    }
    let _ = handshake::parse_response(req, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});
