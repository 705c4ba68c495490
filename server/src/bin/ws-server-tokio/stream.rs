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

pub struct Counted {
    inner: TcpStream,
    ctx: &'static Ctx,
    /// When the last read returned data.
    pub last_rx: Instant,
}

impl Counted {
    pub fn new(ctx: &'static Ctx, inner: TcpStream) -> Counted {
        Counted {
            inner,
            ctx,
            last_rx: Instant::now(),
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
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = buf.filled().len() - before;
            if n > 0 {
                self.ctx.stats().bytes_in.add(n as u64);
                self.last_rx = Instant::now();
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
