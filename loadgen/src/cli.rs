//! Command line: `ws-loadgen [run] URL [OPTIONS]` and the other commands.
//!
//! This file only assembles the commands' own argument structs (each lives with its
//! command in `commands/`) and makes `run` the default: `ws-loadgen ws://127.0.0.1:9001/ws
//! -c 100` and `ws-loadgen run ws://...` are the same. Nothing here is imported back by a
//! command.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::commands::ceiling::{agent::AgentArgs, CeilingArgs};
use crate::commands::doctor::DoctorArgs;
use crate::commands::merge::MergeArgs;
use crate::commands::run::args::{RunArgs, EXAMPLES};

#[derive(Debug, Parser)]
#[command(
    name = "ws-loadgen",
    version,
    about = "Thread-per-core raw-socket WebSocket load generator that tells the truth.",
    override_usage = "ws-loadgen [run] URL [OPTIONS]\n       ws-loadgen run --script FILE [OPTIONS]\n       ws-loadgen <COMMAND>",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a load (the default when no subcommand is given).
    #[command(after_help = EXAMPLES)]
    Run(Box<RunArgs>),
    /// Which limit stops N connections on this box, the largest N that fits, and the fixes.
    Doctor(Box<DoctorArgs>),
    /// Ramp held connections until a limit stops them, hold the ceiling, name the limit.
    Ceiling(Box<CeilingArgs>),
    /// One report from the JSON reports of several load generators: counters summed,
    /// histograms added exactly, seconds aligned on wall-clock time, thresholds rechecked.
    Merge(Box<MergeArgs>),
    /// (internal) A load generator process driven by `ceiling` over stdin/stdout.
    #[command(hide = true)]
    CeilingAgent(Box<AgentArgs>),
}

/// Parses the command line, inserting the default `run` subcommand when none is given.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut v: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let explicit = [
        "run",
        "doctor",
        "ceiling",
        "ceiling-agent",
        "merge",
        "help",
        "-h",
        "--help",
        "-V",
        "--version",
    ];
    let needs_run = match v.get(1).and_then(|a| a.to_str()) {
        Some(a) => !explicit.contains(&a),
        None => false,
    };
    if needs_run {
        v.insert(1, OsString::from("run"));
    }
    Cli::try_parse_from(v)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::parse::{parse_header, parse_ratio};
    use crate::config::ScenarioKind;

    fn run(args: &[&str]) -> RunArgs {
        let mut v = vec!["ws-loadgen"];
        v.extend_from_slice(args);
        match parse_from(v).unwrap().command {
            Command::Run(r) => *r,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn run_is_the_default() {
        let a = run(&["ws://127.0.0.1:9001/ws", "--connections", "7"]);
        assert_eq!(a.connections, Some(7));
        let b = run(&["run", "ws://127.0.0.1:9001/ws", "-c", "8"]);
        assert_eq!(b.connections, Some(8));
        let c = run(&["-c", "9", "ws://x/"]);
        assert_eq!(c.connections, Some(9));
        assert_eq!(c.scenario, None);
        let d = run(&["--script", "chat.toml", "-c", "3"]);
        assert_eq!(d.url, None);
        assert!(parse_from(["ws-loadgen", "--script", "x.toml", "--scenario", "echo"]).is_err());
        assert!(parse_from(["ws-loadgen"]).is_err());
    }

    #[test]
    fn values() {
        let a = run(&[
            "ws://h/",
            "--stages",
            "1s:10,2s:20",
            "--source-ip",
            "127.0.0.2-127.0.0.4",
            "-H",
            "X-A: b",
            "--header",
            "Cookie:c=d",
            "--max-error-rate",
            "0.1%",
            "--max-p99",
            "200ms",
            "--max-p99",
            "login=1s",
            "--scenario",
            "hold",
        ]);
        assert_eq!(a.stages.unwrap().0.len(), 2);
        assert_eq!(a.source_ip.unwrap().0.len(), 3);
        assert_eq!(a.headers, ["X-A: b", "Cookie: c=d"]);
        assert!((a.thresholds.max_error_rate.unwrap() - 0.001).abs() < 1e-12);
        assert_eq!(a.thresholds.max_p99[0].limit, Duration::from_millis(200));
        assert_eq!(a.thresholds.max_p99[0].row, None);
        assert_eq!(a.thresholds.max_p99[1].row.as_deref(), Some("login"));
        assert_eq!(a.scenario, Some(ScenarioKind::Hold));
    }

    #[test]
    fn refusals() {
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header("X: a\r\nEvil: 1").is_err());
        assert!(parse_ratio("150%").is_err());
        assert!(parse_ratio("abc").is_err());
        assert!(parse_from(["ws-loadgen", "ws://h/", "--stages", "x"]).is_err());
    }
}
