//! wss:// on both servers, judged by independent peers: Python's ssl (OpenSSL) with the
//! `websockets` package (tests/peers/wss_client.py), and `openssl s_client`. Certificates
//! are made per test (rcgen); nothing secret is committed. No timed assertions: every wait
//! is bounded and only avoids hanging.

#[allow(dead_code)] // shared with the loadgen tests, which use every field
#[path = "../../loadgen/tests/common/certs.rs"]
mod certs;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use certs::Certs;
use support::*;

both_servers!(
    an_independent_client_speaks_wss,
    stalled_plain_and_untrusting_clients_are_counted,
    bad_certificate_files_are_named,
);

fn certs() -> Certs {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Certs::new(&std::env::temp_dir().join(format!("ws-server-tls-{}-{n}", std::process::id())))
}

fn p(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn start(bin: &str, c: &Certs, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert",
        p(&c.server_cert),
        "--tls-key",
        p(&c.server_key),
        "--ping-interval",
        "0",
    ];
    args.extend_from_slice(extra);
    Server::start(bin, &args)
}

fn peer(srv: &Server, c: &Certs, mode: &str) -> std::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/wss_client.py");
    Command::new("python3")
        .args([
            script,
            &srv.addr.port().to_string(),
            p(&c.ca),
            p(&c.other_ca),
            mode,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (with `pip install websockets`) runs the test peer")
}

/// Polls /metrics (bounded) until `name{label}` reaches `want`; returns the last value.
fn metric_reaches(srv: &Server, name: &str, label: &str, want: u64) -> u64 {
    let mut v = 0;
    for _ in 0..(WAIT.as_millis() / 100) {
        v = srv.metric(name, label);
        if v >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    v
}

fn an_independent_client_speaks_wss(bin: &str) {
    let c = certs();
    let srv = start(bin, &c, &["--max-message-size", "4096"]);
    let mut child = peer(&srv, &c, "main");
    let mut lines = BufReader::new(child.stdout.take().expect("peer stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), "echo 1.3 TLSv1.3");
    assert_eq!(next(), "echo 1.2 TLSv1.2");
    assert_eq!(next(), "broadcast to the room to the room");
    assert_eq!(next(), "too big 1009", "close codes are the same over wss");
    assert_eq!(next(), "normal 1000");
    assert_eq!(next(), "split ok", "records split into one-byte reads");
    assert_eq!(
        next(),
        "resume 1.3 False True",
        "session ticket resumes (TLS 1.3)"
    );
    assert_eq!(
        next(),
        "resume 1.2 False True",
        "session ticket resumes (TLS 1.2)"
    );
    assert_eq!(next(), "untrusted unable_to_get_local_issuer_certificate");
    assert!(next().starts_with("misnamed Hostname_mismatch"));
    assert_eq!(next(), "ready");
    let push = format!(
        "POST /push/dave HTTP/1.1\r\n{}Content-Length: 7\r\n\r\nhi dave",
        srv.admin_headers()
    );
    let out = srv.admin_request(&push);
    assert_eq!(
        out.rsplit("\r\n\r\n").next().map(str::trim),
        Some("1"),
        "{out}"
    );
    assert_eq!(next(), "push b'hi dave'", "push reaches a wss connection");
    assert!(child.wait().expect("peer exit").success());
    // The client that did not trust our CA and the one that asked for another name both
    // said so in an alert, and each is counted under its reason.
    assert_eq!(srv.metric("ws_tls_failures_total", "alert_unknown_ca"), 1);
    assert_eq!(
        srv.metric("ws_tls_failures_total", "alert_bad_certificate"),
        1
    );
    assert_eq!(srv.metric("ws_tls_handshakes_total", "resumed"), 2);
    assert!(srv.metric("ws_tls_handshakes_total", "full") >= 9);
}

fn stalled_plain_and_untrusting_clients_are_counted(bin: &str) {
    let c = certs();
    let srv = start(bin, &c, &["--handshake-timeout", "1"]);
    // Half a ClientHello, then silence: closed at the handshake deadline, counted.
    let mut child = peer(&srv, &c, "stall");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("peer stdout"))
        .read_line(&mut line)
        .expect("peer output");
    assert_eq!(line.trim(), "stall closed");
    assert!(child.wait().expect("peer exit").success());
    assert_eq!(
        metric_reaches(&srv, "ws_tls_failures_total", "\"timeout\"", 1),
        1
    );

    // Plain HTTP on the wss port: not TLS, refused, counted.
    let mut s = srv.raw();
    s.write_all(upgrade_request("/ws", "").as_bytes())
        .expect("write");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    assert!(
        !String::from_utf8_lossy(&sink).contains("101"),
        "no upgrade without TLS"
    );
    assert_eq!(
        metric_reaches(&srv, "ws_tls_failures_total", "not_tls", 1),
        1
    );

    // openssl s_client: the right CA verifies; another CA fails with a verify error and
    // the server counts the client's unknown_ca alert.
    let s_client = |ca: &str| {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &srv.addr.to_string(),
                "-servername",
                "localhost",
                "-CAfile",
                ca,
                "-verify_return_error",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("openssl runs")
    };
    let ok = s_client(p(&c.ca));
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    let bad = s_client(p(&c.other_ca));
    assert!(!bad.status.success());
    let text =
        String::from_utf8_lossy(&bad.stderr).to_string() + &String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("verify error"), "{text}");
    assert_eq!(
        metric_reaches(&srv, "ws_tls_failures_total", "alert_unknown_ca", 1),
        1
    );
}

fn bad_certificate_files_are_named(bin: &str) {
    let c = certs();
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("server runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&[
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        p(&c.server_key),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-cert /nonexistent.pem"), "{err}");
    // A key given as the certificate: no CERTIFICATE block.
    let (code, err) = run(&[
        "--tls-cert",
        p(&c.server_key),
        "--tls-key",
        p(&c.server_key),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-cert"), "{err}");
    let (code, err) = run(&[
        "--tls-cert",
        p(&c.server_cert),
        "--tls-key",
        p(&c.server_cert),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-key"), "{err}");
    // A key that is not the certificate's.
    let (code, err) = run(&[
        "--tls-cert",
        p(&c.server_cert),
        "--tls-key",
        p(&c.client_key),
    ]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--tls-cert", p(&c.server_cert)]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-key"), "{err}");
}
