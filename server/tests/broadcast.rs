//! Rooms, push by user and slow consumers, with connections on both executors.

mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use support::*;
use tungstenite::Message;

type Ws = tungstenite::WebSocket<TcpStream>;

/// Opens `n` clients on `path`, then more until both executors hold at least one
/// (SO_REUSEPORT spreads by address hash), bounded.
fn clients_on_both_cores(srv: &Server, path: &str, n: usize) -> Vec<Ws> {
    let mut v: Vec<Ws> = (0..n).map(|_| srv.ws(path)).collect();
    // Only ws-server places connections by core (SO_REUSEPORT); tokio's workers share them.
    if two_cores().len() == 2 && !srv.tokio {
        for _ in 0..200 {
            let m = srv.metrics();
            if sum_metric(&m, "ws_connections_open", "core=\"0\"") > 0
                && sum_metric(&m, "ws_connections_open", "core=\"1\"") > 0
            {
                break;
            }
            v.push(srv.ws(path));
        }
    }
    v
}

/// An admin request: `req` is the request line; the admin headers and `rest` follow.
fn http(srv: &Server, req: &str) -> (u16, String) {
    let (line, rest) = req.split_once("\r\n").unwrap_or((req, ""));
    let out = srv.admin_request(&format!("{line}\r\n{}{rest}", srv.admin_headers()));
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    (status_of(&out), body)
}

