//! `ws-loadgen doctor` end to end: the real binary over injected limits — a fake sysctl tree
//! (`WS_CEILING_SYSCTL_ROOT`), a fake meminfo (`WS_CEILING_MEMINFO`), a stand-in "server"
//! process started with a low RLIMIT_NOFILE, and the doctor's own RLIMIT_NOFILE lowered —
//! checking, for each bound, the largest N, which bound binds first, and the exit code.
//! The arithmetic itself is unit-tested in `src/doctor.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{bin, limit_nofile};

/// A URL nobody listens on (so no local server is found by port and /metrics is off).
fn url() -> String {
    format!("ws://127.0.0.1:{}/ws", common::closed_port())
}

/// A roomy fake box; `edit` changes single keys (`("net.core.somaxconn", "128")`).
struct FakeBox {
    dir: PathBuf,
}

impl FakeBox {
    fn new(name: &str, edits: &[(&str, &str)], mem_available_kib: u64) -> Self {
        let dir = std::env::temp_dir().join(format!("ws-doctor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut keys: Vec<(String, String)> = [
            ("fs.file-max", "10000000"),
            ("fs.file-nr", "1000\t0\t10000000"),
            ("fs.nr_open", "1048576"),
            ("net.ipv4.ip_local_port_range", "1024\t65535"),
            ("net.ipv4.ip_local_reserved_ports", ""),
            ("net.core.somaxconn", "65535"),
            ("net.ipv4.tcp_max_syn_backlog", "65535"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in edits {
            keys.retain(|(x, _)| x != k);
            keys.push((k.to_string(), v.to_string()));
        }
        for (k, v) in keys {
            let p = dir.join("sys").join(k.replace('.', "/"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{v}\n")).unwrap();
        }
        std::fs::write(
            dir.join("meminfo"),
            format!(
                "MemTotal:       67108864 kB\nMemFree:        1000 kB\nMemAvailable:   {mem_available_kib} kB\nSlab:  1000 kB\n"
            ),
        )
        .unwrap();
        FakeBox { dir }
    }

    fn doctor(&self, args: &[&str], nofile: Option<u64>) -> (i32, serde_json::Value, String) {
        let json = common::temp_path("doctor.json");
        let mut cmd = Command::new(bin());
        cmd.arg("doctor")
            .arg(url())
            .args(["--metrics-url", "none", "--cores", "0", "--json"])
            .arg(&json)
            .args(args)
            .env("WS_CEILING_SYSCTL_ROOT", self.dir.join("sys"))
            .env("WS_CEILING_MEMINFO", self.dir.join("meminfo"));
        if let Some(n) = nofile {
            limit_nofile(&mut cmd, n);
        }
        let out = cmd.output().expect("run ws-loadgen doctor");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let v = common::read_json(&json);
        let _ = std::fs::remove_file(&json);
        (out.status.code().unwrap_or(-1), v, text)
    }
}

impl Drop for FakeBox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A stand-in server process: `sleep` with RLIMIT_NOFILE `n`.
struct FakeServer(Child);

impl FakeServer {
    fn start(n: u64) -> Self {
        let mut cmd = Command::new("sleep");
        cmd.arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        limit_nofile(&mut cmd, n);
        FakeServer(cmd.spawn().expect("start sleep"))
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bound<'a>(v: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    v["bounds"]
        .as_array()
        .and_then(|b| b.iter().find(|x| x["key"] == key))
        .unwrap_or_else(|| panic!("no bound {key} in {v}"))
}

fn max_n(v: &serde_json::Value, key: &str) -> Option<u64> {
    bound(v, key)["max_n"].as_u64()
}

#[test]
fn server_open_files_from_its_proc_limits() {
    let b = FakeBox::new("server", &[], 60 << 20);
    let srv = FakeServer::start(300);
    let (code, v, text) = b.doctor(&["-c", "1000", "--server-pid", &srv.pid()], None);
    assert_eq!(code, 1, "{text}");
    assert_eq!(v["binding"], "server_open_files", "{text}");
    // 300 minus the few descriptors the process has open (stdio).
    let m = max_n(&v, "server_open_files").unwrap();
    assert!((290..=300).contains(&m), "{m}: {text}");
    assert_eq!(v["largest_feasible"].as_u64(), Some(m));
    assert!(
        text.contains("binds first") && text.contains("LimitNOFILE"),
        "{text}"
    );
    let (code, v, text) = b.doctor(&["-c", "200", "--server-pid", &srv.pid()], None);
    assert_eq!(code, 0, "{text}");
    assert_eq!(v["feasible"], true);
}

#[test]
fn loadgen_open_files_per_process() {
    let b = FakeBox::new("loadgen", &[], 60 << 20);
    // 500 - 64 reserved - 1 worker.
    let (code, v, text) = b.doctor(&["-c", "1000", "--ends", "1"], Some(500));
    assert_eq!(code, 1, "{text}");
    assert_eq!(v["binding"], "loadgen_open_files", "{text}");
    assert_eq!(max_n(&v, "loadgen_open_files"), Some(435));
    let (code, v, _) = b.doctor(
        &["-c", "1000", "--ends", "1", "--loadgen-processes", "3"],
        Some(500),
    );
    assert_eq!(code, 0);
    assert_eq!(max_n(&v, "loadgen_open_files"), Some(1305));
    let (code, v, _) = b.doctor(
        &["-c", "1000", "--ends", "1", "--loadgen-processes", "auto"],
        Some(500),
    );
    assert_eq!(code, 0);
    assert_eq!(max_n(&v, "loadgen_open_files"), Some(1305));
}

#[test]
fn ports_times_source_addresses() {
    let b = FakeBox::new(
        "ports",
        &[("net.ipv4.ip_local_port_range", "40000\t40199")],
        60 << 20,
    );
    let (code, v, text) = b.doctor(&["-c", "1000"], None);
    assert_eq!(code, 1, "{text}");
    assert_eq!(v["binding"], "ports", "{text}");
    assert_eq!(max_n(&v, "ports"), Some(200));
    assert!(text.contains("--source-ip"), "{text}");
    // The server is unknown (nothing listens on the URL): said so, not assumed.
    assert_eq!(bound(&v, "server_open_files")["known"], false);
    let (code, v, text) = b.doctor(&["-c", "1000", "--source-ip", "127.0.0.2-127.0.0.6"], None);
    assert_eq!(code, 0, "{text}");
    assert_eq!(max_n(&v, "ports"), Some(1000));
    // Reserved ports come off the range.
    let b = FakeBox::new(
        "reserved",
        &[
            ("net.ipv4.ip_local_port_range", "40000\t40199"),
            ("net.ipv4.ip_local_reserved_ports", "40000-40049,50000"),
        ],
        60 << 20,
    );
    let (_, v, _) = b.doctor(&["-c", "1000"], None);
    assert_eq!(max_n(&v, "ports"), Some(150));
}

#[test]
fn conntrack_table() {
    let b = FakeBox::new(
        "conntrack",
        &[
            ("net.netfilter.nf_conntrack_max", "5000"),
            ("net.netfilter.nf_conntrack_count", "1000"),
        ],
        60 << 20,
    );
    let (code, v, text) = b.doctor(&["-c", "10000"], None);
    assert_eq!(code, 1, "{text}");
    assert_eq!(v["binding"], "conntrack");
    assert_eq!(max_n(&v, "conntrack"), Some(4000));
    assert!(text.contains("nf_conntrack_max=65536"), "{text}");
    // Not loaded: no bound.
    let b = FakeBox::new("noct", &[], 60 << 20);
    let (_, v, _) = b.doctor(&["-c", "10000"], None);
    assert_eq!(max_n(&v, "conntrack"), None);
}

#[test]
fn accept_queue_against_connect_rate() {
    let b = FakeBox::new("somaxconn", &[("net.core.somaxconn", "128")], 60 << 20);
    // 20000/s against 12000/s accepted: 128 * 20000 / 8000 = 320.
    let (code, v, text) = b.doctor(&["-c", "1000", "--connect-rate", "20000"], None);
    assert_eq!(code, 1, "{text}");
    assert_eq!(v["binding"], "accept_queue");
    assert_eq!(max_n(&v, "accept_queue"), Some(320));
    // At a rate the server keeps up with, no bound.
    let (code, v, _) = b.doctor(&["-c", "1000", "--connect-rate", "5000"], None);
    assert_eq!(code, 0);
    assert_eq!(max_n(&v, "accept_queue"), None);
}

#[test]
fn system_open_files() {
    let b = FakeBox::new(
        "filemax",
        &[("fs.file-max", "3000"), ("fs.file-nr", "1000\t0\t3000")],
        60 << 20,
    );
    let (code, v, _) = b.doctor(&["-c", "5000"], None);
    assert_eq!(code, 1);
    assert_eq!(v["binding"], "system_open_files");
    assert_eq!(max_n(&v, "system_open_files"), Some(1000)); // two files per connection
}

#[test]
fn memory_with_builtin_and_reported_figures() {
    // 10 MiB available at 42 + 700 + 2 x 5120 = 10982 B per connection.
    let b = FakeBox::new("memory", &[], 10 * 1024);
    let (code, v, text) = b.doctor(&["-c", "5000"], None);
    assert_eq!(code, 1, "{text}");
    assert_eq!(v["binding"], "memory");
    assert_eq!(max_n(&v, "memory"), Some((10u64 << 20) / 10_982));
    // Figures measured by a ceiling run replace the built-in ones.
    let report = b.dir.join("ceiling.json");
    std::fs::write(
        &report,
        r#"{"memory":{"server_user_bytes_per_conn":100.0,"loadgen_user_bytes_per_conn":300.0,"kernel_bytes_per_conn":9600.0}}"#,
    )
    .unwrap();
    let (_, v, _) = b.doctor(
        &["-c", "5000", "--from-report", report.to_str().unwrap()],
        None,
    );
    assert_eq!(max_n(&v, "memory"), Some((10u64 << 20) / 10_000));
}

#[test]
fn bad_usage_exits_2() {
    let b = FakeBox::new("usage", &[], 60 << 20);
    let (code, _, _) = b.doctor(&["-c", "0"], None);
    assert_eq!(code, 2);
    let (code, _, text) = b.doctor(&["-c", "10", "--server-pid", "999999999"], None);
    assert_eq!(code, 2, "{text}");
    let out = Command::new(bin())
        .args(["doctor", "ws://127.0.0.1:1/", "-c", "10", "--insecure"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(Path::new(bin()).exists());
}
