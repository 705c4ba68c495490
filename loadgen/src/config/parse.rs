//! Values as typed on command lines (and, later, in scenario files): counts, ratios,
//! header lines, source-address lists and stage plans. Every parser returns a message that
//! says what was expected, so clap can show it next to the flag.

use std::net::IpAddr;

use crate::config::plan::{parse_stages, Stage};

/// `--stages` value.
#[derive(Debug, Clone)]
pub struct Stages(pub Vec<Stage>);

/// `--source-ip` value.
#[derive(Debug, Clone)]
pub struct SourceIps(pub Vec<IpAddr>);

/// `--stages` value.
pub fn parse_stages_arg(s: &str) -> Result<Stages, String> {
    parse_stages(s).map(Stages)
}

/// `--source-ip` value: a comma list of addresses and `first-last` ranges.
pub fn parse_source_ips_arg(s: &str) -> Result<SourceIps, String> {
    crate::config::source_ip::parse_source_ips(s).map(SourceIps)
}

/// `Name: value` with a token name and no line breaks.
pub fn parse_header(s: &str) -> Result<String, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} is not 'Name: value'"))?;
    let name = name.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("header name {name:?} is not a valid HTTP token"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("header {s:?} contains a line break"));
    }
    Ok(format!("{name}: {}", value.trim()))
}

/// `0.1%` or `0.001`, between 0 and 1.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a rate (examples: 0.1%, 0.001)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is not between 0 and 100%"));
    }
    Ok(v)
}

/// `1000000`, `1_000_000`, `100k`, `1M`, `1.5M`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t: String = s
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != ',')
        .collect();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t.as_str(), 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a count (examples: 20000, 100k, 1.5M)"))?;
    let n = v * mult;
    if !n.is_finite() || !(1.0..=1e12).contains(&n) || n.fract() != 0.0 {
        return Err(format!("{s:?} is not a positive whole count"));
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(parse_count("1_000_000").unwrap(), 1_000_000);
        assert_eq!(parse_count("100k").unwrap(), 100_000);
        assert_eq!(parse_count("1.5M").unwrap(), 1_500_000);
        assert!(parse_count("0").is_err());
        assert!(parse_count("x").is_err());
        assert!(parse_count("1.5").is_err());
    }
}
