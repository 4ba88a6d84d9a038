//! One connection: hyper serving the app over an IO that reports reads;
//! each request marks the connection busy until its response ends; a
//! watchdog closes it when it waits too long outside a request, or when
//! the accept loop evicts it to make room.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Connection;
use super::limits::{self, Expiry, MAX_HEADER_BYTES, Timeouts};
use super::stall::StallGuard;
use super::table::ConnState;

/// How a connection's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it, or the server finished with it (an error,
    /// `Connection: close`, a drained shutdown).
    Done,
    /// Closed to make room for a new connection.
    Evicted,
    /// Waited too long outside a request.
    Expired(Expiry),
}

/// Serve `app` on `stream` until one of [`Closed`] happens. On `shutdown`
/// the connection finishes its request in flight and closes.
pub async fn run(
    stream: TcpStream,
    state: Arc<ConnState>,
    app: Router,
    timeouts: Timeouts,
    stall: Duration,
    shutdown: CancellationToken,
) -> Closed {
    let peer = stream.peer_addr().ok();
    let io = TokioIo::new(StallGuard::new(
        Watched {
            inner: stream,
            state: state.clone(),
        },
        stall,
    ));
    let inner = TowerToHyperService::new(app);
    let requests = state.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        requests.begin_request();
        let busy = Busy(requests.clone());
        request
            .extensions_mut()
            .insert(Connection(requests.clone()));
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        let response = hyper::service::Service::call(&inner, request);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // The watchdog times heads (hyper's own timer would also cut the
    // keep-alive pause to the header timeout).
    http.header_read_timeout(None)
        .max_header_size(MAX_HEADER_BYTES);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let watchdog = watchdog(&state, timeouts);
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
                return Closed::Done;
            }
            closed = &mut watchdog => return closed,
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves when the connection is evicted or has waited past its
/// deadline ([`limits::deadline`]); re-evaluated on every phase change.
async fn watchdog(state: &ConnState, timeouts: Timeouts) -> Closed {
    loop {
        if state.is_evicted() {
            return Closed::Evicted;
        }
        match limits::deadline(state.phase(), timeouts) {
            None => state.changed().await,
            Some((at, why)) => {
                let at = state.instant(at);
                if tokio::time::Instant::now() >= at {
                    return Closed::Expired(why);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = state.changed() => {}
                }
            }
        }
    }
}

/// Ends the request when dropped: with its response body once that is
/// sent, or with the service future if the connection goes first.
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A response body that keeps its connection busy while it is being sent
/// (a stream, for as long as it is open).
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, telling the connection's state when bytes arrive and
/// whether writes go out.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl Watched {
    fn wrote<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &poll {
            Poll::Pending => self.state.on_write_blocked(),
            Poll::Ready(_) => self.state.on_write(),
        }
        poll
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(poll)
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
