//! `ws-loadgen ceiling-agent` (hidden): one load generator process that `ceiling` drives
//! over a pipe, so a ceiling run can hold more connections than one process's open-files
//! limit allows.
//!
//! Protocol. The parent writes one command per line on the agent's stdin:
//! `add ID N RATE` opens a group of N held connections (hold scenario, heartbeats, no
//! reconnects) at RATE connects/s on one new worker thread; `stop ID` closes that group;
//! `quit` (or end of stdin: the parent is gone) closes everything and exits. The agent writes
//! one JSON [`AgentMsg`] per line on stdout: `Hello` first, then a `Status` with each group's
//! statistics delta every half second, `Bye` last.
//!
//! A group is an ordinary [`crate::engine::worker::Worker`] with a single-stage plan, so connects, handshakes,
//! heartbeats, failure classes and the close are exactly those of `ws-loadgen run`. Each ramp
//! step is a new group: earlier steps keep their connections while the next opens.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use crossbeam_channel::{Receiver, TryRecvError};
use serde::{Deserialize, Serialize};
use ws_common::payload::now_ns;

use crate::commands::run::args::RunArgs;
use crate::engine::delta::Report;
use crate::engine::shared::Shared;
use crate::engine::stats::{encode_hist, Counters, Stats};

/// How long a group's plan lasts: groups end when told, this is only a backstop.
const GROUP_PLAN: &str = "86400s";
/// Status line interval.
const STATUS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Core to pin this agent's workers to.
    #[arg(long)]
    pub core: usize,
    /// `ws-loadgen run` arguments every group starts from (URL and connection options).
    #[arg(last = true, required = true)]
    pub run_args: Vec<String>,
}

/// One group's figures since the previous status line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupDelta {
    pub id: u32,
    /// Connections open now.
    pub open: u32,
    /// Connects (TCP or handshake) in progress now.
    pub pending: u32,
    /// The group's worker has finished (its connections are closed).
    pub done: bool,
    pub c: Counters,
    pub failures: BTreeMap<String, u64>,
    pub drops: BTreeMap<String, u64>,
    /// Pong latency histogram delta (µs), V2-deflate + base64; empty when no sample.
    pub pong: String,
    /// Handshake latency histogram delta (µs), same encoding.
    pub handshake: String,
}

/// A message from the agent to the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentMsg {
    Hello {
        pid: u32,
        /// RLIMIT_NOFILE after raising the soft limit to the hard one.
        nofile: (u64, u64),
        rss: u64,
    },
    Status {
        rss: u64,
        groups: Vec<GroupDelta>,
    },
    /// A command could not be carried out.
    Error {
        msg: String,
    },
    Bye,
}

/// A command from the parent.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// `offset`: the group's first connection number (`{{conn}}` of a script).
    Add {
        id: u32,
        n: u32,
        rate: f64,
        offset: u64,
    },
    Stop {
        id: u32,
    },
    Quit,
}

impl Cmd {
    pub fn parse(line: &str) -> Result<Cmd, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<&str, String> {
            f.get(i)
                .copied()
                .ok_or_else(|| format!("{line:?}: missing field"))
        };
        match f.first().copied() {
            Some("add") => Ok(Cmd::Add {
                id: num(1)?.parse().map_err(|_| format!("{line:?}: bad id"))?,
                n: num(2)?
                    .parse()
                    .map_err(|_| format!("{line:?}: bad count"))?,
                rate: num(3)?.parse().map_err(|_| format!("{line:?}: bad rate"))?,
                offset: match f.get(4) {
                    Some(o) => o.parse().map_err(|_| format!("{line:?}: bad offset"))?,
                    None => 0,
                },
            }),
            Some("stop") => Ok(Cmd::Stop {
                id: num(1)?.parse().map_err(|_| format!("{line:?}: bad id"))?,
            }),
            Some("quit") => Ok(Cmd::Quit),
            _ => Err(format!("unknown command {line:?}")),
        }
    }

    pub fn line(&self) -> String {
        match self {
            Cmd::Add {
                id,
                n,
                rate,
                offset,
            } => format!("add {id} {n} {rate} {offset}\n"),
            Cmd::Stop { id } => format!("stop {id}\n"),
            Cmd::Quit => "quit\n".into(),
        }
    }
}

struct Group {
    id: u32,
    stop: Arc<AtomicBool>,
    rx: Receiver<Report>,
    handle: Option<std::thread::JoinHandle<()>>,
    open: u32,
    pending: u32,
    delta: Stats,
    done: bool,
    done_sent: bool,
}

fn emit(m: &AgentMsg) {
    let mut out = std::io::stdout().lock();
    if let Ok(s) = serde_json::to_string(m) {
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }
}

