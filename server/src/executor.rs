//! Start-up and shutdown: one pinned glommio executor per core, signals, the exit summary.
//!
//! The main thread binds every listener (so a port conflict is reported before anything
//! starts), creates each core's eventfd, inbox and counters, then starts one thread per
//! listed core. Each thread pins itself with core_affinity, builds a glommio
//! `LocalExecutor`, its own io_uring [`Ring`] and [`Core`], and runs one task, [`drive`]:
//! handle what is pending, sweep once a second, sleep in the core's ring. The main thread
//! then only waits for signals.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::cli::Config;
use crate::core::Core;
use crate::inbox::{inbox, CoreMsg, Inbox, Mailbox, Waker};
use crate::ring::Ring;
use crate::settings::Settings;
use crate::stats::{AllStats, CoreStats};

/// Back-off after an accept error (EMFILE...), so a full descriptor table cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Heartbeats, timeouts and drain deadlines are checked this often ([`Core::sweep`]).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// glommio's own io memory per executor: we do no file I/O, and its 10 MiB default is
/// above common RLIMIT_MEMLOCK values (8 MiB here), where it would warn and degrade.
const GLOMMIO_IO_MEMORY: usize = 512 * 1024;
/// SQ entries of each core's ring (the CQ is 8x).
const RING_ENTRIES: u32 = 4096;
/// Sends the fan-out submits in one go (a room's recipients; more are submitted in turns).
const SEND_RING_ENTRIES: u32 = 1024;
/// Provided receive buffers per core: the kernel fills these, never memory of a connection.
/// 1024 x 4 KiB = 4 MiB per core, whatever the number of connections.
const RECV_BUFFERS: u16 = 1024;
const RECV_BUFFER_SIZE: usize = 4096;

/// What a core reports when it stops.
#[derive(Debug, Default)]
pub struct CoreSummary {
    pub drained_from: usize,
    pub forced: usize,
    pub accepted: u64,
}

/// Runs the server until a signal drains it. Returns the process exit code.
pub fn run(cfg: Config) -> i32 {
    if let Err(e) = cfg.validate() {
        eprintln!("ws-server: {e}");
        return 2;
    }
    let cores = match ws_common::cores::resolve_cores(cfg.cores.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ws-server: --cores: {e}");
            return 2;
        }
    };
    let (soft, hard) = ws_common::metrics::raise_nofile_to_hard();
    let backlog = cfg.backlog.unwrap_or_else(crate::listener::somaxconn);
    let sndbuf = cfg.socket_send_buffer as usize;
    let (listeners, bound) =
        match crate::listener::bind_all(cfg.listen, cores.len(), backlog, sndbuf) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("ws-server: {e}");
                return 2;
            }
        };
    // The admin listener: one socket, served by the first core (pushes and broadcasts
    // reach the others through their inboxes, as from any connection).
    let admin = match cfg.admin_addr() {
        None => None,
        Some(a) => match crate::listener::bind_all(a, 1, 128, 0) {
            Ok((fds, at)) => Some((fds[0], at)),
            Err(e) => {
                eprintln!("ws-server: --admin-listen: {e}");
                return 2;
            }
        },
    };
    let mut settings = Settings::from_config(&cfg, cores.clone());
    match crate::tls_config::from_cli(&cfg) {
        Ok(tls) => settings.tls = tls.map(Arc::new),
        Err(e) => {
            eprintln!("ws-server: {e}");
            return 2;
        }
    }
    let stats: AllStats = (0..cores.len())
        .map(|_| CoreStats::default())
        .collect::<Vec<_>>()
        .into();
    let global_open = Arc::new(AtomicU64::new(0));

    let mut mailboxes = Vec::new();
    let mut inboxes = Vec::new();
    for _ in &cores {
        let waker = match Waker::new() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("ws-server: cannot create an eventfd: {e}");
                return 2;
            }
        };
        let (mb, ib) = inbox(waker.clone());
        mailboxes.push(mb);
        inboxes.push((ib, waker));
    }

    // Signals first, so a SIGTERM right after "listening" is never lost.
    let signals = match signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ws-server: cannot install signal handlers: {e}");
            return 2;
        }
    };

    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(cores.len());
    let mut threads = Vec::new();
    for (idx, ((core_id, public), (ib, waker))) in cores
        .iter()
        .copied()
        .zip(listeners)
        .zip(inboxes)
        .enumerate()
    {
        let settings = settings.clone();
        let stats = stats.clone();
        let global_open = global_open.clone();
        let ready = ready_tx.clone();
        let mbs = mailboxes.clone();
        let admin_fd = if idx == 0 {
            admin.map_or(-1, |a| a.0)
        } else {
            -1
        };
        let listener = [public, admin_fd];
        let t = std::thread::Builder::new()
            .name(format!("ws-core-{core_id}"))
            .spawn(move || {
                run_core(
                    idx,
                    core_id,
                    listener,
                    settings,
                    stats,
                    global_open,
                    ib,
                    waker,
                    mbs,
                    ready,
                )
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("ws-server: cannot start a thread for core {core_id}: {e}");
                return 2;
            }
        }
    }
    drop(ready_tx);
    for _ in &cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("ws-server: {e}");
                std::process::exit(2);
            }
            Err(_) => {
                eprintln!("ws-server: a core failed to start");
                std::process::exit(2);
            }
        }
    }

    eprintln!(
        "ws-server: {} executor(s) on cores {:?}; open-files limit {soft} (hard {hard}): at most ~{} connections per process",
        cores.len(),
        cores,
        soft.saturating_sub(16 + 3 * cores.len() as u64)
    );
    for w in settings.policy.warnings() {
        eprintln!("ws-server: {w}");
    }
    crate::stats::BASE_FDS.store(
        ws_common::metrics::open_fds(),
        std::sync::atomic::Ordering::Relaxed,
    );
    if settings.tls.is_some() {
        eprintln!(
            "ws-server: wss:// on {bound} (TLS 1.3 and 1.2, session tickets); admin listener plain"
        );
    }
    println!("listening on {bound}");
    match admin {
        Some((_, at)) => println!("admin on {at}"),
        None => eprintln!("ws-server: --admin-listen off: no push, broadcast or metrics routes"),
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    wait_for_signals(signals, &mailboxes);

    let mut total = CoreSummary::default();
    for t in threads {
        if let Ok(s) = t.join() {
            total.drained_from += s.drained_from;
            total.forced += s.forced;
            total.accepted += s.accepted;
        }
    }
    println!(
        "ws-server: stopped; {} connection(s) open at shutdown got Close 1001, {} cut at the drain deadline; {} accepted in all",
        total.drained_from, total.forced, total.accepted
    );
    0
}

