//! `ws-loadgen ceiling` finds and names an artificial limit, against the real `ws-server`:
//!
//! - the server started with RLIMIT_NOFILE 300: the ceiling is a little under 300 and the
//!   binding limit is the server's open-files limit;
//! - the load generator itself limited to 400 descriptors and one process: its own
//!   open-files limit is named (EMFILE); left to choose, it spreads over enough processes
//!   to reach --max;
//! - in a network namespace whose ephemeral port range is 200 ports wide: the ceiling is
//!   about 200 and the binding limit is the ports (EADDRNOTAVAIL). Skipped (it says so) when
//!   network namespaces are not available (not root, no `ip`); the namespace is always
//!   deleted.
//!
//! How the server binary is found or built: `common::server_bin`. Assertions are on counts
//! and classes, never on time; every run is bounded.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{command, limit_nofile, WsServer};

/// The server on core 0 with RLIMIT_NOFILE `nofile`, run through `prefix` (e.g. `ip netns
/// exec NS`).
fn start_server(prefix: &[&str], nofile: Option<u64>) -> WsServer {
    WsServer::start(prefix, &["--cores", "0"], nofile)
}

struct Outcome {
    code: i32,
    json: serde_json::Value,
    stdout: String,
    stderr: String,
    html: String,
}

impl Outcome {
    fn explain(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `ws-loadgen ceiling URL args...` (through `prefix`), bounded to 3 minutes.
fn ceiling(prefix: &[&str], srv: &WsServer, args: &[&str]) -> Outcome {
    ceiling_with_nofile(prefix, srv, args, None)
}

/// Same, with the load generator's (and so its agents') RLIMIT_NOFILE set to `nofile`.
/// The server's `/ws` is the target; its admin listener gives `/metrics`.
fn ceiling_with_nofile(
    prefix: &[&str],
    srv: &WsServer,
    args: &[&str],
    nofile: Option<u64>,
) -> Outcome {
    let url = srv.url("/ws");
    let json = common::temp_path("ceiling.json");
    let html = common::temp_path("ceiling.html");
    let mut cmd = command(prefix, common::bin());
    cmd.arg("ceiling")
        .arg(url)
        .args(args)
        .args(srv.admin_args())
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .args(["--progress", "plain"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = nofile {
        limit_nofile(&mut cmd, n);
    }
    let mut child = cmd.spawn().expect("run ws-loadgen ceiling");
    let out_pipe = child.stdout.take().unwrap();
    let err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || std::io::read_to_string(out_pipe).unwrap_or_default());
    let err_t = std::thread::spawn(move || std::io::read_to_string(err_pipe).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(180);
    let code = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code().unwrap_or(-1),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break -9;
            }
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let v = common::read_json(&json);
    let h = std::fs::read_to_string(&html).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&html);
    Outcome {
        code,
        json: v,
        stdout,
        stderr,
        html: h,
    }
}

#[test]
fn names_the_servers_open_files_limit() {
    let _g = common::serial();
    let srv = start_server(&[], Some(300));
    let o = ceiling(
        &[],
        &srv,
        &[
            "--max",
            "1000",
            "--step",
            "100",
            "--hold",
            "2s",
            "--handshake-timeout",
            "3s",
            "--ping-interval",
            "1s",
        ],
    );
    let j = &o.json;
    assert_eq!(o.code, 0, "{}", o.explain());
    let held = j["ceiling"]["connections"].as_u64().unwrap_or(0);
    assert!(
        (250..300).contains(&held),
        "ceiling {held}\n{}",
        o.explain()
    );
    assert_eq!(j["ceiling"]["confirmed"], true, "{}", o.explain());
    assert_eq!(j["ceiling"]["stop_reason"], "failures");
    assert_eq!(
        j["binding_limit"]["kind"],
        "server_open_files",
        "{}",
        o.explain()
    );
    assert_eq!(j["binding_limit"]["value"].as_u64(), Some(300));
    assert_eq!(j["server"]["pid"].as_u64(), Some(srv.child.id() as u64));
    // The evidence: connects that got no upgrade, the server's descriptors at its limit,
    // and its EMFILE accept errors read once the load backed off.
    assert!(
        j["steps"].as_array().unwrap().last().unwrap()["failures"]["handshake_timeout"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{}",
        o.explain()
    );
    assert!(
        j["server"]["accept_errors"]["EMFILE"].as_u64().unwrap_or(0) > 0,
        "{}",
        o.explain()
    );
    assert!(
        o.stdout
            .contains("BINDING LIMIT  the server's open-files limit (RLIMIT_NOFILE 300"),
        "{}",
        o.explain()
    );
    assert!(o.stdout.contains("LimitNOFILE"), "{}", o.explain());
    // Heartbeats ran during the hold, and the report carries the plot.
    assert!(
        j["hold"]["pongs"].as_u64().unwrap_or(0) > 0,
        "{}",
        o.explain()
    );
    assert!(o.html.contains("<svg") && o.html.contains("open-files limit"));
}

#[test]
fn names_its_own_open_files_limit_and_spreads_over_processes_to_avoid_it() {
    let _g = common::serial();
    let srv = start_server(&[], None);
    let args = ["--max", "1000", "--step", "100", "--hold", "1s"];
    // One process with 400 descriptors: its own socket() fails with EMFILE first.
    let mut one = args.to_vec();
    one.extend(["--processes", "1"]);
    let o = ceiling_with_nofile(&[], &srv, &one, Some(400));
    let j = &o.json;
    assert_eq!(o.code, 0, "{}", o.explain());
    assert_eq!(
        j["binding_limit"]["kind"],
        "loadgen_open_files",
        "{}",
        o.explain()
    );
    assert_eq!(j["binding_limit"]["value"].as_u64(), Some(400));
    let held = j["ceiling"]["connections"].as_u64().unwrap_or(0);
    assert!(
        (250..400).contains(&held),
        "ceiling {held}\n{}",
        o.explain()
    );
    assert!(
        j["failures"]["EMFILE"].as_u64().unwrap_or(0) > 0,
        "{}",
        o.explain()
    );
    // Left to choose, it starts enough processes for --max and finds no limit below it.
    let o = ceiling_with_nofile(
        &[],
        &srv,
        &["--max", "1000", "--step", "250", "--hold", "1s"],
        Some(400),
    );
    let j = &o.json;
    assert_eq!(o.code, 0, "{}", o.explain());
    assert!(
        j["loadgen"]["processes"].as_u64().unwrap_or(0) >= 3,
        "{}",
        o.explain()
    );
    assert_eq!(j["binding_limit"]["kind"], "none", "{}", o.explain());
    assert_eq!(j["ceiling"]["stop_reason"], "max_reached");
    assert_eq!(
        j["ceiling"]["connections"].as_u64(),
        Some(1000),
        "{}",
        o.explain()
    );
}

/// Runs `f(ns)` in a fresh network namespace, or returns false when there is none to have.
fn in_netns(f: impl FnOnce(&str)) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let ns = format!("wsceil-{}", std::process::id());
    let _ = Command::new("ip")
        .args(["netns", "del", &ns])
        .stderr(Stdio::null())
        .status();
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return false;
    }
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = Del(ns.clone());
    let up = Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !up {
        return false;
    }
    f(&ns);
    true
}

#[test]
fn names_the_ephemeral_ports_in_a_netns() {
    let _g = common::serial();
    let ran = in_netns(|ns| {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo '40000 40199' > /proc/sys/net/ipv4/ip_local_port_range",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot narrow the port range inside the namespace");
        let prefix = ["ip", "netns", "exec", ns];
        let srv = start_server(&prefix, None);
        let o = ceiling(
            &prefix,
            &srv,
            &["--max", "1000", "--step", "100", "--hold", "2s"],
        );
        let j = &o.json;
        assert_eq!(o.code, 0, "{}", o.explain());
        let held = j["ceiling"]["connections"].as_u64().unwrap_or(0);
        assert!(
            (150..=200).contains(&held),
            "ceiling {held}\n{}",
            o.explain()
        );
        assert_eq!(j["binding_limit"]["kind"], "ports", "{}", o.explain());
        assert_eq!(j["binding_limit"]["value"].as_u64(), Some(200));
        assert!(
            j["failures"]["EADDRNOTAVAIL"].as_u64().unwrap_or(0) > 0,
            "{}",
            o.explain()
        );
        assert!(o.stdout.contains("ip_local_port_range"), "{}", o.explain());
        drop(srv);
    });
    if !ran {
        println!("skipped: no network namespace here (needs root and `ip netns`)");
    }
}
