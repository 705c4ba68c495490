//! The ceiling report: one serde structure written as JSON (`--json`), rendered as text on
//! stdout and as a self-contained HTML page with inline SVG plots (`--html`, no scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::engine::stats::Counters;
use crate::fmt::{fmt_n, opt_us};
use crate::limits::bounds::Bound;
use crate::limits::metrics::ServerMetrics;
use crate::limits::verdict::{classes, StopReason, Verdict};
use crate::limits::{Meminfo, SockStat};
use crate::report::html::{html_escape, svg_chart};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CeilingConfig {
    pub max: u64,
    pub step: u64,
    pub hold_s: f64,
    pub connect_rate: f64,
    pub ping_interval_ms: u64,
    pub max_error_rate: f64,
    /// None: no latency threshold.
    pub max_p99_us: Option<u64>,
    pub connect_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub processes: u64,
    pub cores: Vec<usize>,
    pub source_ips: Vec<String>,
    /// `--script`: the scenario file the connections ran (None: idle connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ceiling {
    /// Connections held through the whole hold (the fewest open at any moment of it).
    pub connections: u64,
    /// Most connections open at once during the ramp (touched, maybe not held).
    pub touched: u64,
    /// Held for the whole --hold without a drop.
    pub confirmed: bool,
    pub held_for_s: f64,
    pub stop_reason: StopReason,
    /// Target of the last step that passed.
    pub last_good_level: u64,
    /// Target of the step that failed, if one did.
    pub failing_level: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    pub index: usize,
    pub target: u64,
    pub added: u64,
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub drops: BTreeMap<String, u64>,
    /// Open connections when the step ended.
    pub open: u64,
    /// (failed connects + drops) / connect attempts of the step.
    pub error_rate: f64,
    pub pong_p99_us: Option<u64>,
    pub handshake_p99_us: Option<u64>,
    pub duration_s: f64,
    pub server_rss_bytes: Option<u64>,
    /// From /metrics (a remote server); a local one's are listed only at the plateau.
    pub server_fds: Option<u64>,
    /// Resident memory of all load generator processes.
    pub loadgen_rss_bytes: u64,
    /// /proc/meminfo Slab.
    pub slab_bytes: Option<u64>,
    /// TCP memory (sockstat mem pages × page size).
    pub tcp_mem_bytes: Option<u64>,
    /// /metrics answered at the end of the step.
    pub metrics_answered: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HoldReport {
    pub open_at_start: u64,
    pub min_open: u64,
    pub open_at_end: u64,
    pub duration_s: f64,
    pub drops: u64,
    pub drop_classes: BTreeMap<String, u64>,
    pub pings: u64,
    pub pongs: u64,
    /// pongs / pings during the hold (pings sent in its last moments may still be in flight).
    pub survival: Option<f64>,
    pub pong_p99_us: Option<u64>,
    pub pong_max_us: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerReport {
    pub pid: Option<u32>,
    pub comm: String,
    pub nofile: Option<(u64, u64)>,
    pub fds_at_start: Option<u64>,
    pub fds_at_peak: Option<u64>,
    pub rss_at_start: Option<u64>,
    pub rss_at_peak: Option<u64>,
    pub metrics_before: Option<ServerMetrics>,
    pub metrics_after: Option<ServerMetrics>,
    /// Growth of ws_accept_errors_total by errno over the run.
    pub accept_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadgenReport {
    pub processes: u64,
    pub pids: Vec<u32>,
    pub nofile: (u64, u64),
    pub rss_at_start: u64,
    pub rss_at_peak: u64,
    /// Most connections one process held.
    pub max_open_per_process: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SystemReport {
    pub mem_at_start: Option<Meminfo>,
    pub mem_at_peak: Option<Meminfo>,
    pub sockstat_at_start: Option<SockStat>,
    pub sockstat_at_peak: Option<SockStat>,
    pub conntrack_max: Option<u64>,
    pub conntrack_count_at_start: Option<u64>,
    pub conntrack_count_at_peak: Option<u64>,
    pub port_range: Option<(u32, u32)>,
    pub somaxconn: Option<u64>,
    pub file_max: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Projection {
    pub label: String,
    pub mem_bytes: u64,
    /// Connections if only memory bound them, server and load generator on the box.
    pub both_ends: Option<u64>,
    /// Connections if only memory bound them, the server alone on the box.
    pub server_only: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryReport {
    /// Connections open when memory was measured.
    pub connections_measured: u64,
    /// Measured over enough connections (at least [`MEMORY_MIN_CONNS`]) for the page-sized
    /// steps of RSS and the other activity on the box not to dominate.
    pub reliable: bool,
    /// How the per-connection figures were obtained.
    pub method: String,
    /// Server RSS growth per connection.
    pub server_user_bytes_per_conn: Option<f64>,
    /// Load generator RSS growth per connection (all processes).
    pub loadgen_user_bytes_per_conn: Option<f64>,
    /// Growth of /proc/meminfo Slab per connection, all ends on this box together.
    pub kernel_bytes_per_conn: Option<f64>,
    /// Connection ends on this box the kernel figure covers (2: server local too).
    pub kernel_ends: u32,
    /// Growth of TCP memory (sockstat `mem` pages) per connection.
    pub sockstat_mem_bytes_per_conn: Option<f64>,
    pub per_conn_both_ends: Option<f64>,
    pub per_conn_server_only: Option<f64>,
    pub projections: Vec<Projection>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimePoint {
    pub t_s: f64,
    pub open: u64,
    pub pending: u64,
    pub failed: u64,
    pub drops: u64,
    pub pong_p99_us: Option<u64>,
    pub phase: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CeilingReport {
    pub tool: String,
    pub version: String,
    pub url: String,
    pub server_addr: String,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    pub interrupted: bool,
    pub config: CeilingConfig,
    pub ceiling: Ceiling,
    pub binding_limit: Verdict,
    /// How to raise the binding limit (and what comes after it).
    pub what_to_change: Vec<String>,
    /// doctor's bounds for --max connections, after the run: which limits come next.
    pub next_limits: Vec<Bound>,
    /// doctor's prediction before the run: (largest feasible N, binding bound key).
    pub predicted: Option<(u64, String)>,
    pub steps: Vec<StepReport>,
    pub hold: Option<HoldReport>,
    pub server: ServerReport,
    pub loadgen: LoadgenReport,
    pub system: SystemReport,
    pub memory: MemoryReport,
    pub failures: BTreeMap<String, u64>,
    pub drops: BTreeMap<String, u64>,
    pub totals: Counters,
    pub timeline: Vec<TimePoint>,
    /// 0: ceiling found and held; 1: not confirmed (drops during the hold) or interrupted;
    /// 2: could not run.
    pub exit_code: i32,
    pub error: Option<String>,
    /// The server's CPU and RSS once a second (from /proc when local, else /metrics).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_samples: Vec<crate::limits::sampler::ServerSample>,
}

/// Fewer connections than this make per-connection memory figures rough.
pub const MEMORY_MIN_CONNS: u64 = 2000;

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// Connections `mem` bytes hold at `per` bytes each.
pub fn project(mem: u64, per: Option<f64>) -> Option<u64> {
    per.filter(|p| *p > 0.0)
        .map(|p| (mem as f64 / p).floor() as u64)
}

impl MemoryReport {
    /// Fills the per-connection totals and the projections for this box, 128 and 512 GiB.
    pub fn project(&mut self, mem_total: Option<u64>) {
        let k_socket = self
            .kernel_bytes_per_conn
            .map(|k| k / self.kernel_ends.max(1) as f64);
        self.per_conn_both_ends = match (self.kernel_bytes_per_conn, self.kernel_ends) {
            (Some(k), 2) => Some(
                k + self.server_user_bytes_per_conn.unwrap_or(0.0)
                    + self.loadgen_user_bytes_per_conn.unwrap_or(0.0),
            ),
            (Some(_), _) => k_socket.map(|k| {
                2.0 * k
                    + self.server_user_bytes_per_conn.unwrap_or(0.0)
                    + self.loadgen_user_bytes_per_conn.unwrap_or(0.0)
            }),
            _ => None,
        };
        self.per_conn_server_only =
            k_socket.map(|k| k + self.server_user_bytes_per_conn.unwrap_or(0.0));
        let mut sizes = Vec::new();
        if let Some(t) = mem_total {
            sizes.push((
                format!(
                    "this box ({:.1} GiB MemTotal)",
                    t as f64 / (1u64 << 30) as f64
                ),
                t,
            ));
        }
        sizes.push(("128 GiB".to_string(), 128u64 << 30));
        sizes.push(("512 GiB".to_string(), 512u64 << 30));
        self.projections = sizes
            .into_iter()
            .map(|(label, mem)| Projection {
                label,
                mem_bytes: mem,
                both_ends: project(mem, self.per_conn_both_ends),
                server_only: project(mem, self.per_conn_server_only),
            })
            .collect();
    }
}

impl CeilingReport {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "ws-loadgen ceiling {} -> {} ({}): steps of {} up to {} at {:.0} connects/s, heartbeat every {} ms, \
             {} load generator process(es) on cores {:?}, {:.1} s{}",
            self.version,
            self.url,
            self.server_addr,
            fmt_n(c.step),
            fmt_n(c.max),
            c.connect_rate,
            c.ping_interval_ms,
            c.processes,
            c.cores,
            self.elapsed_s,
            if self.interrupted { " (interrupted)" } else { "" }
        );
        if let Some(f) = &c.script {
            let _ = writeln!(
                s,
                "connections run the script {f} (steps, then its loop), heartbeats on"
            );
        }
        if let Some((n, key)) = &self.predicted {
            let _ = writeln!(
                s,
                "doctor's prediction before the run: at most {} connections, bound by {key}",
                fmt_n(*n)
            );
        }
        // A local server's descriptors are listed only at the plateau (see ceiling::Snapshot).
        let fds = self.steps.iter().any(|st| st.server_fds.is_some());
        let _ = writeln!(
            s,
            "  step    target      open   failed  error rate   pong p99  handshake p99  server RSS        Slab{}",
            if fds { "  server fds" } else { "" }
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:>4} {:>9} {:>9} {:>8} {:>10.3}% {:>10} {:>14} {:>11} {:>11}{}",
                st.index + 1,
                st.target,
                st.open,
                st.failed,
                st.error_rate * 100.0,
                opt_us(st.pong_p99_us),
                opt_us(st.handshake_p99_us),
                st.server_rss_bytes.map(mib).unwrap_or_else(|| "-".into()),
                st.slab_bytes.map(mib).unwrap_or_else(|| "-".into()),
                if fds {
                    format!(
                        " {:>11}",
                        st.server_fds.map_or("-".to_string(), |v| v.to_string())
                    )
                } else {
                    String::new()
                }
            );
            if !st.failures.is_empty() || !st.drops.is_empty() {
                let _ = writeln!(
                    s,
                    "        failures: {}{}",
                    classes(&st.failures),
                    if st.drops.is_empty() {
                        String::new()
                    } else {
                        format!("; drops: {}", classes(&st.drops))
                    }
                );
            }
        }
        let ce = &self.ceiling;
        let _ = writeln!(s);
        let hb = self
            .hold
            .as_ref()
            .map(|h| {
                format!(
                    " (heartbeats {} pings, {} pongs{}; pong p99 {})",
                    fmt_n(h.pings),
                    fmt_n(h.pongs),
                    h.survival
                        .map(|v| format!(", {:.2}%", v * 100.0))
                        .unwrap_or_default(),
                    opt_us(h.pong_p99_us)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "CEILING        {} connections held for {:.1} s{}{hb}; most open at once {}",
            fmt_n(ce.connections),
            ce.held_for_s,
            if ce.confirmed {
                ""
            } else if self.interrupted {
                " (NOT confirmed: interrupted before the end of the hold)"
            } else {
                " (NOT confirmed: connections were lost during the hold)"
            },
            fmt_n(ce.touched)
        );
        let _ = writeln!(s, "BINDING LIMIT  {}", self.binding_limit.name);
        for e in &self.binding_limit.evidence {
            let _ = writeln!(s, "  evidence: {e}");
        }
        let _ = writeln!(s, "WHAT TO CHANGE NEXT");
        for w in &self.what_to_change {
            let _ = writeln!(s, "  - {w}");
        }
        let m = &self.memory;
        let _ = writeln!(
            s,
            "MEMORY (measured at {} open connections{})",
            fmt_n(m.connections_measured),
            if m.reliable {
                ""
            } else {
                ": too few for reliable figures, rough"
            }
        );
        let _ = writeln!(s, "  per connection: {}", m.method);
        let per = |v: Option<f64>| {
            v.map(|b| format!("{b:.0} B"))
                .unwrap_or_else(|| "unknown".into())
        };
        let _ = writeln!(
            s,
            "  server user space      {} per connection (RSS growth)",
            per(m.server_user_bytes_per_conn)
        );
        let _ = writeln!(
            s,
            "  load generator         {} per connection (RSS growth, all processes)",
            per(m.loadgen_user_bytes_per_conn)
        );
        let _ = writeln!(
            s,
            "  kernel                 {} per connection (Slab growth, {} end(s) on this box); TCP buffers (sockstat mem) {}",
            per(m.kernel_bytes_per_conn),
            m.kernel_ends,
            per(m.sockstat_mem_bytes_per_conn)
        );
        if !m.projections.is_empty() {
            let _ = writeln!(s, "  if only memory bound it:");
            for p in &m.projections {
                let _ = writeln!(
                    s,
                    "    {:<28} {:>14} connections with both ends on the box, {:>14} with the server alone",
                    p.label,
                    p.both_ends.map(fmt_n).unwrap_or_else(|| "?".into()),
                    p.server_only.map(fmt_n).unwrap_or_else(|| "?".into())
                );
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "ERROR          {e}");
        }
        s
    }

    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let esc = html_escape;
        let _ = write!(
            h,
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ws-ceiling: {}</title>\n<style>\n\
             body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}}\n\
             table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}\n\
             th{{background:#f3f3f3}}td.l,th.l{{text-align:left}}.big{{font-size:1.6em;font-weight:600}}\n\
             .lim{{font-size:1.2em;color:#a00;font-weight:600}}code{{background:#f5f5f5;padding:0 .2em}}\n\
             </style></head><body>\n",
            esc(&self.url)
        );
        let ce = &self.ceiling;
        let _ = writeln!(h, "<h1>ws-ceiling report</h1>");
        let _ = writeln!(
            h,
            "<p>{} &rarr; <code>{}</code> ({}), {:.1} s, started at unix ms {}</p>",
            esc(&self.tool),
            esc(&self.url),
            esc(&self.server_addr),
            self.elapsed_s,
            self.started_unix_ms
        );
        let _ = writeln!(
            h,
            "<p class=\"big\">Ceiling: {} connections held for {:.1} s{}</p>",
            fmt_n(ce.connections),
            ce.held_for_s,
            if ce.confirmed { "" } else { " (not confirmed)" }
        );
        let _ = writeln!(
            h,
            "<p class=\"lim\">Binding limit: {}</p><ul>",
            esc(&self.binding_limit.name)
        );
        for e in &self.binding_limit.evidence {
            let _ = writeln!(h, "<li>{}</li>", esc(e));
        }
        let _ = writeln!(h, "</ul><h2>What to change next</h2><ul>");
        for w in &self.what_to_change {
            let _ = writeln!(h, "<li>{}</li>", esc(w));
        }
        let _ = writeln!(h, "</ul>");
        let t0 = |p: &TimePoint| p.t_s;
        let open: Vec<(f64, f64)> = self
            .timeline
            .iter()
            .map(|p| (t0(p), p.open as f64))
            .collect();
        let failed: Vec<(f64, f64)> = self
            .timeline
            .iter()
            .map(|p| (t0(p), p.failed as f64))
            .collect();
        let p99: Vec<(f64, f64)> = self
            .timeline
            .iter()
            .filter_map(|p| p.pong_p99_us.map(|v| (t0(p), v as f64 / 1000.0)))
            .collect();
        let hold_span = hold_span(&self.timeline);
        let _ = writeln!(h, "<h2>Open connections over time</h2>");
        h.push_str(&svg_chart(
            &[("open connections", "#1f77b4", &open)],
            "connections",
            hold_span,
        ));
        if self.timeline.last().is_some_and(|p| p.failed > 0) {
            let _ = writeln!(h, "<h2>Failed connects (cumulative)</h2>");
            h.push_str(&svg_chart(
                &[("failed connects", "#d62728", &failed)],
                "failed",
                hold_span,
            ));
        }
        let _ = writeln!(h, "<h2>Heartbeat (pong) p99 per second, ms</h2>");
        h.push_str(&svg_chart(
            &[("pong p99 ms", "#2ca02c", &p99)],
            "ms",
            hold_span,
        ));
        if !self.server_samples.is_empty() {
            let cpu: Vec<(f64, f64)> = self
                .server_samples
                .iter()
                .map(|s| (s.t_s, s.cpu_percent))
                .collect();
            let rss: Vec<(f64, f64)> = self
                .server_samples
                .iter()
                .map(|s| (s.t_s, s.rss_bytes as f64 / 1048576.0))
                .collect();
            let _ = writeln!(h, "<h2>Server CPU</h2>");
            h.push_str(&svg_chart(
                &[("server CPU", "#17becf", &cpu)],
                "% of one core",
                hold_span,
            ));
            let _ = writeln!(h, "<h2>Server memory (RSS)</h2>");
            h.push_str(&svg_chart(
                &[("server RSS", "#bcbd22", &rss)],
                "MiB",
                hold_span,
            ));
        }
        let _ = writeln!(
            h,
            "<h2>Steps</h2><table><tr><th>step</th><th>target</th><th>open</th><th>failed</th><th>error rate</th>\
             <th>pong p99</th><th>handshake p99</th><th>server RSS</th><th>Slab</th><th class=\"l\">failures</th></tr>"
        );
        for st in &self.steps {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                st.index + 1,
                fmt_n(st.target),
                fmt_n(st.open),
                st.failed,
                st.error_rate * 100.0,
                opt_us(st.pong_p99_us),
                opt_us(st.handshake_p99_us),
                st.server_rss_bytes.map(mib).unwrap_or_else(|| "-".into()),
                st.slab_bytes.map(mib).unwrap_or_else(|| "-".into()),
                esc(&classes(&st.failures))
            );
        }
        let _ = writeln!(h, "</table>");
        if let Some(ho) = &self.hold {
            let _ = writeln!(
                h,
                "<h2>Hold</h2><p>{} open at the start, at least {} throughout, {} at the end, over {:.1} s; \
                 {} pings, {} pongs, {} drops; pong p99 {}</p>",
                fmt_n(ho.open_at_start),
                fmt_n(ho.min_open),
                fmt_n(ho.open_at_end),
                ho.duration_s,
                fmt_n(ho.pings),
                fmt_n(ho.pongs),
                ho.drops,
                opt_us(ho.pong_p99_us)
            );
        }
        let m = &self.memory;
        let per = |v: Option<f64>| {
            v.map(|b| format!("{b:.0} B"))
                .unwrap_or_else(|| "unknown".into())
        };
        let _ = writeln!(
            h,
            "<h2>Memory per connection</h2><table><tr><th class=\"l\">what</th><th>bytes per connection</th></tr>\
             <tr><td class=\"l\">server user space (RSS growth)</td><td>{}</td></tr>\
             <tr><td class=\"l\">load generator user space (RSS growth)</td><td>{}</td></tr>\
             <tr><td class=\"l\">kernel (Slab growth, {} end(s) on this box)</td><td>{}</td></tr>\
             <tr><td class=\"l\">TCP buffers (sockstat mem)</td><td>{}</td></tr></table>",
            per(m.server_user_bytes_per_conn),
            per(m.loadgen_user_bytes_per_conn),
            m.kernel_ends,
            per(m.kernel_bytes_per_conn),
            per(m.sockstat_mem_bytes_per_conn)
        );
        let _ = writeln!(
            h,
            "<h3>If only memory bound it</h3><table><tr><th class=\"l\">memory</th><th>both ends on the box</th><th>server alone</th></tr>"
        );
        for p in &m.projections {
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.label),
                p.both_ends.map(fmt_n).unwrap_or_else(|| "?".into()),
                p.server_only.map(fmt_n).unwrap_or_else(|| "?".into())
            );
        }
        let _ = writeln!(h, "</table>");
        if !self.next_limits.is_empty() {
            let _ = writeln!(
                h,
                "<h2>Limits of this box (doctor, for {} connections)</h2><table><tr><th class=\"l\">bound</th><th>max N</th><th class=\"l\">now</th></tr>",
                fmt_n(self.config.max)
            );
            for b in &self.next_limits {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                    esc(&b.name),
                    b.max_n.map(fmt_n).unwrap_or_else(|| "-".into()),
                    esc(&b.current)
                );
            }
            let _ = writeln!(h, "</table>");
        }
        let _ = writeln!(
            h,
            "<p>Full figures: the JSON report next to this file. Text: <pre>{}</pre></p></body></html>",
            esc(&self.to_text())
        );
        h
    }
}

fn hold_span(t: &[TimePoint]) -> Option<(f64, f64)> {
    let hold: Vec<f64> = t
        .iter()
        .filter(|p| p.phase == "hold")
        .map(|p| p.t_s)
        .collect();
    Some((*hold.first()?, *hold.last()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections() {
        let mut m = MemoryReport {
            connections_measured: 19_000,
            server_user_bytes_per_conn: Some(42.0),
            loadgen_user_bytes_per_conn: Some(158.0),
            kernel_bytes_per_conn: Some(9_800.0),
            kernel_ends: 2,
            ..Default::default()
        };
        m.project(Some(24 << 30));
        assert_eq!(m.per_conn_both_ends, Some(10_000.0));
        assert_eq!(m.per_conn_server_only, Some(4_942.0));
        assert_eq!(m.projections.len(), 3);
        assert_eq!(m.projections[1].both_ends, Some((128u64 << 30) / 10_000));
        assert_eq!(
            m.projections[2].server_only,
            Some(((512u64 << 30) as f64 / 4_942.0) as u64)
        );
        assert_eq!(fmt_n(1_234_567), "1,234,567");
        let svg = svg_chart(
            &[("open", "#000", &[(0.0, 0.0), (10.0, 100.0)])],
            "conns",
            Some((5.0, 10.0)),
        );
        assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("hold"));
        assert_eq!(html_escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
