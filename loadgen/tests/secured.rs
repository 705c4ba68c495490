//! ws-loadgen against a secured server (the real ws-server, or `$WS_SERVER_BIN`) with
//! `--token-secret` and `--api-key`: it presents a signed token per connection (header or
//! query), sends push POSTs and reads `/metrics` on the admin listener with the key, and
//! when it is refused it says why and what to give.

mod common;

use std::process::{Command, Stdio};

use common::WsServer;

const SECRET: &str = "a-secret-of-32-bytes-for-tests!!";
const KEY: &str = "admin-key-for-tests";

fn secured() -> WsServer {
    WsServer::start_on_two_cores(&["--token-secret", SECRET, "--api-key", KEY])
}

fn rejections(srv: &WsServer, reason: &str) -> u64 {
    let admin = srv.admin.as_deref().expect("admin");
    let url = format!("http://{admin}/metrics");
    let mut m = ws_loadgen::limits::metrics::MetricsUrl::parse(&url).expect("url");
    m.authorization = Some(format!("Authorization: Bearer {KEY}"));
    let page = m
        .scrape(std::time::Duration::from_secs(10))
        .expect("scrape with the key");
    page.sum_where("ws_handshake_rejections_total", "reason", reason)
        .unwrap_or(0.0) as u64
}

#[test]
fn echo_with_a_token_in_the_header_or_the_query() {
    let _g = common::serial();
    let srv = secured();
    for via in ["header", "query"] {
        let r = srv.run_loadgen(
            "/ws",
            &[
                "-c",
                "30",
                "--rate",
                "100",
                "-d",
                "2s",
                "--token-secret",
                SECRET,
                "--token-via",
                via,
            ],
        );
        assert_eq!(r.code, 0, "{via}: {}", r.explain());
        assert_eq!(
            r.u("/connections/established"),
            30,
            "{via}: {}",
            r.explain()
        );
        assert!(r.u("/messages/received") > 50, "{via}: {}", r.explain());
        assert_eq!(
            r.j()["error_rate"].as_f64(),
            Some(0.0),
            "{via}: {}",
            r.explain()
        );
    }
    for reason in ["token_missing", "token_invalid", "token_expired"] {
        assert_eq!(rejections(&srv, reason), 0, "{reason}");
    }
}

