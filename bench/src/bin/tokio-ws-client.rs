//! `tokio-ws-client`: the naive WebSocket client most people would write with tokio and
//! tokio-tungstenite, one task per connection (`connect_async`, then a read loop), used by
//! `scripts/compare.sh` as the reference ws-loadgen's handshake rate and memory are
//! compared with.
//!
//! It opens `-c N` connections as fast as possible (at most `--concurrency` handshakes in
//! flight), holds them `--hold` seconds (each task reading, so pings are answered), closes
//! them, and prints handshakes/s and its own resident memory per connection. The last line
//! on stdout is one JSON object.
//!
//! With `--rate R` every task also sends a `--size`-byte binary message R times a second
//! while the connections are held (`--closed-loop`: the next one when the echo is back),
//! each carrying its intended send time, and the report adds sent, received and the round
//! trip's p50/p99: the load-generator section of `scripts/compare.sh` runs it like that.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use ws_bench::{cpu_seconds, ensure_fds, install_stop_signals, parse_duration, rss_bytes, stopped};

#[derive(Parser)]
#[command(
    name = "tokio-ws-client",
    version,
    about = "One-task-per-connection tokio-tungstenite client: handshakes/s and RSS per connection."
)]
struct Cli {
    /// ws://HOST:PORT/PATH
    url: String,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 1000)]
    connections: u64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
    /// How long to hold the connections once all are open.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    hold: Duration,
    /// Runtime threads: 1 is a current-thread runtime (one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// tungstenite's read buffer per connection (default: tungstenite's own, 128 KiB,
    /// which is what a naive client gets).
    #[arg(long, value_name = "BYTES")]
    read_buffer_size: Option<usize>,
    /// Echo load while holding: messages per second per connection (0: none).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Echo load while holding: one message in flight per connection, as fast as it returns.
    #[arg(long)]
    closed_loop: bool,
    /// Bytes per echo message (at least 8: the send time).
    #[arg(long, default_value_t = 64)]
    size: usize,
}

#[derive(Default)]
struct Counts {
    established: AtomicU64,
    failed: AtomicU64,
    /// Nanoseconds since start when the last handshake completed.
    last_ns: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    sent: AtomicU64,
    received: AtomicU64,
    /// Round trips in microseconds. One runtime thread by default, so the lock is uncontended.
    rtt: Mutex<Option<Histogram<u64>>>,
}

impl Counts {
    fn record(&self, us: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut h = self.rtt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = h.as_mut() {
            h.saturating_record(us.max(1));
        }
    }

    fn quantile_us(&self, q: f64) -> u64 {
        let h = self.rtt.lock().unwrap_or_else(|p| p.into_inner());
        h.as_ref().map_or(0, |h| h.value_at_quantile(q))
    }
}

/// The echo message: the intended send time (µs since start) padded to `size` bytes.
fn stamp(start: Instant, at: Instant, size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size.max(8)];
    let us = at.saturating_duration_since(start).as_micros() as u64;
    m[..8].copy_from_slice(&us.to_le_bytes());
    m
}

fn rtt_us(start: Instant, m: &[u8]) -> Option<u64> {
    let sent = u64::from_le_bytes(m.get(..8)?.try_into().ok()?);
    Some((start.elapsed().as_micros() as u64).saturating_sub(sent))
}

fn main() {
    let cli = Cli::parse();
    ensure_fds("tokio-ws-client", cli.connections);
    install_stop_signals();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-ws-client: runtime: {e}");
            std::process::exit(1);
        }
    };
    let v = rt.block_on(run(cli));
    println!("{v}");
}

