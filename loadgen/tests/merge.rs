//! `ws-loadgen merge`: reports of several load generators made into one, checked against
//! what the server counted, and refusals of reports that cannot be combined. Counts only.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{bin, temp_path, WsServer};

fn merge(args: &[&str]) -> (Output, serde_json::Value) {
    let json = temp_path("merged.json");
    let out = Command::new(bin())
        .arg("merge")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let j = common::read_json(&json);
    let _ = std::fs::remove_file(&json);
    (out, j)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A `ws-loadgen run URL ARGS --json FILE` started in the background.
fn spawn_run(url: &str, args: &[&str], json: &Path) -> std::process::Child {
    Command::new(bin())
        .arg(url)
        .args(args)
        .arg("--json")
        .arg(json)
        .args(["--progress", "off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn three_generators_started_together_merge_into_what_the_server_counted() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let at = format!("{:.3}", unix_now() + 1.5);
    let files: Vec<_> = (0..3)
        .map(|i| temp_path(&format!("host{i}.json")))
        .collect();
    let kids: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let label = format!("gen-{i}");
            spawn_run(
                &srv.url("/ws"),
                &[
                    "-c",
                    "10",
                    "--rate",
                    "200",
                    "-d",
                    "2s",
                    "--start-at",
                    &at,
                    "--host-label",
                    &label,
                    "--cores",
                    "1",
                ],
                f,
            )
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let (o, j) = merge(&[&names[..], &["--max-error-rate", "0%", "--max-p99", "60s"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // One answer: the sums are what the server counted.
    assert_eq!(j["connections"]["established"], 30, "{}", text(&o));
    assert_eq!(
        j["connections"]["established"].as_u64().unwrap(),
        srv.metric("ws_upgraded_total")
    );
    let sent = j["messages"]["sent"].as_u64().unwrap();
    assert_eq!(sent, srv.metric("ws_messages_in_total"));
    assert_eq!(j["messages"]["received"].as_u64().unwrap(), sent);
    // Histograms were added, not averaged: the merged count is every sample.
    let per: Vec<serde_json::Value> = files.iter().map(|f| common::read_json(f)).collect();
    let rtt: u64 = per
        .iter()
        .map(|r| r["latency"]["rtt"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(j["latency"]["rtt"]["count"].as_u64().unwrap(), rtt);
    let max_p99 = per
        .iter()
        .map(|r| r["latency"]["rtt"]["p99"].as_u64().unwrap())
        .max()
        .unwrap();
    let min_p99 = per
        .iter()
        .map(|r| r["latency"]["rtt"]["p99"].as_u64().unwrap())
        .min()
        .unwrap();
    let p99 = j["latency"]["rtt"]["p99"].as_u64().unwrap();
    assert!(
        min_p99 <= p99 && p99 <= max_p99,
        "{min_p99} {p99} {max_p99}"
    );
    // The per-host table, and the start they shared.
    let hosts = j["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    let mut labels: Vec<&str> = hosts.iter().map(|h| h["label"].as_str().unwrap()).collect();
    labels.sort();
    assert_eq!(labels, ["gen-0", "gen-1", "gen-2"]);
    for r in &per {
        assert!(r["start_at_unix_ms"].as_u64().is_some());
        assert!(r["start_late_ms"].as_f64().is_some());
    }
    // Seconds aligned on the wall clock: the merged series is no longer than the run.
    let secs = j["per_second"].as_array().unwrap();
    let msgs: u64 = secs.iter().map(|s| s["msgs_sent"].as_u64().unwrap()).sum();
    assert_eq!(msgs, sent);
    assert!(secs.len() <= 5, "{} seconds", secs.len());
    assert!(String::from_utf8_lossy(&o.stdout).contains("Hosts        3 load generators"));
    // A merged report merges again (a merge of merges).
    let once = temp_path("once.json");
    std::fs::write(&once, serde_json::to_string(&j).unwrap()).unwrap();
    let (o2, j2) = merge(&[once.to_str().unwrap(), names[0]]);
    assert_eq!(o2.status.code(), Some(0), "{}", text(&o2));
    assert_eq!(j2["hosts"].as_array().unwrap().len(), 4);
    assert_eq!(
        j2["messages"]["sent"].as_u64().unwrap(),
        sent + per[0]["messages"]["sent"].as_u64().unwrap()
    );
    for f in files.iter().chain([&once]) {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn thresholds_are_checked_on_the_merged_figures_and_bad_inputs_refused() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let echo = temp_path("echo.json");
    let hold = temp_path("hold.json");
    let r = common::run_loadgen(&srv.url("/ws"), &["-c", "5", "--rate", "100", "-d", "1s"]);
    std::fs::write(&echo, r.json_text.unwrap()).unwrap();
    let r = common::run_loadgen(
        &srv.url("/ws"),
        &["-c", "5", "--scenario", "hold", "-d", "1s"],
    );
    std::fs::write(&hold, r.json_text.unwrap()).unwrap();
    let e = echo.to_str().unwrap();
    // A limit nobody meets fails on the merged p99: exit 1, named.
    let (o, j) = merge(&[e, e, "--max-p99", "1us", "--max-p99", "handshake=60s"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(j["thresholds"][0]["pass"], false);
    assert_eq!(j["thresholds"][1]["name"], "max-p99 handshake");
    assert_eq!(j["thresholds"][1]["pass"], true);
    // Another scenario, a file that is not a report, a missing file: exit 2, said.
    let (o, _) = merge(&[e, hold.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("scenario"), "{}", text(&o));
    let junk = temp_path("junk.json");
    std::fs::write(&junk, "{\"tool\": 3}").unwrap();
    let (o, _) = merge(&[e, junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("is not a ws-loadgen run report"),
        "{}",
        text(&o)
    );
    let (o, _) = merge(&[e, "/nonexistent/report.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("cannot read /nonexistent/report.json"),
        "{}",
        text(&o)
    );
    let (o, _) = merge(&[e, "--max-p99", "nosuch=1s"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("rows: connect"), "{}", text(&o));
    for f in [&echo, &hold, &junk] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn scripted_hosts_in_one_room_merge_with_a_word_on_their_clocks() {
    let _g = common::serial();
    let srv = WsServer::start_on_two_cores(&[]);
    let dir = temp_path("merge-script");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("room.toml");
    std::fs::write(
        &file,
        format!(
            "url = \"ws://{}/broadcast?room=m\"\nconnections = 5\n[loop]\nname = \"say\"\nrate = 4\n\
             send = '{{\"t\":\"{{{{stamp}}}}\"}}'\n",
            srv.addr
        ),
    )
    .unwrap();
    let at = format!("{:.3}", unix_now() + 1.0);
    let files: Vec<_> = (0..2).map(|i| dir.join(format!("h{i}.json"))).collect();
    let kids: Vec<_> = (0..2)
        .map(|i| {
            Command::new(bin())
                .args(["run", "--script"])
                .arg(&file)
                .args([
                    "-d",
                    "2s",
                    "--start-at",
                    &at,
                    "--cores",
                    "1",
                    "--progress",
                    "off",
                ])
                .args([
                    "--conn-offset",
                    &(i * 100).to_string(),
                    "--host-label",
                    &format!("h{i}"),
                ])
                .arg("--json")
                .arg(&files[i])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let (o, j) = merge(&names);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let per: Vec<serde_json::Value> = files.iter().map(|f| common::read_json(f)).collect();
    let sum = |p: &str| {
        per.iter()
            .map(|r| r.pointer(p).unwrap().as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        j["script"]["loop"]["sent"].as_u64().unwrap(),
        sum("/script/loop/sent")
    );
    assert_eq!(
        j["script"]["loop"]["sent"].as_u64().unwrap(),
        srv.metric("ws_messages_in_total")
    );
    assert_eq!(
        j["script"]["loop"]["deliveries"].as_u64().unwrap(),
        sum("/script/loop/deliveries")
    );
    assert_eq!(j["script"]["loop"]["gaps"], 0);
    // Connections were numbered apart: no receiver mistook another's message for its own.
    assert_eq!(j["script"]["loop"]["unexpected"], 0);
    assert_eq!(j["script"]["loop"]["replies"], j["script"]["loop"]["sent"]);
    // Deliveries crossed hosts: the report says what that latency rests on.
    let note = j["clock_note"].as_str().unwrap_or("");
    assert!(note.contains("wall-clock time"), "{}", text(&o));
    assert!(
        per.iter()
            .all(|r| r["clock"]["max_error_us"].as_i64().is_some()),
        "adjtimex read"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("Clocks       delivery latency"));
    let _ = std::fs::remove_dir_all(&dir);
}
