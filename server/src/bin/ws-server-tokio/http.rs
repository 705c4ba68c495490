//! A connection's life before (and instead of) WebSocket: read the HTTP request, route it,
//! answer plain HTTP or upgrade.
//!
//! Parsing and validation are `ws_common::handshake`, shared with ws-server, so both
//! servers refuse the same requests with the same status. The whole request (head and, for
//! a POST, body) must arrive within `--handshake-timeout` of the accept; the head is read
//! into one bounded heap buffer (8 KiB, the handshake limit), freed before the WebSocket
//! phase. Bytes that followed the head in the same read are handed to tungstenite.
//!
//! Routing and authorisation are `ws_common::route::Policy`, also shared: on the public
//! listener `GET /ws` (echo) and `GET /broadcast?room=NAME[&echo=false]`, with `?user=ID`
//! or a signed token; on the admin listener `POST /push/ID`, `POST /broadcast/NAME`,
//! `GET /metrics`; `GET /healthz` on both. At most `--max-pending` connections per worker
//! are in this phase at once (503 beyond). Every plain HTTP answer closes the connection (`Connection: close`),
//! then lingers briefly so the client reads it rather than a reset.

use std::pin::pin;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use ws_common::auth::unix_now;
use ws_common::handshake::{self, parse_request, Reject, Request};
use ws_common::limits::MAX_HANDSHAKE_BYTES;
use ws_common::route::{Route as Allowed, Side};

use crate::conn::{self, Route};
use crate::ctx::{Ctx, Stopped};
use crate::io::Io;
use crate::metrics::Charge;
use crate::stream::Counted;

/// How long a closing connection gets to take our last bytes and send its EOF (ws-server:
/// two one-second ticks).
pub const LINGER: Duration = Duration::from_secs(2);
/// First size of the request buffer.
const HEAD_BUFFER: usize = 1024;

/// How reading the request ended, when it did not produce one.
enum ReadEnd {
    /// EOF or a read error before a complete head: close without answering.
    Gone {
        error: bool,
    },
    Reject(Reject),
}

/// The root of every connection task.
pub async fn serve(ctx: &'static Ctx, mut stream: Io, side: Side) {
    let deadline = Instant::now() + ctx.settings.handshake_timeout;
    let home = ctx.slot();
    if ctx.gauges[home].pending.load(Relaxed) >= ctx.settings.max_pending {
        // --max-pending: what sockets that never finish their request can hold is bounded.
        ctx.stats().reject(Reject::Busy);
        let resp = Reject::Busy.response();
        let _ = stream.try_write(&resp);
        return;
    }
    let pending = Charge::new(&ctx.gauges[home].pending, 1);
    // The request buffer (the task itself is charged by spawn_conn).
    let mut state = Charge::new(&ctx.gauges[home].state_bytes, HEAD_BUFFER as u64);

    let notified = pin!(ctx.stop.notified());
    let mut stopped = Stopped::new(ctx, notified);
    let mut buf = Vec::new();
    let read = tokio::select! {
        biased;
        _ = &mut stopped => return, // shutdown: unfinished handshakes are just closed
        r = timeout_at(deadline, read_head(&mut stream, &mut buf)) => r,
    };
    state.set(buf.capacity() as u64);
    let req = match read {
        Err(_) => {
            ctx.stats().handshake_timeout_closes.inc();
            return;
        }
        Ok(Err(ReadEnd::Gone { error })) => {
            if error {
                ctx.stats().resets.inc();
            }
            return;
        }
        Ok(Err(ReadEnd::Reject(r))) => return reject(ctx, &mut stream, r).await,
        Ok(Ok(req)) => req,
    };

    let up = match ctx.settings.policy.route(&req, side, unix_now()) {
        Err(r) => return reject(ctx, &mut stream, r).await,
        Ok(Allowed::Upgrade(up)) => up,
        Ok(Allowed::Healthz) => {
            let resp = handshake::http_response(200, "", "text/plain", b"ok\n");
            return finish(&mut stream, &resp).await;
        }
        Ok(Allowed::Metrics) => {
            let body = crate::metrics::render(ctx);
            let resp =
                handshake::http_response(200, "", "text/plain; version=0.0.4", body.as_bytes());
            return finish(&mut stream, &resp).await;
        }
        Ok(Allowed::Push { user, len }) => {
            return post(ctx, &mut stream, &req, &buf, deadline, len, |body| {
                let n = ctx.hub.push(ctx, &user, &body);
                (if n == 0 { 404 } else { 200 }, n)
            })
            .await;
        }
        Ok(Allowed::Publish { room, len }) => {
            return post(ctx, &mut stream, &req, &buf, deadline, len, |body| {
                (200, ctx.hub.broadcast(ctx, &room, &body, None))
            })
            .await;
        }
    };
    let accept = up.accept;
    let route = match up.room {
        Some(room) => Route::broadcast(room, up.echo, up.user),
        None => Route::echo(up.user),
    };
    if ctx.stopping() {
        return;
    }
    let max = ctx.settings.max_conns;
    let admitted = ctx
        .ws_open
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok();
    if !admitted {
        return reject(ctx, &mut stream, Reject::Unavailable).await;
    }
    let admission = Admission(ctx);
    let resp = handshake::switching_protocols(&accept);
    match timeout_at(deadline, stream.write_all(&resp)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            ctx.stats().resets.inc();
            return;
        }
        Err(_) => {
            ctx.stats().handshake_timeout_closes.inc();
            return;
        }
    }
    let s = ctx.stats();
    s.upgraded.inc();
    // Gauges: no longer pending, now open (charged to the upgrading worker).
    drop(pending);
    let open = Charge::new(&ctx.gauges[ctx.slot()].ws_open, 1);
    let leftover = buf[req.head_len..].to_vec();
    s.bytes_in.add(leftover.len() as u64);
    let ws = WebSocketStream::from_partially_read(
        Counted::new(ctx, stream, &leftover),
        leftover,
        Role::Server,
        Some(ctx.settings.ws),
    )
    .await;
    // The WebSocket phase is a task of its own: this one (sized for the HTTP routes, and
    // holding the request buffer) ends now, and the long-lived task is only as large as
    // the frame loop needs. Its memory: the task plus tungstenite's eager read buffer.
    let run = conn::run(ctx, ws, route, admission, open);
    ctx.spawn_conn(run, ctx.settings.ws.read_buffer_size);
}

