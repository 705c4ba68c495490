//! The HTTP upgrade, against the real binary: happy path, every refusal status, split and
//! pipelined requests, plain HTTP routes.

mod support;
use std::io::Write;
use std::time::Duration;
use support::*;

fn upgrade_happy_path_with_correct_accept_key(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut s = srv.raw();
    let head = exchange(&mut s, upgrade_request("/ws", "").as_bytes());
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}")),
        "{head}"
    );
    // And an independent client agrees.
    let mut ws = srv.ws("/ws");
    ws.send(tungstenite::Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hi"));
}

fn each_refusal_has_its_status(bin: &str) {
    let srv = Server::start(bin, &["--allow-origin", "https://good.example"]);
    let good_origin = "Origin: https://good.example\r\n";
    let cases: Vec<(String, u16)> = vec![
        ("NOT HTTP AT ALL\r\n\r\n".into(), 400),
        (
            upgrade_request("/ws", good_origin).replace("Upgrade: websocket\r\n", ""),
            400,
        ),
        (
            upgrade_request("/ws", good_origin)
                .replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
        ),
        (
            upgrade_request("/ws", good_origin)
                .replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            400,
        ),
        (
            upgrade_request("/ws", good_origin).replace(KEY, "not-base64-16-bytes"),
            400,
        ),
        (
            upgrade_request("/ws", good_origin).replace("Host: test\r\n", ""),
            400,
        ),
        (
            upgrade_request("/ws", good_origin).replace("GET", "POST"),
            405,
        ),
        (
            upgrade_request("/ws", good_origin).replace("Version: 13", "Version: 8"),
            426,
        ),
        (
            upgrade_request("/ws", "Origin: https://evil.example\r\n"),
            403,
        ),
        (upgrade_request("/ws", ""), 403),
        (upgrade_request("/nope", good_origin), 404),
        (
            upgrade_request("/ws", &format!("X-Big: {}\r\n", "a".repeat(9000))),
            431,
        ),
        (upgrade_request("/ws", good_origin), 101),
    ];
    for (req, want) in &cases {
        let mut s = srv.raw();
        let head = exchange(&mut s, req.as_bytes());
        assert_eq!(status_of(&head), *want, "request {req:.80?} got {head}");
        if *want == 426 {
            assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
        }
    }
    let m = srv.metrics();
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"400\""),
        6
    );
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"405\""),
        1
    );
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"426\""),
        1
    );
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"403\""),
        2
    );
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"404\""),
        1
    );
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"431\""),
        1
    );
    assert_eq!(sum_metric(&m, "ws_upgraded_total", ""), 1);
}

fn split_handshake_byte_by_byte_then_frame(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut s = srv.raw();
    for b in upgrade_request("/ws", "").as_bytes() {
        s.write_all(&[*b]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(status_of(&read_head(&mut s)), 101);
    s.write_all(&client_frame(0x81, b"after split")).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x81, b"after split".to_vec())));
}

fn pipelined_handshake_and_frames_in_one_packet_lose_nothing(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut s = srv.raw();
    let mut req = upgrade_request("/ws", "").into_bytes();
    req.extend(client_frame(0x81, b"one"));
    req.extend(client_frame(0x82, b"two"));
    req.extend(&client_frame(0x81, b"three")[..4]); // and half a frame
    s.write_all(&req).unwrap();
    assert_eq!(status_of(&read_head(&mut s)), 101);
    assert_eq!(read_frame(&mut s), Some((0x81, b"one".to_vec())));
    assert_eq!(read_frame(&mut s), Some((0x82, b"two".to_vec())));
    s.write_all(&client_frame(0x81, b"three")[4..]).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x81, b"three".to_vec())));
}

fn healthz_and_metrics_are_plain_http(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut s = srv.raw();
    let head = exchange(&mut s, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status_of(&head), 200);
    let m = srv.metrics();
    for family in [
        "ws_connections_open",
        "ws_accepted_total",
        "ws_handshake_rejections_total",
        "ws_messages_in_total",
        "ws_bytes_out_total",
        "ws_pings_sent_total",
        "ws_pongs_received_total",
        "ws_idle_timeout_closes_total",
        "ws_protocol_closes_total",
        "ws_accept_errors_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(m.contains(&format!("# TYPE {family} ")), "missing {family}");
    }
    // Two executors, each with its own per-core series.
    assert!(m.contains("ws_connections_open{core=\"0\"}"));
    if two_cores().len() == 2 {
        assert!(m.contains("ws_connections_open{core=\"1\"}"));
    }
    let req = format!("POST /metrics HTTP/1.1\r\n{}\r\n", srv.admin_headers());
    assert_eq!(status_of(&srv.admin_request(&req)), 405);
}

fn max_conns_answers_503(bin: &str) {
    let srv = Server::start(bin, &["--max-conns", "3"]);
    let held: Vec<_> = (0..3).map(|_| raw_ws(&srv)).collect();
    let mut s = srv.raw();
    assert_eq!(
        status_of(&exchange(&mut s, upgrade_request("/ws", "").as_bytes())),
        503
    );
    drop(held);
    // Budget comes back once they are gone (bounded wait for the server to see the EOFs).
    let mut ok = false;
    for _ in 0..100 {
        let mut s = srv.raw();
        if status_of(&exchange(&mut s, upgrade_request("/ws", "").as_bytes())) == 101 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "no upgrade after the held connections closed");
    assert!(srv.metric("ws_handshake_rejections_total", "status=\"503\"") >= 1);
}

fn slowloris_is_closed_at_the_handshake_timeout(bin: &str) {
    let srv = Server::start(bin, &["--handshake-timeout", "1"]);
    let mut s = srv.raw();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\n").unwrap();
    let mut buf = [0u8; 64];
    // The server closes without answering: read returns EOF (0) or a reset.
    let r = std::io::Read::read(&mut s, &mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(srv.metric("ws_handshake_timeout_closes_total", ""), 1);
    // Real clients are still served.
    let mut ws = srv.ws("/ws");
    ws.send(tungstenite::Message::binary(vec![1, 2, 3]))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        tungstenite::Message::binary(vec![1, 2, 3])
    );
}

both_servers!(
    upgrade_happy_path_with_correct_accept_key,
    each_refusal_has_its_status,
    split_handshake_byte_by_byte_then_frame,
    pipelined_handshake_and_frames_in_one_packet_lose_nothing,
    healthz_and_metrics_are_plain_http,
    max_conns_answers_503,
    slowloris_is_closed_at_the_handshake_timeout,
);
