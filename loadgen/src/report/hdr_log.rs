//! The HdrHistogram interval log (`--hdr-log`): one interval per second and histogram kind,
//! readable by HdrHistogram's own tools (HistogramLogProcessor, HdrHistogramVisualizer).

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::engine::stats::Stats;

/// Accumulates the `--hdr-log` body: one interval per second and histogram kind.
#[derive(Default)]
pub struct HdrLog {
    body: Vec<u8>,
    failed: Option<String>,
    /// Script: tags of the `[[open]]` steps (by index) ...
    steps: Vec<String>,
    /// ... and of the loop's rtt and delivery (`say.rtt`, `say.delivery`).
    loop_tags: Option<(String, String)>,
}

impl HdrLog {
    /// A log whose scripted steps are tagged `steps[i]`, and the loop's histograms
    /// `LOOP.rtt` and `LOOP.delivery`.
    pub fn scripted(steps: Vec<String>, loop_name: Option<&str>) -> Self {
        Self {
            steps,
            loop_tags: loop_name.map(|l| (format!("{l}.rtt"), format!("{l}.delivery"))),
            ..Self::default()
        }
    }

    /// Adds second `t`'s histograms (empty ones are skipped).
    pub fn add_second(&mut self, t: u32, s: &Stats) {
        let h = &s.h;
        let mut ser = V2DeflateSerializer::new();
        let mut w = match IntervalLogWriterBuilder::new().begin_log_with(&mut self.body, &mut ser) {
            Ok(w) => w,
            Err(e) => {
                self.failed = Some(e.to_string());
                return;
            }
        };
        let fixed = h.named().into_iter().map(|(name, hist)| {
            let name = match (&self.loop_tags, name) {
                (Some((rtt, _)), "rtt") => rtt.as_str(),
                (Some((_, del)), "delivery") => del.as_str(),
                _ => name,
            };
            (name, hist)
        });
        let steps = s
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, st)| self.steps.get(i).map(|n| (n.as_str(), &st.h)));
        for (name, hist) in fixed.chain(steps) {
            if hist.is_empty() {
                continue;
            }
            let Some(tag) = Tag::new(name) else {
                continue;
            };
            let start = std::time::Duration::from_secs(t as u64);
            let r = w.write_histogram(hist, start, std::time::Duration::from_secs(1), Some(tag));
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
            "#ws-loadgen interval log: one interval per second per tag (connect, tls, handshake, rtt, pong, delivery, http; a script's steps by name and LOOP.rtt, LOOP.delivery); values in microseconds\n\
             #[StartTime: {start_unix_s:.3} (seconds since epoch)]\n\
             #[BaseTime: {start_unix_s:.3} (seconds since epoch)]\n\
             \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        Ok(out)
    }
}
