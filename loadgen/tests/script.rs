//! `ws-loadgen run --script`: scenario files against an independent JSON chat server
//! (tests/peers/chat_server.py, Python `websockets`: login with a token, join a room, say
//! relayed to the room inside the server's own envelope) and against our ws-server's
//! /broadcast. What ws-loadgen reports is checked against what the *server* counted.
//! Counts only, never time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, PyPeer, WsServer};

/// A directory with `users.csv` (u0..u{n-1}, tokens t0..) and `name` = `toml`.
fn script_dir(n: usize, name: &str, toml: &str) -> (PathBuf, PathBuf) {
    let dir = common::temp_path("script");
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("user,token\n");
    for i in 0..n {
        csv.push_str(&format!("u{i},t{i}\n"));
    }
    std::fs::write(dir.join("users.csv"), csv).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

/// `ws-loadgen run --script FILE ARGS... --json TMP`, the report read back.
fn run_script(file: &Path, args: &[&str]) -> common::Run {
    let json = common::temp_path("report.json");
    let out = Command::new(bin())
        .arg("run")
        .arg("--script")
        .arg(file)
        .args(args)
        .arg("--json")
        .arg(&json)
        .args(["--progress", "off"])
        .output()
        .expect("run ws-loadgen");
    let json_text = std::fs::read_to_string(&json).ok();
    let _ = std::fs::remove_file(&json);
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        json: json_text
            .as_deref()
            .map(|t| serde_json::from_str(t).unwrap()),
        json_text,
    }
}

fn chat_toml(port: u16, extra_open: &str, rooms: u32, rate: &str) -> String {
    format!(
        r#"url = "ws://127.0.0.1:{port}/chat?user={{{{user}}}}"
headers = {{ Authorization = "Bearer {{{{token}}}}" }}
data = "users.csv"

[[open]]
name = "login"
send = '{{"type":"login","user":"{{{{user}}}}","token":"{{{{token}}}}"}}'
expect = '"ok":true'
{extra_open}
[[open]]
name = "join"
send = '{{"type":"join","room":"r{{{{conn % {rooms}}}}}"}}'
expect = '"joined"'

[loop]
name = "say"
{rate}
send = '{{"type":"say","room":"r{{{{conn % {rooms}}}}}","text":"{{{{stamp}}}}"}}'
"#
    )
}

fn server_counts(peer: PyPeer) -> serde_json::Value {
    let out = peer.finish();
    let line = out.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| panic!("server counts: {out:?}"))
}

