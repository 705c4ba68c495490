//! The server's CPU and memory over a run, once a second, on a thread of its own (never a
//! worker's): from its `/metrics` (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`) or, when the server is a local process, from
//! `/proc/PID/stat` and `/proc/PID/status` (what `ceiling` uses: a scrape costs the server a
//! descriptor, and near its limit that would move the ceiling it measures).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ws_common::payload::now_ns;

use crate::limits::metrics::MetricsUrl;

/// The server at one moment of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerSample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// CPU over the last interval, % of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// Where the figures come from.
pub enum Source {
    Metrics(MetricsUrl),
    Proc(u32),
}

impl Source {
    /// (CPU seconds so far, RSS bytes).
    fn read(&self) -> Result<(Option<f64>, Option<f64>), String> {
        match self {
            Source::Metrics(m) => {
                let page = m.scrape(Duration::from_millis(500))?;
                Ok((
                    page.sum("process_cpu_seconds_total"),
                    page.sum("process_resident_memory_bytes"),
                ))
            }
            Source::Proc(pid) => Ok((
                crate::limits::proc_cpu_seconds(*pid),
                crate::limits::proc_rss(*pid).map(|b| b as f64),
            )),
        }
    }
}

/// Reads the server's CPU and RSS once a second on a thread of its own (never on a
/// worker), until the run is over.
pub struct Sampler {
    done: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<ServerSample>>,
}

impl Sampler {
    pub fn start(src: Source, start_ns: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut last: Option<(f64, f64)> = None; // (t, cpu seconds)
            let mut warned = false;
            while !d.load(Ordering::Relaxed) {
                let t = now_ns().saturating_sub(start_ns) as f64 / 1e9;
                match src.read() {
                    Ok((cpu, rss)) => {
                        if let (Some(cpu), Some(rss)) = (cpu, rss) {
                            if let Some((t0, c0)) = last {
                                let dt = (t - t0).max(1e-3);
                                out.push(ServerSample {
                                    t_s: t,
                                    cpu_percent: ((cpu - c0) / dt * 100.0).max(0.0),
                                    rss_bytes: rss as u64,
                                });
                            }
                            last = Some((t, cpu));
                        } else if !warned {
                            warned = true;
                            eprintln!(
                                "ws-loadgen: the server's figures lack CPU or RSS \
                                 (process_cpu_seconds_total, process_resident_memory_bytes): \
                                 no server CPU and memory in the report"
                            );
                        }
                    }
                    Err(e) if !warned => {
                        warned = true;
                        eprintln!("ws-loadgen: cannot sample the server ({e}); the report lacks the samples that failed");
                    }
                    Err(_) => {}
                }
                // Sleep to the next whole second of the run, waking early when it ends.
                let next =
                    (t.floor() + 1.0 - now_ns().saturating_sub(start_ns) as f64 / 1e9).max(0.05);
                let until = std::time::Instant::now() + Duration::from_secs_f64(next);
                while std::time::Instant::now() < until && !d.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            out
        });
        Self { done, handle }
    }

    pub fn finish(self) -> Vec<ServerSample> {
        self.done.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}