async fn run(cli: Cli) -> serde_json::Value {
    let n = cli.connections;
    let counts = Arc::new(Counts {
        rtt: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).ok()),
        ..Counts::default()
    });
    let period = (cli.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cli.rate));
    let (closed_loop, size) = (cli.closed_loop, cli.size);
    let permits = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss_before = rss_bytes();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let url = cli.url.clone();
        let counts = counts.clone();
        let permits = permits.clone();
        let mut stop = stop_rx.clone();
        let read_buffer = cli.read_buffer_size;
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let ws = match read_buffer {
                None => tokio_tungstenite::connect_async(url.as_str()).await,
                Some(n) => {
                    let cfg = WebSocketConfig::default().read_buffer_size(n);
                    tokio_tungstenite::connect_async_with_config(url.as_str(), Some(cfg), false)
                        .await
                }
            };
            drop(permit);
            let mut ws = match ws {
                Ok((ws, _resp)) => ws,
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    let mut m = counts.errors.lock().unwrap_or_else(|p| p.into_inner());
                    *m.entry(e.to_string()).or_default() += 1;
                    return;
                }
            };
            counts.established.fetch_add(1, Ordering::Relaxed);
            counts
                .last_ns
                .fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            // Open loop: a ticker per task, starting at a random phase so sends spread out.
            let mut ticker = period.map(|p| {
                let phase = p.mul_f64(rand_unit());
                tokio::time::interval_at(tokio::time::Instant::now() + phase, p)
            });
            if closed_loop {
                if ws.send(Message::Binary(stamp(start, Instant::now(), size).into())).await.is_err() {
                    return;
                }
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Binary(b))) => {
                            if let Some(us) = rtt_us(start, &b) {
                                counts.record(us);
                                if closed_loop {
                                    let next = stamp(start, Instant::now(), size);
                                    if ws.send(Message::Binary(next.into())).await.is_err() {
                                        return;
                                    }
                                    counts.sent.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    at = async { ticker.as_mut().map(|t| t.tick()).unwrap().await }, if ticker.is_some() => {
                        let m = stamp(start, at.into_std(), size);
                        if ws.send(Message::Binary(m.into())).await.is_err() {
                            return;
                        }
                        counts.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = stop.changed() => break,
                }
            }
            let _ = ws.close(None).await;
            // Wait briefly for the server's Close so it sees a clean close, not a reset.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }));
    }
    // Wait until every handshake finished (or failed).
    let mut next_print = Instant::now() + Duration::from_secs(1);
    let mut last_est = 0;
    loop {
        let est = counts.established.load(Ordering::Relaxed);
        let failed = counts.failed.load(Ordering::Relaxed);
        if est + failed >= n || stopped() {
            break;
        }
        if Instant::now() >= next_print {
            eprintln!(
                "handshakes: {}/s (total {est}, failed {failed})",
                est - last_est
            );
            last_est = est;
            next_print += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let est = counts.established.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let elapsed = counts.last_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let cpu_open = cpu_seconds() - cpu0;
    // Let allocations settle, then measure while every connection is held.
    let hold_end = Instant::now() + cli.hold;
    tokio::time::sleep(cli.hold.min(Duration::from_millis(500))).await;
    let rss_held = rss_bytes();
    while Instant::now() < hold_end && !stopped() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let rate = if elapsed > 0.0 {
        est as f64 / elapsed
    } else {
        0.0
    };
    let per_conn = if est > 0 {
        (rss_held.saturating_sub(rss_before)) as f64 / est as f64
    } else {
        0.0
    };
    eprintln!(
        "{est} handshakes (failed {failed}) in {elapsed:.3} s: {rate:.0}/s; RSS {:.0} B per connection",
        per_conn
    );
    let errors = counts
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    json!({
        "kind": "tokio-ws-client",
        "url": cli.url,
        "connections": n,
        "established": est,
        "failed": failed,
        "errors": errors,
        "elapsed_s": elapsed,
        "rate": rate,
        "cpu_s_open": cpu_open,
        "cpu_us_per_handshake": if est > 0 { cpu_open * 1e6 / est as f64 } else { 0.0 },
        "rss_before_bytes": rss_before,
        "rss_held_bytes": rss_held,
        "rss_per_conn_bytes": per_conn,
        "threads": cli.threads,
        "read_buffer_size": cli.read_buffer_size,
        "rate": cli.rate,
        "closed_loop": cli.closed_loop,
        "sent": counts.sent.load(Ordering::Relaxed),
        "received": counts.received.load(Ordering::Relaxed),
        "p50_us": counts.quantile_us(0.50),
        "p99_us": counts.quantile_us(0.99),
        "cpu_s_total": cpu_seconds() - cpu0,
    })
}

/// A number in [0, 1) from the clock: enough to spread ticker phases, no RNG crate needed.
fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
