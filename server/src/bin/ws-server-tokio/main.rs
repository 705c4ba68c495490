//! ws-server-tokio: the tokio baseline that ws-ceiling runs compare ws-server against.
//!
//! The same command line (`ws_server::cli::Config`), the same handshake code
//! (`ws_common::handshake`), the same routes, limits, close codes, `/metrics` names and
//! shutdown summary as ws-server, written the way a good tokio engineer would write a
//! WebSocket server: a multi-threaded work-stealing runtime, one accept loop, one task per
//! connection, tokio-tungstenite for the protocol.
//!
//! Tuning, each chosen for a server that holds many mostly-idle connections:
//! - **Worker threads**: one per `--cores` entry, each pinned to its core in
//!   `on_thread_start` (the same CPUs ws-server would use), work stealing left on.
//! - **tungstenite buffers**: the read buffer is allocated eagerly per connection; its
//!   default, 128 KiB, would make the baseline a strawman at a million connections. 4 KiB
//!   ([`READ_BUFFER`]) is tungstenite's own advice for many connections, and a larger frame
//!   still gets a buffer of its size. Replies gather in a write buffer of [`WRITE_BUFFER`]
//!   and are flushed once per wake, so one `write()` carries the replies to a batch of
//!   reads. `max_message_size` and `max_frame_size` are `--max-message-size` (1009 beyond).
//! - **Outbound queue**: bounded in bytes (`--send-queue-bytes`), with `--slow-consumer`
//!   deciding between close 1008 and dropping; a writer that cannot write for
//!   [`conn::WRITE_TIMEOUT`] closes the same way.
//! - **Sockets**: `TCP_NODELAY` on every accepted socket; the listen backlog is
//!   `net.core.somaxconn` unless `--backlog`; the open-files limit is raised to its hard
//!   limit at start-up.
//! - **Shared state**: counters are per worker thread (no shared cache line written per
//!   message); the shutdown signal costs one atomic load per wake (see `ctx::Stopped`).
//!
//! Modules: [`ctx`] shared state, [`http`] request and routing, [`conn`] the WebSocket
//! loop, [`hub`] rooms/users/mailboxes, [`metrics`] the page, [`stream`] the counted socket.

mod budget;
mod conn;
mod ctx;
mod http;
mod hub;
mod io;
mod metrics;
mod stream;
mod utf8_guard;

use std::io::Write as _;
use std::os::fd::FromRawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use ws_common::route::Side;
use ws_server::cli::{Config, SlowConsumer};

use crate::ctx::{Ctx, Settings, Stopped};

/// Name used in messages.
const NAME: &str = "ws-server-tokio";
/// Back-off after an accept error (EMFILE...), so a full descriptor table cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// tungstenite's read buffer per connection (see the module doc).
pub const READ_BUFFER: usize = 4 * 1024;
/// tungstenite's write buffer target per connection (see the module doc).
pub const WRITE_BUFFER: usize = 8 * 1024;

const LONG_ABOUT: &str = "\
tokio baseline WebSocket server: what ws-ceiling compares ws-server against.

A multi-threaded tokio runtime with one worker thread per --cores entry (each pinned to
its core), one accept loop, one task per connection, tokio-tungstenite for the protocol.
Same flags, routes, limits, close codes and /metrics as ws-server. Routes: `GET /ws`
(echo), `GET /broadcast?room=NAME`, `POST /push/ID`, `POST /broadcast/NAME`,
`GET /metrics`, `GET /healthz`.

Examples:
  ws-server-tokio                                  # 127.0.0.1:9001, every core
  ws-server-tokio --listen 0.0.0.0:9001 --cores 0-3 --max-conns 1000000";

fn main() {
    std::process::exit(run());
}

/// The command line: ws-server's `Config`, under this binary's name.
fn parse_cli() -> Config {
    let m = Config::command()
        .name(NAME)
        .bin_name(NAME)
        .about("tokio baseline WebSocket server: what ws-ceiling compares ws-server against.")
        .long_about(LONG_ABOUT)
        .get_matches();
    Config::from_arg_matches(&m).unwrap_or_else(|e| e.exit())
}

