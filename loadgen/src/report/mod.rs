//! What a run leaves behind and shows: the run report (JSON and text), the ceiling and
//! doctor reports, the HdrHistogram interval log, HTML charts, live progress and
//! thresholds.

use std::path::Path;

use serde::Serialize;

pub mod aggregate;
pub mod ceiling;
pub mod doctor;
pub mod hdr_log;
pub mod html;
pub mod live;
pub mod merge;
pub mod progress;
pub mod run;
pub mod run_html;
pub mod thresholds;

/// Writes a report file. A file that cannot be written is said on stderr (`WHO: cannot
/// write PATH: ...`) and changes nothing else: the text report and the exit code follow.
pub fn write_file(who: &str, path: &Path, contents: impl AsRef<[u8]>) {
    if let Err(e) = std::fs::write(path, contents) {
        eprintln!("{who}: cannot write {}: {e}", path.display());
    }
}

/// [`write_file`] of `value` as pretty JSON (`WHO: cannot encode WHAT: ...` when it cannot
/// be encoded).
pub fn write_json(who: &str, path: &Path, what: &str, value: &impl Serialize) {
    match serde_json::to_vec_pretty(value) {
        Ok(b) => write_file(who, path, b),
        Err(e) => eprintln!("{who}: cannot encode {what}: {e}"),
    }
}
