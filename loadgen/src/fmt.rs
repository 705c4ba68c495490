//! How figures read in the text reports, progress lines and messages of `run`, `doctor` and
//! `ceiling`: one place, so the same figure reads the same everywhere.

use std::collections::BTreeMap;

/// A count with thousands separators: `1,234,567`.
pub fn fmt_n(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as `850us`, `12.300ms` or `1.200s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.3}ms", us as f64 / 1e3)
    } else {
        format!("{:.3}s", us as f64 / 1e6)
    }
}

/// A latency that may have no sample: [`fmt_us`], or `-`.
pub fn opt_us(us: Option<u64>) -> String {
    us.map(fmt_us).unwrap_or_else(|| "-".into())
}

/// Counts by class, most first (ties by name), comma-separated: `EMFILE x12, ECONNRESET x3`;
/// empty for no class. `times` goes between name and count: `" x"` in the ceiling's ASCII
/// reports, `" ×"` in `run`'s.
pub fn class_counts(m: &BTreeMap<String, u64>, times: &str) -> String {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k}{times}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`class_counts`], or `none` for no class.
pub fn classes(m: &BTreeMap<String, u64>, times: &str) -> String {
    if m.is_empty() {
        return "none".into();
    }
    class_counts(m, times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(fmt_n(0), "0");
        assert_eq!(fmt_n(999), "999");
        assert_eq!(fmt_n(1_000), "1,000");
        assert_eq!(fmt_n(1_234_567), "1,234,567");
        assert_eq!(fmt_us(850), "850us");
        assert_eq!(fmt_us(12_300), "12.300ms");
        assert_eq!(fmt_us(1_200_000), "1.200s");
        assert_eq!(opt_us(None), "-");
        let m: BTreeMap<String, u64> = [("b", 3), ("a", 3), ("c", 9)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(classes(&m, " x"), "c x9, a x3, b x3");
        assert_eq!(classes(&m, " ×"), "c ×9, a ×3, b ×3");
        assert_eq!(classes(&BTreeMap::new(), " x"), "none");
        assert_eq!(class_counts(&BTreeMap::new(), " x"), "");
    }
}
