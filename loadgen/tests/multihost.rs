//! Several load machines on one box: the server in one network namespace, three load
//! generators in three others, each its own "host" (its own address, its own descriptor
//! limit), joined by veth pairs on a bridge in a fifth namespace, so the traffic crosses a
//! real veth path instead of loopback. The generators start together (`--start-at`), their
//! three reports are merged, and the merged counts must equal what the server counted.
//!
//! Every address lives only inside namespaces this test creates (10.213.0.0/24); all of
//! them are deleted at the end, also when the test fails (a guard's Drop). Needs root and
//! `ip netns`; skipped with a note otherwise.

mod common;

use std::process::{Command, Stdio};

use common::{bin, temp_path, WsServer};

/// The namespaces of this test, deleted on drop.
struct Net {
    names: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Server namespace at 10.213.0.1, generators at .11, .12, .13, a bridge in between.
fn build_net(tag: &str) -> Option<Net> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let ns = |s: &str| format!("{tag}-{s}");
    let hosts = ["srv", "g0", "g1", "g2"];
    let mut net = Net { names: Vec::new() };
    for n in hosts.iter().chain(&["br"]) {
        let name = ns(n);
        let _ = ip(&["netns", "del", &name]);
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        net.names.push(name.clone());
        if !ip(&["-n", &name, "link", "set", "lo", "up"]) {
            return None;
        }
    }
    let br = ns("br");
    let ok = ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])
        && ip(&["-n", &br, "link", "set", "br0", "up"]);
    if !ok {
        return None;
    }
    for (i, h) in hosts.iter().enumerate() {
        let host = ns(h);
        let port = format!("p{i}");
        let addr = if i == 0 {
            "10.213.0.1/24".to_string()
        } else {
            format!("10.213.0.{}/24", 10 + i)
        };
        let ok = ip(&[
            "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host,
        ]) && ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])
            && ip(&["-n", &host, "addr", "add", &addr, "dev", "eth0"])
            && ip(&["-n", &host, "link", "set", "eth0", "up"]);
        if !ok {
            return None;
        }
    }
    Some(net)
}

/// Sum of metric `name` as the server's admin listener inside namespace `ns` reports it.
fn ns_metric(ns: &str, admin: &str, name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c"])
        .arg(format!(
            "import urllib.request;print(urllib.request.urlopen('http://{admin}/metrics',timeout=5).read().decode())"
        ))
        .output()
        .expect("read /metrics inside the namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn three_hosts_merged_equal_what_the_server_counted() {
    let _g = common::serial();
    let tag = format!("wsmh{}", std::process::id() % 100_000);
    let Some(_net) = build_net(&tag) else {
        println!("skipped: no network namespaces here (needs root and `ip netns`)");
        return;
    };
    let srv_ns = format!("{tag}-srv");
    let srv = WsServer::start_listen(
        &["ip", "netns", "exec", &srv_ns],
        "10.213.0.1:0",
        &["--cores", "0"],
    );
    let admin = srv.admin.clone().expect("admin listener");
    let url = format!("ws://{}/ws", srv.addr);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 1.5;
    let at = format!("{at:.3}");
    let files: Vec<_> = (0..3).map(|i| temp_path(&format!("mh{i}.json"))).collect();
    let kids: Vec<_> = (0..3)
        .map(|i| {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &format!("{tag}-g{i}")])
                .arg(bin())
                .arg(&url)
                .args(["-c", "200", "--rate", "600", "-d", "3s", "--cores", "1"])
                .args(["--start-at", &at, "--host-label", &format!("host-{i}")])
                .args(["--progress", "off", "--json"])
                .arg(&files[i])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            // Each "host" has a descriptor limit of its own.
            common::limit_nofile(&mut cmd, 1000 + 100 * i as u64);
            cmd.spawn().unwrap()
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let json = temp_path("mh-merged.json");
    let out = Command::new(bin())
        .arg("merge")
        .args(&files)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = common::read_json(&json);
    // Each generator saw only its own descriptor limit.
    for (i, f) in files.iter().enumerate() {
        let r = common::read_json(f);
        assert_eq!(
            r["config"]["nofile_hard"].as_u64(),
            Some(1000 + 100 * i as u64)
        );
        assert_eq!(r["host_label"], format!("host-{i}"));
    }
    let est = j["connections"]["established"].as_u64().unwrap();
    assert_eq!(est, 600);
    assert_eq!(ns_metric(&srv_ns, &admin, "ws_upgraded_total"), est);
    let sent = j["messages"]["sent"].as_u64().unwrap();
    assert!(sent > 0);
    assert_eq!(ns_metric(&srv_ns, &admin, "ws_messages_in_total"), sent);
    assert_eq!(j["messages"]["received"].as_u64().unwrap(), sent);
    assert_eq!(j["messages"]["lost"], 0);
    assert_eq!(j["hosts"].as_array().unwrap().len(), 3);
    drop(srv);
    for f in files.iter().chain([&json]) {
        let _ = std::fs::remove_file(f);
    }
}
