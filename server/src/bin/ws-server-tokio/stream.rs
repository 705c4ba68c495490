//! The TCP stream under tungstenite, wrapped to count received bytes (`ws_bytes_in_total`,
//! counted like ws-server: every byte read after the upgrade) and to remember when the
//! client last sent anything (the idle timeout counts any frame, pongs included).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::utf8_guard::{Utf8Guard, INVALID_UTF8};

pub struct Counted {
    inner: TcpStream,
    ctx: &'static Ctx,
    /// When the last read returned data.
    pub last_rx: Instant,
    /// Fails a text frame on invalid UTF-8 before tungstenite has all of it.
    utf8: Utf8Guard,
    /// The bytes read before the upgrade (handed to tungstenite) already failed the guard.
    utf8_failed: bool,
}

impl Counted {
    /// `leftover`: the bytes after the request head, which tungstenite gets directly.
    pub fn new(ctx: &'static Ctx, inner: TcpStream, leftover: &[u8]) -> Counted {
        let mut utf8 = Utf8Guard::default();
        let utf8_failed = utf8.feed(leftover).is_err();
        Counted {
            inner,
            ctx,
            last_rx: Instant::now(),
            utf8,
            utf8_failed,
        }
    }

    /// The socket itself, for the last bytes of a linger (not counted, as ws-server
    /// discards them too).
    pub fn tcp(&mut self) -> &mut TcpStream {
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
                self.last_rx = Instant::now();
                let this = &mut *self;
                if this.utf8.feed(&buf.filled()[before..]).is_err() {
                    this.utf8_failed = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        INVALID_UTF8,
                    )));
                }
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