#[test]
fn push_by_token_identity_through_the_admin_listener_with_the_key() {
    let _g = common::serial();
    let srv = secured();
    let r = srv.run_loadgen(
        "/ws",
        &[
            "--scenario",
            "push",
            "-c",
            "20",
            "--rate",
            "100",
            "-d",
            "2s",
            "--token-secret",
            SECRET,
        ],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    let pushes = r.u("/push/pushes");
    assert!(pushes > 50, "{}", r.explain());
    assert_eq!(r.u("/push/statuses/200"), pushes, "{}", r.explain());
    assert_eq!(r.u("/push/deliveries_received"), pushes, "{}", r.explain());
    assert_eq!(r.u("/push/lost"), 0, "{}", r.explain());
    assert_eq!(srv.metric("ws_push_hits_total"), pushes);

    // The wrong key: every push is refused 401 and counted by the server.
    let before = rejections(&srv, "api_key");
    let r = common::run_loadgen(
        &srv.url("/ws"),
        &[
            "--scenario",
            "push",
            "-c",
            "5",
            "--rate",
            "20",
            "-d",
            "1s",
            "--token-secret",
            SECRET,
            "--admin-url",
            &format!("http://{}", srv.admin.as_deref().expect("admin")),
            "--api-key",
            "not-the-key",
        ],
    );
    let pushes = r.u("/push/pushes");
    assert!(pushes > 0, "{}", r.explain());
    assert_eq!(r.u("/push/statuses/401"), pushes, "{}", r.explain());
    assert_eq!(r.u("/push/deliveries_received"), 0);
    assert_eq!(rejections(&srv, "api_key") - before, pushes);
}

#[test]
fn refused_identities_end_the_run_with_the_reason_and_the_remedy() {
    let _g = common::serial();
    let srv = secured();
    let short = ["-c", "3", "-d", "1s", "--reconnect-max-tries", "0"];
    // No token.
    let r = srv.run_loadgen("/ws", &short);
    assert_eq!(r.code, 2, "{}", r.explain());
    assert!(r.stderr.contains("http_401"), "{}", r.explain());
    assert!(r.stderr.contains("--token-secret"), "{}", r.explain());
    // Someone else's secret.
    let r = srv.run_loadgen(
        "/ws",
        &[&short[..], &["--token-secret", "0123456789abcdef0123"]].concat(),
    );
    assert_eq!(r.code, 2, "{}", r.explain());
    assert!(
        r.stderr.contains("does not accept our tokens"),
        "{}",
        r.explain()
    );
    assert!(rejections(&srv, "token_invalid") >= 3);
    // A room the token does not allow.
    let r = srv.run_loadgen(
        "/broadcast?room=r",
        &[
            &short[..],
            &[
                "--scenario",
                "broadcast",
                "--token-secret",
                SECRET,
                "--token-rooms",
                "other",
            ],
        ]
        .concat(),
    );
    assert_eq!(r.code, 2, "{}", r.explain());
    assert!(r.stderr.contains("http_403"), "{}", r.explain());
    assert!(r.stderr.contains("--token-rooms"), "{}", r.explain());
    // Bad settings are refused before any connection.
    for (args, says) in [
        (vec!["--token-secret", "short"], "at least 16"),
        (vec!["--token-via", "cookie"], "cookie"),
        (vec!["--admin-url", "https://127.0.0.1:1"], "http://"),
        (vec!["--api-key", "has space"], "--api-key"),
    ] {
        let r = common::run_loadgen(&srv.url("/ws"), &[&short[..], &args[..]].concat());
        assert_eq!(r.code, 2, "{args:?}: {}", r.explain());
        assert!(r.stderr.contains(says), "{args:?}: {}", r.explain());
    }
}

#[test]
fn ceiling_and_doctor_against_a_secured_server() {
    let _g = common::serial();
    let srv = secured();
    let admin = format!("http://{}", srv.admin.as_deref().expect("admin"));
    let json = common::temp_path("secured-ceiling.json");
    // The secret and the key come from the environment, as the servers read them.
    let out = Command::new(common::bin())
        .args(["ceiling", &srv.url("/ws")])
        .args([
            "--max",
            "200",
            "--step",
            "100",
            "--hold",
            "1s",
            "--processes",
            "1",
        ])
        .args(["--admin-url", &admin, "--progress", "off", "--json"])
        .arg(&json)
        .env("WS_TOKEN_SECRET", SECRET)
        .env("WS_API_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .expect("run ceiling");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let explain = format!(
        "exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{explain}");
    let j: serde_json::Value = serde_json::from_str(&text).expect("ceiling JSON");
    assert_eq!(j["ceiling"]["connections"].as_u64(), Some(200), "{explain}");
    assert_eq!(j["ceiling"]["stop_reason"], "max_reached", "{explain}");
    for when in ["metrics_before", "metrics_after"] {
        assert!(
            j["server"][when].is_object(),
            "/metrics answered with the key ({when})\n{explain}"
        );
    }
    assert!(
        !text.contains(SECRET) && !text.contains(KEY),
        "no secret in the report"
    );
    assert_eq!(rejections(&srv, "token_missing"), 0);

    // doctor reads /metrics with the key; without it, it says the key is wanted.
    let doctor = |key: Option<&str>| {
        let mut c = Command::new(common::bin());
        c.args([
            "doctor",
            &srv.url("/ws"),
            "-c",
            "100",
            "--admin-url",
            &admin,
        ])
        .env_remove("WS_API_KEY")
        .stdin(Stdio::null());
        if let Some(k) = key {
            c.args(["--api-key", k]);
        }
        let o = c.output().expect("run doctor");
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let without = doctor(None);
    assert!(without.contains("API key"), "{without}");
    let with = doctor(Some(KEY));
    assert!(!with.contains("API key"), "{with}");
}
