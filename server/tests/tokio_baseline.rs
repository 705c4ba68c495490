//! ws-server-tokio (the tokio baseline) against its real binary: the handshake and its
//! refusals, framing and close codes, heartbeat and timeouts, limits, shutdown, broadcast,
//! push and slow consumers. Same observable behaviour as ws-server's suites.
//!
//! The harness is support/mod.rs's, pointed at this binary. Every wait is bounded; no
//! assertion is on time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Upper bound on any single wait (never asserted on; only avoids hanging).
const WAIT: Duration = Duration::from_secs(15);

fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ws-server-tokio")
}

/// `--cores` for two worker threads where the machine allows it.
fn two_cores() -> Vec<String> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 2 {
        vec!["--cores".into(), "0,1".into()]
    } else {
        vec![]
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
    /// stderr, then stdout lines after the first (prefixed `stdout: `).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Self::start_with(args, |_| {})
    }

    fn start_with(args: &[&str], tweak: impl FnOnce(&mut Command)) -> Server {
        let mut cmd = Command::new(server_bin());
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--cores") {
            cmd.args(two_cores());
        }
        cmd.args(args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("spawn ws-server-tokio");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut r = BufReader::new(stderr);
            while r.read_line(&mut s).map(|n| n > 0).unwrap_or(false) {
                log2.lock().unwrap().push_str(&s);
                s.clear();
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .expect("server printed nothing")
            .expect("read stdout");
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {first:?}; stderr: {}",
                    log.lock().unwrap()
                )
            })
            .parse()
            .expect("address");
        let out = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                out.lock().unwrap().push_str(&format!("stdout: {l}\n"));
            }
        });
        Server { child, addr, log }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    fn ws(&self, path: &str) -> tungstenite::WebSocket<TcpStream> {
        let (ws, resp) = tungstenite::client(self.url(path), self.raw()).expect("handshake");
        assert_eq!(resp.status(), 101);
        ws
    }

    fn metrics(&self) -> String {
        let mut s = self.raw();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    fn metric(&self, name: &str, label: &str) -> u64 {
        sum_metric(&self.metrics(), name, label)
    }

    /// Polls a metric (bounded) until it reaches `at_least`; returns the last value.
    fn await_metric(&self, name: &str, label: &str, at_least: u64) -> u64 {
        let mut v = 0;
        for _ in 0..300 {
            v = self.metric(name, label);
            if v >= at_least {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        v
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..(WAIT.as_millis() / 50) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// A plain HTTP request; returns (status, body).
    fn http(&self, req: &[u8]) -> (u16, String) {
        let mut s = self.raw();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status_of(&text), body)
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.http(&req)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sum_metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| label.is_empty() || l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn exchange(s: &mut TcpStream, req: &[u8]) -> String {
    s.write_all(req).unwrap();
    read_head(s)
}

fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => buf.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A masked client frame; reserved bits of `first_byte` are kept as given.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    ws_common::frame::write_header(
        &mut v,
        first_byte & 0x80 != 0,
        first_byte & 0x0F,
        payload.len(),
        Some([1, 2, 3, 4]),
    );
    v[0] = first_byte;
    let start = v.len();
    v.extend_from_slice(payload);
    ws_common::frame::apply_mask(&mut v[start..], [1, 2, 3, 4]);
    v
}

fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    Some((h[0], p))
}

fn read_until_close(s: &mut TcpStream) -> Option<u16> {
    loop {
        let (b0, p) = read_frame(s)?;
        if b0 & 0x0F == 0x8 {
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
    }
}

fn raw_ws_at(server: &Server, path: &str) -> TcpStream {
    let mut s = server.raw();
    let head = exchange(&mut s, upgrade_request(path, "").as_bytes());
    assert_eq!(status_of(&head), 101, "{head}");
    s
}

fn raw_ws(server: &Server) -> TcpStream {
    raw_ws_at(server, "/ws")
}

/// Reads data messages (skipping pings/pongs) from a tungstenite client.
fn next_data(ws: &mut tungstenite::WebSocket<TcpStream>) -> Message {
    loop {
        match ws.read().expect("read") {
            m @ (Message::Text(_) | Message::Binary(_)) => return m,
            Message::Close(cf) => panic!("unexpected close {cf:?}"),
            _ => continue,
        }
    }
}

fn text_of(m: &Message) -> String {
    match m {
        Message::Text(t) => t.as_str().to_string(),
        Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("not data: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

#[test]
fn upgrade_happy_path_with_correct_accept_key() {
    let srv = Server::start(&[]);
    let mut s = srv.raw();
    let head = exchange(&mut s, upgrade_request("/ws", "").as_bytes());
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}")),
        "{head}"
    );
    let mut ws = srv.ws("/ws");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hi"));
}

#[test]
fn each_refusal_has_its_status() {
    let srv = Server::start(&["--allow-origin", "https://good.example"]);
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
    for (status, n) in [(400, 6), (405, 1), (426, 1), (403, 2), (404, 1), (431, 1)] {
        assert_eq!(
            sum_metric(
                &m,
                "ws_handshake_rejections_total",
                &format!("status=\"{status}\"")
            ),
            n,
            "status {status}"
        );
    }
    assert_eq!(sum_metric(&m, "ws_upgraded_total", ""), 1);
}

#[test]
fn split_handshake_byte_by_byte_then_frame() {
    let srv = Server::start(&[]);
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

#[test]
fn pipelined_handshake_and_frames_in_one_packet_lose_nothing() {
    let srv = Server::start(&[]);
    let mut s = srv.raw();
    let mut req = upgrade_request("/ws", "").into_bytes();
    req.extend(client_frame(0x81, b"one"));
    req.extend(client_frame(0x82, b"two"));
    req.extend(&client_frame(0x81, b"three")[..4]);
    s.write_all(&req).unwrap();
    assert_eq!(status_of(&read_head(&mut s)), 101);
    assert_eq!(read_frame(&mut s), Some((0x81, b"one".to_vec())));
    assert_eq!(read_frame(&mut s), Some((0x82, b"two".to_vec())));
    s.write_all(&client_frame(0x81, b"three")[4..]).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x81, b"three".to_vec())));
}

#[test]
fn healthz_and_metrics_are_plain_http() {
    let srv = Server::start(&[]);
    let (status, body) = srv.http(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
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
        "ws_connection_state_bytes",
        "process_resident_memory_bytes",
        "process_open_fds",
        "ws_broadcasts_in_total",
        "ws_deliveries_total",
        "ws_slow_consumer_closes_total",
        "ws_slow_consumer_drops_total",
        "ws_push_hits_total",
        "ws_push_misses_total",
    ] {
        assert!(m.contains(&format!("# TYPE {family} ")), "missing {family}");
    }
    // One series per worker thread, labelled with its core.
    assert!(m.contains("ws_connections_open{core=\"0\"}"));
    assert!(m.contains("ws_deliveries_total{core=\"0\"}"));
    if two_cores().len() == 2 {
        assert!(m.contains("ws_connections_open{core=\"1\"}"));
    }
    let (status, _) = srv.http(b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
}

#[test]
fn max_conns_answers_503() {
    let srv = Server::start(&["--max-conns", "3"]);
    let held: Vec<_> = (0..3).map(|_| raw_ws(&srv)).collect();
    let mut s = srv.raw();
    assert_eq!(
        status_of(&exchange(&mut s, upgrade_request("/ws", "").as_bytes())),
        503
    );
    drop(held);
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

#[test]
fn slowloris_is_closed_at_the_handshake_timeout() {
    let srv = Server::start(&["--handshake-timeout", "1"]);
    let mut s = srv.raw();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\n").unwrap();
    let mut buf = [0u8; 64];
    let r = s.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(srv.metric("ws_handshake_timeout_closes_total", ""), 1);
    let mut ws = srv.ws("/ws");
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![1, 2, 3]));
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

#[test]
fn echoes_text_binary_and_large_messages() {
    let srv = Server::start(&[]);
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

#[test]
fn fragmented_message_with_interleaved_ping_is_reassembled() {
    let srv = Server::start(&[]);
    let mut s = raw_ws(&srv);
    s.write_all(&client_frame(0x01, b"frag")).unwrap();
    s.write_all(&client_frame(0x89, b"ping!")).unwrap();
    s.write_all(&client_frame(0x00, b"men")).unwrap();
    s.write_all(&client_frame(0x80, b"ted")).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x8A, b"ping!".to_vec())));
    assert_eq!(read_frame(&mut s), Some((0x81, b"fragmented".to_vec())));
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let srv = Server::start(&[]);
    let mut s = raw_ws(&srv);
    s.write_all(&client_frame(0x89, b"are you there")).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x8A, b"are you there".to_vec())));
}

