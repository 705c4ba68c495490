//! Which limit stopped a ceiling run, from the evidence: failure classes of the step that
//! failed, the server's descriptors and accept errors, conntrack, memory, latency.
//!
//! Pure: [`classify`] takes an [`Evidence`] record, so every rule is unit-tested with
//! injected figures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fmt::fmt_us;

/// Why the ramp stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A step's failure rate went over --max-error-rate.
    Failures,
    /// A step's pong p99 went over --max-p99.
    Latency,
    /// --max was reached without either.
    MaxReached,
    /// Interrupted (SIGINT) before the end.
    Interrupted,
    /// Not one connection could be opened.
    NoConnection,
}

/// What the server said or showed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerEvidence {
    pub pid: Option<u32>,
    /// RLIMIT_NOFILE (soft, hard) from /proc/PID/limits, else /metrics process_max_fds.
    pub nofile: Option<(u64, u64)>,
    /// Highest descriptor count seen at the plateau (/proc/PID/fd).
    pub fds_at_peak: Option<u64>,
    /// Growth of ws_accept_errors_total{errno} over the run.
    pub accept_emfile: Option<u64>,
    pub accept_enfile: Option<u64>,
    pub accept_enomem: Option<u64>,
    /// Growth of the 503 (max-conns) rejections over the run.
    pub rejected_503: Option<u64>,
}

/// Everything the verdict is drawn from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub stop: Option<StopReason>,
    /// Failure classes (connects) of the step that failed.
    pub step_failures: BTreeMap<String, u64>,
    /// Drop classes of the step that failed.
    pub step_drops: BTreeMap<String, u64>,
    pub step_target: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    pub server: Option<ServerEvidence>,
    /// The load generator processes' RLIMIT_NOFILE soft limit.
    pub loadgen_nofile: u64,
    pub loadgen_processes: u64,
    pub conntrack: Option<(u64, u64)>,
    /// (MemAvailable at the plateau, MemTotal).
    pub mem: Option<(u64, u64)>,
    pub port_range: Option<(u32, u32)>,
    pub source_ips: u64,
    pub step_p99_us: Option<u64>,
    pub max_p99_us: Option<u64>,
    pub max: u64,
}

/// The binding limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// `server_open_files`, `loadgen_open_files`, `system_open_files`, `ports`,
    /// `conntrack`, `server_max_conns`, `memory`, `accept_queue`, `latency`, `none`,
    /// `interrupted`, `unknown`.
    pub kind: String,
    /// In words, with the limit's value.
    pub name: String,
    /// The limit's value when it is a number (e.g. 20000 open files).
    pub value: Option<u64>,
    /// The observations that point to it.
    pub evidence: Vec<String>,
}

fn count(m: &BTreeMap<String, u64>, keys: &[&str]) -> u64 {
    keys.iter().map(|k| m.get(*k).copied().unwrap_or(0)).sum()
}

/// Failure or drop classes as the ceiling's (ASCII) reports list them: `EMFILE x12, ...`.
pub(crate) fn classes(m: &BTreeMap<String, u64>) -> String {
    crate::fmt::classes(m, " x")
}

/// Failures that look like "the server did not answer": the kernel took the TCP connect (or
/// not even that), but no upgrade came back.
const SILENT: &[&str] = &[
    "handshake_timeout",
    "connect_timeout",
    "closed_during_handshake",
    "ECONNRESET",
    "ETIMEDOUT",
];

