//! The state every task shares: settings, counters, the broadcast/push hub, shutdown.
//!
//! There is one [`Ctx`], leaked at start-up, so each task holds a `&'static Ctx`: no
//! reference count is touched per connection.
//!
//! Counters follow ws-server's discipline: [`Counter`](ws_server::stats::Counter) is a
//! single-writer relaxed load + store, so each tokio worker thread gets its own
//! [`CoreStats`] slot (assigned in `on_thread_start`, kept in a thread-local) and only ever
//! writes that one. A task that migrates between workers simply counts on whichever worker
//! runs it at the moment. Any other thread writes the one extra slot at the end.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use ws_server::cli::SlowConsumer;
use ws_server::stats::CoreStats;

use crate::hub::Hub;
use crate::metrics::{Charge, Gauges};

/// The command line, as the tasks use it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_conns: u64,
    pub ping_interval: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
    /// Who may do what on which listener (shared with ws-server).
    pub policy: ws_common::route::Policy,
    /// `--max-pending`: connections per worker slot still in their HTTP phase.
    pub max_pending: u64,
    /// `--message-timeout`: a started frame or fragmented message must end within it.
    pub message_timeout: Option<Duration>,
    /// `--memory-budget` × workers: partial messages and queued bytes of all connections.
    pub memory_budget: usize,
    /// Bytes a connection may have queued unsent (messages not yet handed to tungstenite):
    /// `--send-queue-bytes`, never below one maximal message.
    pub send_queue_bytes: usize,
    pub slow_consumer: SlowConsumer,
    /// tungstenite's per-connection configuration (buffers and limits).
    pub ws: WebSocketConfig,
}

thread_local! {
    /// This thread's stats slot; `usize::MAX` (clamped to the extra slot) until assigned.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Assigns the calling thread its stats slot (from `on_thread_start`).
pub fn set_slot(i: usize) {
    SLOT.with(|s| s.set(i));
}

pub struct Ctx {
    pub settings: Settings,
    /// One slot per worker thread, plus one for any other thread.
    pub stats: Box<[CoreStats]>,
    /// Gauges (open connections...), same slots; see [`Gauges`] for why they are atomics.
    pub gauges: Box<[Gauges]>,
    /// Metrics label of each slot: the worker's core, then one for the extra slot.
    pub labels: Vec<usize>,
    pub hub: Hub,
    /// Connections holding enough memory to matter for `--memory-budget`.
    pub holders: crate::budget::Holders,
    /// WebSocket connections open, all threads together (the `--max-conns` budget).
    pub ws_open: AtomicU64,
    /// Connection tasks alive (handshaking, open or lingering): shutdown waits for 0.
    pub live: AtomicUsize,
    /// Set once SIGINT/SIGTERM arrived; `stop` then wakes every task.
    pub stopping: AtomicBool,
    pub stop: Notify,
    /// Connections sent Close 1001 at shutdown, and those of them still waiting for the
    /// client's Close.
    pub drain_sent: AtomicUsize,
    pub drain_waiting: AtomicUsize,
    /// wss:// on the public listener (`--tls-cert`/`--tls-key`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Ctx {
    pub fn new(settings: Settings, cores: &[usize]) -> Ctx {
        let slots = cores.len() + 1;
        let mut labels = cores.to_vec();
        // The extra slot needs a label no worker has.
        labels.push(cores.iter().copied().max().map_or(0, |m| m + 1));
        Ctx {
            settings,
            stats: (0..slots).map(|_| CoreStats::default()).collect(),
            gauges: (0..slots).map(|_| Gauges::default()).collect(),
            labels,
            hub: Hub::default(),
            holders: Default::default(),
            ws_open: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            drain_sent: AtomicUsize::new(0),
            drain_waiting: AtomicUsize::new(0),
            tls: None,
        }
    }

    /// The calling thread's slot.
    #[inline]
    pub fn slot(&self) -> usize {
        SLOT.with(|s| s.get()).min(self.stats.len() - 1)
    }

    /// The calling thread's counters.
    #[inline]
    pub fn stats(&self) -> &CoreStats {
        &self.stats[self.slot()]
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// SIGINT/SIGTERM: every task's [`Stopped`] fires.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Spawns a connection task: counted alive (for the shutdown wait) until it ends, and
    /// its own memory (the future's size, plus `extra_bytes` it is known to hold) charged
    /// to `ws_connection_state_bytes` of the calling worker.
    ///
    /// The guards ride in a hand-written wrapper rather than an `async move` block: an
    /// async block keeps its captured future *and* the awaited copy of it, doubling the
    /// task's size.
    pub fn spawn_conn<F>(&'static self, fut: F, extra_bytes: usize)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let bytes = (std::mem::size_of_val(&fut) + extra_bytes) as u64;
        self.live.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(Tracked {
            fut,
            _live: Live(self),
            _mem: Charge::new(&self.gauges[self.slot()].state_bytes, bytes),
        });
    }

    /// Counts a connection closed for being a slow consumer (1008).
    pub fn count_slow_close(&self) {
        let s = self.stats();
        s.protocol_close(ws_common::frame::close::POLICY);
        s.slow_consumer_closes.inc();
    }
}

pin_project_lite::pin_project! {
    /// A connection task's future with its bookkeeping.
    struct Tracked<F> {
        #[pin]
        fut: F,
        _live: Live,
        _mem: Charge,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().fut.poll(cx)
    }
}

/// Counts a connection task as alive until it ends.
struct Live(&'static Ctx);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A future that completes once shutdown has begun.
///
/// Built on a `Notified` created when the task starts (so a `notify_waiters` after that is
/// never missed), but that `Notified` is polled only on the first poll and after the flag
/// flips: polling a pending `Notified` takes the `Notify`'s mutex, which every connection
/// shares, and a connection's select loop polls this on every wake. The hot path is one
/// atomic load. (A task's waker stays valid for the task's whole life, so registering it
/// once is enough.)
pub struct Stopped<'a, 'b> {
    flag: &'a AtomicBool,
    notified: Pin<&'b mut Notified<'a>>,
    registered: bool,
}

impl<'a, 'b> Stopped<'a, 'b> {
    pub fn new(ctx: &'a Ctx, notified: Pin<&'b mut Notified<'a>>) -> Self {
        Stopped {
            flag: &ctx.stopping,
            notified,
            registered: false,
        }
    }
}

impl Future for Stopped<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !self.registered {
            self.registered = true;
            return self.notified.as_mut().poll(cx);
        }
        Poll::Pending
    }
}