fn close_code_after(srv: &Server, bytes: &[u8]) -> Option<u16> {
    let mut s = raw_ws(srv);
    s.write_all(bytes).unwrap();
    read_until_close(&mut s)
}

#[test]
fn violations_close_with_the_right_code() {
    let srv = Server::start(&["--max-message-size", "1000"]);
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

#[test]
fn replies_before_a_violation_are_sent_before_the_close() {
    let srv = Server::start(&[]);
    let mut s = raw_ws(&srv);
    let mut bytes = client_frame(0x81, b"first");
    bytes.extend(client_frame(0x81 | 0x20, b"bad"));
    s.write_all(&bytes).unwrap();
    assert_eq!(read_frame(&mut s), Some((0x81, b"first".to_vec())));
    assert_eq!(read_until_close(&mut s), Some(1002));
}

#[test]
fn client_close_is_answered_with_the_same_code() {
    let srv = Server::start(&[]);
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
    assert_eq!(srv.await_metric("ws_client_closes_total", "", 1), 1);
}

#[test]
fn server_pings_at_the_interval_and_counts_pongs() {
    let srv = Server::start(&["--ping-interval", "1", "--idle-timeout", "0"]);
    let mut s = raw_ws(&srv);
    let (b0, _) = read_frame(&mut s).expect("a ping");
    assert_eq!(b0, 0x89);
    s.write_all(&client_frame(0x8A, b"")).unwrap();
    assert_eq!(srv.await_metric("ws_pongs_received_total", "", 1), 1);
    assert!(srv.metric("ws_pings_sent_total", "") >= 1);
}

#[test]
fn silent_connection_is_dropped_at_the_idle_timeout() {
    let srv = Server::start(&["--ping-interval", "0", "--idle-timeout", "2"]);
    let mut s = raw_ws(&srv);
    assert_eq!(read_until_close(&mut s), Some(1001));
    assert_eq!(srv.metric("ws_idle_timeout_closes_total", ""), 1);
}

// ---------------------------------------------------------------------------------------
// Life and death
// ---------------------------------------------------------------------------------------

#[test]
fn metrics_equal_what_the_test_did() {
    let srv = Server::start(&["--ping-interval", "0"]);
    let mut clients: Vec<_> = (0..3).map(|_| srv.ws("/ws")).collect();
    for ws in clients.iter_mut() {
        for i in 0..5 {
            ws.send(Message::binary(format!("m{i}").into_bytes()))
                .unwrap();
        }
        for i in 0..5 {
            assert_eq!(
                ws.read().unwrap(),
                Message::binary(format!("m{i}").into_bytes())
            );
        }
    }
    let mut s = srv.raw();
    assert_eq!(
        status_of(&exchange(
            &mut s,
            upgrade_request("/missing", "").as_bytes()
        )),
        404
    );
    drop(s);
    let m = srv.metrics();
    assert_eq!(sum_metric(&m, "ws_upgraded_total", ""), 3);
    assert_eq!(sum_metric(&m, "ws_connections_open", ""), 3);
    assert_eq!(sum_metric(&m, "ws_messages_in_total", ""), 15);
    assert_eq!(sum_metric(&m, "ws_messages_out_total", ""), 15);
    // Each client frame: 2 header + 4 mask + 2 payload; each echo: 2 header + 2 payload.
    assert_eq!(sum_metric(&m, "ws_bytes_in_total", ""), 15 * 8);
    assert_eq!(sum_metric(&m, "ws_bytes_out_total", ""), 15 * 4);
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"404\""),
        1
    );
    assert_eq!(sum_metric(&m, "ws_handshake_rejections_total", ""), 1);
    // 3 clients + the 404 + this scrape.
    assert_eq!(sum_metric(&m, "ws_accepted_total", ""), 5);
    // The 3 connections and the scrape's own task hold state.
    assert!(sum_metric(&m, "ws_connection_state_bytes", "") > 3 * 4096);
    assert!(sum_metric(&m, "process_resident_memory_bytes", "") > 1_000_000);
    assert!(sum_metric(&m, "process_open_fds", "") >= 6);
    drop(clients);
    // Gauges come back once the server has seen the EOFs (of the clients, and of earlier
    // scrapes, whose tasks linger until then): only the scrape itself is left.
    let mut left = (u64::MAX, u64::MAX);
    for _ in 0..100 {
        let m = srv.metrics();
        left = (
            sum_metric(&m, "ws_connections_open", ""),
            sum_metric(&m, "ws_pending_connections", ""),
        );
        if left == (0, 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left, (0, 1));
}

