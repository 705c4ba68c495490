//! A connection's life before (and instead of) WebSocket: read the HTTP request, route it,
//! answer plain HTTP or upgrade.
//!
//! Parsing and validation are `ws_common::handshake`, shared with ws-server, so both
//! servers refuse the same requests with the same status. The whole request (head and, for
//! a POST, body) must arrive within `--handshake-timeout` of the accept; the head is read
//! into one bounded heap buffer (8 KiB, the handshake limit), freed before the WebSocket
//! phase. Bytes that followed the head in the same read are handed to tungstenite.
//!
//! Routes: `GET /ws` (echo), `GET /broadcast?room=NAME[&echo=false]`, either with an
//! optional `?user=ID`; `POST /push/ID`, `POST /broadcast/NAME`; `GET /metrics`,
//! `GET /healthz`. Every plain HTTP answer closes the connection (`Connection: close`),
//! then lingers briefly so the client reads it rather than a reset.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use ws_common::handshake::{self, parse_request, Method, Reject, Request};
use ws_common::limits::MAX_HANDSHAKE_BYTES;

use crate::conn::{self, Route};
use crate::ctx::{Ctx, Stopped};
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
pub async fn serve(ctx: &'static Ctx, mut stream: TcpStream) {
    let deadline = Instant::now() + ctx.settings.handshake_timeout;
    let home = ctx.slot();
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

    let path = req.path.as_str();
    let route = match path {
        "/ws" => Route::echo(req.query_param("user")),
        "/broadcast" => {
            let echo = req.query_param("echo").as_deref() != Some("false");
            Route::broadcast(
                req.query_param("room").unwrap_or_default(),
                echo,
                req.query_param("user"),
            )
        }
        "/metrics" | "/healthz" => {
            if req.method != Method::Get {
                return reject(ctx, &mut stream, Reject::MethodNotAllowed).await;
            }
            let resp = if path == "/metrics" {
                let body = crate::metrics::render(ctx);
                handshake::http_response(200, "", "text/plain; version=0.0.4", body.as_bytes())
            } else {
                handshake::http_response(200, "", "text/plain", b"ok\n")
            };
            return finish(&mut stream, &resp).await;
        }
        _ => {
            if let Some(rest) = path.strip_prefix("/push/") {
                let user = handshake::percent_decode(rest);
                return post(ctx, &mut stream, &req, &buf, deadline, &user, |body| {
                    let n = ctx.hub.push(ctx, &user, &body);
                    (if n == 0 { 404 } else { 200 }, n)
                })
                .await;
            }
            if let Some(rest) = path.strip_prefix("/broadcast/") {
                let room = handshake::percent_decode(rest);
                return post(ctx, &mut stream, &req, &buf, deadline, &room, |body| {
                    (200, ctx.hub.broadcast(ctx, &room, &body, None))
                })
                .await;
            }
            return reject(ctx, &mut stream, Reject::NotFound).await;
        }
    };

    let accept = match req.check_upgrade(&ctx.settings.allow_origin) {
        Ok(a) => a,
        Err(r) => return reject(ctx, &mut stream, r).await,
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
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Request, ReadEnd> {
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

/// A `POST` route, checked as ws-server does (405 for another method, 404 for an empty
/// name, 400 without `Content-Length`, 413 over `--max-message-size`): reads the body,
/// hands it to `act` as one binary message, answers with `act`'s status and count.
async fn post(
    ctx: &'static Ctx,
    stream: &mut TcpStream,
    req: &Request,
    buf: &[u8],
    deadline: Instant,
    name: &str,
    act: impl FnOnce(Message) -> (u16, u64),
) {
    if req.method != Method::Post {
        return reject(ctx, stream, Reject::MethodNotAllowed).await;
    }
    if name.is_empty() {
        return reject(ctx, stream, Reject::NotFound).await;
    }
    let Some(len) = req.content_length else {
        return reject(ctx, stream, Reject::BadRequest).await;
    };
    if len > ctx.settings.max_message_size {
        return reject(ctx, stream, Reject::PayloadTooLarge).await;
    }
    let have = &buf[req.head_len..];
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&have[..have.len().min(len)]);
    if body.len() < len {
        let start = body.len();
        body.resize(len, 0);
        match timeout_at(deadline, stream.read_exact(&mut body[start..])).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return, // EOF or error mid-body: nothing to answer
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

async fn reject(ctx: &Ctx, stream: &mut TcpStream, r: Reject) {
    ctx.stats().reject(r);
    finish(stream, &r.response()).await;
}

/// Sends a complete response, half-closes, and waits (at most [`LINGER`]) for the client's
/// EOF, discarding what it still sends, so it reads our answer instead of a reset.
pub async fn finish(stream: &mut TcpStream, resp: &[u8]) {
    let _ = timeout_at(Instant::now() + LINGER, async {
        stream.write_all(resp).await?;
        stream.shutdown().await?;
        let mut sink = vec![0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
