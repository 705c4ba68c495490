//! Live progress on stderr once a second: an indicatif bar on a terminal, plain lines
//! otherwise (CI logs, pipes), nothing with `--progress off`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use clap::ValueEnum;

/// How live progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A progress bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines, once a second.
    Plain,
    /// Nothing.
    Off,
}

/// One second's figures for the progress line.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    pub elapsed_s: f64,
    pub total_s: f64,
    pub open: u32,
    pub target: u32,
    pub pending: u32,
    pub established_per_s: f64,
    pub failed: u64,
    pub drops: u64,
    pub msgs_per_s: f64,
    pub latency_name: String,
    pub p99: String,
}

impl Tick {
    pub fn line(&self) -> String {
        format!(
            "open {}/{} (connecting {}) | {:.0} conn/s | failed {} | drops {} | {:.0} msgs/s | {} p99 {}",
            self.open,
            self.target,
            self.pending,
            self.established_per_s,
            self.failed,
            self.drops,
            self.msgs_per_s,
            self.latency_name,
            self.p99
        )
    }
}

pub enum Progress {
    Off,
    Plain,
    Bar(ProgressBar),
}

impl Progress {
    pub fn new(mode: ProgressMode, total_s: f64) -> Self {
        match mode {
            ProgressMode::Off => Progress::Off,
            ProgressMode::Plain => Progress::Plain,
            ProgressMode::Auto if !std::io::stderr().is_terminal() => Progress::Plain,
            ProgressMode::Auto => {
                let pb = ProgressBar::with_draw_target(
                    Some((total_s.ceil() as u64).max(1)),
                    ProgressDrawTarget::stderr(),
                );
                if let Ok(style) =
                    ProgressStyle::with_template("{elapsed_precise} [{bar:25}] {pos}/{len}s {msg}")
                {
                    pb.set_style(style.progress_chars("=> "));
                }
                Progress::Bar(pb)
            }
        }
    }

    pub fn tick(&self, t: &Tick) {
        match self {
            Progress::Off => {}
            Progress::Plain => eprintln!("[{:>6.1}s] {}", t.elapsed_s, t.line()),
            Progress::Bar(pb) => {
                pb.set_position(t.elapsed_s.min(t.total_s).max(0.0) as u64);
                pb.set_message(t.line());
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(pb) = self {
            pb.finish_and_clear();
        }
    }
}
