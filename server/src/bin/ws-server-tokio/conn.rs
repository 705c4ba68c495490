//! An open WebSocket connection: one task, one `WebSocketStream`, reading and writing
//! without ever waiting on each other.
//!
//! The task's loop `select!`s over three things: shutdown, one timer (the next of: ping
//! due, idle deadline, write-stall deadline) and [`Conn::poll_io`], a hand-written poll
//! function that drives both directions of the stream:
//!
//! - **reads**: up to [`READ_BATCH`] messages per wake; an echo reply or a broadcast is
//!   queued, never written inline, so a client that does not read cannot stop us reading;
//! - **writes**: the connection's queue (echo replies, pings, and what other tasks put in
//!   its [`Mailbox`]) is handed to tungstenite while its `Sink` is ready, then flushed once
//!   per wake, so the replies to a batch of reads leave in one `write()`.
//!
//! The queue is bounded in bytes by `--send-queue-bytes` (see `hub.rs`); when it is full,
//! `--slow-consumer` decides (close 1008 or drop). A write that cannot make progress for
//! [`WRITE_TIMEOUT`] closes the connection the same way, so a stuck peer holds nothing for
//! long. Doing both directions in one poll function (rather than `split()` into two halves,
//! or two tasks) costs no `BiLock`, no second task and no channel for plain echo.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use ws_common::frame::close;

use ws_server::cli::SlowConsumer;

use crate::budget::{Holder, THRESHOLD};
use crate::ctx::{Ctx, Stopped};
use crate::http::{Admission, LINGER};
use crate::hub::{frame_cost, ConnId, Mailbox, Queued};
use crate::metrics::Charge;
use crate::stream::Counted;

/// Messages handled per wake before the task yields to others.
const READ_BATCH: usize = 32;
/// How long the writer may stay unable to write before the peer counts as stuck.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Capacity of an empty queue kept after a burst (beyond it, the queue is freed).
const QUEUE_KEEP: usize = 32;
/// "Never" for the timer (it re-arms itself when it fires).
const FAR: Duration = Duration::from_secs(24 * 3600);

/// What the connection does with its messages.
#[derive(Debug, Clone)]
pub enum Kind {
    Echo,
    Broadcast { room: String, echo: bool },
}

/// The route and identity a connection upgraded with.
#[derive(Debug, Clone)]
pub struct Route {
    pub kind: Kind,
    pub user: Option<String>,
}

impl Route {
    pub fn echo(user: Option<String>) -> Route {
        Route {
            kind: Kind::Echo,
            user: user.filter(|u| !u.is_empty()),
        }
    }

    pub fn broadcast(room: String, echo: bool, user: Option<String>) -> Route {
        Route {
            kind: Kind::Broadcast { room, echo },
            user: user.filter(|u| !u.is_empty()),
        }
    }

    /// Can other tasks send to this connection?
    fn reachable(&self) -> bool {
        matches!(self.kind, Kind::Broadcast { .. }) || self.user.is_some()
    }
}

/// Why the main loop ended.
#[derive(Debug)]
enum End {
    /// EOF, reset, or tungstenite says closed: nothing more to send.
    Gone,
    /// The client's Close (tungstenite has queued the reply).
    PeerClose(Option<CloseFrame>),
    /// We close with this code (a protocol violation or the idle timeout; already counted).
    Close(u16, &'static str),
    /// Slow consumer (already counted): close with 1008.
    Slow,
    /// SIGINT/SIGTERM: Close 1001 and wait for the client's Close.
    Shutdown,
}

enum Ev {
    Stop,
    Timer,
    /// A write stall began: the timer may need to fire earlier.
    Rearm,
    End(End),
}

/// Removes the connection from its room and user on every way out.
struct Membership {
    ctx: &'static Ctx,
    id: ConnId,
    room: Option<String>,
    user: Option<String>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(r) = &self.room {
            self.ctx.hub.rooms.leave(r, self.id);
        }
        if let Some(u) = &self.user {
            self.ctx.hub.users.leave(u, self.id);
        }
    }
}

