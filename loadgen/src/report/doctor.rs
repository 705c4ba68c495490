//! `ws-loadgen doctor`'s answer as text: the bounds sorted, the binding one first, and how
//! to raise each limit that is too low.

use crate::fmt::fmt_n;
use crate::limits::bounds::{Bound, Diagnosis};

impl Diagnosis {
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let i = &self.inputs;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ws-loadgen doctor: {} connections to {} ({}), {} source address(es), {} on this box, connect rate {}",
            fmt_n(i.n),
            self.url,
            self.server_addr,
            i.source_ips,
            if i.ends >= 2 {
                "both ends"
            } else {
                "the client end only"
            },
            if i.connect_rate > 0.0 {
                format!("{:.0}/s", i.connect_rate)
            } else {
                "unpaced".into()
            }
        );
        let w1 = self
            .bounds
            .iter()
            .map(|b| b.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(s, "{:<w1$}  {:>12}  status   now", "bound", "max N");
        for (k, b) in self.bounds.iter().enumerate() {
            let max = match b.max_n {
                Some(m) => fmt_n(m),
                None if b.known => "-".into(),
                None => "?".into(),
            };
            let status = match (b.max_n, b.known) {
                (Some(m), _) if m < i.n => "LOW",
                (Some(_), _) => "OK",
                (None, true) => "OK",
                (None, false) => "unknown",
            };
            let mark = if k == 0 && b.max_n.is_some() {
                "  <- binds first"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "{:<w1$}  {:>12}  {:<7}  {}{mark}",
                b.name, max, status, b.current
            );
        }
        match (self.largest_feasible, self.bounds.first()) {
            (Some(m), Some(b)) => {
                let _ = writeln!(s, "largest feasible N: {} (bound by {})", fmt_n(m), b.name);
            }
            _ => {
                let _ = writeln!(s, "largest feasible N: no known bound");
            }
        }
        if self.feasible {
            let _ = writeln!(s, "{} connections: feasible", fmt_n(i.n));
        } else {
            let low: Vec<&Bound> = self.bounds.iter().filter(|b| !b.allows(i.n)).collect();
            let _ = writeln!(
                s,
                "{} connections: NOT feasible, {} limit(s) too low:",
                fmt_n(i.n),
                low.len()
            );
            for b in low {
                let _ = writeln!(
                    s,
                    "  {} (allows {}): {}",
                    b.name,
                    fmt_n(b.max_n.unwrap_or(0)),
                    b.fix
                );
            }
        }
        for b in self.bounds.iter().filter(|b| !b.known && !b.fix.is_empty()) {
            let _ = writeln!(s, "  unknown {}: {}", b.name, b.fix);
        }
        s
    }
}