#[test]
fn sigterm_drains_with_1001_and_exits_zero() {
    let mut srv = Server::start(&["--drain-timeout", "5"]);
    let mut clients: Vec<_> = (0..4).map(|_| raw_ws(&srv)).collect();
    for c in clients.iter_mut() {
        c.write_all(&client_frame(0x81, b"x")).unwrap();
        assert_eq!(read_frame(c), Some((0x81, b"x".to_vec())));
    }
    srv.signal(libc::SIGTERM);
    for c in clients.iter_mut() {
        assert_eq!(read_until_close(c), Some(1001));
        c.write_all(&client_frame(0x88, &1001u16.to_be_bytes()))
            .unwrap();
    }
    assert_eq!(srv.wait_exit(), Some(0));
    let log = srv.log.lock().unwrap().clone();
    assert!(
        log.contains(
            "ws-server-tokio: stopped; 4 connection(s) open at shutdown got Close 1001, 0 cut"
        ),
        "{log}"
    );
    assert!(log.contains("accepted in all"), "{log}");
}

#[test]
fn sigterm_cuts_clients_that_never_answer_at_the_drain_deadline() {
    let mut srv = Server::start(&["--drain-timeout", "1"]);
    let mut silent = raw_ws(&srv);
    srv.signal(libc::SIGTERM);
    assert_eq!(read_until_close(&mut silent), Some(1001));
    assert_eq!(srv.wait_exit(), Some(0));
    let log = srv.log.lock().unwrap().clone();
    assert!(log.contains("1 cut at the drain deadline"), "{log}");
}