#[test]
fn chat_login_join_say_agrees_with_the_servers_counts() {
    let _g = common::serial();
    let (dir, _) = script_dir(20, "unused", "");
    let users = dir.join("users.csv");
    let peer = PyPeer::start("chat_server.py", &["--users", users.to_str().unwrap()]);
    let file = dir.join("chat.toml");
    std::fs::write(
        &file,
        chat_toml(peer.port, "timeout = \"10s\"", 2, "rate = 5"),
    )
    .unwrap();
    let hdr = common::temp_path("script.hdr");
    let r = run_script(
        &file,
        &[
            "-c",
            "20",
            "-d",
            "3s",
            "--hdr-log",
            hdr.to_str().unwrap(),
            "--source-ip",
            "127.0.0.2-127.0.0.3",
        ],
    );
    let srv = server_counts(peer);
    assert_eq!(r.code, 0, "{}", r.explain());
    let n = |p: &str| srv[p].as_u64().unwrap();
    // Every connection logged in and joined, as the server saw it.
    assert_eq!(r.u("/script/steps/0/ok"), 20, "{}", r.explain());
    assert_eq!(n("logins"), 20);
    assert_eq!(r.u("/script/steps/1/ok"), n("joins"));
    assert_eq!(n("joins"), 20);
    assert_eq!(n("upgrades"), 20);
    assert_eq!(n("bad_json"), 0);
    // Every say was sent once and relayed to its room (10 once all have joined): the
    // sender's own copy came back as a reply, the others' as deliveries, nothing skipped
    // or doubled.
    let sent = r.u("/script/loop/sent");
    assert!(sent > 0, "{}", r.explain());
    assert_eq!(sent, n("says"), "{}", r.explain());
    assert_eq!(r.u("/script/loop/replies"), sent, "{}", r.explain());
    assert_eq!(
        r.u("/script/loop/replies") + r.u("/script/loop/deliveries"),
        n("relays"),
        "{}",
        r.explain()
    );
    // At most nine others each (fewer while the room was still filling up).
    let deliveries = r.u("/script/loop/deliveries");
    assert!(deliveries <= 9 * sent, "{}", r.explain());
    for k in ["lost", "gaps", "behind", "untracked", "unexpected"] {
        assert_eq!(r.u(&format!("/script/loop/{k}")), 0, "{k}\n{}", r.explain());
    }
    // Latency rows: each step, the loop's rtt and delivery, in JSON, stages and text.
    assert_eq!(r.u("/script/steps/0/latency/count"), 20);
    assert_eq!(r.u("/script/loop/rtt/count"), sent);
    assert_eq!(r.u("/stages/0/steps/login/count"), 20);
    assert_eq!(r.u("/stages/0/steps/say delivery/count"), deliveries);
    assert_eq!(r.j()["main_latency"], "say rtt");
    for row in ["login ", "join ", "say rtt ", "say delivery "] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(row)),
            "{row}\n{}",
            r.stdout
        );
    }
    let log = std::fs::read_to_string(&hdr).unwrap();
    for tag in [
        "Tag=login,",
        "Tag=join,",
        "Tag=say.rtt,",
        "Tag=say.delivery,",
    ] {
        assert!(log.contains(tag), "{tag} missing in the interval log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failures_are_classed_by_the_step_they_happened_in() {
    let _g = common::serial();
    let (dir, _) = script_dir(10, "unused", "");
    let users = dir.join("users.csv");
    // u1 gets no answer to its login, u2 is told "ok":false, u3 is closed 4001 at join.
    let peer = PyPeer::start(
        "chat_server.py",
        &[
            "--users",
            users.to_str().unwrap(),
            "--silent",
            "u1",
            "--refuse-login",
            "u2",
            "--close-on-join",
            "u3",
        ],
    );
    let file = dir.join("chat.toml");
    std::fs::write(
        &file,
        chat_toml(peer.port, "timeout = \"1s\"", 1, "rate = 2"),
    )
    .unwrap();
    let r = run_script(
        &file,
        &["-c", "10", "-d", "3s", "--reconnect-max-tries", "0"],
    );
    let srv = server_counts(peer);
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(
        r.u("/drop_classes/expect_timeout:login"),
        2,
        "{}",
        r.explain()
    );
    assert_eq!(r.u("/drop_classes/close_4001:join"), 1, "{}", r.explain());
    assert_eq!(r.u("/script/steps/0/failed"), 2);
    assert_eq!(r.u("/script/steps/0/ok"), 8);
    assert_eq!(r.u("/script/steps/1/failed"), 1);
    assert_eq!(r.u("/script/steps/1/ok"), 7);
    assert_eq!(srv["logins"], 8);
    assert_eq!(srv["login_failures"], 1);
    assert_eq!(srv["joins"], 7);
    // What u2 was told instead of "ok":true is in the report.
    let sample = r.j()["script"]["steps"][0]["unmatched_sample"]
        .as_str()
        .unwrap_or("");
    assert_eq!(sample, r#"{"type":"login","ok":false}"#, "{}", r.explain());
    assert!(r.stdout.contains("first message that did not match"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn thresholds_name_steps() {
    let _g = common::serial();
    let (dir, _) = script_dir(5, "unused", "");
    let users = dir.join("users.csv");
    let peer = PyPeer::start("chat_server.py", &["--users", users.to_str().unwrap()]);
    let file = dir.join("chat.toml");
    std::fs::write(&file, chat_toml(peer.port, "", 1, "rate = 2")).unwrap();
    let r = run_script(
        &file,
        &[
            "-c",
            "5",
            "-d",
            "2s",
            "--max-p99",
            "login=1us",
            "--max-p99",
            "say.delivery=60s",
            "--max-p99",
            "60s",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.explain());
    let t = r.j()["thresholds"].as_array().unwrap().clone();
    let by = |name: &str| {
        t.iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {t:?}"))["pass"]
            .as_bool()
            .unwrap()
    };
    assert!(!by("max-p99 login"));
    assert!(by("max-p99 say.delivery"));
    assert!(by("max-p99"));
    // An unknown row is refused before anything connects, listing the rows there are.
    let r = run_script(&file, &["-c", "5", "-d", "1s", "--max-p99", "logn=1s"]);
    assert_eq!(r.code, 2, "{}", r.explain());
    assert!(
        r.stderr.contains("rows: connect, tls, handshake"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("login, join, say, say.rtt, say.delivery"),
        "{}",
        r.stderr
    );
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_scripts_name_file_line_and_column_and_connect_nothing() {
    let port = common::closed_port();
    let head =
        format!("url = \"ws://127.0.0.1:{port}/chat?user={{{{user}}}}\"\ndata = \"users.csv\"\n");
    let cases: &[(&str, &str, &str)] = &[
        (
            "[loop]\nsend = \"{{stamp}} {{usr}}\"\nrate = 1\n",
            "s.toml:4:19",
            "variable \"usr\" is not defined; defined: conn, conn % N, seq, stamp, user, token",
        ),
        (
            "[[open]]\nexpect = \"x\"\ntimeout = \"soon\"\n",
            "s.toml:5:11",
            "not a duration",
        ),
        ("[[open]]\nregex = \"([\"\n", "s.toml:4:9", "invalid regex"),
        ("[[open]]\nsend = \"x\"\nbogus = 1\n", "s.toml:5:1", "bogus"),
        (
            "[loop]\nsend = \"{{stamp}}\"\nrate = 0\n",
            "s.toml:5:8",
            "rate must be more than 0",
        ),
        ("[loop]\nsend = \"{{stamp}}\"\n", "", "has no rate"),
    ];
    for (body, pos, msg) in cases {
        let (dir, file) = script_dir(3, "s.toml", &format!("{head}{body}"));
        let r = run_script(&file, &["-d", "1s"]);
        assert_eq!(r.code, 2, "{body}\n{}", r.explain());
        assert!(r.stderr.contains(pos), "{pos}\n{}", r.stderr);
        assert!(r.stderr.contains(msg), "{msg}\n{}", r.stderr);
        assert!(!r.stderr.contains("ECONNREFUSED"), "{}", r.stderr);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // A ragged CSV names its own line; a missing one names the data key.
    let (dir, file) = script_dir(3, "s.toml", &format!("{head}[loop]\nexpect = \"x\"\n"));
    std::fs::write(dir.join("users.csv"), "user,token\nu0,t0\nu1\n").unwrap();
    let r = run_script(&file, &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("users.csv:3: this row has 1 field(s), the header has 2"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(dir.join("users.csv")).unwrap();
    let r = run_script(&file, &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("s.toml:2:8: data: cannot read data file"),
        "{}",
        r.stderr
    );
    std::fs::write(dir.join("users.csv"), "").unwrap();
    let r = run_script(&file, &[]);
    assert!(
        r.stderr.contains("users.csv:1: the file is empty"),
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ws_server_broadcast_with_text_stamps_and_a_push_only_listener() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let toml = |conns: u32, lp: &str| {
        format!(
            "url = \"ws://{}/broadcast?room=s\"\nconnections = {conns}\n[loop]\n{lp}\n",
            srv.addr
        )
    };
    // Listeners: push-only, another process, numbered apart with --conn-offset.
    let (dir, listen) = script_dir(
        1,
        "listen.toml",
        &toml(4, "name = \"news\"\nexpect = \"WSC\""),
    );
    let talk = dir.join("talk.toml");
    std::fs::write(
        &talk,
        toml(
            6,
            "name = \"say\"\nrate = 5\nsend = '{\"text\":\"{{stamp}}\",\"from\":{{conn}}}'",
        ),
    )
    .unwrap();
    let listener = {
        let listen = listen.clone();
        std::thread::spawn(move || run_script(&listen, &["-d", "4s", "--conn-offset", "1000"]))
    };
    // The talkers start once the listeners are in the room.
    let mut waited = 0;
    while srv.metric("ws_upgraded_total") < 4 && waited < 100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    let before = srv.metric("ws_deliveries_total");
    let r = run_script(&talk, &["-d", "2s"]);
    let l = listener.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(l.code, 0, "{}", l.explain());
    let sent = r.u("/script/loop/sent");
    assert!(sent > 0);
    // Each talker gets its own messages back (the room echoes) and the other talkers'.
    assert_eq!(r.u("/script/loop/replies"), sent, "{}", r.explain());
    for k in ["lost", "gaps", "behind", "unexpected"] {
        assert_eq!(r.u(&format!("/script/loop/{k}")), 0, "{k}\n{}", r.explain());
        assert_eq!(l.u(&format!("/script/loop/{k}")), 0, "{k}\n{}", l.explain());
    }
    // Listeners only receive: every message reached all 4, timed from its stamp.
    assert_eq!(l.u("/script/loop/deliveries"), 4 * sent, "{}", l.explain());
    assert_eq!(l.u("/latency/delivery/count"), 4 * sent);
    assert_eq!(l.j()["main_latency"], "news delivery");
    // The server delivered exactly what both processes received.
    let delivered = srv.metric("ws_deliveries_total") - before;
    assert_eq!(
        delivered,
        r.u("/script/loop/replies")
            + r.u("/script/loop/deliveries")
            + l.u("/script/loop/deliveries"),
        "{}\n{}",
        r.explain(),
        l.explain()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_chat_example_runs_as_the_readme_says() {
    let _g = common::serial();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let users = ex.join("users.csv");
    let peer = PyPeer::start("chat_server.py", &["--users", users.to_str().unwrap()]);
    // The example as shipped, pointed at the stand-in's port.
    let dir = common::temp_path("example");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = std::fs::read_to_string(ex.join("chat.toml")).unwrap();
    assert!(toml.contains("127.0.0.1:8080"));
    let file = dir.join("chat.toml");
    std::fs::write(
        &file,
        toml.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", peer.port)),
    )
    .unwrap();
    std::fs::copy(&users, dir.join("users.csv")).unwrap();
    let r = run_script(&file, &["-c", "20", "-d", "2s"]);
    let srv = server_counts(peer);
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/script/steps/0/ok"), 20);
    assert_eq!(srv["logins"], 20);
    assert_eq!(r.u("/script/steps/1/ok"), 20);
    assert_eq!(r.u("/script/loop/sent"), srv["says"].as_u64().unwrap());
    assert_eq!(
        r.u("/script/loop/replies") + r.u("/script/loop/deliveries"),
        srv["relays"].as_u64().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ceiling_and_doctor_take_a_script() {
    let _g = common::serial();
    let (dir, _) = script_dir(40, "unused", "");
    let users = dir.join("users.csv");
    let peer = PyPeer::start("chat_server.py", &["--users", users.to_str().unwrap()]);
    let file = dir.join("chat.toml");
    let toml = chat_toml(peer.port, "timeout = \"10s\"", 4, "rate = 1");
    std::fs::write(&file, format!("connections = 40\n{toml}")).unwrap();
    // doctor plans for the script's connections against the script's server.
    let out = Command::new(bin())
        .args(["doctor", "--script"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "40 connections to ws://127.0.0.1:{}/chat",
            peer.port
        )),
        "{text}"
    );
    // ceiling ramps connections that log in and join, numbered across its steps.
    let json = common::temp_path("ceiling.json");
    let out = Command::new(bin())
        .args(["ceiling", "--script"])
        .arg(&file)
        .args([
            "--max",
            "40",
            "--step",
            "20",
            "--hold",
            "2s",
            "--progress",
            "off",
        ])
        .args(["--ping-interval", "1s", "--metrics-url", "none", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let j = common::read_json(&json);
    let srv = server_counts(peer);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(j["ceiling"]["connections"], 40, "{text}");
    assert!(text.contains("connections run the script"), "{text}");
    // Every connection was a different user (rows 0..39: --conn-offset per step), and
    // every one logged in and joined.
    assert_eq!(srv["upgrades"], 40, "{srv}");
    assert_eq!(srv["logins"], 40, "{srv}");
    assert_eq!(srv["joins"], 40, "{srv}");
    assert_eq!(srv["distinct_users"], 40, "{srv}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reconnects_run_the_open_steps_again() {
    let _g = common::serial();
    let (dir, _) = script_dir(5, "unused", "");
    let users = dir.join("users.csv");
    // u3 is closed 4001 every time it joins; it retries twice, then gives up.
    let peer = PyPeer::start(
        "chat_server.py",
        &["--users", users.to_str().unwrap(), "--close-on-join", "u3"],
    );
    let file = dir.join("chat.toml");
    std::fs::write(&file, chat_toml(peer.port, "", 1, "rate = 2")).unwrap();
    let r = run_script(
        &file,
        &["-c", "5", "-d", "4s", "--reconnect-max-tries", "2"],
    );
    let srv = server_counts(peer);
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/drop_classes/close_4001:join"), 3, "{}", r.explain());
    assert_eq!(r.u("/connections/gave_up"), 1);
    assert_eq!(r.u("/connections/retries"), 2);
    // Each attempt logged in again before it joined.
    assert_eq!(r.u("/script/steps/0/ok"), 7);
    assert_eq!(srv["logins"], 7, "{srv}");
    assert_eq!(srv["upgrades"], 7, "{srv}");
    assert_eq!(r.u("/script/steps/1/ok"), 4);
    assert_eq!(r.u("/script/steps/1/failed"), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_script_runs_over_wss_through_stages() {
    let _g = common::serial();
    let c = common::certs::Certs::new(&common::temp_path("certs"));
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let (cert, key) = (p(&c.server_cert), p(&c.server_key));
    let srv = WsServer::start(
        &[],
        &["--tls-cert", &cert, "--tls-key", &key, "--cores", "0"],
        None,
    );
    let port = srv.addr.rsplit(':').next().unwrap().to_string();
    let toml = format!(
        "url = \"wss://localhost:{port}/broadcast?room=w\"\n[loop]\nname = \"say\"\nrate = 5\n\
         send = '{{\"t\":\"{{{{stamp}}}}\"}}'\n"
    );
    let (dir, file) = script_dir(1, "wss.toml", &toml);
    let r = run_script(
        &file,
        &["--stages", "2s:3,2s:6", "--ca", &p(&c.ca), "--cores", "1"],
    );
    assert_eq!(r.code, 0, "{}", r.explain());
    assert_eq!(r.u("/tls/handshakes_full"), 6, "{}", r.explain());
    assert_eq!(srv.metric("ws_tls_handshakes_total"), 6);
    let sent = r.u("/script/loop/sent");
    assert_eq!(r.u("/script/loop/replies"), sent, "{}", r.explain());
    for k in ["lost", "gaps", "behind", "unexpected"] {
        assert_eq!(r.u(&format!("/script/loop/{k}")), 0, "{k}\n{}", r.explain());
    }
    // Both stages have their rows; the second had twice the connections.
    let stages = r.j()["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(r.u("/stages/1/peak_open"), 6);
    assert!(r.u("/stages/1/steps/say rtt/count") > 0, "{}", r.explain());
    // The server counted every message in and every delivery out.
    assert_eq!(srv.metric("ws_messages_in_total"), sent);
    assert_eq!(
        srv.metric("ws_deliveries_total"),
        r.u("/script/loop/replies") + r.u("/script/loop/deliveries")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
