//! ws-loadgen over wss:// against an independent TLS WebSocket server (Python `websockets`
//! on the standard library's ssl, i.e. OpenSSL): echo, certificate checks and their failure
//! classes, client certificates, session resumption, a handshake that never finishes.
//! Certificates are made for each test (rcgen). No timed assertions.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::certs::Certs;
use common::{run_loadgen, temp_path, PyPeer};

/// The wss echo peer (tests/peers/wss_echo.py) with the server certificate.
struct Peer(PyPeer);

impl Peer {
    fn start(certs: &Certs, extra: &[&str]) -> Self {
        let mut args = vec![
            "--cert",
            s(&certs.server_cert),
            "--key",
            s(&certs.server_key),
        ];
        args.extend_from_slice(extra);
        Self(PyPeer::start("wss_echo.py", &args))
    }

    fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/ws", self.0.port)
    }
}

fn certs() -> Certs {
    Certs::new(&temp_path("certs"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn echo_over_wss_with_its_own_ca() {
    let c = certs();
    let peer = Peer::start(&c, &[]);
    let r = run_loadgen(
        &peer.url("localhost"),
        &[
            "-c",
            "20",
            "--rate",
            "100",
            "-d",
            "2s",
            "--cores",
            "0",
            "--ca",
            s(&c.ca),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/connections/established"), 20, "{}", r.explain());
    let (sent, recv) = (r.u("/messages/sent"), r.u("/messages/received"));
    assert!(recv > 50, "{}", r.explain());
    assert_eq!(sent, recv + r.u("/messages/lost"), "{}", r.explain());
    assert_eq!(r.u("/messages/unexpected"), 0);
    assert_eq!(r.u("/latency/tls/count"), 20, "a tls row per connection");
    assert_eq!(r.u("/latency/handshake/count"), 20);
    assert_eq!(r.u("/tls/handshakes_full"), 20);
    assert_eq!(r.j()["tls"]["insecure"], false);
    assert!(r.stdout.contains("  tls "), "{}", r.stdout);
}

#[test]
fn untrusted_and_misnamed_certificates_are_classified() {
    let c = certs();
    let peer = Peer::start(&c, &[]);
    let base = ["-c", "3", "--rate", "10", "-d", "1s", "--cores", "0"];
    let fail = |extra: &[&str], class: &str| {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--reconnect-max-tries", "0"]);
        args.extend_from_slice(extra);
        let r = run_loadgen(&peer.url("localhost"), &args);
        assert_eq!(r.code, 2, "nothing established: {}", r.explain());
        assert_eq!(r.u(&format!("/failures/{class}")), 3, "{}", r.explain());
        assert!(r.stderr.contains(class), "{}", r.stderr);
    };
    fail(&["--ca", s(&c.other_ca)], "tls_unknown_issuer");
    fail(
        &["--ca", s(&c.ca), "--sni", "elsewhere.example"],
        "tls_name_mismatch",
    );
    // --insecure connects whatever the certificate, and the report says so.
    let mut args = base.to_vec();
    args.extend_from_slice(&["--insecure", "--sni", "elsewhere.example"]);
    let r = run_loadgen(&peer.url("127.0.0.1"), &args);
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/connections/established"), 3);
    assert_eq!(r.j()["tls"]["insecure"], true);
    assert!(r.stdout.contains("INSECURE"), "{}", r.stdout);
}

#[test]
fn client_certificates_are_presented_when_asked() {
    let c = certs();
    let peer = Peer::start(&c, &["--client-ca", s(&c.ca)]);
    let url = peer.url("localhost");
    let base = [
        "-c",
        "3",
        "--rate",
        "10",
        "-d",
        "1s",
        "--cores",
        "0",
        "--ca",
        s(&c.ca),
    ];
    let mut without = base.to_vec();
    without.extend_from_slice(&["--reconnect-max-tries", "0"]);
    let r = run_loadgen(&url, &without);
    assert_eq!(r.code, 2, "{}", r.explain());
    // In TLS 1.3 the client is done before the server has checked its (missing)
    // certificate, so the server's alert races our upgrade request: it arrives as the
    // alert, or is lost to the reset our request provokes on the closed socket.
    assert_eq!(r.u("/connections/established"), 0, "{}", r.explain());
    assert_eq!(r.u("/connections/failed"), 3, "{}", r.explain());
    let failures = r.j()["failures"].as_object().cloned().unwrap_or_default();
    assert!(
        failures.keys().all(|k| k.starts_with("tls_alert_")
            || ["ECONNRESET", "closed_during_handshake", "EPIPE"].contains(&k.as_str())),
        "{failures:?}"
    );
    let mut with = base.to_vec();
    with.extend_from_slice(&[
        "--client-cert",
        s(&c.client_cert),
        "--client-key",
        s(&c.client_key),
    ]);
    let r = run_loadgen(&url, &with);
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/connections/established"), 3);
    assert_eq!(r.j()["tls"]["client_cert"], true);
}

#[test]
fn reconnects_resume_their_sessions_with_tls_resume() {
    let c = certs();
    // The server closes every connection after 0.4 s; each slot reconnects.
    let peer = Peer::start(&c, &["--close-after", "0.4"]);
    let r = run_loadgen(
        &peer.url("localhost"),
        &[
            "-c",
            "4",
            "--rate",
            "20",
            "-d",
            "3s",
            "--cores",
            "0",
            "--ca",
            s(&c.ca),
            "--tls-resume",
            "--reconnect-max-tries",
            "50",
        ],
    );
    let full = r.u("/tls/handshakes_full");
    let resumed = r.u("/tls/handshakes_resumed");
    assert!(r.u("/connections/reconnects") >= 4, "{}", r.explain());
    assert!(
        resumed >= 1,
        "full {full}, resumed {resumed}: {}",
        r.explain()
    );
    assert_eq!(full + resumed, r.u("/latency/tls/count"));
    assert_eq!(full + resumed, r.u("/connections/established"));
}

#[test]
fn a_server_that_never_answers_the_client_hello_is_a_tls_handshake_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accepts and holds the sockets, reads nothing, says nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
            if held.len() >= 2 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(10));
    });
    let r = run_loadgen(
        &format!("wss://127.0.0.1:{port}/ws"),
        &[
            "-c",
            "2",
            "-d",
            "2s",
            "--cores",
            "0",
            "--insecure",
            "--handshake-timeout",
            "300ms",
            "--reconnect-max-tries",
            "0",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.explain());
    assert_eq!(r.u("/failures/tls_handshake_timeout"), 2, "{}", r.explain());
}

#[test]
fn tls_options_without_wss_and_bad_files_exit_2_before_connecting() {
    let c = certs();
    for (url, extra, says) in [
        (
            "ws://127.0.0.1:9/ws",
            vec!["--insecure"],
            "--insecure needs a wss:// URL",
        ),
        (
            "wss://127.0.0.1:9/ws",
            vec!["--ca", "/nonexistent.pem"],
            "--ca /nonexistent.pem",
        ),
        (
            "wss://127.0.0.1:9/ws",
            vec!["--ca", s(&c.server_key)],
            "no PEM certificate",
        ),
        (
            "wss://127.0.0.1:9/ws",
            vec!["--client-cert", s(&c.client_cert)],
            "--client-cert and --client-key go together",
        ),
    ] {
        let mut args = vec!["-d", "1s"];
        args.extend_from_slice(&extra);
        let r = run_loadgen(url, &args);
        assert_eq!(r.code, 2, "{url} {extra:?}: {}", r.explain());
        assert!(r.stderr.contains(says), "{extra:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "no run, no report: {}", r.stdout);
    }
}

#[test]
fn doctor_measures_what_a_handshake_costs() {
    let c = certs();
    let peer = Peer::start(&c, &[]);
    let json = temp_path("doctor-tls.json");
    let out = Command::new(common::bin())
        .args([
            "doctor",
            &peer.url("localhost"),
            "-c",
            "1000",
            "--tls-probe",
            "20",
        ])
        .args([
            "--ca",
            s(&c.ca),
            "--metrics-url",
            "none",
            "--json",
            s(&json),
        ])
        .output()
        .expect("doctor runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
    assert!(
        text.contains("TLS full     20 handshakes measured"),
        "{text}"
    );
    let v = common::read_json(&json);
    assert_eq!(v["tls"]["full"]["handshakes"], 20, "{v}");
    assert!(
        v["tls"]["full"]["client_cpu_us"].as_f64().unwrap_or(0.0) > 0.0,
        "{v}"
    );
    // The Python peer is a local process: its CPU is read too.
    assert!(v["tls"]["full"]["server_cpu_us"].is_number(), "{v}");
}

/// ws-loadgen over wss against the project's own servers (ws-server, and the tokio baseline
/// when it is built next to it): the counts agree with the server's /metrics, and a client
/// that does not trust the server is refused on both sides with the right classes.
#[test]
fn wss_against_our_servers_agrees_with_their_metrics() {
    let _g = common::serial();
    let c = certs();
    let mut bins = vec![common::server_bin()];
    let tokio = common::server_bin().with_file_name("ws-server-tokio");
    if tokio.is_file() {
        bins.push(tokio);
    } else {
        eprintln!(
            "note: no ws-server-tokio next to {:?}: only ws-server is checked",
            bins[0]
        );
    }
    for bin in bins {
        let srv = common::WsServer::start_bin(
            &bin,
            &[
                "--tls-cert",
                s(&c.server_cert),
                "--tls-key",
                s(&c.server_key),
                "--ping-interval",
                "0",
                "--cores",
                "0",
            ],
        );
        let port = srv.addr.rsplit(':').next().expect("port").to_string();
        let url = format!("wss://localhost:{port}/ws");
        let base = ["-c", "20", "--rate", "200", "-d", "1s", "--cores", "1"];
        let mut args = base.to_vec();
        args.extend_from_slice(&["--ca", s(&c.ca)]);
        let r = run_loadgen(&url, &args);
        assert_eq!(r.code, 0, "{bin:?}: {}", r.explain());
        assert_eq!(r.u("/connections/established"), 20, "{}", r.explain());
        assert_eq!(r.u("/tls/handshakes_full"), 20);
        assert_eq!(srv.metric("ws_tls_handshakes_total"), 20, "{bin:?}");
        assert_eq!(
            srv.metric("ws_messages_in_total"),
            r.u("/messages/sent"),
            "{bin:?}"
        );
        assert_eq!(r.u("/messages/lost"), 0, "{}", r.explain());

        let mut args = base.to_vec();
        args.extend_from_slice(&["--ca", s(&c.other_ca), "--reconnect-max-tries", "0"]);
        let r = run_loadgen(&url, &args);
        assert_eq!(r.code, 2, "nothing established: {}", r.explain());
        assert_eq!(r.u("/failures/tls_unknown_issuer"), 20, "{}", r.explain());
        // The server heard why, by the client's alert.
        assert_eq!(srv.metric("ws_tls_failures_total"), 20, "{bin:?}");
    }
}