/// Gives back the `--max-conns` budget when dropped.
pub struct Admission(&'static Ctx);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.ws_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads until `parse_request` has a complete head (or refuses it). `buf` ends up holding
/// everything read: the head, then possibly a body or the first frames. It starts at
/// [`HEAD_BUFFER`] (a typical upgrade request fits) and doubles up to the 8 KiB limit.
async fn read_head(stream: &mut Io, buf: &mut Vec<u8>) -> Result<Request, ReadEnd> {
    buf.resize(HEAD_BUFFER, 0);
    let mut len = 0;
    let result = loop {
        if len == buf.len() {
            buf.resize((len * 2).min(MAX_HANDSHAKE_BYTES), 0);
        }
        let n = match stream.read(&mut buf[len..]).await {
            Ok(0) => break Err(ReadEnd::Gone { error: false }),
            Ok(n) => n,
            Err(_) => break Err(ReadEnd::Gone { error: true }),
        };
        len += n;
        // parse_request refuses with 431 once `len` reaches the limit without a full head.
        match parse_request(&buf[..len]) {
            Ok(None) => continue,
            Ok(Some(req)) => break Ok(req),
            Err(r) => break Err(ReadEnd::Reject(r)),
        }
    };
    buf.truncate(len);
    result
}

/// A `POST` route, already routed and authorised by the policy (`len` within
/// `--max-body`): reads the body, hands it to `act` as one binary message, answers with
/// `act`'s status and count. The body grows only by what each read brings (never sized from
/// the announced length, never re-copied per read).
async fn post(
    ctx: &'static Ctx,
    stream: &mut Io,
    req: &Request,
    buf: &[u8],
    deadline: Instant,
    len: usize,
    act: impl FnOnce(Message) -> (u16, u64),
) {
    let have = &buf[req.head_len..];
    let mut body = have[..have.len().min(len)].to_vec();
    let mut chunk = [0u8; 8 * 1024];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match timeout_at(deadline, stream.read(&mut chunk[..want])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return, // EOF or error mid-body: nothing to answer
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
            Err(_) => {
                ctx.stats().handshake_timeout_closes.inc();
                return;
            }
        }
    }
    let (status, n) = act(Message::Binary(body.into()));
    let resp = handshake::http_response(status, "", "text/plain", format!("{n}\n").as_bytes());
    finish(stream, &resp).await;
}

async fn reject(ctx: &Ctx, stream: &mut Io, r: Reject) {
    ctx.stats().reject(r);
    finish(stream, &r.response()).await;
}

/// Sends a complete response, half-closes, and waits (at most [`LINGER`]) for the client's
/// EOF, discarding what it still sends, so it reads our answer instead of a reset.
pub async fn finish(stream: &mut Io, resp: &[u8]) {
    let _ = timeout_at(Instant::now() + LINGER, async {
        stream.write_all(resp).await?;
        stream.shutdown().await?;
        let mut sink = vec![0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
