//! `deploy/grafana/ws-ceiling.json` asks only for metrics that exist: every metric name in
//! every panel's query is on ws-loadgen's live page (`run --metrics-listen`) or on
//! ws-server's `/metrics`, both read from the real programs during a run.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin, WsServer};

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Metric family names on a Prometheus page: every `# TYPE` (a family with no series yet,
/// such as failures by class in a clean run, is still served) and every sample's name
/// (histogram series folded into their family).
fn families(page: &str) -> BTreeSet<String> {
    let declared = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string);
    page.lines()
        .filter(|l| {
            !l.starts_with('#') && !l.is_empty() && !l.starts_with("HTTP/") && l.contains(' ')
        })
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !n.is_empty())
        .map(|n| {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(b) = n.strip_suffix(suffix) {
                    if page.contains(&format!("# TYPE {b} histogram")) {
                        return b.to_string();
                    }
                }
            }
            n.to_string()
        })
        .chain(declared)
        .collect()
}

/// Metric names a PromQL expression uses.
fn used(expr: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut cur = String::new();
    let mut in_braces = false;
    for c in expr.chars().chain([' ']) {
        match c {
            '{' => {
                in_braces = true;
                if !cur.is_empty() {
                    v.push(std::mem::take(&mut cur));
                }
            }
            '}' => in_braces = false,
            c if !in_braces && (c.is_ascii_alphanumeric() || c == '_') => cur.push(c),
            _ => {
                if !cur.is_empty() {
                    v.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    v.into_iter()
        .filter(|w| w.starts_with("ws_") || w.starts_with("process_"))
        .map(|w| w.strip_suffix("_bucket").map(str::to_string).unwrap_or(w))
        .collect()
}

#[test]
fn every_panel_queries_metrics_the_programs_serve() {
    let _g = common::serial();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/ws-ceiling.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    let mut panels = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            names.extend(used(t["expr"].as_str().unwrap()));
        }
        if p["type"] == "timeseries" {
            panels += 1;
            assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
            assert!(p["gridPos"]["w"].as_u64().is_some());
        }
    }
    assert!(panels >= 8, "{panels} panels");
    assert!(names.len() >= 15, "{names:?}");

    let srv = WsServer::start_on_two_cores(&[]);
    let port = common::closed_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin())
        .arg(srv.url("/ws"))
        .args(["-c", "20", "--rate", "100", "-d", "4s", "--progress", "off"])
        .args(["--metrics-listen", &listen, "--host-label", "grafana-test"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut page = None;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(p) =
            get(&listen, "/metrics").filter(|p| p.contains("ws_loadgen_latency_seconds_bucket"))
        {
            page = Some(p);
            break;
        }
    }
    let loadgen = page.expect("ws-loadgen's live metrics page");
    assert!(loadgen.contains("host=\"grafana-test\""));
    let server = get(srv.admin.as_deref().unwrap(), "/metrics").unwrap();
    let _ = child.wait();
    let have: BTreeSet<String> = families(&loadgen)
        .union(&families(&server))
        .cloned()
        .collect();
    let missing: Vec<&String> = names.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody serves: {missing:?}"
    );
}