fn post(srv: &Server, path: &str, body: &str) -> (u16, String) {
    http(
        srv,
        &format!(
            "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn every_subscriber_gets_every_message_once_in_order_across_cores(bin: &str) {
    let srv = Server::start(bin, &["--ping-interval", "0"]);
    let mut subs = clients_on_both_cores(&srv, "/broadcast?room=r1", 8);
    let n = subs.len();
    // Two publishers on the same room: each subscriber must see each one's sequence in order.
    const MSGS: usize = 50;
    for i in 0..MSGS {
        for (p, publisher) in subs.iter_mut().take(2).enumerate() {
            publisher.send(Message::text(format!("p{p}-{i}"))).unwrap();
        }
    }
    for (k, ws) in subs.iter_mut().enumerate() {
        let mut next = [0usize; 2];
        for _ in 0..2 * MSGS {
            let m = ws.read().unwrap().into_text().unwrap();
            let (p, i) = m.split_once('-').unwrap();
            let p: usize = p[1..].parse().unwrap();
            let i: usize = i.parse().unwrap();
            assert_eq!(
                i, next[p],
                "subscriber {k}: publisher {p} out of order or duplicated"
            );
            next[p] += 1;
        }
        assert_eq!(next, [MSGS, MSGS], "subscriber {k}");
    }
    let m = srv.metrics();
    assert_eq!(
        sum_metric(&m, "ws_broadcasts_in_total", ""),
        2 * MSGS as u64
    );
    assert_eq!(
        sum_metric(&m, "ws_deliveries_total", ""),
        (2 * MSGS * n) as u64
    );
    if two_cores().len() == 2 && !is_tokio(bin) {
        assert_eq!(
            sum_metric(&m, "ws_cross_core_messages_total", ""),
            2 * MSGS as u64
        );
        assert_eq!(
            sum_metric(&m, "ws_cross_core_hop_seconds_count", ""),
            2 * MSGS as u64
        );
    }
}

fn rooms_are_isolated_and_echo_false_skips_the_sender(bin: &str) {
    let srv = Server::start(bin, &["--ping-interval", "0"]);
    let mut a = clients_on_both_cores(&srv, "/broadcast?room=a", 4);
    let mut b: Vec<Ws> = (0..4).map(|_| srv.ws("/broadcast?room=b")).collect();
    let mut quiet = srv.ws("/broadcast?room=a&echo=false");
    quiet.send(Message::text("from quiet")).unwrap();
    b[0].send(Message::text("room b only")).unwrap();
    a[0].send(Message::text("room a")).unwrap();
    // Order is per sender only: the two senders' messages may arrive either way round.
    for ws in a.iter_mut() {
        let mut got = vec![ws.read().unwrap(), ws.read().unwrap()];
        got.sort_by_key(|m| m.to_string());
        assert_eq!(
            got,
            vec![Message::text("from quiet"), Message::text("room a")]
        );
    }
    for ws in b.iter_mut() {
        assert_eq!(ws.read().unwrap(), Message::text("room b only"));
    }
    // The quiet sender gets room a's message but not its own.
    assert_eq!(quiet.read().unwrap(), Message::text("room a"));
    // Nothing from room a reached room b: a marker sent now is the next thing b reads.
    b[1].send(Message::text("marker")).unwrap();
    for ws in b.iter_mut() {
        assert_eq!(ws.read().unwrap(), Message::text("marker"));
    }
}

fn push_reaches_users_on_any_core_and_404s_for_unknown(bin: &str) {
    let srv = Server::start(bin, &["--ping-interval", "0", "--max-message-size", "100"]);
    let mut users: Vec<Ws> = (0..10).map(|i| srv.ws(&format!("/ws?user=u{i}"))).collect();
    // A user with two connections gets both.
    let mut twin = srv.ws("/broadcast?user=u3");
    for (i, ws) in users.iter_mut().enumerate() {
        let want = if i == 3 { "2" } else { "1" };
        assert_eq!(
            post(&srv, &format!("/push/u{i}"), &format!("hello u{i}")),
            (200, want.to_string())
        );
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(format!("hello u{i}").into_bytes())
        );
    }
    assert_eq!(twin.read().unwrap(), Message::binary(b"hello u3".to_vec()));
    assert_eq!(post(&srv, "/push/nobody", "x"), (404, "0".to_string()));
    assert_eq!(post(&srv, "/push/u1", &"x".repeat(101)).0, 413);
    assert_eq!(http(&srv, "GET /push/u1 HTTP/1.1\r\n\r\n").0, 405);
    // Server-originated broadcast into a room.
    let mut room: Vec<Ws> = clients_on_both_cores(&srv, "/broadcast?room=news", 3);
    let (status, count) = post(&srv, "/broadcast/news", "extra");
    assert_eq!((status, count), (200, room.len().to_string()));
    for ws in room.iter_mut() {
        assert_eq!(ws.read().unwrap(), Message::binary(b"extra".to_vec()));
    }
    let m = srv.metrics();
    assert_eq!(sum_metric(&m, "ws_push_hits_total", ""), 10);
    assert_eq!(sum_metric(&m, "ws_push_misses_total", ""), 1);
}

/// A subscriber that stops reading while a publisher floods the room.
fn flood_with_a_stalled_reader(bin: &str, policy: &str) -> (Server, u64, u64, bool) {
    let srv = Server::start(
        bin,
        &[
            "--ping-interval",
            "0",
            "--send-queue-bytes",
            "65536",
            "--slow-consumer",
            policy,
        ],
    );
    let mut stalled = srv.raw();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(
        status_of(&exchange(
            &mut stalled,
            upgrade_request("/broadcast?room=f", "").as_bytes()
        )),
        101
    );
    let mut fast = srv.ws("/broadcast?room=f");
    let mut publisher = srv.ws("/broadcast?room=f&echo=false");
    let rss_before = srv.metric("process_resident_memory_bytes", "");
    const MSGS: usize = 2000;
    const BATCH: usize = 2; // 32 KiB: half the queue, whichever way a server counts it
    let payload = vec![7u8; 16 * 1024];
    let (progress_tx, progress_rx) = std::sync::mpsc::channel::<usize>();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < MSGS {
            match fast.read() {
                Ok(Message::Binary(b)) => {
                    assert_eq!(b.len(), 16 * 1024);
                    got += 1;
                    if got % BATCH == 0 {
                        let _ = progress_tx.send(got);
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("fast subscriber lost its connection after {got}: {e}"),
            }
        }
        got
    });
    // The publisher keeps pace with the fast subscriber (flow control, not timing), so only
    // the stalled one falls behind.
    for b in 0..MSGS / BATCH {
        for _ in 0..BATCH {
            publisher.send(Message::binary(payload.clone())).unwrap();
        }
        let mut seen = 0;
        while seen < (b + 1) * BATCH {
            seen = progress_rx
                .recv_timeout(WAIT)
                .expect("fast subscriber stalled");
        }
    }
    assert_eq!(
        reader.join().unwrap(),
        MSGS,
        "the fast subscriber must get everything"
    );
    let rss_after = srv.metric("process_resident_memory_bytes", "");
    // Does the stalled connection still work? Read what it has, then ping.
    stalled.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut alive = true;
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => {
                alive = false;
                break;
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => {
                alive = false;
                break;
            }
        }
    }
    (srv, rss_before, rss_after, alive)
}

fn slow_consumer_is_closed_and_memory_stays_bounded(bin: &str) {
    let (srv, before, after, _) = flood_with_a_stalled_reader(bin, "close");
    let m = srv.metrics();
    assert_eq!(sum_metric(&m, "ws_slow_consumer_closes_total", ""), 1);
    assert_eq!(
        sum_metric(&m, "ws_protocol_closes_total", "code=\"1008\""),
        1
    );
    // 32 MiB went out to the room; the stalled reader's queue is capped at 64 KiB.
    assert!(
        after < before + 16 * 1024 * 1024,
        "RSS grew from {before} to {after}"
    );
}

fn slow_consumer_drop_policy_keeps_the_connection(bin: &str) {
    let (srv, before, after, alive) = flood_with_a_stalled_reader(bin, "drop");
    let m = srv.metrics();
    assert_eq!(sum_metric(&m, "ws_slow_consumer_closes_total", ""), 0);
    assert!(sum_metric(&m, "ws_slow_consumer_drops_total", "") > 0);
    assert!(alive, "drop policy must keep the stalled connection open");
    assert!(
        after < before + 16 * 1024 * 1024,
        "RSS grew from {before} to {after}"
    );
}