struct Conn {
    ctx: &'static Ctx,
    ws: WebSocketStream<Counted>,
    id: ConnId,
    kind: Kind,
    /// Present when other tasks can send to us; then it also holds the byte budget.
    mailbox: Option<Arc<Mailbox>>,
    /// Messages waiting for tungstenite, with the bytes each was charged.
    queue: VecDeque<Queued>,
    /// The byte budget in use when there is no mailbox.
    local_queued: usize,
    /// Something was handed to tungstenite since the last completed flush.
    dirty: bool,
    /// Since when the writer has been unable to write.
    stall_since: Option<Instant>,
    last_ping: Instant,
    /// Registered with `--memory-budget`'s pool while holding at least `THRESHOLD` bytes.
    holder: Option<Arc<Holder>>,
    /// Room and user registrations, dropped (unregistered) when the loop ends.
    membership: Option<Membership>,
    _admission: Admission,
    /// This connection in the `ws_connections_open` gauge.
    _open: Charge,
}

/// Sets up an upgraded connection; the future runs it to its end.
///
/// A plain function returning the loop's future (rather than an `async fn`) so the
/// connection's state exists once in the task: an `async fn` keeps its arguments for its
/// whole life next to the locals they were moved into.
pub fn run(
    ctx: &'static Ctx,
    ws: WebSocketStream<Counted>,
    route: Route,
    admission: Admission,
    open: Charge,
) -> impl Future<Output = ()> + Send + 'static {
    let id = ctx.hub.next_id();
    let mailbox = route.reachable().then(|| Arc::new(Mailbox::default()));
    let mut membership = Membership {
        ctx,
        id,
        room: None,
        user: None,
    };
    if let Some(mb) = &mailbox {
        if let Kind::Broadcast { room, .. } = &route.kind {
            ctx.hub.rooms.join(room, id, mb.clone());
            membership.room = Some(room.clone());
        }
        if let Some(u) = &route.user {
            ctx.hub.users.join(u, id, mb.clone());
            membership.user = Some(u.clone());
        }
    }
    let c = Conn {
        ctx,
        ws,
        id,
        kind: route.kind,
        mailbox,
        queue: VecDeque::new(),
        local_queued: 0,
        dirty: false,
        stall_since: None,
        last_ping: Instant::now(),
        holder: None,
        membership: Some(membership),
        _admission: admission,
        _open: open,
    };
    c.serve()
}

impl Conn {
    async fn serve(mut self) {
        let ctx = self.ctx;
        let notified = pin!(ctx.stop.notified());
        let mut stopped = Stopped::new(ctx, notified);
        let mut timer = pin!(sleep_until(self.next_deadline()));
        let end = loop {
            let ev = tokio::select! {
                biased;
                _ = &mut stopped => Ev::Stop,
                _ = timer.as_mut() => Ev::Timer,
                ev = poll_fn(|cx| self.poll_io(cx)) => ev,
            };
            match ev {
                Ev::Stop => break End::Shutdown,
                Ev::Timer => {
                    if let Some(end) = self.on_timer() {
                        break end;
                    }
                    timer.as_mut().reset(self.next_deadline());
                }
                Ev::Rearm => {
                    let d = self.next_deadline();
                    if d < timer.deadline() {
                        timer.as_mut().reset(d);
                    }
                }
                Ev::End(end) => break end,
            }
        };
        // No more deliveries: leave the room and user before closing.
        self.membership = None;
        if self.holder.take().is_some() {
            ctx.holders.unregister(self.id);
        }
        // The closing paths (close handshake, linger, drain) live in their own allocation,
        // made only when a connection ends, so they do not grow every connection's task.
        Box::pin(self.finish(end)).await;
    }

