//! `run --metrics-listen ADDR`: the load as Prometheus metrics while it runs, so Grafana can
//! show it next to the server (`deploy/grafana/`). The page is rebuilt by the main thread
//! once a second from the totals it already merges from the workers' deltas; the workers
//! do nothing for it. A small thread answers `GET /metrics` with the latest page.
//!
//! Families (label `host` = `--host-label` on all of them):
//! `ws_loadgen_connections_open`, `ws_loadgen_connections_connecting` (gauges);
//! `ws_loadgen_connects_attempted_total`, `..._established_total`,
//! `ws_loadgen_connect_failures_total{class}`, `ws_loadgen_drops_total{class}`,
//! `ws_loadgen_messages_sent_total`, `..._received_total`, `..._lost_total`,
//! `ws_loadgen_bytes_received_total`, `ws_loadgen_pings_sent_total`,
//! `ws_loadgen_pongs_received_total`; and `ws_loadgen_latency_seconds{row}`, a histogram
//! per latency row (connect, tls, handshake, rtt, pong, delivery, http, a script's steps),
//! its buckets read off the HdrHistogram.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use ws_common::metrics::Page;

use crate::engine::stats::Stats;

/// Bucket bounds of the latency histograms, seconds.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The latest page, shared with the serving thread.
#[derive(Clone, Default)]
pub struct Live(Arc<Mutex<String>>);

impl Live {
    /// Binds `addr` and serves the page from a thread of its own.
    pub fn serve(addr: SocketAddr) -> Result<(Live, SocketAddr), String> {
        let l = TcpListener::bind(addr).map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
        let bound = l.local_addr().map_err(|e| e.to_string())?;
        let live = Live::default();
        let page = live.0.clone();
        std::thread::Builder::new()
            .name("ws-loadgen-metrics".into())
            .spawn(move || {
                for s in l.incoming() {
                    let Ok(mut s) = s else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 2048];
                    let n = s.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let (status, body) = if req.starts_with("GET /metrics") {
                        ("200 OK", page.lock().map(|p| p.clone()).unwrap_or_default())
                    } else {
                        ("404 Not Found", "GET /metrics\n".to_string())
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok((live, bound))
    }

    pub fn set(&self, page: String) {
        if let Ok(mut p) = self.0.lock() {
            *p = page;
        }
    }
}

fn histogram(page: &mut Page, host: &str, row: &str, h: &Histogram<u64>) {
    let name = "ws_loadgen_latency_seconds";
    for le in BUCKETS {
        let us = (le * 1e6) as u64;
        let n = if h.is_empty() {
            0
        } else {
            h.count_between(0, us)
        };
        page.sample(
            &format!("{name}_bucket"),
            &[("host", host), ("row", row), ("le", &le.to_string())],
            n,
        );
    }
    page.sample(
        &format!("{name}_bucket"),
        &[("host", host), ("row", row), ("le", "+Inf")],
        h.len(),
    );
    let sum = if h.is_empty() {
        0.0
    } else {
        h.mean() * h.len() as f64 / 1e6
    };
    page.sample(&format!("{name}_sum"), &[("host", host), ("row", row)], sum);
    page.sample(
        &format!("{name}_count"),
        &[("host", host), ("row", row)],
        h.len(),
    );
}

/// The page for totals `t`, `open` and `connecting` now; `steps` names a script's steps.
pub fn page(host: &str, t: &Stats, open: u32, connecting: u32, steps: &[String]) -> String {
    let mut p = Page::new();
    let h = [("host", host)];
    p.family(
        "ws_loadgen_connections_open",
        "gauge",
        "Connections open now.",
    )
    .sample("ws_loadgen_connections_open", &h, open);
    p.family(
        "ws_loadgen_connections_connecting",
        "gauge",
        "Connects and handshakes in progress now.",
    )
    .sample("ws_loadgen_connections_connecting", &h, connecting);
    let c = &t.c;
    for (name, help, v) in [
        (
            "ws_loadgen_connects_attempted_total",
            "Connect attempts.",
            c.connects_attempted,
        ),
        (
            "ws_loadgen_connects_established_total",
            "Connections upgraded.",
            c.connects_established,
        ),
        (
            "ws_loadgen_messages_sent_total",
            "Data messages sent.",
            c.msgs_sent,
        ),
        (
            "ws_loadgen_messages_received_total",
            "Data messages received and matched.",
            c.msgs_received,
        ),
        (
            "ws_loadgen_messages_lost_total",
            "Messages whose reply never came.",
            c.msgs_lost,
        ),
        (
            "ws_loadgen_bytes_received_total",
            "Payload bytes received.",
            c.bytes_received,
        ),
        (
            "ws_loadgen_pings_sent_total",
            "Heartbeat pings sent.",
            c.pings_sent,
        ),
        (
            "ws_loadgen_pongs_received_total",
            "Pongs received.",
            c.pongs_received,
        ),
    ] {
        p.family(name, "counter", help).sample(name, &h, v);
    }
    p.family(
        "ws_loadgen_connect_failures_total",
        "counter",
        "Failed connects by class (errno name, http_STATUS, timeouts, TLS causes).",
    );
    for (k, v) in &t.failures {
        p.sample(
            "ws_loadgen_connect_failures_total",
            &[("host", host), ("class", k)],
            v,
        );
    }
    p.family(
        "ws_loadgen_drops_total",
        "counter",
        "Established connections lost, by class (close_CODE, ECONNRESET, expect_timeout:STEP, ...).",
    );
    for (k, v) in &t.drop_classes {
        p.sample("ws_loadgen_drops_total", &[("host", host), ("class", k)], v);
    }
    p.family(
        "ws_loadgen_latency_seconds",
        "histogram",
        "Latency by row: connect, tls, handshake, rtt, pong, delivery, http, script steps.",
    );
    for (row, hist) in t.h.named() {
        histogram(&mut p, host, row, hist);
    }
    for (i, st) in t.steps.iter().enumerate() {
        if let Some(name) = steps.get(i) {
            histogram(&mut p, host, name, &st.h);
        }
    }
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut s = Stats::default();
        for us in [50u64, 300, 300, 2000, 20_000_000] {
            let _ = s.h.rtt.record(us);
        }
        s.fail("ECONNREFUSED");
        let text = page("h1", &s, 3, 1, &[]);
        let get = |le: &str| -> u64 {
            let key = format!(
                "ws_loadgen_latency_seconds_bucket{{host=\"h1\",row=\"rtt\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{key} missing"))
        };
        assert_eq!(get("0.0001"), 1);
        assert_eq!(get("0.0005"), 3);
        assert_eq!(get("0.0025"), 4);
        assert_eq!(get("10"), 4);
        assert_eq!(get("+Inf"), 5);
        assert!(text.contains("ws_loadgen_connections_open{host=\"h1\"} 3"));
        assert!(text
            .contains("ws_loadgen_connect_failures_total{host=\"h1\",class=\"ECONNREFUSED\"} 1"));
    }
}