pub fn classify(e: &Evidence) -> Verdict {
    let stop = e.stop.unwrap_or(StopReason::Failures);
    let mut ev = Vec::new();
    let f = &e.step_failures;
    if !f.is_empty() {
        ev.push(format!(
            "failed connects in the last step (target {}): {}",
            e.step_target,
            classes(f)
        ));
    }
    if !e.step_drops.is_empty() {
        ev.push(format!(
            "dropped connections in the last step: {}",
            classes(&e.step_drops)
        ));
    }
    match stop {
        StopReason::MaxReached => {
            return Verdict {
                kind: "none".into(),
                name: format!("no limit reached up to --max {}", e.max),
                value: None,
                evidence: vec![format!(
                    "{} connections opened and held without failures",
                    e.peak_open
                )],
            }
        }
        StopReason::Interrupted => {
            return Verdict {
                kind: "interrupted".into(),
                name: "interrupted before a limit was found".into(),
                value: None,
                evidence: ev,
            }
        }
        StopReason::Latency => {
            ev.push(format!(
                "pong p99 {} in the last step, over --max-p99 {}",
                fmt_us(e.step_p99_us.unwrap_or(0)),
                fmt_us(e.max_p99_us.unwrap_or(0))
            ));
            return Verdict {
                kind: "latency".into(),
                name: "latency: heartbeat p99 over --max-p99 (CPU saturated on one side)".into(),
                value: e.max_p99_us,
                evidence: ev,
            };
        }
        StopReason::Failures | StopReason::NoConnection => {}
    }

    // Score each candidate by the failures it explains; the strongest wins.
    let mut cands: Vec<(u64, Verdict)> = Vec::new();
    let lg_emfile = count(f, &["EMFILE"]);
    if lg_emfile > 0 {
        cands.push((
            lg_emfile,
            Verdict {
                kind: "loadgen_open_files".into(),
                name: format!(
                    "the load generator's open-files limit (RLIMIT_NOFILE {} per process, {} process(es))",
                    e.loadgen_nofile, e.loadgen_processes
                ),
                value: Some(e.loadgen_nofile),
                evidence: vec![format!(
                    "socket() failed with EMFILE in the load generator x{lg_emfile}: its own descriptor table is full"
                )],
            },
        ));
    }
    let enfile =
        count(f, &["ENFILE"]) + e.server.as_ref().and_then(|s| s.accept_enfile).unwrap_or(0);
    if enfile > 0 {
        cands.push((
            enfile,
            Verdict {
                kind: "system_open_files".into(),
                name: "the system-wide open-files limit (fs.file-max)".into(),
                value: None,
                evidence: vec![format!(
                    "ENFILE (file table of the whole box full) x{enfile}"
                )],
            },
        ));
    }
    let ports = count(f, &["EADDRNOTAVAIL", "EADDRINUSE"]);
    if ports > 0 {
        let range = e
            .port_range
            .map(|(lo, hi)| format!("ip_local_port_range {lo}-{hi} = {} ports", hi - lo + 1))
            .unwrap_or_else(|| "ip_local_port_range".into());
        let per = e.port_range.map(|(lo, hi)| (hi - lo + 1) as u64);
        cands.push((
            ports,
            Verdict {
                kind: "ports".into(),
                name: format!(
                    "ephemeral ports ({range} x {} source address(es))",
                    e.source_ips.max(1)
                ),
                value: per.map(|p| p * e.source_ips.max(1)),
                evidence: vec![format!(
                    "connect() failed with EADDRNOTAVAIL x{ports}: no free local port for (source address, server address:port)"
                )],
            },
        ));
    }
    let s503 = count(f, &["http_503"]);
    if s503 > 0 {
        let mut evs = vec![format!("the server answered 503 x{s503}")];
        if let Some(r) = e.server.as_ref().and_then(|s| s.rejected_503) {
            evs.push(format!(
                "server /metrics: ws_handshake_rejections_total{{status=\"503\"}} +{r}"
            ));
        }
        cands.push((
            s503,
            Verdict {
                kind: "server_max_conns".into(),
                name: "the server's --max-conns".into(),
                value: Some(e.peak_open),
                evidence: evs,
            },
        ));
    }
    let nomem = count(f, &["ENOMEM", "ENOBUFS"])
        + e.server.as_ref().and_then(|s| s.accept_enomem).unwrap_or(0);
    let mem_low = e
        .mem
        .is_some_and(|(avail, total)| total > 0 && avail * 100 < total * 3);
    if nomem > 0 || mem_low {
        let mut evs = Vec::new();
        if nomem > 0 {
            evs.push(format!("ENOMEM/ENOBUFS x{nomem}"));
        }
        if let Some((a, t)) = e.mem.filter(|_| mem_low) {
            evs.push(format!(
                "MemAvailable {} MiB of {} MiB at the plateau",
                a >> 20,
                t >> 20
            ));
        }
        cands.push((
            nomem.max(1),
            Verdict {
                kind: "memory".into(),
                name: "memory".into(),
                value: e.mem.map(|m| m.1),
                evidence: evs,
            },
        ));
    }
    let silent = count(f, SILENT) + count(&e.step_drops, &["ECONNRESET"]);
    if silent > 0 {
        let mut placed = false;
        if let Some(s) = &e.server {
            let soft = s.nofile.map(|n| n.0);
            let at_max = match (s.fds_at_peak, soft) {
                (Some(fds), Some(lim)) => fds + 8 >= lim,
                _ => false,
            };
            let emfile = s.accept_emfile.unwrap_or(0);
            if at_max || emfile > 0 {
                let mut evs = vec![format!(
                    "{silent} connects got no upgrade (TCP accepted by the kernel into the listen backlog, \
                     never accept()ed by the server): {}",
                    classes(&f.iter().filter(|(k, _)| SILENT.contains(&k.as_str())).map(|(k, v)| (k.clone(), *v)).collect())
                )];
                if let (Some(fds), Some(lim)) = (s.fds_at_peak, soft) {
                    evs.push(format!(
                        "server{} had {fds} descriptors open at the plateau, its RLIMIT_NOFILE is {lim}",
                        s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                    ));
                }
                if emfile > 0 {
                    evs.push(format!(
                        "server /metrics: ws_accept_errors_total{{errno=\"EMFILE\"}} +{emfile}"
                    ));
                }
                let lim = soft.unwrap_or(0);
                cands.push((
                    silent,
                    Verdict {
                        kind: "server_open_files".into(),
                        name: format!(
                            "the server's open-files limit (RLIMIT_NOFILE {}{})",
                            if lim > 0 { lim.to_string() } else { "?".into() },
                            s.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
                        ),
                        value: soft,
                        evidence: evs,
                    },
                ));
                placed = true;
            }
        }
        if !placed {
            if let Some((cnt, max)) = e.conntrack.filter(|(c, m)| *m > 0 && c * 100 >= m * 98) {
                cands.push((
                    silent,
                    Verdict {
                        kind: "conntrack".into(),
                        name: format!("the conntrack table (nf_conntrack_max {max})"),
                        value: Some(max),
                        evidence: vec![
                            format!("{silent} connects timed out (SYNs dropped)"),
                            format!(
                                "nf_conntrack_count {cnt} of nf_conntrack_max {max} at the plateau"
                            ),
                        ],
                    },
                ));
                placed = true;
            }
        }
        if !placed && mem_low {
            // Memory is short and nothing else explains the silence: memory explains it.
            if let Some(c) = cands.iter_mut().find(|c| c.1.kind == "memory") {
                c.0 += silent;
                c.1.evidence.push(format!(
                    "{silent} connects got no upgrade or timed out meanwhile"
                ));
            }
            placed = true;
        }
        if !placed {
            let ct = count(f, &["connect_timeout"]);
            if ct * 2 >= silent {
                cands.push((
                    silent,
                    Verdict {
                        kind: "accept_queue".into(),
                        name: "the accept queue / SYN backlog (connects faster than the server accepts)".into(),
                        value: None,
                        evidence: vec![format!(
                            "{ct} connects timed out with no sign of a full descriptor table, conntrack table or memory"
                        )],
                    },
                ));
                placed = true;
            }
        }
        if !placed {
            cands.push((
                silent / 2,
                Verdict {
                    kind: "unknown".into(),
                    name: "unknown: the server stopped answering upgrades".into(),
                    value: None,
                    evidence: vec![format!(
                        "{silent} connects got no upgrade and neither the server's descriptors (pass --server-pid \
                         or expose /metrics) nor conntrack nor memory explain it"
                    )],
                },
            ));
        }
    }
    cands.sort_by_key(|c| std::cmp::Reverse(c.0));
    match cands.into_iter().next() {
        Some((_, mut v)) => {
            ev.append(&mut v.evidence);
            v.evidence = ev;
            v
        }
        None => Verdict {
            kind: "unknown".into(),
            name: format!("unknown (failure classes: {})", classes(f)),
            value: None,
            evidence: ev,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn base() -> Evidence {
        Evidence {
            stop: Some(StopReason::Failures),
            step_target: 300,
            peak_open: 286,
            loadgen_nofile: 20_000,
            loadgen_processes: 1,
            conntrack: Some((300, 262_144)),
            mem: Some((20 << 30, 24 << 30)),
            port_range: Some((32768, 60999)),
            source_ips: 1,
            max: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn server_open_files_from_fds_or_emfile() {
        let mut e = base();
        e.step_failures = m(&[("handshake_timeout", 14)]);
        e.server = Some(ServerEvidence {
            pid: Some(7),
            nofile: Some((300, 300)),
            fds_at_peak: Some(300),
            ..Default::default()
        });
        let v = classify(&e);
        assert_eq!(v.kind, "server_open_files");
        assert_eq!(v.value, Some(300));
        assert!(v.name.contains("RLIMIT_NOFILE 300"), "{}", v.name);
        // Remote server: only /metrics says so, after the load backed off.
        e.server = Some(ServerEvidence {
            nofile: Some((300, 300)),
            accept_emfile: Some(120),
            ..Default::default()
        });
        let v = classify(&e);
        assert_eq!(v.kind, "server_open_files");
        assert!(
            v.evidence.iter().any(|l| l.contains("EMFILE")),
            "{:?}",
            v.evidence
        );
        // Silence without any server evidence is not blamed on the server.
        e.server = Some(ServerEvidence::default());
        assert_eq!(classify(&e).kind, "unknown");
    }

    #[test]
    fn loadgen_fds_ports_503_enfile_memory() {
        let mut e = base();
        e.step_failures = m(&[("EMFILE", 40)]);
        assert_eq!(classify(&e).kind, "loadgen_open_files");
        e.step_failures = m(&[("EADDRNOTAVAIL", 40)]);
        e.port_range = Some((40000, 40199));
        let v = classify(&e);
        assert_eq!(v.kind, "ports");
        assert_eq!(v.value, Some(200));
        e.step_failures = m(&[("http_503", 40)]);
        assert_eq!(classify(&e).kind, "server_max_conns");
        e.step_failures = m(&[("ENFILE", 40)]);
        assert_eq!(classify(&e).kind, "system_open_files");
        e.step_failures = m(&[("ENOMEM", 3)]);
        assert_eq!(classify(&e).kind, "memory");
        // The class with the most failures wins.
        e.step_failures = m(&[("EADDRNOTAVAIL", 90), ("EMFILE", 10)]);
        assert_eq!(classify(&e).kind, "ports");
    }

    #[test]
    fn conntrack_and_accept_queue() {
        let mut e = base();
        e.step_failures = m(&[("connect_timeout", 500)]);
        e.conntrack = Some((262_100, 262_144));
        assert_eq!(classify(&e).kind, "conntrack");
        e.conntrack = Some((30_000, 262_144));
        assert_eq!(classify(&e).kind, "accept_queue");
        e.mem = Some((100 << 20, 24 << 30));
        assert_eq!(classify(&e).kind, "memory");
    }

    #[test]
    fn other_stops() {
        let mut e = base();
        e.stop = Some(StopReason::MaxReached);
        assert_eq!(classify(&e).kind, "none");
        e.stop = Some(StopReason::Latency);
        e.step_p99_us = Some(2_000_000);
        e.max_p99_us = Some(500_000);
        let v = classify(&e);
        assert_eq!(v.kind, "latency");
        assert!(
            v.evidence.iter().any(|l| l.contains("2.000s")),
            "{:?}",
            v.evidence
        );
        e.stop = Some(StopReason::Interrupted);
        assert_eq!(classify(&e).kind, "interrupted");
    }
}