    /// Drives reads and writes; Ready only when the select loop has something to do.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Ev> {
        if self.holder.as_ref().is_some_and(|h| h.killed.load(Relaxed)) {
            self.ctx.stats().memory_budget_closes.inc();
            return Poll::Ready(Ev::End(End::Close(close::POLICY, "memory budget")));
        }
        let mut handled = 0;
        loop {
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    if let Some(end) = self.on_message(msg) {
                        return Poll::Ready(Ev::End(end));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Ev::End(self.read_error(e))),
                Poll::Ready(None) => return Poll::Ready(Ev::End(End::Gone)),
                Poll::Pending => break,
            }
            // Hand replies over as they are made (without flushing): they then precede
            // whatever tungstenite answers by itself later (a pong, a close reply).
            if let Err(end) = self.pump(cx, false) {
                return Poll::Ready(Ev::End(end));
            }
            handled += 1;
            if handled == READ_BATCH {
                cx.waker().wake_by_ref();
                break;
            }
        }
        let stalled = match self.pump(cx, true) {
            Err(end) => return Poll::Ready(Ev::End(end)),
            Ok(stalled) => stalled,
        };
        self.account(cx);
        let started = std::mem::take(&mut self.ws.get_mut().rearm);
        if stalled || started {
            Poll::Ready(Ev::Rearm)
        } else {
            Poll::Pending
        }
    }

    /// What this connection holds for `--memory-budget`: its unfinished message and its
    /// queued output. Joins or leaves the pool when it crosses the threshold.
    fn account(&mut self, cx: &Context<'_>) {
        let queued = match &self.mailbox {
            Some(mb) => mb.queued(),
            None => self.local_queued,
        };
        let held = self.ws.get_ref().partial_bytes() + queued;
        match &self.holder {
            Some(_) if held < THRESHOLD / 2 => {
                self.holder = None;
                self.ctx.holders.unregister(self.id);
            }
            Some(h) => h.bytes.store(held, Relaxed),
            None if held >= THRESHOLD => {
                let h = Arc::new(Holder::default());
                h.bytes.store(held, Relaxed);
                h.waker.register(cx.waker());
                self.ctx.holders.register(self.id, h.clone());
                self.holder = Some(h);
            }
            None => {}
        }
    }

    /// Moves the mailbox into the queue, hands the queue to tungstenite while it takes it,
    /// and (if `flush`) flushes. `Ok(true)`: a write stall just began.
    fn pump(&mut self, cx: &mut Context<'_>, flush: bool) -> Result<bool, End> {
        if let Some(mb) = &self.mailbox {
            if mb.take_into(cx.waker(), &mut self.queue).is_err() {
                return Err(End::Slow); // counted by whoever found the queue full
            }
        }
        while !self.queue.is_empty() {
            match self.ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(self.write_error(e)),
                Poll::Pending => return Ok(self.stalled()),
            }
            let Some((msg, cost)) = self.queue.pop_front() else {
                break;
            };
            self.release(cost);
            if msg.is_text() || msg.is_binary() {
                let s = self.ctx.stats();
                s.messages_out.inc();
                s.bytes_out.add(frame_cost(&msg) as u64);
            }
            if let Err(e) = self.ws.start_send_unpin(msg) {
                return Err(self.write_error(e));
            }
            self.dirty = true;
        }
        if self.queue.is_empty() && self.queue.capacity() > QUEUE_KEEP {
            // Empty again after a burst: give the memory back.
            self.queue = VecDeque::new();
        }
        if flush && self.dirty {
            match self.ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(e)) => return Err(self.write_error(e)),
                Poll::Pending => return Ok(self.stalled()),
            }
        }
        self.stall_since = None;
        Ok(false)
    }

    fn stalled(&mut self) -> bool {
        if self.stall_since.is_some() {
            return false;
        }
        self.stall_since = Some(Instant::now());
        true
    }

    fn on_message(&mut self, msg: Message) -> Option<End> {
        let s = self.ctx.stats();
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                s.messages_in.inc();
                match &self.kind {
                    Kind::Echo => return self.enqueue(msg),
                    Kind::Broadcast { room, echo } => {
                        // Our own copy, if any, comes back through our mailbox like
                        // everyone else's, so it keeps its place in the room's order.
                        let except = (!echo).then_some(self.id);
                        self.ctx.hub.broadcast(self.ctx, room, &msg, except);
                    }
                }
            }
            // tungstenite has queued the pong; make sure this wake flushes it.
            Message::Ping(_) => self.dirty = true,
            Message::Pong(_) => s.pongs_received.inc(),
            Message::Close(cf) => return Some(End::PeerClose(cf)),
            Message::Frame(_) => {}
        }
        None
    }

    /// Queues an echo reply under the byte budget.
    fn enqueue(&mut self, msg: Message) -> Option<End> {
        let cost = frame_cost(&msg);
        let limit = self.ctx.settings.send_queue_bytes;
        let fits = match &self.mailbox {
            Some(mb) => mb.try_reserve(cost, limit),
            None => {
                let fits = self.local_queued + cost <= limit;
                if fits {
                    self.local_queued += cost;
                }
                fits
            }
        };
        if fits {
            self.queue.push_back((msg, cost));
            return None;
        }
        match self.ctx.settings.slow_consumer {
            SlowConsumer::Drop => {
                self.ctx.stats().slow_consumer_drops.inc();
                None
            }
            SlowConsumer::Close => {
                self.count_slow();
                Some(End::Slow)
            }
        }
    }

    fn release(&mut self, cost: usize) {
        match &self.mailbox {
            Some(mb) => mb.release(cost),
            None => self.local_queued -= cost,
        }
    }

    /// Counts this connection as a slow-consumer close, once.
    fn count_slow(&self) {
        match &self.mailbox {
            Some(mb) => {
                mb.kill(self.ctx);
            }
            None => self.ctx.count_slow_close(),
        }
    }

    fn read_error(&self, e: WsError) -> End {
        let s = self.ctx.stats();
        let violation = |code: u16, reason: &'static str| {
            s.protocol_close(code);
            End::Close(code, reason)
        };
        match e {
            WsError::ConnectionClosed | WsError::AlreadyClosed => End::Gone,
            // Counted's UTF-8 guard: a text frame failed before it was complete.
            WsError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                violation(close::INVALID_PAYLOAD, "invalid utf-8")
            }
            WsError::Io(_) | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                s.resets.inc();
                End::Gone
            }
            WsError::Utf8(_) => violation(close::INVALID_PAYLOAD, "invalid utf-8"),
            WsError::Capacity(_) => violation(close::TOO_BIG, "message too big"),
            _ => violation(close::PROTOCOL, "protocol error"),
        }
    }

    fn write_error(&self, e: WsError) -> End {
        match e {
            WsError::WriteBufferFull(_) => {
                self.count_slow();
                End::Slow
            }
            WsError::Io(_) => {
                self.ctx.stats().resets.inc();
                End::Gone
            }
            _ => End::Gone,
        }
    }

    /// The timer fired: idle timeout, stuck writer, heartbeat.
    fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        let set = &self.ctx.settings;
        let s = self.ctx.stats();
        if let (Some(limit), Some(since)) = (set.message_timeout, self.ws.get_ref().partial_since) {
            if now >= since + limit {
                // A trickle of bytes keeps the idle timer fresh; this one it does not.
                s.message_timeout_closes.inc();
                return Some(End::Close(close::POLICY, "message timeout"));
            }
        }
        if let Some(idle) = set.idle_timeout {
            if now >= self.ws.get_ref().last_rx + idle {
                s.idle_timeout_closes.inc();
                return Some(End::Close(close::GOING_AWAY, "idle timeout"));
            }
        }
        if let Some(since) = self.stall_since {
            if now >= since + WRITE_TIMEOUT {
                self.count_slow();
                return Some(End::Slow);
            }
        }
        if let Some(every) = set.ping_interval {
            if now >= self.last_ping + every {
                self.last_ping = now;
                // Behind what is already queued, like ws-server's; costs no budget.
                self.queue.push_back((Message::Ping(Default::default()), 0));
                s.pings_sent.inc();
            }
        }
        None
    }

    fn next_deadline(&self) -> Instant {
        let set = &self.ctx.settings;
        let mut next = Instant::now() + FAR;
        if let (Some(limit), Some(since)) = (set.message_timeout, self.ws.get_ref().partial_since) {
            next = next.min(since + limit);
        }
        if let Some(idle) = set.idle_timeout {
            next = next.min(self.ws.get_ref().last_rx + idle);
        }
        if let Some(every) = set.ping_interval {
            next = next.min(self.last_ping + every);
        }
        if let Some(since) = self.stall_since {
            next = next.min(since + WRITE_TIMEOUT);
        }
        next
    }

    /// Ends the connection the way `end` says.
    async fn finish(mut self, end: End) {
        // Whatever is still queued will not be sent.
        if let Some(mb) = &self.mailbox {
            mb.close();
        }
        while let Some((_, cost)) = self.queue.pop_front() {
            self.release(cost);
        }
        match end {
            End::Gone => {}
            End::PeerClose(cf) => {
                let s = self.ctx.stats();
                // tungstenite answers a close code nobody may send with 1002.
                let invalid = cf.as_ref().is_some_and(|f| {
                    f.code == CloseCode::Protocol && f.reason.as_str() == "Protocol violation"
                });
                if invalid {
                    s.protocol_close(close::PROTOCOL);
                } else {
                    s.client_closes.inc();
                }
                let deadline = Instant::now() + LINGER;
                // Sends the reply tungstenite queued (the client's own code).
                let _ = timeout_at(deadline, self.ws.flush()).await;
                self.linger(deadline).await;
            }
            End::Close(code, reason) => self.close_with(code, reason).await,
            End::Slow => self.close_with(close::POLICY, "slow consumer").await,
            End::Shutdown => self.drain().await,
        }
    }

    /// Sends Close `code` (at most [`LINGER`] to get it out), then lingers.
    async fn close_with(&mut self, code: u16, reason: &'static str) {
        let deadline = Instant::now() + LINGER;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = timeout_at(deadline, self.ws.send(Message::Close(Some(frame)))).await;
        self.linger(deadline).await;
    }

    /// Half-closes and discards what the client still sends until its EOF or `deadline`,
    /// so it reads our last frame rather than a reset.
    async fn linger(&mut self, deadline: Instant) {
        let tcp = self.ws.get_mut().tcp();
        let _ = timeout_at(deadline, async {
            tcp.shutdown().await?;
            let mut sink = vec![0u8; 512];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    }

    /// Shutdown: Close 1001, then wait for the client's Close (no echo meanwhile, as
    /// ws-server). The process cuts whoever has not answered at the drain deadline.
    async fn drain(&mut self) {
        let ctx = self.ctx;
        ctx.drain_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.drain_waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        let ws = &mut self.ws;
        let queued = match poll_fn(|cx| ws.poll_ready_unpin(cx)).await {
            Ok(()) => ws.start_send_unpin(Message::Close(Some(frame))).is_ok(),
            Err(_) => false,
        };
        if queued {
            let mut flushed = false;
            loop {
                // Flush our Close and read the client's frames at the same time.
                let next = poll_fn(|cx| {
                    if !flushed {
                        if let Poll::Ready(r) = ws.poll_flush_unpin(cx) {
                            flushed = true;
                            if r.is_err() {
                                return Poll::Ready(None);
                            }
                        }
                    }
                    ws.poll_next_unpin(cx)
                })
                .await;
                let s = ctx.stats();
                match next {
                    Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => s.messages_in.inc(),
                    Some(Ok(Message::Pong(_))) => s.pongs_received.inc(),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
        ctx.drain_waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.linger(Instant::now() + LINGER).await;
    }
}
