//! Life and death of the server process: metrics that match what was done, SIGTERM drain,
//! descriptor exhaustion and recovery, the stale-server check, bad command lines.

mod support;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;
use tungstenite::Message;

fn metrics_equal_what_the_test_did(bin: &str) {
    let srv = Server::start(bin, &["--ping-interval", "0"]);
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
    assert!(sum_metric(&m, "process_resident_memory_bytes", "") > 1_000_000);
    assert!(sum_metric(&m, "process_open_fds", "") >= 6);
}

fn sigterm_drains_with_1001_and_exits_zero(bin: &str) {
    let mut srv = Server::start(bin, &["--drain-timeout", "5"]);
    let mut clients: Vec<_> = (0..4).map(|_| raw_ws(&srv)).collect();
    // Prove they are live before the signal.
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
    assert!(
        srv.stderr_contains("4 connection(s) open at shutdown got Close 1001, 0 cut"),
        "{}",
        srv.stderr.lock().unwrap()
    );
}

fn sigterm_cuts_clients_that_never_answer_at_the_drain_deadline(bin: &str) {
    let mut srv = Server::start(bin, &["--drain-timeout", "1"]);
    let mut silent = raw_ws(&srv);
    srv.signal(libc::SIGTERM);
    assert_eq!(read_until_close(&mut silent), Some(1001));
    assert_eq!(srv.wait_exit(), Some(0));
    assert!(
        srv.stderr_contains("1 cut at the drain deadline"),
        "{}",
        srv.stderr.lock().unwrap()
    );
}

fn accept_recovers_after_descriptor_exhaustion(bin: &str) {
    // Hard limit 64 for the child: a few dozen connections exhaust it.
    let srv = Server::start_with(bin, &["--ping-interval", "0"], |cmd| {
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
    // Open more clients than the server has descriptors for; all reach the kernel backlog.
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
    // Existing connections are still served while accept fails.
    for s in upgraded.iter_mut() {
        s.write_all(&client_frame(0x82, b"still here")).unwrap();
        assert_eq!(read_frame(s), Some((0x82, b"still here".to_vec())));
    }
    // Free the descriptors: every waiting client is then accepted and upgraded.
    drop(upgraded);
    for s in pending.iter_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(status_of(&read_head(s)), 101);
        s.write_all(&client_frame(0x81, b"late")).unwrap();
        assert_eq!(read_frame(s), Some((0x81, b"late".to_vec())));
    }
    drop(pending);
    // Scrape (retry while the server still sees the closes and frees descriptors).
    let mut emfile = 0;
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(srv.admin.unwrap()) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let req = format!("GET /metrics HTTP/1.1\r\n{}\r\n", srv.admin_headers());
            let head = exchange(&mut s, req.as_bytes());
            if status_of(&head) == 200 {
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut body);
                emfile = sum_metric(&body, "ws_accept_errors_total", "errno=\"EMFILE\"");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(emfile >= 1, "EMFILE was not counted");
}

fn refuses_a_port_held_by_another_process(bin: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let first = Server::start(bin, &["--listen", &listen]);
    let out = Command::new(bin)
        .args(["--listen", &listen, "--cores", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use by pid"), "{err}");
    assert!(err.contains(&first.child.id().to_string()), "{err}");
}

fn bad_command_lines_exit_2_with_a_message(bin: &str) {
    for (args, needle) in [
        (vec!["--bogus"], "--bogus"),
        (vec!["--listen", "nonsense"], "invalid value"),
        (vec!["--cores", "9999"], "not available"),
        (vec!["--cores", "3-1"], "backwards"),
        (vec!["--max-message-size", "0"], "max-message-size"),
        (vec!["--max-conns", "0"], "max-conns"),
    ] {
        let out = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let help = Command::new(bin).arg("--help").output().unwrap();
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
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

fn second_signal_exits_at_once(bin: &str) {
    let mut srv = Server::start(bin, &["--drain-timeout", "30"]);
    let mut silent = raw_ws(&srv);
    srv.signal(libc::SIGINT);
    assert_eq!(read_until_close(&mut silent), Some(1001));
    srv.signal(libc::SIGINT);
    assert_eq!(srv.wait_exit(), Some(1));
}

both_servers!(
    second_signal_exits_at_once,
    metrics_equal_what_the_test_did,
    sigterm_drains_with_1001_and_exits_zero,
    sigterm_cuts_clients_that_never_answer_at_the_drain_deadline,
    accept_recovers_after_descriptor_exhaustion,
    refuses_a_port_held_by_another_process,
    bad_command_lines_exit_2_with_a_message,
);
