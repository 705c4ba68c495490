//! The shape of a run in time: durations as typed (`30s`, `250ms`) and the stage plan
//! (`--stages 30s:5000,60s:10000`) with each stage's start.

use std::time::Duration;

/// Parses `250ms`, `30s`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 30s, 2m, 1h)"))?;
    let secs = match unit.trim() {
        "ns" => v / 1e9,
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in duration {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=366.0 * 86400.0).contains(&secs) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Nanoseconds of `d`, saturating.
pub fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// One stage: reach `target` open connections (at the connect rate), then hold until
/// `duration` has passed since the stage began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    pub duration_ms: u64,
    pub target: u32,
}

/// Parses `30s:5000,60s:10000`.
pub fn parse_stages(s: &str) -> Result<Vec<Stage>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (d, n) = part
            .split_once(':')
            .ok_or_else(|| format!("stage {part:?} is not DURATION:CONNECTIONS (e.g. 30s:5000)"))?;
        let d = parse_duration(d)?;
        if d.is_zero() {
            return Err(format!("stage {part:?} has a zero duration"));
        }
        let target: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{n:?} in stage {part:?} is not a connection count"))?;
        out.push(Stage {
            duration_ms: d.as_millis().min(u64::MAX as u128) as u64,
            target,
        });
    }
    if out.is_empty() {
        return Err("--stages is empty".into());
    }
    Ok(out)
}

/// The stages of a run, with their start offsets.
#[derive(Debug, Clone)]
pub struct Plan {
    pub stages: Vec<Stage>,
    /// Start of each stage, ns since the run's start.
    starts_ns: Vec<u64>,
    total_ns: u64,
}

impl Plan {
    pub fn new(stages: Vec<Stage>) -> Self {
        let mut starts_ns = Vec::with_capacity(stages.len());
        let mut t = 0u64;
        for s in &stages {
            starts_ns.push(t);
            t = t.saturating_add(s.duration_ms.saturating_mul(1_000_000));
        }
        Self {
            stages,
            starts_ns,
            total_ns: t,
        }
    }

    /// Total length of the run.
    pub fn total_ns(&self) -> u64 {
        self.total_ns
    }

    /// Start of stage `i`, ns since the run's start.
    pub fn start_ns(&self, i: usize) -> u64 {
        self.starts_ns.get(i).copied().unwrap_or(self.total_ns)
    }

    /// The stage running at `elapsed_ns` (the last one once the run is over).
    pub fn stage_at(&self, elapsed_ns: u64) -> usize {
        self.starts_ns
            .iter()
            .rposition(|&s| s <= elapsed_ns)
            .unwrap_or(0)
    }

    /// The largest target of any stage.
    pub fn max_target(&self) -> u32 {
        self.stages.iter().map(|s| s.target).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e30h").is_err());
        assert!(parse_duration("NaNs").is_err());
    }

    #[test]
    fn stages_and_plan() {
        let st = parse_stages("1s:10, 2s:30,500ms:0").unwrap();
        assert_eq!(st.len(), 3);
        let p = Plan::new(st);
        assert_eq!(p.total_ns(), 3_500_000_000);
        assert_eq!(p.stage_at(0), 0);
        assert_eq!(p.stage_at(999_999_999), 0);
        assert_eq!(p.stage_at(1_000_000_000), 1);
        assert_eq!(p.stage_at(3_200_000_000), 2);
        assert_eq!(p.stage_at(u64::MAX), 2);
        assert_eq!(p.max_target(), 30);
        assert!(parse_stages("10").is_err());
        assert!(parse_stages("0s:10").is_err());
        assert!(parse_stages("1s:-3").is_err());
    }
}
