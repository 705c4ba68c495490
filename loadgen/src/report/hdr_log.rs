//! The HdrHistogram interval log (`--hdr-log`): one interval per second and histogram kind,
//! readable by HdrHistogram's own tools (HistogramLogProcessor, HdrHistogramVisualizer).

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::engine::stats::Hists;

/// Accumulates the `--hdr-log` body: one interval per second and histogram kind.
#[derive(Default)]
pub struct HdrLog {
    body: Vec<u8>,
    failed: Option<String>,
}

impl HdrLog {
    /// Adds second `t`'s histograms (empty ones are skipped).
    pub fn add_second(&mut self, t: u32, h: &Hists) {
        let mut ser = V2DeflateSerializer::new();
        let mut w = match IntervalLogWriterBuilder::new().begin_log_with(&mut self.body, &mut ser) {
            Ok(w) => w,
            Err(e) => {
                self.failed = Some(e.to_string());
                return;
            }
        };
        for (name, hist) in h.named() {
            if hist.is_empty() {
                continue;
            }
            let start = std::time::Duration::from_secs(t as u64);
            let r = w.write_histogram(
                hist,
                start,
                std::time::Duration::from_secs(1),
                Tag::new(name),
            );
            if let Err(e) = r {
                self.failed = Some(format!("{e:?}"));
            }
        }
    }

    /// The whole log with its header.
    pub fn finish(self, start_unix_s: f64) -> Result<Vec<u8>, String> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut out = format!(
            "#ws-loadgen interval log: one interval per second per tag (connect, handshake, rtt, pong, delivery, http); values in microseconds\n\
             #[StartTime: {start_unix_s:.3} (seconds since epoch)]\n\
             #[BaseTime: {start_unix_s:.3} (seconds since epoch)]\n\
             \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        Ok(out)
    }
}
