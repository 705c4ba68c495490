//! `run --html` and `merge --html`: the run report as one self-contained page (inline CSS
//! and SVG; no script, nothing fetched). Charts over the run's seconds: connections open,
//! messages per second, the main latency's p99, failures, and the server's CPU % and RSS
//! when it was sampled from its `/metrics`; then the latency rows, the stage table, the
//! failure classes, the script's steps and, for a merged report, the per-host table.

use std::fmt::Write as _;

use crate::fmt::fmt_n;
use crate::report::html::{html_escape as esc, svg_chart};
use crate::report::run::Report;

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e3)
}

fn table(h: &mut String, head: &[&str], rows: &[Vec<String>]) {
    h.push_str("<table><tr>");
    for (i, c) in head.iter().enumerate() {
        let _ = write!(
            h,
            "<th{}>{}</th>",
            if i == 0 { " class=\"l\"" } else { "" },
            esc(c)
        );
    }
    h.push_str("</tr>\n");
    for r in rows {
        h.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(
                h,
                "<td{}>{}</td>",
                if i == 0 { " class=\"l\"" } else { "" },
                esc(c)
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

fn chart(h: &mut String, title: &str, svg: String) {
    let _ = writeln!(h, "<h3>{}</h3>\n<figure>{svg}</figure>", esc(title));
}

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ws-loadgen: {}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}}\n\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}\n\
         th{{background:#f3f3f3}}td.l,th.l{{text-align:left}}.pass{{color:#070}}.fail{{color:#a00;font-weight:600}}\n\
         figure{{margin:0}}code{{background:#f5f5f5;padding:0 .2em}}.note{{color:#555}}\n\
         </style></head><body>\n",
        esc(&r.url)
    );
    let _ = writeln!(h, "<h1>ws-loadgen report</h1>");
    let _ = writeln!(
        h,
        "<p>{} {} &rarr; <code>{}</code> ({}), scenario {:?}, {:.1} s{}{}, exit code {}</p>",
        esc(&r.tool),
        esc(&r.version),
        esc(&r.url),
        esc(&r.server_addr),
        r.scenario,
        r.elapsed_s,
        if r.hosts.is_empty() {
            format!(", host {}", esc(&r.host_label))
        } else {
            format!(", merged from {} load generators", r.hosts.len())
        },
        if r.interrupted { " (interrupted)" } else { "" },
        r.exit_code
    );
    if let Some(e) = &r.error {
        let _ = writeln!(h, "<p class=\"fail\">{}</p>", esc(e));
    }
    if let Some(n) = &r.clock_note {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(h, "<h2>Thresholds</h2><table><tr><th class=\"l\">threshold</th><th>limit</th><th>actual</th><th>result</th></tr>");
        for t in &r.thresholds {
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&t.name),
                esc(&t.limit),
                esc(&t.actual),
                if t.pass { "pass" } else { "fail" },
                if t.pass { "PASS" } else { "FAIL" }
            );
        }
        h.push_str("</table>\n");
    }
    let c = &r.connections;
    let m = &r.messages;
    let _ = writeln!(h, "<h2>Summary</h2>");
    table(
        &mut h,
        &["", "value"],
        &[
            vec!["connections target".into(), fmt_n(c.target as u64)],
            vec!["established".into(), fmt_n(c.established)],
            vec!["failed connects".into(), fmt_n(c.failed)],
            vec!["peak open".into(), fmt_n(c.peak_open as u64)],
            vec!["drops".into(), fmt_n(c.drops)],
            vec!["messages sent".into(), fmt_n(m.sent)],
            vec!["messages received".into(), fmt_n(m.received)],
            vec!["messages lost".into(), fmt_n(m.lost)],
            vec![
                "error rate".into(),
                format!("{:.4} %", r.error_rate * 100.0),
            ],
            vec![
                "load generator CPU".into(),
                format!("{:.2} s", r.process.cpu_seconds),
            ],
        ],
    );

    let _ = writeln!(h, "<h2>Over time</h2>");
    let sec = &r.per_second;
    let pts = |f: &dyn Fn(&crate::report::run::SecondReport) -> f64| -> Vec<(f64, f64)> {
        sec.iter().map(|s| (s.t as f64, f(s))).collect()
    };
    let open = pts(&|s| s.open as f64);
    let pending = pts(&|s| s.pending as f64);
    chart(
        &mut h,
        "Connections",
        svg_chart(
            &[
                ("open", "#1f77b4", &open),
                ("connecting", "#ff7f0e", &pending),
            ],
            "connections",
            None,
        ),
    );
    let sent = pts(&|s| s.msgs_sent as f64);
    let recv = pts(&|s| s.msgs_received as f64);
    chart(
        &mut h,
        "Messages per second",
        svg_chart(
            &[("sent", "#2ca02c", &sent), ("received", "#9467bd", &recv)],
            "messages / s",
            None,
        ),
    );
    let p99 = pts(&|s| s.latency_p99_us as f64 / 1e3);
    let lat = if r.main_latency.is_empty() {
        r.scenario.latency_name().to_string()
    } else {
        r.main_latency.clone()
    };
    let p99_name = format!("{lat} p99");
    chart(
        &mut h,
        &format!("Latency: {lat}, p99 per second"),
        svg_chart(&[(&p99_name, "#d62728", &p99)], "ms", None),
    );
    let failed = pts(&|s| s.failed as f64);
    let drops = pts(&|s| s.drops as f64);
    chart(
        &mut h,
        "Failures per second",
        svg_chart(
            &[
                ("failed connects", "#d62728", &failed),
                ("drops", "#8c564b", &drops),
            ],
            "per second",
            None,
        ),
    );
    if !r.server_samples.is_empty() {
        let cpu: Vec<(f64, f64)> = r
            .server_samples
            .iter()
            .map(|s| (s.t_s, s.cpu_percent))
            .collect();
        let rss: Vec<(f64, f64)> = r
            .server_samples
            .iter()
            .map(|s| (s.t_s, s.rss_bytes as f64 / 1048576.0))
            .collect();
        chart(
            &mut h,
            "Server CPU (from its /metrics: process_cpu_seconds_total)",
            svg_chart(&[("server CPU", "#17becf", &cpu)], "% of one core", None),
        );
        chart(
            &mut h,
            "Server memory (process_resident_memory_bytes)",
            svg_chart(&[("server RSS", "#bcbd22", &rss)], "MiB", None),
        );
    }

    let _ = writeln!(h, "<h2>Latency (ms)</h2>");
    let l = &r.latency;
    let mut rows: Vec<(String, &crate::engine::stats::HistSummary)> =
        vec![("connect".into(), &l.connect)];
    if let Some(t) = &l.tls {
        rows.push(("tls".into(), t));
    }
    rows.push(("handshake".into(), &l.handshake));
    if let Some(sc) = &r.script {
        for st in &sc.steps {
            if let Some(x) = &st.latency {
                rows.push((st.name.clone(), x));
            }
        }
        if let Some(lp) = &sc.loop_ {
            rows.push((format!("{} rtt", lp.name), &lp.rtt));
            rows.push((format!("{} delivery", lp.name), &lp.delivery));
        }
    } else {
        rows.push(("rtt".into(), &l.rtt));
        if let Some(d) = &l.delivery {
            rows.push((r.scenario.latency_name().to_string(), d));
        }
    }
    rows.push(("pong".into(), &l.pong));
    if let Some(x) = &l.http {
        rows.push(("http".into(), x));
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .filter(|(_, x)| x.count > 0)
        .map(|(n, x)| {
            vec![
                n,
                fmt_n(x.count),
                ms(x.p50),
                ms(x.p90),
                ms(x.p99),
                ms(x.p999),
                ms(x.max),
            ]
        })
        .collect();
    table(
        &mut h,
        &["row", "count", "p50", "p90", "p99", "p99.9", "max"],
        &rows,
    );

    let _ = writeln!(h, "<h2>Stages</h2>");
    let rows: Vec<Vec<String>> = r
        .stages
        .iter()
        .map(|s| {
            vec![
                (s.index + 1).to_string(),
                fmt_n(s.target as u64),
                fmt_n(s.peak_open as u64),
                format!("{:.3}", s.latency.mean / 1e3),
                ms(s.latency.p95),
                ms(s.latency.p99),
                format!("{:.0}", s.msgs_per_s),
                format!("{:.4} %", s.error_rate * 100.0),
                fmt_n(s.failed_connects),
            ]
        })
        .collect();
    table(
        &mut h,
        &[
            "stage",
            "target",
            "peak open",
            &format!("avg {lat} ms"),
            "p95 ms",
            "p99 ms",
            "msgs/s",
            "error rate",
            "failed connects",
        ],
        &rows,
    );

    let _ = writeln!(h, "<h2>Failures by class</h2>");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (kind, map) in [
        ("connect", &r.failures),
        ("drop", &r.drop_classes),
        ("server close", &r.close_codes),
    ] {
        for (k, v) in map {
            rows.push(vec![kind.to_string(), k.clone(), fmt_n(*v)]);
        }
    }
    if rows.is_empty() {
        let _ = writeln!(h, "<p>none</p>");
    } else {
        table(&mut h, &["kind", "class", "count"], &rows);
    }

    if let Some(sc) = &r.script {
        let _ = writeln!(h, "<h2>Script <code>{}</code></h2>", esc(&sc.file));
        let rows: Vec<Vec<String>> = sc
            .steps
            .iter()
            .map(|s| vec![s.name.clone(), fmt_n(s.ok), fmt_n(s.failed)])
            .collect();
        table(&mut h, &["step", "ok", "failed"], &rows);
        if let Some(lp) = &sc.loop_ {
            table(
                &mut h,
                &[
                    "loop",
                    "sent",
                    "replies",
                    "deliveries",
                    "matched",
                    "lost",
                    "gaps",
                ],
                &[vec![
                    lp.name.clone(),
                    fmt_n(lp.sent),
                    fmt_n(lp.replies),
                    fmt_n(lp.deliveries),
                    fmt_n(lp.matched),
                    fmt_n(lp.lost),
                    fmt_n(lp.gaps),
                ]],
            );
        }
    }
    if !r.hosts.is_empty() {
        let _ = writeln!(h, "<h2>Load generators</h2>");
        let rows: Vec<Vec<String>> = r
            .hosts
            .iter()
            .map(|x| {
                vec![
                    x.label.clone(),
                    fmt_n(x.target as u64),
                    fmt_n(x.established),
                    fmt_n(x.failed),
                    fmt_n(x.drops),
                    fmt_n(x.msgs_received),
                    format!("{:.2}", x.cpu_seconds),
                    format!("{:.1}", x.rss_peak_bytes as f64 / 1048576.0),
                    x.start_late_ms.map_or("-".into(), |l| format!("{l:.0}")),
                    x.exit_code.to_string(),
                ]
            })
            .collect();
        table(
            &mut h,
            &[
                "host",
                "target",
                "established",
                "failed",
                "drops",
                "received",
                "CPU s",
                "peak RSS MiB",
                "late ms",
                "exit",
            ],
            &rows,
        );
    }
    h.push_str("</body></html>\n");
    h
}
