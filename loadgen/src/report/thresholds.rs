//! k6-style pass/fail thresholds: `--max-error-rate`, `--max-p99`, `--min-connections`.
//! A threshold that cannot be checked (no latency sample at all) fails: no evidence is not
//! a pass.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fmt::fmt_us;

/// A `--max-p99` value: a latency row (None: the main one) and its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct P99Limit {
    pub row: Option<String>,
    pub limit: Duration,
}

/// `200ms` or `login=1s`.
pub fn parse_p99(s: &str) -> Result<P99Limit, String> {
    match s.split_once('=') {
        Some((name, d)) => {
            let name = name.trim().replace(' ', ".");
            if name.is_empty() {
                return Err(format!("{s:?}: give NAME=DURATION or DURATION"));
            }
            Ok(P99Limit {
                row: Some(name),
                limit: crate::config::plan::parse_duration(d)?,
            })
        }
        None => Ok(P99Limit {
            row: None,
            limit: crate::config::plan::parse_duration(s)?,
        }),
    }
}

/// `--max-p99 NAME=…` naming a row that is not among `known`: the message that says so.
pub fn unknown_row(limits: &[P99Limit], known: &[String]) -> Option<String> {
    limits.iter().find_map(|l| {
        let r = l.row.as_ref().filter(|r| !known.contains(r))?;
        Some(format!(
            "--max-p99 {r}=…: no latency row {r:?} in this run; rows: {}",
            known.join(", ")
        ))
    })
}

/// The threshold flags of `run` and `merge` (k6's thresholds, as flags). A row named in
/// `--max-p99 NAME=` is checked against the run's rows before anything starts
/// ([`unknown_row`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ThresholdArgs {
    /// Threshold: error rate at most this (e.g. 0.1% or 0.001).
    #[arg(long, value_parser = crate::config::parse::parse_ratio, value_name = "RATE")]
    pub max_error_rate: Option<f64>,

    /// Threshold: p99 latency at most this (e.g. 200ms): the scenario's main latency (RTT
    /// for echo, pong for hold, fan-out for broadcast, delivery for push, the loop's RTT or
    /// delivery for a script), or a named row: NAME=DURATION, where NAME is connect, tls,
    /// handshake, rtt, pong, delivery, http or a script's step (login=1s, say=50ms,
    /// say.rtt=50ms, say.delivery=80ms). Repeatable.
    #[arg(long, value_parser = parse_p99, value_name = "[NAME=]DURATION")]
    pub max_p99: Vec<P99Limit>,

    /// Threshold: at least this many connections open at once at some point (all hosts
    /// together in a merge).
    #[arg(long, value_name = "N")]
    pub min_connections: Option<u32>,
}

impl ThresholdArgs {
    /// The thresholds these flags ask for.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds::new(self.max_error_rate, &self.max_p99, self.min_connections)
    }
}

/// The thresholds asked for.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    pub max_error_rate: Option<f64>,
    /// p99 limits in microseconds: of the main latency (None) or of a named row.
    pub max_p99_us: Vec<(Option<String>, u64)>,
    pub min_connections: Option<u32>,
}

/// The outcome of one threshold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub name: String,
    pub limit: String,
    pub actual: String,
    pub pass: bool,
}

/// The figures thresholds are checked against.
#[derive(Debug, Clone)]
pub struct Observed {
    pub error_rate: f64,
    /// p99 of the scenario's latency (µs), None without samples.
    pub p99_us: Option<u64>,
    /// Which latency that is (`rtt`, `pong`, `say rtt`).
    pub latency_name: String,
    /// p99 of every named row (`connect`, `login`, `say.rtt`), None without samples.
    pub rows: Vec<(String, Option<u64>)>,
    pub peak_open: u32,
}

impl Thresholds {
    /// From the command line's values.
    pub fn new(
        max_error_rate: Option<f64>,
        max_p99: &[P99Limit],
        min_connections: Option<u32>,
    ) -> Self {
        Self {
            max_error_rate,
            max_p99_us: max_p99
                .iter()
                .map(|l| {
                    (
                        l.row.clone(),
                        l.limit.as_micros().min(u64::MAX as u128) as u64,
                    )
                })
                .collect(),
            min_connections,
        }
    }

    pub fn evaluate(&self, o: &Observed) -> Vec<Outcome> {
        let mut out = Vec::new();
        if let Some(max) = self.max_error_rate {
            out.push(Outcome {
                name: "max-error-rate".into(),
                limit: format!("{}%", max * 100.0),
                actual: format!("{:.4}%", o.error_rate * 100.0),
                pass: o.error_rate <= max,
            });
        }
        for (row, max) in &self.max_p99_us {
            let (name, label, p99) = match row {
                None => ("max-p99".to_string(), o.latency_name.clone(), o.p99_us),
                Some(r) => (
                    format!("max-p99 {r}"),
                    r.clone(),
                    o.rows.iter().find(|(n, _)| n == r).and_then(|x| x.1),
                ),
            };
            let (actual, pass) = match p99 {
                Some(v) => (format!("{label} p99 {}", fmt_us(v)), v <= *max),
                None => (format!("no {label} samples"), false),
            };
            out.push(Outcome {
                name,
                limit: fmt_us(*max),
                actual,
                pass,
            });
        }
        if let Some(min) = self.min_connections {
            out.push(Outcome {
                name: "min-connections".into(),
                limit: min.to_string(),
                actual: format!("peak open {}", o.peak_open),
                pass: o.peak_open >= min,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_fail_and_missing_evidence() {
        let t = Thresholds {
            max_error_rate: Some(0.001),
            max_p99_us: vec![(None, 200_000), (Some("login".into()), 1_000)],
            min_connections: Some(100),
        };
        let mut o = Observed {
            error_rate: 0.0005,
            p99_us: Some(150_000),
            latency_name: "rtt".into(),
            rows: vec![("login".into(), Some(900))],
            peak_open: 100,
        };
        assert!(t.evaluate(&o).iter().all(|r| r.pass));
        o.error_rate = 0.002;
        o.peak_open = 99;
        o.rows[0].1 = Some(1_001);
        let r = t.evaluate(&o);
        assert!(!r[0].pass && r[1].pass && !r[2].pass && !r[3].pass);
        assert_eq!(r[2].name, "max-p99 login");
        o.p99_us = None;
        assert!(!t.evaluate(&o)[1].pass);
        assert!(Thresholds::default().evaluate(&o).is_empty());
    }
}