/// Starts one group: a worker holding `n` connections.
fn start_group(
    a: &AgentArgs,
    id: u32,
    n: u32,
    rate: f64,
    offset: u64,
    nofile: (u64, u64),
) -> Result<Group, String> {
    let mut v: Vec<String> = a.run_args.clone();
    // A scripted ceiling runs the script's steps and loop (heartbeats on); otherwise the
    // connections are held idle.
    if !v.iter().any(|w| w == "--script") {
        v.extend(["--scenario".to_string(), "hold".to_string()]);
    }
    for s in [
        "-c",
        &n.to_string(),
        "--connect-rate",
        &rate.to_string(),
        "-d",
        GROUP_PLAN,
        "--conn-offset",
        &offset.to_string(),
        "--reconnect-max-tries",
        "0",
        "--cores",
        &a.core.to_string(),
        "--progress",
        "off",
    ] {
        v.push(s.to_string());
    }
    let args = RunArgs::parse_words(v).map_err(|e| format!("group arguments: {e}"))?;
    let cfg = crate::commands::run::args::build(&args, nofile)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sh = Arc::new(Shared::new(cfg, now_ns(), stop.clone()));
    let (tx, rx) = crossbeam_channel::unbounded();
    let w = crate::scenario::worker(0, sh, tx)?;
    let core = a.core;
    let handle = std::thread::Builder::new()
        .name(format!("ws-ceiling-g{id}"))
        .spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
            w();
        })
        .map_err(|e| format!("cannot spawn a worker thread: {e}"))?;
    Ok(Group {
        id,
        stop,
        rx,
        handle: Some(handle),
        open: 0,
        pending: 0,
        delta: Stats::default(),
        done: false,
        done_sent: false,
    })
}

/// Runs the agent until `quit` or end of stdin; returns the exit code.
pub fn run(a: &AgentArgs) -> i32 {
    // The parent handles SIGINT (Ctrl-C reaches the whole process group): the agent keeps
    // its connections until the parent says quit, so the report can still be written.
    let ignored = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, ignored);
    let nofile = ws_common::metrics::raise_nofile_to_hard();
    emit(&AgentMsg::Hello {
        pid: std::process::id(),
        nofile,
        rss: ws_common::metrics::resident_bytes(),
    });
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<Result<Cmd, String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            if cmd_tx.send(Cmd::parse(&line)).is_err() {
                return;
            }
        }
        let _ = cmd_tx.send(Ok(Cmd::Quit));
    });
    let mut groups: Vec<Group> = Vec::new();
    let mut quitting = false;
    let mut next_status = Instant::now() + STATUS_EVERY;
    loop {
        match cmd_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(Cmd::Add {
                id,
                n,
                rate,
                offset,
            })) if !quitting => match start_group(a, id, n, rate, offset, nofile) {
                Ok(g) => groups.push(g),
                Err(e) => emit(&AgentMsg::Error {
                    msg: format!("group {id} ({n} connections): {e}"),
                }),
            },
            Ok(Ok(Cmd::Add { .. })) => {}
            Ok(Ok(Cmd::Stop { id })) => {
                for g in groups.iter().filter(|g| g.id == id) {
                    g.stop.store(true, Ordering::Relaxed);
                }
            }
            Ok(Ok(Cmd::Quit)) => {
                quitting = true;
                for g in &groups {
                    g.stop.store(true, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => emit(&AgentMsg::Error { msg: e }),
            Err(_) => {}
        }
        for g in groups.iter_mut().filter(|g| !g.done) {
            loop {
                match g.rx.try_recv() {
                    Ok(r) => {
                        g.delta.merge(&r.stats);
                        g.open = r.open;
                        g.pending = r.pending;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        g.done = true;
                        g.open = 0;
                        g.pending = 0;
                        if let Some(h) = g.handle.take() {
                            let _ = h.join();
                        }
                        break;
                    }
                }
            }
        }
        let all_done = groups.iter().all(|g| g.done);
        let now = Instant::now();
        if now >= next_status || (quitting && all_done) {
            next_status = now + STATUS_EVERY;
            let mut out = Vec::new();
            for g in groups.iter_mut().filter(|g| !g.done_sent) {
                let s = std::mem::take(&mut g.delta);
                let enc = |h: &hdrhistogram::Histogram<u64>| {
                    if h.is_empty() {
                        String::new()
                    } else {
                        encode_hist(h)
                    }
                };
                out.push(GroupDelta {
                    id: g.id,
                    open: g.open,
                    pending: g.pending,
                    done: g.done,
                    pong: enc(&s.h.pong),
                    handshake: enc(&s.h.handshake),
                    c: s.c,
                    failures: s.failures,
                    drops: s.drop_classes,
                });
                g.done_sent = g.done;
            }
            emit(&AgentMsg::Status {
                rss: ws_common::metrics::resident_bytes(),
                groups: out,
            });
        }
        if quitting && all_done {
            emit(&AgentMsg::Bye);
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for c in [
            Cmd::Add {
                id: 3,
                n: 1250,
                rate: 2500.0,
                offset: 4000,
            },
            Cmd::Stop { id: 7 },
            Cmd::Quit,
        ] {
            assert_eq!(Cmd::parse(c.line().trim()).unwrap(), c);
        }
        assert!(Cmd::parse("add 1").is_err());
        assert!(Cmd::parse("fly").is_err());
        let m = AgentMsg::Hello {
            pid: 1,
            nofile: (2, 3),
            rss: 4,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(matches!(
            serde_json::from_str::<AgentMsg>(&s).unwrap(),
            AgentMsg::Hello { pid: 1, .. }
        ));
    }
}