/// A client on /ws that sends but never reads: its echo queue fills, then it is closed.
fn echo_client_that_never_reads_is_closed_as_slow_consumer(bin: &str) {
    let srv = Server::start(
        bin,
        &["--ping-interval", "0", "--send-queue-bytes", "65536"],
    );
    let mut s = raw_ws(&srv);
    s.set_write_timeout(Some(WAIT)).unwrap();
    let frame = client_frame(0x82, &vec![1u8; 16 * 1024]);
    // Enough to fill both socket buffers and the 64 KiB queue many times over; stops
    // early once the server has closed it.
    for _ in 0..4000 {
        if s.write_all(&frame).is_err() {
            break;
        }
    }
    let mut closed = 0;
    for _ in 0..100 {
        closed = srv.metric("ws_slow_consumer_closes_total", "");
        if closed >= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(closed, 1);
}

/// A message followed by a violation in the same packet: the message still reaches its own
/// room (once), the sender is closed with 1002, and nothing leaks into another room.
fn message_before_a_violation_goes_to_its_room_only(bin: &str) {
    let srv = Server::start(bin, &["--ping-interval", "0"]);
    let mut a = srv.ws("/broadcast?room=a&echo=false");
    let mut b = srv.ws("/broadcast?room=b");
    let mut s = srv.raw();
    assert_eq!(
        status_of(&exchange(
            &mut s,
            upgrade_request("/broadcast?room=a", "").as_bytes()
        )),
        101
    );
    let mut bytes = client_frame(0x81, b"kept");
    bytes.extend(client_frame(0x81 | 0x40, b"bad")); // RSV1: protocol error
    s.write_all(&bytes).unwrap();
    assert_eq!(a.read().unwrap(), Message::text("kept"));
    // The publisher gets its own message (echo on), then Close 1002.
    assert_eq!(read_frame(&mut s), Some((0x81, b"kept".to_vec())));
    assert_eq!(read_until_close(&mut s), Some(1002));
    // Room b saw nothing: the next thing it reads is its own marker.
    b.send(Message::text("marker")).unwrap();
    assert_eq!(b.read().unwrap(), Message::text("marker"));
    // Room a got "kept" exactly once: the next thing is a fresh message.
    let mut c = srv.ws("/broadcast?room=a");
    c.send(Message::text("after")).unwrap();
    assert_eq!(a.read().unwrap(), Message::text("after"));
}

/// Frames published in bursts reach a subscriber that reads only at the end whole and in
/// order: the server writes several frames per recipient at once, the socket takes part of
/// them, and the rest (a frame cut in the middle included) waits in the queue.
fn late_reader_gets_every_burst_frame_whole_and_in_order(bin: &str) {
    let srv = Server::start(
        bin,
        &["--ping-interval", "0", "--send-queue-bytes", "67108864"],
    );
    let mut late = srv.ws("/broadcast?room=burst");
    // Reading each burst before the next is sent keeps one burst per server wake-up.
    let mut pacer = srv.ws("/broadcast?room=burst");
    let mut publisher = srv.ws("/broadcast?room=burst&echo=false");
    const MSGS: usize = 12_000;
    const BURST: usize = 40;
    // ~1 KiB frames of varying length, 12 MB in all: more than the loopback socket buffers
    // hold, so the server's sends to `late` come back short.
    let frame = |i: usize| {
        let mut v = format!("{i:06}-").into_bytes();
        v.resize(900 + i % 250, b'a' + (i % 26) as u8);
        v
    };
    let mut i = 0;
    while i < MSGS {
        let n = BURST.min(MSGS - i);
        for _ in 0..n {
            publisher.write(Message::binary(frame(i))).unwrap();
            i += 1;
        }
        publisher.flush().unwrap();
        for _ in 0..n {
            assert!(matches!(pacer.read(), Ok(Message::Binary(_))));
        }
    }
    for i in 0..MSGS {
        match late.read() {
            Ok(Message::Binary(b)) => assert!(b[..] == frame(i)[..], "frame {i} differs"),
            other => panic!("frame {i}: {other:?}"),
        }
    }
    assert_eq!(
        sum_metric(&srv.metrics(), "ws_deliveries_total", ""),
        2 * MSGS as u64
    );
}

both_servers!(
    late_reader_gets_every_burst_frame_whole_and_in_order,
    message_before_a_violation_goes_to_its_room_only,
    echo_client_that_never_reads_is_closed_as_slow_consumer,
    every_subscriber_gets_every_message_once_in_order_across_cores,
    rooms_are_isolated_and_echo_false_skips_the_sender,
    push_reaches_users_on_any_core_and_404s_for_unknown,
    slow_consumer_is_closed_and_memory_stays_bounded,
    slow_consumer_drop_policy_keeps_the_connection,
);