/// First signal: every core drains. Second signal: exit at once.
fn wait_for_signals(mut signals: signal_hook::iterator::Signals, mailboxes: &[Mailbox]) {
    let mbs: Vec<Mailbox> = mailboxes.to_vec();
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen == 1 {
                eprintln!("ws-server: signal {sig}: draining (send it again to exit at once)");
                for m in &mbs {
                    m.send(CoreMsg::Shutdown);
                }
            } else {
                eprintln!("ws-server: second signal: exiting now");
                std::process::exit(1);
            }
        }
    });
    // The main thread returns to join the cores; the signal thread lives on for a 2nd signal.
}

#[allow(clippy::too_many_arguments)]
fn run_core(
    idx: usize,
    core_id: usize,
    listener: [RawFd; 2],
    settings: Settings,
    stats: AllStats,
    global_open: Arc<AtomicU64>,
    ib: Inbox,
    waker: Waker,
    mailboxes: Vec<Mailbox>,
    ready: crossbeam_channel::Sender<Result<(), String>>,
) -> CoreSummary {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core_id }) {
        let _ = ready.send(Err(format!("cannot pin a thread to core {core_id}")));
        return CoreSummary::default();
    }
    let ex = match LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("ws-core-{core_id}"))
        .io_memory(GLOMMIO_IO_MEMORY)
        .make()
    {
        Ok(ex) => ex,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot start a glommio executor on core {core_id}: {e}"
            )));
            return CoreSummary::default();
        }
    };
    let ring = match Ring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot create an io_uring on core {core_id}: {e}"
            )));
            return CoreSummary::default();
        }
    };
    let bufs = match crate::ring::BufRing::new(RECV_BUFFERS, RECV_BUFFER_SIZE, 0)
        .and_then(|b| ring.register_buffers(&b).map(|()| b))
    {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot register receive buffers with io_uring on core {core_id} (needs Linux 5.19+): {e}"
            )));
            return CoreSummary::default();
        }
    };
    let send_ring = match crate::ring::SendRing::new(SEND_RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot create the send io_uring on core {core_id}: {e}"
            )));
            return CoreSummary::default();
        }
    };
    let mut settings = settings;
    settings.tls = settings.tls.map(|c| Arc::new((*c).clone()));
    let mut core = Core::new(
        idx,
        Rc::new(settings),
        ring,
        listener,
        stats,
        global_open,
        ib,
        waker,
        mailboxes,
        bufs,
        send_ring,
    );
    ex.run(async move {
        core.arm_accept();
        core.arm_wake();
        let _ = ready.send(Ok(()));
        drive(&mut core);
        CoreSummary {
            drained_from: core.drained_from,
            forced: core.forced,
            accepted: core.stats().accepted.get(),
        }
    })
}

/// The core's loop: handle what is pending, run the once-a-second sweep and the accept
/// back-off when due, then sleep in the core's own ring until a completion (a socket, or
/// another core's eventfd write) or the next deadline.
///
/// The core sleeps in its ring rather than parking through glommio: waking glommio for
/// every message (its eventfd read, ring linking and timer) cost more CPU than the message
/// itself at low rates (profile in docs/BENCHMARKS.md). So this is the executor's only
/// task, and it owns the timers a glommio `Timer` would otherwise provide.
fn drive(core: &mut Core) {
    let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
    let mut accept_at: Option<Instant> = None;
    loop {
        core.on_wake();
        if core.done {
            return;
        }
        if std::mem::take(&mut core.accept_backoff) {
            accept_at = Some(Instant::now() + ACCEPT_BACKOFF);
        }
        let now = Instant::now();
        if now >= next_sweep {
            core.sweep();
            next_sweep = (next_sweep + SWEEP_INTERVAL).max(now);
            continue;
        }
        if accept_at.is_some_and(|t| now >= t) {
            accept_at = None;
            core.arm_accept();
            continue;
        }
        let deadline = accept_at.map_or(next_sweep, |t| t.min(next_sweep));
        core.ring.wait(deadline - now);
    }
}
