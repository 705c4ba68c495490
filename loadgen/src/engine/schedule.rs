//! Time inside a worker: each worker's share of a target, and the pacers that space
//! connects (`--connect-rate`) and messages (`--rate`) on a constant-rate schedule.

/// Worker `w`'s share of `total` among `n` workers (shares differ by at most one).
pub fn share(total: u32, w: usize, n: usize) -> u32 {
    let n = n.max(1) as u32;
    let w = w as u32;
    total / n + u32::from(w < total % n)
}

/// Spaces events at a constant rate: event k is due at `start + k / rate`.
///
/// When the caller falls behind by more than `max_lag_ns`, the deficit beyond it is
/// forgiven instead of being caught up in a burst (the report then shows the lower rate
/// actually achieved). A rate of 0 means "unpaced": every event is due at once.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval_ns: f64,
    next_ns: f64,
    max_lag_ns: f64,
}

impl Pacer {
    pub fn new(rate_per_s: f64, now_ns: u64, max_lag_ns: u64) -> Self {
        let interval_ns = if rate_per_s > 0.0 {
            1e9 / rate_per_s
        } else {
            0.0
        };
        Self {
            interval_ns,
            next_ns: now_ns as f64,
            max_lag_ns: max_lag_ns as f64,
        }
    }

    pub fn unpaced(&self) -> bool {
        self.interval_ns == 0.0
    }

    /// The intended time of the next event if it is due at `now_ns`, and consumes it.
    pub fn take(&mut self, now_ns: u64) -> Option<u64> {
        let now = now_ns as f64;
        if self.next_ns < now - self.max_lag_ns {
            self.next_ns = now - self.max_lag_ns;
        }
        if self.next_ns <= now {
            let t = self.next_ns;
            self.next_ns += self.interval_ns;
            Some(t as u64)
        } else {
            None
        }
    }

    /// Restarts the schedule at `now_ns` (after a pause with nothing to do).
    pub fn rebase(&mut self, now_ns: u64) {
        if self.next_ns < now_ns as f64 {
            self.next_ns = now_ns as f64;
        }
    }

    /// When the next event is due.
    pub fn next_due_ns(&self) -> u64 {
        self.next_ns.max(0.0) as u64
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0u32, 1, 7, 100, 10_001] {
            for n in 1..6 {
                let sum: u32 = (0..n).map(|w| share(total, w, n)).sum();
                assert_eq!(sum, total);
            }
        }
    }

    #[test]
    fn pacer_is_constant_rate_and_forgives_long_lags() {
        let mut p = Pacer::new(1000.0, 0, 10_000_000);
        assert_eq!(p.take(0), Some(0));
        assert_eq!(p.take(0), None);
        assert_eq!(p.take(1_000_000), Some(1_000_000));
        // 5 ms later: five more are due, no more.
        let n = std::iter::from_fn(|| p.take(6_000_000)).count();
        assert_eq!(n, 5);
        // A 1 s stall: at most ~10 ms worth (11 events) are caught up.
        let n = std::iter::from_fn(|| p.take(1_006_000_000)).count();
        assert!(n <= 11, "{n}");
        let mut u = Pacer::new(0.0, 5, 0);
        assert!(u.unpaced());
        assert_eq!(std::iter::from_fn(|| u.take(5)).take(100).count(), 100);
    }
}
