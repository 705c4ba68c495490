//! The HTML pages as a person sees them: `run --html` (with the server's CPU and RSS
//! sampled from its /metrics), `merge --html` and `ceiling --html`, each opened in headless
//! Chromium (Debian's `chromium`), screenshotted and checked: it rendered (DOM dumped by
//! the browser), no console errors, the expected titles and SVG charts present, and the
//! screenshot is not blank. Skipped with a note where Chromium is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, temp_path, WsServer};

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

const FLAGS: [&str; 4] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
];

/// Opens `page` in Chromium; returns the DOM it rendered, after checking the screenshot
/// and the console. None: no Chromium here.
fn render(page: &Path) -> Option<String> {
    let chrome = chromium()?;
    let url = format!("file://{}", page.display());
    let profile = temp_path("chromium-profile");
    let shot = temp_path("shot.png");
    let out = Command::new(&chrome)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,2400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    let log = String::from_utf8_lossy(&out.stderr);
    // Console messages come out as CONSOLE(...) lines; the pages have no script at all.
    if let Some(l) = log.lines().find(|l| l.contains(":CONSOLE")) {
        panic!("console message from {url}: {l}");
    }
    let png = std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot of {url}:\n{log}"));
    let (w, h, ink) = ink(&png);
    assert!(w >= 1000 && h >= 1000, "screenshot {w}x{h}");
    // Text, axes and lines cover a fair share of the page; a blank page has none.
    assert!(
        ink > 0.01,
        "screenshot of {url} is blank ({:.4} non-white)",
        ink
    );
    let dom = Command::new(&chrome)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium --dump-dom");
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_file(&shot);
    Some(String::from_utf8_lossy(&dom.stdout).into_owned())
}

/// (width, height, share of pixels that are not near white) of a PNG.
fn ink(png_bytes: &[u8]) -> (u32, u32, f64) {
    let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut r = dec.read_info().expect("PNG header");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).expect("PNG frame");
    let ch = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let dark = px
        .chunks(ch)
        .filter(|p| p.iter().take(3).any(|&c| c < 200))
        .count();
    (
        info.width,
        info.height,
        dark as f64 / (px.len() / ch) as f64,
    )
}

fn svg_count(dom: &str) -> usize {
    dom.matches("<svg").count()
}

#[test]
fn run_and_merge_pages_render_with_the_server_cpu_and_memory() {
    let _g = common::serial();
    if chromium().is_none() {
        println!("skipped: no Chromium (apt-get install chromium)");
        return;
    }
    let srv = WsServer::start_on_two_cores(&[]);
    let page = temp_path("run.html");
    let json = temp_path("run.json");
    let out = Command::new(bin())
        .arg(srv.url("/ws"))
        .args(["-c", "50", "--rate", "500", "-d", "3s", "--progress", "off"])
        .arg("--html")
        .arg(&page)
        .arg("--json")
        .arg(&json)
        .args(srv.admin_args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = common::read_json(&json);
    let samples = j["server_samples"].as_array().cloned().unwrap_or_default();
    assert!(samples.len() >= 2, "server samples: {samples:?}");
    assert!(samples
        .iter()
        .all(|s| s["rss_bytes"].as_u64().unwrap_or(0) > 1 << 20));
    let dom = render(&page).unwrap();
    for title in [
        "ws-loadgen report",
        "Connections",
        "Messages per second",
        "Latency: rtt, p99 per second",
        "Failures per second",
        "Server CPU",
        "Server memory",
        "Stages",
        "Failures by class",
    ] {
        assert!(
            dom.contains(title),
            "{title} missing from the rendered page"
        );
    }
    assert_eq!(
        svg_count(&dom),
        6,
        "charts: connections, messages, p99, failures, CPU, RSS"
    );
    assert!(
        dom.contains("% of one core") && dom.contains("MiB"),
        "axis units"
    );
    assert!(dom.contains("<polyline"), "no line drawn");
    // The merge of two such reports renders too, with its per-host table.
    let merged = temp_path("merged.html");
    let o = Command::new(bin())
        .arg("merge")
        .arg(&json)
        .arg(&json)
        .arg("--html")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = render(&merged).unwrap();
    assert!(dom.contains("merged from 2 load generators"));
    assert!(dom.contains("Load generators"));
    assert_eq!(svg_count(&dom), 6);
    for f in [&page, &json, &merged] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn the_ceiling_page_renders() {
    let _g = common::serial();
    if chromium().is_none() {
        println!("skipped: no Chromium (apt-get install chromium)");
        return;
    }
    let srv = WsServer::start_on_two_cores(&[]);
    let page = temp_path("ceiling.html");
    let out = Command::new(bin())
        .arg("ceiling")
        .arg(srv.url("/ws"))
        .args([
            "--max",
            "400",
            "--step",
            "200",
            "--hold",
            "2s",
            "--progress",
            "off",
        ])
        .arg("--html")
        .arg(&page)
        .args(srv.admin_args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dom = render(&page).unwrap();
    assert!(dom.contains("ws-ceiling report"));
    assert!(dom.contains("Ceiling: 400 connections"), "{dom}");
    // Open connections, pong p99, and the server's CPU and memory (read from /proc: the
    // server is a local process).
    assert!(
        dom.contains("Server CPU") && dom.contains("Server memory"),
        "{dom}"
    );
    assert!(svg_count(&dom) >= 4);
    let _ = std::fs::remove_file(&page);
}
