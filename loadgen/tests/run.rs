//! The real `ws-loadgen` binary against an independent tungstenite server (not our code).
//! No timed assertions: only counts and classes, which do not depend on machine speed.

mod common;

use std::time::Duration;

use common::{closed_port, run_loadgen, Behaviour, TestServer};

#[test]
fn echo_open_loop_accounts_for_every_message() {
    let s = TestServer::start(Behaviour::default());
    let r = run_loadgen(
        &s.url(),
        &["-c", "40", "--rate", "400", "-d", "2s", "--cores", "0"],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let est = r.u("/connections/established");
    assert_eq!(est, 40, "{}", r.explain());
    assert_eq!(
        est,
        s.seen.upgraded.load(std::sync::atomic::Ordering::Relaxed)
    );
    let sent = r.u("/messages/sent");
    let recv = r.u("/messages/received");
    let lost = r.u("/messages/lost");
    assert!(recv > 100, "{}", r.explain());
    assert_eq!(sent, recv + lost, "{}", r.explain());
    assert_eq!(lost, 0, "{}", r.explain());
    assert_eq!(r.u("/messages/unexpected"), 0);
    assert_eq!(r.u("/latency/rtt/count"), recv);
    assert_eq!(r.u("/latency/connect/count"), 40);
    assert_eq!(r.u("/latency/handshake/count"), 40);
    assert_eq!(r.u("/connections/failed"), 0);
    assert_eq!(r.u("/connections/open_at_end"), 40);
    assert_eq!(r.u("/totals/clean_closes"), 40, "{}", r.explain());
    assert!(r.stdout.contains("Latency (ms)"), "{}", r.stdout);
}

/// Latency comes from the kernel's receive timestamps, converted to the monotonic clock of
/// the stamps: a server that holds every message 30 ms can never be measured faster, with
/// replies read once per tick (the default) or as they arrive (`--tick 0`). Only a floor is
/// asserted, which no machine speed can break.
#[test]
fn rtt_from_receive_timestamps_is_never_below_the_servers_delay() {
    let s = TestServer::start(Behaviour {
        echo_delay: Some(Duration::from_millis(30)),
        ..Behaviour::default()
    });
    for tick in ["1ms", "0", "20ms"] {
        let r = run_loadgen(
            &s.url(),
            &[
                "-c", "10", "--rate", "20", "-d", "2s", "--cores", "0", "--tick", tick,
            ],
        );
        assert_eq!(r.code, 0, "{}", r.explain());
        let n = r.u("/latency/rtt/count");
        assert!(n >= 20, "tick {tick}: {}", r.explain());
        assert_eq!(n, r.u("/messages/received"), "tick {tick}");
        assert!(
            r.u("/latency/rtt/min") >= 30_000,
            "tick {tick}: rtt below the server's 30 ms hold: {}",
            r.explain()
        );
    }
}

#[test]
fn warmup_replies_are_counted_but_not_timed() {
    let s = TestServer::start(Behaviour::default());
    let r = run_loadgen(
        &s.url(),
        &[
            "-c", "20", "--rate", "200", "-d", "3s", "--warmup", "1s", "--cores", "0",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let recv = r.u("/messages/received");
    let excluded = r.u("/latency/warmup_excluded");
    let timed = r.u("/latency/rtt/count");
    // 200 msgs/s: about 200 intended in the first second, about 400 after it.
    assert!((100..=300).contains(&excluded), "{}", r.explain());
    assert!(timed >= 300, "{}", r.explain());
    assert_eq!(timed + excluded, recv, "{}", r.explain());
    assert_eq!(r.u("/totals/latency_warmup_excluded"), excluded);
    assert_eq!(r.u("/config/warmup_ms"), 1000);
    assert!(r.stdout.contains("--warmup"), "{}", r.stdout);
}

#[test]
fn echo_closed_loop_on_two_workers() {
    let s = TestServer::start(Behaviour::default());
    let r = run_loadgen(
        &s.url(),
        &[
            "-c",
            "10",
            "--rate",
            "0",
            "-d",
            "1s",
            "--payload",
            "300",
            "--cores",
            "0-1",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/process/workers"), 2);
    let sent = r.u("/messages/sent");
    let recv = r.u("/messages/received");
    assert!(recv >= 10, "{}", r.explain());
    assert_eq!(sent, recv + r.u("/messages/lost"));
    assert_eq!(r.u("/messages/bytes_received"), recv * 300);
}

#[test]
fn hold_pings_and_pongs() {
    let s = TestServer::start(Behaviour::default());
    let r = run_loadgen(
        &s.url(),
        &[
            "--scenario",
            "hold",
            "--ping-interval",
            "200ms",
            "-c",
            "20",
            "-d",
            "1500ms",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let pings = r.u("/heartbeat/pings_sent");
    assert!(pings >= 20, "{}", r.explain());
    assert_eq!(r.u("/heartbeat/pongs_received"), pings, "{}", r.explain());
    assert_eq!(r.u("/latency/pong/count"), pings);
    assert_eq!(r.u("/messages/sent"), 0);
    assert_eq!(r.j()["heartbeat"]["survival_rate"].as_f64(), Some(1.0));
    assert_eq!(r.u("/connections/open_at_end"), 20);
    assert_eq!(
        r.j()["connections"]["alive_at_end_ratio"].as_f64(),
        Some(1.0)
    );
}

#[test]
fn closed_port_is_econnrefused_and_cannot_start() {
    let url = format!("ws://127.0.0.1:{}/ws", closed_port());
    let r = run_loadgen(&url, &["-c", "5", "-d", "1s", "--reconnect-max-tries", "0"]);
    assert_eq!(r.code, 2, "{}", r.explain());
    assert_eq!(r.u("/failures/ECONNREFUSED"), 5, "{}", r.explain());
    assert_eq!(r.u("/connections/attempted"), 5);
    assert_eq!(r.u("/connections/established"), 0);
    assert!(
        r.stderr.contains("no connection could be established"),
        "{}",
        r.explain()
    );
}

#[test]
fn retries_are_counted_and_bounded() {
    let url = format!("ws://127.0.0.1:{}/ws", closed_port());
    let r = run_loadgen(&url, &["-c", "2", "-d", "3s", "--reconnect-max-tries", "2"]);
    assert_eq!(r.code, 2, "{}", r.explain());
    // Each slot: 1 attempt + 2 retries, then gives up.
    assert_eq!(r.u("/connections/attempted"), 6, "{}", r.explain());
    assert_eq!(r.u("/connections/retries"), 4);
    assert_eq!(r.u("/connections/gave_up"), 2);
}

#[test]
fn http_status_refusals_are_classified() {
    for status in [403u16, 426] {
        let s = TestServer::start(Behaviour {
            reject_status: Some(status),
            ..Default::default()
        });
        let r = run_loadgen(
            &s.url(),
            &["-c", "4", "-d", "1s", "--reconnect-max-tries", "0"],
        );
        assert_eq!(r.code, 2, "{}", r.explain());
        assert_eq!(
            r.u(&format!("/failures/http_{status}")),
            4,
            "{}",
            r.explain()
        );
    }
}

#[test]
fn server_drops_are_reconnected() {
    let s = TestServer::start(Behaviour {
        close_after: Some(Duration::from_millis(300)),
        ..Default::default()
    });
    let r = run_loadgen(&s.url(), &["-c", "5", "--rate", "50", "-d", "2s"]);
    assert_eq!(r.code, 0, "{}", r.explain());
    let drops = r.u("/connections/drops");
    assert!(drops >= 5, "{}", r.explain());
    assert_eq!(r.u("/close_codes/1001"), r.u("/drop_classes/close_1001"));
    assert!(r.u("/connections/reconnects") >= 5, "{}", r.explain());
    let est = r.u("/connections/established");
    assert_eq!(
        est,
        s.seen.upgraded.load(std::sync::atomic::Ordering::Relaxed)
    );
    // Every message is accounted for, dropped connections included.
    assert_eq!(
        r.u("/messages/sent"),
        r.u("/messages/received") + r.u("/messages/lost")
    );
}

#[test]
fn thresholds_set_the_exit_code() {
    let s = TestServer::start(Behaviour::default());
    let fail = run_loadgen(&s.url(), &["-c", "5", "-d", "1s", "--min-connections", "6"]);
    assert_eq!(fail.code, 1, "{}", fail.explain());
    assert!(
        fail.stderr.contains("threshold min-connections failed"),
        "{}",
        fail.explain()
    );
    assert_eq!(fail.j()["thresholds"][0]["pass"], false);
    let pass = run_loadgen(
        &s.url(),
        &[
            "-c",
            "5",
            "-d",
            "1s",
            "--min-connections",
            "5",
            "--max-p99",
            "60s",
            "--max-error-rate",
            "1%",
        ],
    );
    assert_eq!(pass.code, 0, "{}", pass.explain());
    assert_eq!(pass.j()["thresholds"].as_array().unwrap().len(), 3);
    // A p99 threshold without any sample cannot pass.
    let none = run_loadgen(
        &s.url(),
        &[
            "-c",
            "2",
            "-d",
            "500ms",
            "--scenario",
            "hold",
            "--max-p99",
            "1s",
        ],
    );
    assert_eq!(none.code, 1, "{}", none.explain());
}

#[test]
fn several_source_addresses_are_really_used() {
    let s = TestServer::start(Behaviour::default());
    let r = run_loadgen(
        &s.url(),
        &[
            "-c",
            "9",
            "-d",
            "1s",
            "--source-ip",
            "127.0.0.2-127.0.0.4",
            "--scenario",
            "hold",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let peers: Vec<String> = s
        .seen
        .peers
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(peers, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
}

#[test]
fn stages_step_the_load() {
    let s = TestServer::start(Behaviour::default());
    let r = run_loadgen(
        &s.url(),
        &[
            "--stages",
            "700ms:6,700ms:12,700ms:4",
            "--scenario",
            "hold",
            "--cores",
            "0-1",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let st = r.j()["stages"].as_array().unwrap();
    assert_eq!(st.len(), 3);
    assert_eq!(st[1]["peak_open"], 12, "{}", r.explain());
    assert_eq!(r.u("/connections/peak_open"), 12);
    assert_eq!(r.u("/connections/open_at_end"), 4, "{}", r.explain());
    assert_eq!(r.u("/connections/established"), 12);
    assert_eq!(r.u("/connections/drops"), 0);
}

#[test]
fn json_report_round_trips_and_histograms_merge() {
    let s = TestServer::start(Behaviour::default());
    let r = run_loadgen(&s.url(), &["-c", "8", "--rate", "200", "-d", "1s"]);
    assert_eq!(r.code, 0, "{}", r.explain());
    let text = r.json_text.as_deref().unwrap();
    let rep: ws_loadgen::report::run::Report = serde_json::from_str(text).expect("deserializes");
    let again = serde_json::to_value(&rep).unwrap();
    assert_eq!(&again, r.j(), "re-serialized report differs");
    let mut h = rep.latency.rtt.decode().unwrap();
    assert_eq!(h.len(), rep.messages.received);
    let other = rep.latency.rtt.decode().unwrap();
    h.add(&other).unwrap();
    assert_eq!(h.len(), 2 * rep.messages.received);
    assert!(!rep.per_second.is_empty());
}

#[test]
fn hdr_interval_log_is_written() {
    let s = TestServer::start(Behaviour::default());
    let log = common::temp_path("x.hlog");
    let log_s = log.to_string_lossy().into_owned();
    let r = run_loadgen(
        &s.url(),
        &[
            "-c",
            "4",
            "--rate",
            "100",
            "-d",
            "1500ms",
            "--hdr-log",
            &log_s,
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("#[StartTime:"), "{text}");
    assert!(text.contains("Tag=rtt,"), "{text}");
    assert!(text.contains("Tag=connect,"), "{text}");
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["ws://127.0.0.1:1/ws", "--insecure"], "needs a wss:// URL"),
        (&["ws://127.0.0.1:1/ws", "--tick", "1s"], "--tick"),
        (&["http://127.0.0.1:1/"], "scheme"),
        (&["not a url"], "bad URL"),
        (&["ws://127.0.0.1:1/", "-c", "50000"], "RLIMIT_NOFILE"),
        (&["ws://127.0.0.1:1/", "--payload", "3"], "--payload"),
        (&["ws://127.0.0.1:1/", "--stages", "5s"], "DURATION"),
        (&["ws://127.0.0.1:1/", "--connect-rate", "-1"], ""),
        (
            &["ws://127.0.0.1:1/", "-d", "2s", "--warmup", "2s"],
            "--warmup",
        ),
    ];
    for (args, needle) in cases {
        let out = std::process::Command::new(common::bin())
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn sigint_ends_the_run_early_with_a_report() {
    let s = TestServer::start(Behaviour::default());
    let json = common::temp_path("sigint.json");
    let mut child = std::process::Command::new(common::bin())
        .args([
            &s.url(),
            "-c",
            "5",
            "-d",
            "60s",
            "--progress",
            "off",
            "--json",
        ])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the connections are up, then interrupt.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.seen.upgraded.load(std::sync::atomic::Ordering::Relaxed) < 5
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(v["interrupted"], true);
    assert!(v["elapsed_s"].as_f64().unwrap() < 50.0);
    assert_eq!(v["connections"]["established"], 5);
}
