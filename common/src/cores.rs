//! Parsing of core lists such as `0-3,6` (the `taskset -c` syntax).

/// Parses `0-3,6` into `[0, 1, 2, 3, 6]`: sorted, without duplicates.
pub fn parse_core_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty element in core list {s:?}"));
        }
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_one(a, s)?, parse_one(b, s)?),
            None => {
                let c = parse_one(part, s)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!("range {part:?} in core list {s:?} runs backwards"));
        }
        if hi - lo > 4096 {
            return Err(format!(
                "range {part:?} in core list {s:?} is implausibly large"
            ));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_one(t: &str, whole: &str) -> Result<usize, String> {
    t.trim()
        .parse::<usize>()
        .map_err(|_| format!("{t:?} in core list {whole:?} is not a core number"))
}

/// The cores this process may run on (its affinity mask), in order.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Resolves an optional `--cores` argument against the affinity mask: every listed core must
/// be one this process may run on, and there is at least one.
pub fn resolve_cores(arg: Option<&str>) -> Result<Vec<usize>, String> {
    let allowed = allowed_cores();
    if allowed.is_empty() {
        return Err("no core to run on (empty affinity mask)".into());
    }
    match arg {
        None => Ok(allowed),
        Some(s) => {
            let list = parse_core_list(s)?;
            if let Some(bad) = list.iter().find(|c| !allowed.contains(c)) {
                return Err(format!(
                    "core {bad} is not available to this process (allowed: {allowed:?})"
                ));
            }
            Ok(list)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_core_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_core_list("1").unwrap(), vec![1]);
        assert_eq!(parse_core_list("3,1,1-2").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_core_list("").is_err());
        assert!(parse_core_list("a").is_err());
        assert!(parse_core_list("3-1").is_err());
        assert!(parse_core_list("1,,2").is_err());
    }
}
