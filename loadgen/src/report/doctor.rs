//! `ws-loadgen doctor`'s answer as text: the bounds sorted, the binding one first, and how
//! to raise each limit that is too low.

use crate::fmt::fmt_n;
use crate::limits::bounds::{Bound, Diagnosis, Inputs};
use crate::limits::tls_probe::{HandshakeCost, TlsProbe};

/// What the handshakes cost and the connect rate the cores sustain at that cost.
fn tls_text(t: &TlsProbe, i: &Inputs, workers: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let rate = |us: f64, cores: u64| HandshakeCost::per_core(us) * cores as f64;
    let mut line = |kind: &str, c: &HandshakeCost| {
        let _ = write!(
            s,
            "TLS {kind:<8} {} handshakes measured ({} resumed): load generator {:.0} µs CPU each (≈ {:.0}/s on its {workers} core(s))",
            c.handshakes,
            c.resumed,
            c.client_cpu_us,
            rate(c.client_cpu_us, workers)
        );
        if let Some(sv) = c.server_cpu_us {
            let _ = write!(
                s,
                "; server {sv:.0} µs each (≈ {:.0}/s per core)",
                rate(sv, 1)
            );
        }
        let _ = writeln!(s);
    };
    if t.full.handshakes > 0 {
        line("full", &t.full);
    }
    if let Some(r) = &t.resumed {
        line("resumed", r);
    }
    for n in &t.notes {
        let _ = writeln!(s, "TLS          {n}");
    }
    if t.full.handshakes > 0 && i.connect_rate > 0.0 {
        let lg = rate(t.full.client_cpu_us, workers);
        if i.connect_rate > lg {
            let _ = writeln!(
                s,
                "TLS          --connect-rate {:.0}/s is more full handshakes than this load generator's cores make (≈ {lg:.0}/s): spread the ramp over more cores or machines, or use --tls-resume on reconnects",
                i.connect_rate
            );
        }
    }
    s
}

impl Diagnosis {
    pub fn to_text(&self) -> String {
        let mut s = self.bounds_text();
        if let Some(t) = &self.tls {
            s.push_str(&tls_text(t, &self.inputs, self.limits.loadgen_workers));
        }
        s
    }

    fn bounds_text(&self) -> String {
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