#[test]
fn second_signal_exits_at_once() {
    let mut srv = Server::start(&["--drain-timeout", "30"]);
    let mut silent = raw_ws(&srv);
    srv.signal(libc::SIGINT);
    assert_eq!(read_until_close(&mut silent), Some(1001));
    srv.signal(libc::SIGINT);
    assert_eq!(srv.wait_exit(), Some(1));
}

#[test]
fn accept_recovers_after_descriptor_exhaustion() {
    // Hard limit 64 for the child: a few dozen connections exhaust it.
    let srv = Server::start_with(&["--ping-interval", "0"], |cmd| {
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let r = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 64,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let mut socks = Vec::new();
    for _ in 0..60 {
        let mut s = srv.raw();
        s.write_all(upgrade_request("/ws", "").as_bytes()).unwrap();
        socks.push(s);
    }
    let mut upgraded = Vec::new();
    let mut pending = Vec::new();
    for mut s in socks {
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let head = read_head(&mut s);
        if head.is_empty() {
            pending.push(s);
        } else {
            assert_eq!(status_of(&head), 101, "{head}");
            upgraded.push(s);
        }
    }
    assert!(!upgraded.is_empty(), "nothing upgraded");
    assert!(
        !pending.is_empty(),
        "the descriptor limit was never reached"
    );
    for s in upgraded.iter_mut() {
        s.write_all(&client_frame(0x82, b"still here")).unwrap();
        assert_eq!(read_frame(s), Some((0x82, b"still here".to_vec())));
    }
    drop(upgraded);
    for s in pending.iter_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(status_of(&read_head(s)), 101);
        s.write_all(&client_frame(0x81, b"late")).unwrap();
        assert_eq!(read_frame(s), Some((0x81, b"late".to_vec())));
    }
    drop(pending);
    let mut emfile = 0;
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(srv.addr) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let head = exchange(&mut s, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
            if status_of(&head) == 200 {
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                emfile = sum_metric(&body, "ws_accept_errors_total", "errno=\"EMFILE\"");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(emfile >= 1, "EMFILE was not counted");
}

#[test]
fn refuses_a_port_held_by_another_process() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let first = Server::start(&["--listen", &listen]);
    let out = Command::new(server_bin())
        .args(["--listen", &listen, "--cores", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use by pid"), "{err}");
    assert!(err.contains(&first.child.id().to_string()), "{err}");
}

#[test]
fn bad_command_lines_exit_2_with_a_message() {
    for (args, needle) in [
        (vec!["--bogus"], "--bogus"),
        (vec!["--listen", "nonsense"], "invalid value"),
        (vec!["--cores", "9999"], "not available"),
        (vec!["--cores", "3-1"], "backwards"),
        (vec!["--max-message-size", "0"], "max-message-size"),
        (vec!["--max-conns", "0"], "max-conns"),
        (vec!["--slow-consumer", "maybe"], "slow-consumer"),
        (vec!["--send-queue-bytes", "lots"], "send-queue-bytes"),
    ] {
        let out = Command::new(server_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let help = Command::new(server_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--cores",
        "--max-conns",
        "--max-message-size",
        "--ping-interval",
        "--idle-timeout",
        "--handshake-timeout",
        "--allow-origin",
        "--drain-timeout",
        "--backlog",
        "--send-queue-bytes",
        "--slow-consumer",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    assert!(text.contains("ws-server-tokio"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Broadcast, push, slow consumers
// ---------------------------------------------------------------------------------------

#[test]
fn broadcast_reaches_every_member_of_the_room_once_and_in_order() {
    let srv = Server::start(&["--ping-interval", "0"]);
    const K: usize = 20;
    let mut a1 = srv.ws("/broadcast?room=a");
    let mut a2 = srv.ws("/broadcast?room=a");
    let mut a3 = srv.ws("/broadcast?room=a&echo=false");
    let mut listener = srv.ws("/broadcast?room=a");
    let mut other = srv.ws("/broadcast?room=b");
    for j in 0..K {
        for (name, ws) in [("a1", &mut a1), ("a2", &mut a2), ("a3", &mut a3)] {
            let m = format!("{name}:{j}");
            if j.is_multiple_of(2) {
                ws.send(Message::text(m)).unwrap();
            } else {
                ws.send(Message::binary(m.into_bytes())).unwrap();
            }
        }
    }
    // Each receiver: every message of every sender exactly once, each sender in order, and
    // the opcode it was sent with.
    let check = |ws: &mut tungstenite::WebSocket<TcpStream>, senders: &[&str]| {
        let mut next = vec![0usize; senders.len()];
        for _ in 0..senders.len() * K {
            let m = next_data(ws);
            let t = text_of(&m);
            let (who, j) = t.split_once(':').expect("sender:index");
            let i = senders
                .iter()
                .position(|s| *s == who)
                .unwrap_or_else(|| panic!("unexpected sender {who}"));
            let j: usize = j.parse().unwrap();
            assert_eq!(j, next[i], "order from {who}");
            assert_eq!(m.is_text(), j.is_multiple_of(2), "opcode of {t}");
            next[i] += 1;
        }
    };
    check(&mut a1, &["a1", "a2", "a3"]);
    check(&mut a2, &["a1", "a2", "a3"]);
    check(&mut a3, &["a1", "a2"]);
    check(&mut listener, &["a1", "a2", "a3"]);
    // Room b got nothing of room a: the first message it sees is its own.
    other.send(Message::text("b:0")).unwrap();
    assert_eq!(text_of(&next_data(&mut other)), "b:0");
    let m = srv.metrics();
    assert_eq!(
        sum_metric(&m, "ws_broadcasts_in_total", ""),
        3 * K as u64 + 1
    );
    // a1, a2, listener: 3K each; a3: 2K; b: 1.
    assert_eq!(sum_metric(&m, "ws_deliveries_total", ""), 11 * K as u64 + 1);
    assert_eq!(
        sum_metric(&m, "ws_messages_out_total", ""),
        11 * K as u64 + 1
    );
}

#[test]
fn server_side_broadcast_and_push() {
    let srv = Server::start(&["--ping-interval", "0", "--max-message-size", "1000"]);
    let mut r1 = srv.ws("/broadcast?room=news%20room&user=alice");
    let mut r2 = srv.ws("/broadcast?room=news%20room");
    let mut e1 = srv.ws("/ws?user=alice");
    let mut e2 = srv.ws("/ws?user=bob");

    let (status, body) = srv.post("/broadcast/news%20room", b"headline");
    assert_eq!((status, body.as_str()), (200, "2\n"));
    for ws in [&mut r1, &mut r2] {
        assert_eq!(next_data(ws), Message::binary(b"headline".to_vec()));
    }
    let (status, body) = srv.post("/broadcast/empty", b"nobody");
    assert_eq!((status, body.as_str()), (200, "0\n"));

    let (status, body) = srv.post("/push/alice", b"for alice");
    assert_eq!((status, body.as_str()), (200, "2\n"));
    for ws in [&mut r1, &mut e1] {
        assert_eq!(next_data(ws), Message::binary(b"for alice".to_vec()));
    }
    let (status, body) = srv.post("/push/carol", b"nobody");
    assert_eq!((status, body.as_str()), (404, "0\n"));
    let (status, _) = srv.post("/push/bob", &[b'x'; 1001]);
    assert_eq!(status, 413);
    // A body split over several packets, after the head.
    let mut s = srv.raw();
    s.write_all(b"POST /push/bob HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"world").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(out.ends_with("\r\n\r\n1\n"), "{out}");
    assert_eq!(next_data(&mut e2), Message::binary(b"helloworld".to_vec()));
    // Refused as ws-server refuses them: the wrong method, an empty name, no length.
    let (status, _) = srv.http(b"GET /push/bob HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _) = srv.post("/push/", b"x");
    assert_eq!(status, 404);
    let (status, _) = srv.http(b"POST /broadcast/news HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 400);
    // Pushed and broadcast messages do not disturb echo.
    e1.send(Message::text("echo")).unwrap();
    assert_eq!(next_data(&mut e1), Message::text("echo"));

    let m = srv.metrics();
    assert_eq!(sum_metric(&m, "ws_push_hits_total", ""), 2);
    assert_eq!(sum_metric(&m, "ws_push_misses_total", ""), 1);
    assert_eq!(sum_metric(&m, "ws_broadcasts_in_total", ""), 2);
    assert_eq!(sum_metric(&m, "ws_deliveries_total", ""), 5);
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"413\""),
        1
    );
    assert_eq!(
        sum_metric(&m, "ws_handshake_rejections_total", "status=\"405\""),
        1
    );
}

/// A tungstenite client whose receive buffer is tiny, so the server's queue for it fills
/// after little data once it stops reading.
fn stingy_client(srv: &Server, path: &str) -> tungstenite::WebSocket<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&srv.addr.into()).unwrap();
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, resp) = tungstenite::client(srv.url(path), tcp).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// Publishes numbered 8 KiB messages into room `slow` until `done` says so (bounded),
/// while `reader` keeps up; returns how many were sent. Checks `reader` got each in order.
fn flood(
    srv: &Server,
    publisher: &mut tungstenite::WebSocket<TcpStream>,
    reader: &mut tungstenite::WebSocket<TcpStream>,
    done: impl Fn(&Server) -> bool,
) -> usize {
    let pad = "p".repeat(8000);
    for i in 0..3000 {
        publisher
            .send(Message::text(format!("{i:06}{pad}")))
            .unwrap();
        let got = text_of(&next_data(reader));
        assert_eq!(&got[..6], format!("{i:06}"), "the reader lost its place");
        if i % 25 == 24 && done(srv) {
            return i + 1;
        }
    }
    panic!("the slow consumer was never detected");
}

#[test]
fn slow_consumer_is_closed_with_1008_while_others_keep_receiving() {
    let srv = Server::start(&[
        "--ping-interval",
        "0",
        "--max-message-size",
        "8192",
        "--send-queue-bytes",
        "65536",
    ]);
    let mut slow = stingy_client(&srv, "/broadcast?room=slow");
    let mut reader = srv.ws("/broadcast?room=slow");
    let mut publisher = srv.ws("/broadcast?room=slow&echo=false");
    let sent = flood(&srv, &mut publisher, &mut reader, |s| {
        s.metric("ws_slow_consumer_closes_total", "") >= 1
    });
    // The others still get everything after the slow one is gone.
    publisher.send(Message::text("after")).unwrap();
    assert_eq!(text_of(&next_data(&mut reader)), "after");
    // The slow client finds, after the messages that reached it, a Close 1008 (if it
    // catches the server's last attempt to send it) or the end of the connection.
    let mut seen = 0;
    let end = loop {
        match slow.read() {
            Ok(Message::Text(t)) => {
                assert_eq!(
                    &t.as_str()[..6],
                    format!("{seen:06}"),
                    "gap before the close"
                );
                seen += 1;
            }
            Ok(Message::Close(cf)) => break cf.map(|c| u16::from(c.code)),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    assert!(seen < sent, "the slow client got everything");
    assert!(matches!(end, Some(1008) | None), "{end:?}");
    let m = srv.metrics();
    assert_eq!(sum_metric(&m, "ws_slow_consumer_closes_total", ""), 1);
    assert_eq!(
        sum_metric(&m, "ws_protocol_closes_total", "code=\"1008\""),
        1
    );
    assert_eq!(sum_metric(&m, "ws_slow_consumer_drops_total", ""), 0);
}

#[test]
fn slow_consumer_drop_policy_skips_messages_and_keeps_the_connection() {
    let srv = Server::start(&[
        "--ping-interval",
        "0",
        "--max-message-size",
        "8192",
        "--send-queue-bytes",
        "65536",
        "--slow-consumer",
        "drop",
    ]);
    let mut slow = stingy_client(&srv, "/broadcast?room=slow");
    let mut reader = srv.ws("/broadcast?room=slow");
    let mut publisher = srv.ws("/broadcast?room=slow&echo=false");
    let sent = flood(&srv, &mut publisher, &mut reader, |s| {
        s.metric("ws_slow_consumer_drops_total", "") >= 1
    });
    publisher.send(Message::text("999999 last")).unwrap();
    assert_eq!(text_of(&next_data(&mut reader)), "999999 last");
    // The slow client, reading at last, gets an ordered subset ending with "last".
    let mut prev: Option<u32> = None;
    let mut got = 0;
    loop {
        let t = text_of(&next_data(&mut slow));
        let i: u32 = t[..6].parse().unwrap();
        if let Some(p) = prev {
            assert!(i > p, "out of order: {i} after {p}");
        }
        prev = Some(i);
        if i == 999_999 {
            break;
        }
        got += 1;
    }
    assert!(got < sent, "nothing was dropped");
    let m = srv.metrics();
    assert!(sum_metric(&m, "ws_slow_consumer_drops_total", "") >= 1);
    assert_eq!(sum_metric(&m, "ws_slow_consumer_closes_total", ""), 0);
    // Still open: it can still publish.
    slow.send(Message::text("000000 from slow")).unwrap();
    assert_eq!(text_of(&next_data(&mut reader)), "000000 from slow");
}

#[test]
fn echo_client_that_never_reads_is_closed_as_slow_consumer() {
    let srv = Server::start(&[
        "--ping-interval",
        "0",
        "--max-message-size",
        "8192",
        "--send-queue-bytes",
        "65536",
    ]);
    let mut slow = stingy_client(&srv, "/ws");
    let mut bystander = srv.ws("/ws");
    let pad = vec![7u8; 8000];
    let mut detected = false;
    for i in 0..3000 {
        // The server closes at some point; writes may then fail.
        if slow.send(Message::binary(pad.clone())).is_err() {
            break;
        }
        if i % 25 == 24 && srv.metric("ws_slow_consumer_closes_total", "") >= 1 {
            detected = true;
            break;
        }
    }
    assert!(
        detected || srv.await_metric("ws_slow_consumer_closes_total", "", 1) == 1,
        "never detected"
    );
    bystander.send(Message::text("fine")).unwrap();
    assert_eq!(next_data(&mut bystander), Message::text("fine"));
}
