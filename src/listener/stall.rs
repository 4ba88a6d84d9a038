//! A connection whose peer stops reading is closed.
//!
//! A streaming response (SSE) to a client that never reads fills the
//! socket, then hyper stops polling the body, and nothing would ever free
//! the connection. Every accepted socket is wrapped so that a write left
//! pending for longer than `stall` fails with `TimedOut`, which makes hyper
//! drop the connection. Idle connections are not affected: only a write
//! that cannot make progress is timed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An IO whose writes fail once they have been pending for `stall`.
pub struct StallGuard<T> {
    inner: T,
    stall: Duration,
    /// Running while writes are pending; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, stall: Duration) -> Self {
        StallGuard {
            inner,
            stall,
            stalled: None,
        }
    }

    fn check<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_millis(50));
        let chunk = [0u8; 32];
        let err = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Err(e) = guarded.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the stalled write failed in time");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_kept() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            while total < 4096 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                total += b.read(&mut buf).await.expect("read");
            }
            total
        });
        guarded.write_all(&[1u8; 4096]).await.expect("write");
        assert_eq!(reader.await.expect("reader"), 4096);
    }
}
