//! The TCP stream under tungstenite, wrapped to count received bytes (`ws_bytes_in_total`,
//! counted like ws-server: every byte read after the upgrade) and to remember when the
//! client last sent anything (the idle timeout counts any frame, pongs included), and when
//! the frame or message still unfinished began (the message timeout: a trickle of bytes
//! keeps the idle timer fresh, not this one).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::io::Io;
use crate::utf8_guard::{Utf8Guard, INVALID_UTF8};

pub struct Counted {
    inner: Io,
    ctx: &'static Ctx,
    /// When the last read returned data.
    pub last_rx: Instant,
    /// Fails a text frame on invalid UTF-8 before tungstenite has all of it.
    utf8: Utf8Guard,
    /// The bytes read before the upgrade (handed to tungstenite) already failed the guard.
    utf8_failed: bool,
    /// When the unfinished frame or fragmented message began (`--message-timeout`).
    pub partial_since: Option<Instant>,
    /// `partial_since` was set since the connection last looked: its timer may move closer.
    pub rearm: bool,
}

impl Counted {
    /// `leftover`: the bytes after the request head, which tungstenite gets directly.
    pub fn new(ctx: &'static Ctx, inner: Io, leftover: &[u8]) -> Counted {
        let mut utf8 = Utf8Guard::default();
        let utf8_failed = utf8.feed(leftover).is_err();
        let now = Instant::now();
        let partial_since = utf8.in_message().then_some(now);
        Counted {
            inner,
            ctx,
            last_rx: now,
            utf8,
            utf8_failed,
            partial_since,
            rearm: partial_since.is_some(),
        }
    }

    /// Bytes of the unfinished frame or message received so far.
    pub fn partial_bytes(&self) -> usize {
        self.utf8.partial_bytes() as usize
    }

    /// After a read: starts or stops the `--message-timeout` clock.
    fn track_partial(&mut self, now: Instant) {
        let completed = self.utf8.take_completed();
        if !self.utf8.in_message() {
            self.partial_since = None;
        } else if completed || self.partial_since.is_none() {
            self.partial_since = Some(now);
            self.rearm = true;
        }
    }

    /// The socket itself, for the last bytes of a linger (not counted, as ws-server
    /// discards them too).
    pub fn tcp(&mut self) -> &mut Io {
        &mut self.inner
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.utf8_failed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                INVALID_UTF8,
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = buf.filled().len() - before;
            if n > 0 {
                self.ctx.stats().bytes_in.add(n as u64);
                let now = Instant::now();
                self.last_rx = now;
                let this = &mut *self;
                if this.utf8.feed(&buf.filled()[before..]).is_err() {
                    this.utf8_failed = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        INVALID_UTF8,
                    )));
                }
                this.track_partial(now);
            }
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