fn settings(cfg: &Config, workers: usize) -> Settings {
    // Clamped as ws-server does (u32 seconds), so `now + timeout` cannot overflow.
    let dur = |s: u64| Duration::from_secs(s.min(u32::MAX as u64));
    let secs = |s: u64| (s > 0).then(|| dur(s));
    let max = cfg.max_message_size;
    let send_queue_bytes = cfg.send_queue_bound();
    let ws = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // A safety net only: we hand tungstenite a message only when its Sink is ready
        // (previous buffer flushed), so its buffer stays near WRITE_BUFFER + one frame.
        .max_write_buffer_size(WRITE_BUFFER + send_queue_bytes)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    Settings {
        max_conns: cfg.max_conns.unwrap_or(u64::MAX),
        ping_interval: secs(cfg.ping_interval),
        idle_timeout: secs(cfg.idle_timeout),
        handshake_timeout: dur(cfg.handshake_timeout.max(1)),
        drain_timeout: dur(cfg.drain_timeout),
        policy: cfg.policy(),
        max_pending: cfg.max_pending as u64,
        message_timeout: secs(cfg.message_timeout),
        memory_budget: (cfg.memory_budget.min(usize::MAX as u64) as usize).saturating_mul(workers),
        send_queue_bytes,
        slow_consumer: cfg.slow_consumer,
        ws,
    }
}

/// What the shutdown summary reports.
struct Summary {
    drained_from: usize,
    forced: usize,
}

fn run() -> i32 {
    let cfg = parse_cli();
    if let Err(e) = cfg.validate() {
        eprintln!("{NAME}: {e}");
        return 2;
    }
    let cores = match ws_common::cores::resolve_cores(cfg.cores.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{NAME}: --cores: {e}");
            return 2;
        }
    };
    let (soft, hard) = ws_common::metrics::raise_nofile_to_hard();
    let backlog = cfg.backlog.unwrap_or_else(ws_server::listener::somaxconn);
    let send_buffer = cfg.socket_send_buffer as usize;
    // One listening socket, with ws-server's check that no stale server holds the port.
    let (std_listener, bound) = match bind_one(cfg.listen, backlog, send_buffer) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return 2;
        }
    };
    let admin = match cfg.admin_addr() {
        None => None,
        Some(a) => match bind_one(a, backlog, 0) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("{NAME}: --admin-listen: {e}");
                return 2;
            }
        },
    };

    let mut ctx = Ctx::new(settings(&cfg, cores.len()), &cores);
    match ws_server::tls_config::from_cli(&cfg) {
        Ok(tls) => ctx.tls = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c))),
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return 2;
        }
    }
    let ctx: &'static Ctx = Box::leak(Box::new(ctx));

    // Worker threads: each takes the next stats slot and pins itself to its core. The
    // workers are the first threads the runtime starts (at build time); any later thread
    // (the blocking pool, unused here) gets the extra slot.
    let n = cores.len();
    let started = Arc::new(AtomicUsize::new(0));
    let pin_failed = Arc::new(AtomicBool::new(false));
    let rt = {
        let started = started.clone();
        let pin_failed = pin_failed.clone();
        let cores = cores.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .thread_name("ws-tokio-worker")
            .enable_all()
            .on_thread_start(move || {
                let i = started.fetch_add(1, Ordering::SeqCst);
                if i < n {
                    ctx::set_slot(i);
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cores[i] }) {
                        pin_failed.store(true, Ordering::SeqCst);
                    }
                } else {
                    ctx::set_slot(n);
                }
            })
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{NAME}: cannot start the tokio runtime: {e}");
            return 2;
        }
    };
    for _ in 0..5000 {
        if started.load(Ordering::SeqCst) >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if pin_failed.load(Ordering::SeqCst) {
        eprintln!("{NAME}: cannot pin a worker thread to its core (cores {cores:?})");
        return 2;
    }

    if ctx.tls.is_some() {
        eprintln!("{NAME}: wss:// on the public listener (tokio-rustls); admin listener plain");
    }
    let summary = rt.block_on(async {
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{NAME}: cannot register the listener: {e}");
                return Err(2);
            }
        };
        // Signals first, so a SIGTERM right after "listening" is never lost.
        let (mut sigint, mut sigterm) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("{NAME}: cannot install signal handlers: {e}");
                return Err(2);
            }
        };
        tokio::spawn(accept_loop(ctx, listener, Side::Public));
        let admin_bound = match admin {
            None => None,
            Some((l, at)) => match TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::spawn(accept_loop(ctx, l, Side::Admin));
                    Some(at)
                }
                Err(e) => {
                    eprintln!("{NAME}: cannot register the admin listener: {e}");
                    return Err(2);
                }
            },
        };
        tokio::spawn(budget_loop(ctx));
        // From now on descriptors come and go with connections, which the gauges count:
        // /metrics adds them to this instead of listing /proc/self/fd per scrape.
        ws_server::stats::BASE_FDS.store(
            ws_common::metrics::open_fds(),
            std::sync::atomic::Ordering::Relaxed,
        );

        let s = &ctx.settings;
        eprintln!(
            "{NAME}: {n} worker thread(s) pinned to cores {cores:?}; open-files limit {soft} \
             (hard {hard}): at most ~{} connections per process",
            soft.saturating_sub(16)
        );
        eprintln!(
            "{NAME}: per connection: tungstenite read buffer {READ_BUFFER} B, write buffer \
             {WRITE_BUFFER} B; send queue {} B, slow consumers: {}",
            s.send_queue_bytes,
            match s.slow_consumer {
                SlowConsumer::Close => "close 1008",
                SlowConsumer::Drop => "drop",
            }
        );
        for w in s.policy.warnings() {
            eprintln!("{NAME}: {w}");
        }
        println!("listening on {bound}");
        match admin_bound {
            Some(a) => println!("admin on {a}"),
            None => eprintln!("{NAME}: --admin-listen off: no push, broadcast or metrics routes"),
        }
        let _ = std::io::stdout().flush();

        let sig = tokio::select! {
            _ = sigint.recv() => libc::SIGINT,
            _ = sigterm.recv() => libc::SIGTERM,
        };
        eprintln!("{NAME}: signal {sig}: draining (send it again to exit at once)");
        ctx.begin_stop();
        let deadline = Instant::now() + s.drain_timeout;
        loop {
            tokio::select! {
                _ = sigint.recv() => second_signal(),
                _ = sigterm.recv() => second_signal(),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if ctx.live.load(Ordering::Acquire) == 0 || Instant::now() >= deadline {
                break;
            }
        }
        Ok(Summary {
            drained_from: ctx.drain_sent.load(Ordering::Acquire),
            forced: ctx.drain_waiting.load(Ordering::Acquire),
        })
    });
    let summary = match summary {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Whatever is left (connections cut at the deadline, lingerers) is dropped with the
    // runtime: their sockets close.
    rt.shutdown_background();
    let accepted: u64 = ctx.stats.iter().map(|s| s.accepted.get()).sum();
    println!(
        "{NAME}: stopped; {} connection(s) open at shutdown got Close 1001, {} cut at the drain deadline; {} accepted in all",
        summary.drained_from, summary.forced, accepted
    );
    let _ = std::io::stdout().flush();
    0
}

