//! Servers that break the protocol, written as raw TCP scripts: each failure must land in
//! its own class, and nothing may panic.

mod common;

use std::io::Write;

use common::{request_key, run_loadgen, RawServer, Run};

fn upgrade(key: &str, accept_override: Option<&str>) -> Vec<u8> {
    let accept = accept_override
        .map(str::to_string)
        .unwrap_or_else(|| ws_common::handshake::accept_key(key.as_bytes()));
    ws_common::handshake::switching_protocols(&accept)
}

/// `conns` connections for 1 s, each tried once (no reconnects), so every count below is
/// exactly one per connection.
fn once(s: &RawServer, conns: &str, extra: &[&str]) -> Run {
    let base = ["-c", conns, "-d", "1s", "--reconnect-max-tries", "0"];
    run_loadgen(&s.url(), &[&base[..], extra].concat())
}

#[test]
fn wrong_accept_key_is_bad_accept() {
    let s = RawServer::start(|s, req| {
        let _ = s.write_all(&upgrade(
            &request_key(req),
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ));
    });
    let r = once(&s, "3", &[]);
    assert_eq!(r.code, 2, "{}", r.explain());
    assert_eq!(r.u("/failures/bad_accept"), 3, "{}", r.explain());
}

#[test]
fn silence_is_a_handshake_timeout() {
    let s = RawServer::start(|_s, _req| {});
    let r = once(&s, "2", &["--handshake-timeout", "300ms"]);
    assert_eq!(r.code, 2, "{}", r.explain());
    assert_eq!(r.u("/failures/handshake_timeout"), 2, "{}", r.explain());
}

#[test]
fn garbage_response_is_malformed() {
    let s = RawServer::start(|s, _req| {
        let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
    });
    let r = once(&s, "2", &[]);
    assert_eq!(r.code, 2, "{}", r.explain());
    assert_eq!(r.u("/failures/malformed_response"), 2, "{}", r.explain());
}

#[test]
fn masked_server_frame_is_a_protocol_error_drop() {
    let s = RawServer::start(|s, req| {
        let mut out = upgrade(&request_key(req), None);
        // First frame arrives in the same packet as the 101, and it is masked: forbidden.
        ws_common::frame::write_masked_frame(&mut out, 0x2, b"hello", [1, 2, 3, 4]);
        let _ = s.write_all(&out);
    });
    let r = once(&s, "2", &["--scenario", "hold"]);
    assert_eq!(r.u("/connections/established"), 2, "{}", r.explain());
    assert_eq!(
        r.u("/drop_classes/protocol_error_masked_server_frame"),
        2,
        "{}",
        r.explain()
    );
    assert_eq!(r.u("/connections/gave_up"), 2);
}

#[test]
fn huge_frame_announcement_is_refused_without_allocating_it() {
    let s = RawServer::start(|s, req| {
        let mut out = upgrade(&request_key(req), None);
        ws_common::frame::write_header(&mut out, true, 0x2, usize::MAX >> 1, None);
        let _ = s.write_all(&out);
    });
    let r = once(&s, "1", &["--scenario", "hold"]);
    assert_eq!(
        r.u("/drop_classes/protocol_error_frame_too_big"),
        1,
        "{}",
        r.explain()
    );
}

#[test]
fn server_close_codes_are_counted_and_frames_after_101_are_read() {
    let s = RawServer::start(|s, req| {
        let mut out = upgrade(&request_key(req), None);
        out.extend_from_slice(&ws_common::frame::close_frame(4001, "custom"));
        let _ = s.write_all(&out);
    });
    let r = once(&s, "3", &["--scenario", "hold"]);
    assert_eq!(r.u("/close_codes/4001"), 3, "{}", r.explain());
    assert_eq!(r.u("/drop_classes/close_4001"), 3, "{}", r.explain());
}

#[test]
fn path_query_origin_and_headers_reach_the_server() {
    let s = RawServer::start(|s, req| {
        let ok = req.starts_with("GET /ws?room=a&user=7 HTTP/1.1\r\n")
            && req.contains("\r\nOrigin: http://app.test\r\n")
            && req.contains("\r\nX-Test: one\r\n")
            && req.contains("\r\nCookie: a=b\r\n")
            && req.contains("\r\nSec-WebSocket-Version: 13\r\n");
        if ok {
            let _ = s.write_all(&upgrade(&request_key(req), None));
        } else {
            let _ = s.write_all(&ws_common::handshake::http_response(
                400,
                "",
                "text/plain",
                b"no",
            ));
        }
    });
    let url = format!("ws://{}/ws?room=a&user=7", s.addr);
    let r = run_loadgen(
        &url,
        &[
            "-c",
            "2",
            "-d",
            "500ms",
            "--scenario",
            "hold",
            "--origin",
            "http://app.test",
            "-H",
            "X-Test: one",
            "--header",
            "Cookie: a=b",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/connections/established"), 2, "{}", r.explain());
}

#[test]
fn every_key_is_fresh() {
    let keys = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let k2 = keys.clone();
    let s = RawServer::start(move |s, req| {
        k2.lock().unwrap().insert(request_key(req));
        let _ = s.write_all(&upgrade(&request_key(req), None));
    });
    let r = run_loadgen(&s.url(), &["-c", "10", "-d", "500ms", "--scenario", "hold"]);
    assert_eq!(r.u("/connections/established"), 10, "{}", r.explain());
    assert_eq!(keys.lock().unwrap().len(), 10);
}
