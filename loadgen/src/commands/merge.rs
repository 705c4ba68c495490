//! `ws-loadgen merge REPORT.json...`: one report from the JSON reports of several load
//! generators (`report::merge`), thresholds evaluated on the merged figures, exit codes as
//! for `run` (0 pass, 1 a threshold failed, 2 the reports cannot be read or combined).

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_CANNOT_RUN, EXIT_OK, EXIT_THRESHOLD};
use crate::report::merge::merge;
use crate::report::run::Report;
use crate::report::thresholds::{unknown_row, Observed, ThresholdArgs};
use crate::report::{write_file, write_json};

pub const EXAMPLES: &str = "\
Examples:
  # Three load machines started together, then one answer
  ws-loadgen run --script chat.toml --start-at 2026-12-07T10:00:00Z --conn-offset 0     --json a.json
  ws-loadgen run --script chat.toml --start-at 2026-12-07T10:00:00Z --conn-offset 10000 --json b.json
  ws-loadgen run --script chat.toml --start-at 2026-12-07T10:00:00Z --conn-offset 20000 --json c.json
  ws-loadgen merge a.json b.json c.json --json all.json --html all.html --max-p99 say=50ms

Exit codes: 0 every threshold holds on the merged figures, 1 one fails, 2 the reports cannot
be read or combined (another version, scenario or stage plan).";

#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct MergeArgs {
    /// JSON reports of `ws-loadgen run` (--json), or of an earlier merge.
    #[arg(required = true, value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,

    /// Write the merged report as JSON (mergeable again).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the merged report as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Evaluated on the merged figures.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

pub fn run(a: &MergeArgs) -> i32 {
    let mut reports = Vec::new();
    let mut names = Vec::new();
    for p in &a.reports {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ws-loadgen merge: cannot read {}: {e}", p.display());
                return EXIT_CANNOT_RUN;
            }
        };
        match serde_json::from_str::<Report>(&text) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!(
                    "ws-loadgen merge: {} is not a ws-loadgen run report: {e} (line {}, column {})",
                    p.display(),
                    e.line(),
                    e.column()
                );
                return EXIT_CANNOT_RUN;
            }
        }
        names.push(p.display().to_string());
    }
    let mut m = match merge(&reports, &names) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ws-loadgen merge: {e}");
            return EXIT_CANNOT_RUN;
        }
    };
    let observed = Observed::of(&m);
    let known: Vec<String> = observed.rows.iter().map(|x| x.0.clone()).collect();
    if let Some(e) = unknown_row(&a.thresholds.max_p99, &known) {
        eprintln!("ws-loadgen merge: {e}");
        return EXIT_CANNOT_RUN;
    }
    m.thresholds = a.thresholds.thresholds().evaluate(&observed);
    m.exit_code = if m.connections.established == 0 {
        m.error = Some("no connection was established on any host".into());
        EXIT_CANNOT_RUN
    } else if m.thresholds.iter().any(|o| !o.pass) {
        EXIT_THRESHOLD
    } else {
        EXIT_OK
    };
    for o in m.thresholds.iter().filter(|o| !o.pass) {
        eprintln!(
            "ws-loadgen merge: threshold {} failed: limit {}, actual {}",
            o.name, o.limit, o.actual
        );
    }
    if let Some(p) = &a.json {
        write_json("ws-loadgen merge", p, "the merged report", &m);
    }
    if let Some(p) = &a.html {
        write_file(
            "ws-loadgen merge",
            p,
            crate::report::run_html::page(&m).into_bytes(),
        );
    }
    print!("{}", m.to_text());
    m.exit_code
}