fn second_signal() {
    eprintln!("{NAME}: second signal: exiting now");
    let _ = std::io::stdout().flush();
    std::process::exit(1);
}

/// Binds one listening socket (ws-server's code: the stale-server check, SO_SNDBUF that
/// accepted sockets inherit).
fn bind_one(
    addr: std::net::SocketAddr,
    backlog: u32,
    send_buffer: usize,
) -> Result<(std::net::TcpListener, std::net::SocketAddr), String> {
    let (fds, bound) = ws_server::listener::bind_all(addr, 1, backlog, send_buffer)?;
    let Some(&fd) = fds.first() else {
        return Err("no listening socket".into());
    };
    // SAFETY: bind_all returned this fd to us (non-blocking, listening); nothing else owns it.
    Ok((unsafe { std::net::TcpListener::from_raw_fd(fd) }, bound))
}

/// `--memory-budget`, checked once a second as ws-server's tick does.
async fn budget_loop(ctx: &'static Ctx) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !ctx.stopping() {
        every.tick().await;
        ctx.holders.enforce(ctx.settings.memory_budget);
    }
}

/// A wss connection: the TLS handshake (within --handshake-timeout, counted like
/// ws-server's), then the same HTTP and WebSocket path as plain connections.
async fn serve_tls(ctx: &'static Ctx, tls: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream) {
    let deadline = Instant::now() + ctx.settings.handshake_timeout;
    match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let resumed =
                stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            if resumed {
                ctx.stats().tls_resumed.inc();
            } else {
                ctx.stats().tls_full.inc();
            }
            http::serve(ctx, io::Io::Tls(Box::new(stream)), Side::Public).await
        }
        Ok(Err(e)) => {
            let class = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => ws_server::tls_config::classify(tls),
                None if e.kind() == std::io::ErrorKind::UnexpectedEof => "eof",
                None => "other",
            };
            ctx.stats().tls_failure(class);
        }
        Err(_) => {
            ctx.stats().tls_failure("timeout");
            ctx.stats().handshake_timeout_closes.inc();
        }
    }
}

/// Accepts until shutdown; one task per connection.
async fn accept_loop(ctx: &'static Ctx, listener: TcpListener, side: Side) {
    let notified = pin!(ctx.stop.notified());
    let mut stopped = Stopped::new(ctx, notified);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                ctx.stats().accepted.inc();
                let _ = stream.set_nodelay(true);
                match (&ctx.tls, side) {
                    (Some(tls), Side::Public) => {
                        ctx.spawn_conn(serve_tls(ctx, tls.clone(), stream), 0)
                    }
                    _ => ctx.spawn_conn(http::serve(ctx, io::Io::Plain(stream), side), 0),
                }
            }
            Err(e) => {
                ctx.stats().accept_error(e.raw_os_error().unwrap_or(0));
                // EMFILE & co: the listener stays readable, so retrying at once would spin.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    // The listener closes here: new connections are refused from now on.
}
