//! RFC 6455 framing against the real binary: echo, fragments, control frames, close codes.

mod support;
use std::io::Write;
use support::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

fn echoes_text_binary_and_large_messages(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut ws = srv.ws("/ws");
    let big: Vec<u8> = (0..60_000u32).map(|i| i as u8).collect();
    let msgs = [
        Message::text("hello"),
        Message::binary(vec![0u8, 255, 7]),
        Message::text("héllo wörld ✓".repeat(100)),
        Message::binary(big.clone()),
        Message::text(""),
    ];
    for m in &msgs {
        ws.send(m.clone()).unwrap();
    }
    for m in &msgs {
        assert_eq!(&ws.read().unwrap(), m);
    }
}

fn fragmented_message_with_interleaved_ping_is_reassembled(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut s = raw_ws(&srv);
    s.write_all(&client_frame(0x01, b"frag")).unwrap(); // text, not final
    s.write_all(&client_frame(0x89, b"ping!")).unwrap(); // ping in between
    s.write_all(&client_frame(0x00, b"men")).unwrap(); // continuation
    s.write_all(&client_frame(0x80, b"ted")).unwrap(); // final continuation
    assert_eq!(read_frame(&mut s), Some((0x8A, b"ping!".to_vec())));
    assert_eq!(read_frame(&mut s), Some((0x81, b"fragmented".to_vec())));
}

fn ping_gets_pong_with_same_payload(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut s = raw_ws(&srv);
    s.write_all(&client_frame(0x89, b"are you there")).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x8A, b"are you there".to_vec())));
}

fn close_code_after(srv: &Server, bytes: &[u8]) -> Option<u16> {
    let mut s = raw_ws(srv);
    s.write_all(bytes).unwrap();
    read_until_close(&mut s)
}

fn violations_close_with_the_right_code(bin: &str) {
    let srv = Server::start(bin, &["--max-message-size", "1000"]);
    // Unmasked client frame.
    assert_eq!(
        close_code_after(&srv, &[0x81, 0x02, b'h', b'i']),
        Some(1002)
    );
    // Reserved bit set.
    assert_eq!(
        close_code_after(&srv, &client_frame(0x81 | 0x40, b"x")),
        Some(1002)
    );
    // Unknown opcode.
    assert_eq!(
        close_code_after(&srv, &client_frame(0x83, b"x")),
        Some(1002)
    );
    // Continuation without a start.
    assert_eq!(
        close_code_after(&srv, &client_frame(0x80, b"x")),
        Some(1002)
    );
    // Invalid UTF-8 in text.
    assert_eq!(
        close_code_after(&srv, &client_frame(0x81, &[0xC3, 0x28])),
        Some(1007)
    );
    // Too big, single frame and across fragments.
    assert_eq!(
        close_code_after(&srv, &client_frame(0x82, &[0u8; 1001])),
        Some(1009)
    );
    let mut frags = client_frame(0x02, &[0u8; 600]);
    frags.extend(client_frame(0x80, &[0u8; 600]));
    assert_eq!(close_code_after(&srv, &frags), Some(1009));
    let m = srv.metrics();
    assert_eq!(
        sum_metric(&m, "ws_protocol_closes_total", "code=\"1002\""),
        4
    );
    assert_eq!(
        sum_metric(&m, "ws_protocol_closes_total", "code=\"1007\""),
        1
    );
    assert_eq!(
        sum_metric(&m, "ws_protocol_closes_total", "code=\"1009\""),
        2
    );
}

fn client_close_is_answered_with_the_same_code(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut ws = srv.ws("/ws");
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(cf))) => {
                assert_eq!(cf.code, CloseCode::Normal);
                break;
            }
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

fn server_pings_at_the_interval_and_counts_pongs(bin: &str) {
    let srv = Server::start(bin, &["--ping-interval", "1", "--idle-timeout", "0"]);
    let mut s = raw_ws(&srv);
    let (b0, _) = read_frame(&mut s).expect("a ping");
    assert_eq!(b0, 0x89);
    s.write_all(&client_frame(0x8A, b"")).unwrap();
    // The pong is counted once processed; poll the counter (bounded).
    let mut seen = 0;
    for _ in 0..100 {
        seen = srv.metric("ws_pongs_received_total", "");
        if seen >= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen, 1);
    assert!(srv.metric("ws_pings_sent_total", "") >= 1);
}

fn silent_connection_is_dropped_at_the_idle_timeout(bin: &str) {
    let srv = Server::start(bin, &["--ping-interval", "0", "--idle-timeout", "2"]);
    let mut s = raw_ws(&srv);
    assert_eq!(read_until_close(&mut s), Some(1001));
    assert_eq!(srv.metric("ws_idle_timeout_closes_total", ""), 1);
}

fn replies_before_a_violation_are_sent_before_the_close(bin: &str) {
    let srv = Server::start(bin, &[]);
    let mut s = raw_ws(&srv);
    let mut bytes = client_frame(0x81, b"first");
    bytes.extend(client_frame(0x81 | 0x20, b"bad"));
    s.write_all(&bytes).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x81, b"first".to_vec())));
    assert_eq!(read_until_close(&mut s), Some(1002));
}

both_servers!(
    replies_before_a_violation_are_sent_before_the_close,
    echoes_text_binary_and_large_messages,
    fragmented_message_with_interleaved_ping_is_reassembled,
    ping_gets_pong_with_same_payload,
    violations_close_with_the_right_code,
    client_close_is_answered_with_the_same_code,
    server_pings_at_the_interval_and_counts_pongs,
    silent_connection_is_dropped_at_the_idle_timeout,
);
