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
//! The server binary is, in order: `$WS_SERVER_BIN`, `ws-server` next to this test's
//! `ws-loadgen`, `$CARGO_TARGET_DIR/debug/ws-server`, `<workspace>/target/debug/ws-server`;
//! built with `cargo build -p ws-server --bin ws-server` when none exists. Assertions are on
//! counts and classes, never on time; every run is bounded.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One test at a time: each fills a server on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn loadgen() -> &'static str {
    env!("CARGO_BIN_EXE_ws-loadgen")
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = PathBuf::from(loadgen()).parent() {
        v.push(d.join("ws-server"));
    }
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        v.push(PathBuf::from(d).join("debug/ws-server"));
    }
    v.push(workspace().join("target/debug/ws-server"));
    v
}

fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(b) = std::env::var("WS_SERVER_BIN") {
            return PathBuf::from(b);
        }
        if let Some(p) = candidates().into_iter().find(|p| p.is_file()) {
            return p;
        }
        eprintln!("note: no ws-server binary found; building it with `cargo build -p ws-server --bin ws-server`");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "ws-server", "--bin", "ws-server"])
            .current_dir(workspace())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cargo build -p ws-server failed");
        candidates()
            .into_iter()
            .find(|p| p.is_file())
            .expect("ws-server built but not found")
    })
    .clone()
}

/// A running server (killed on drop); `prefix` runs it through e.g. `ip netns exec NS`.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(prefix: &[&str], nofile: Option<u64>) -> Server {
        let bin = server_bin();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["--listen", "127.0.0.1:0", "--cores", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = nofile {
            limit_nofile(&mut cmd, n);
        }
        let mut child = cmd.spawn().expect("start ws-server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.trim().strip_prefix("listening on ") {
                        break a.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("ws-server exited without printing `listening on ADDR`");
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
fn ceiling(prefix: &[&str], url: &str, args: &[&str]) -> Outcome {
    ceiling_with_nofile(prefix, url, args, None)
}

/// Sets RLIMIT_NOFILE soft = hard = `n` in the child before exec.
fn limit_nofile(cmd: &mut Command, n: u64) {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs before exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Same, with the load generator's (and so its agents') RLIMIT_NOFILE set to `nofile`.
fn ceiling_with_nofile(prefix: &[&str], url: &str, args: &[&str], nofile: Option<u64>) -> Outcome {
    let dir = std::env::temp_dir();
    let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "");
    let json = dir.join(format!("ws-ceiling-{tag}.json"));
    let html = dir.join(format!("ws-ceiling-{tag}.html"));
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(loadgen());
            c
        }
        None => Command::new(loadgen()),
    };
    cmd.arg("ceiling")
        .arg(url)
        .args(args)
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
    let v = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
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
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = Server::start(&[], Some(300));
    let o = ceiling(
        &[],
        &srv.url(),
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
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = Server::start(&[], None);
    let args = ["--max", "1000", "--step", "100", "--hold", "1s"];
    // One process with 400 descriptors: its own socket() fails with EMFILE first.
    let mut one = args.to_vec();
    one.extend(["--processes", "1"]);
    let o = ceiling_with_nofile(&[], &srv.url(), &one, Some(400));
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
        &srv.url(),
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
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
        let srv = Server::start(&prefix, None);
        let o = ceiling(
            &prefix,
            &srv.url(),
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
