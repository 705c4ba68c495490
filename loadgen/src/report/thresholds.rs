//! k6-style pass/fail thresholds: `--max-error-rate`, `--max-p99`, `--min-connections`.
//! A threshold that cannot be checked (no latency sample at all) fails: no evidence is not
//! a pass.

use serde::{Deserialize, Serialize};

use crate::fmt::fmt_us;

/// The thresholds asked for.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    pub max_error_rate: Option<f64>,
    /// Microseconds.
    pub max_p99_us: Option<u64>,
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
    /// Which latency that is (`rtt`, `pong`).
    pub latency_name: &'static str,
    pub peak_open: u32,
}

impl Thresholds {
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
        if let Some(max) = self.max_p99_us {
            let (actual, pass) = match o.p99_us {
                Some(v) => (format!("{} p99 {}", o.latency_name, fmt_us(v)), v <= max),
                None => (format!("no {} samples", o.latency_name), false),
            };
            out.push(Outcome {
                name: "max-p99".into(),
                limit: fmt_us(max),
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
            max_p99_us: Some(200_000),
            min_connections: Some(100),
        };
        let mut o = Observed {
            error_rate: 0.0005,
            p99_us: Some(150_000),
            latency_name: "rtt",
            peak_open: 100,
        };
        assert!(t.evaluate(&o).iter().all(|r| r.pass));
        o.error_rate = 0.002;
        o.peak_open = 99;
        let r = t.evaluate(&o);
        assert!(!r[0].pass && r[1].pass && !r[2].pass);
        o.p99_us = None;
        assert!(!t.evaluate(&o)[1].pass);
        assert!(Thresholds::default().evaluate(&o).is_empty());
    }
}
