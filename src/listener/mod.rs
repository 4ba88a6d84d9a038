//! Accepting HTTP connections with limits: the status API's listener, and
//! the one any other inbound surface should serve through. A leaf: it uses
//! hyper and tokio, nothing of the crate.
//!
//! A hostile or broken client must not take the daemon's file descriptors
//! or keep other clients out:
//! - at most `max_connections` sockets are open; the default comes from
//!   RLIMIT_NOFILE with a reserve ([`limits::default_max_connections`]), so
//!   sockets never starve the store, the watcher or outbound calls;
//! - a connection must send a complete request head within the header
//!   timeout of connecting (or of the first byte of its next request), and
//!   may wait for its next request for the idle timeout; then it is closed;
//! - at the cap, a new connection makes room by closing one that is not
//!   inside a request ([`limits::victim`]); when every connection is inside
//!   one, the newcomer gets an immediate `503`;
//! - long-lived streams (SSE) take at most all but an eighth of the
//!   connections ([`Connection::begin_stream`]), so a probe always gets in;
//! - a write the peer does not read for `stall` fails ([`stall`]);
//! - a request naming a DNS name that is not ours is refused ([`host`]).

pub mod conn;
pub mod host;
pub mod limits;
pub mod stall;
mod table;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub use host::HostPolicy;
pub use limits::Timeouts;
pub use table::StreamsFull;

use conn::Closed;
use table::{Admit, ConnState, Table};

/// Defaults of the API listener's flags.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping server waits for its connections to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Refusals (`503`, too many connections) being written at once; past
/// this a refused socket is closed without an answer.
const MAX_REFUSING: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub max_connections: usize,
    pub timeouts: Timeouts,
    /// A write pending this long fails and closes the connection.
    pub stall: Duration,
    pub hosts: HostPolicy,
}

impl Config {
    /// The defaults for this process's open-files limit.
    pub fn with_defaults(hosts: HostPolicy) -> Config {
        Config {
            max_connections: default_max_connections(),
            timeouts: Timeouts {
                header: DEFAULT_HEADER_TIMEOUT,
                idle: DEFAULT_IDLE_TIMEOUT,
            },
            stall: Duration::from_secs(30),
            hosts,
        }
    }
}

/// Connections the kernel holds for a listener before the accept loop
/// takes them (Linux caps it at `net.core.somaxconn`, 4096 by default).
/// tokio's default, 1,024, filled under a flood of idle sockets while the
/// loop evicted: the next client's SYN was dropped and it connected a
/// second later, on the SYN retransmit.
pub const ACCEPT_BACKLOG: u32 = 4096;

/// Listen on `addr` with [`ACCEPT_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it).
pub fn bind(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The soft RLIMIT_NOFILE (`None` if it cannot be read).
pub fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return None;
    }
    Some(if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur
    })
}

/// `--max-connections` when not given: see [`limits::default_max_connections`]
/// (1,024 descriptors assumed if the limit cannot be read).
pub fn default_max_connections() -> usize {
    limits::default_max_connections(nofile_limit().unwrap_or(1024))
}

/// [`default_max_connections`] for each of `listeners` listeners sharing
/// the process (see [`limits::default_max_connections_each`]).
pub fn default_max_connections_each(listeners: usize) -> usize {
    limits::default_max_connections_each(nofile_limit().unwrap_or(1024), listeners)
}

/// What the listener counts, registered in the daemon's metrics.
#[derive(Clone, Default, Debug)]
pub struct Stats {
    /// Sockets open.
    pub open: Gauge,
    /// Connections closed or refused by the listener, by `reason`:
    /// `evicted`, `refused`, `header_timeout`, `idle_timeout`.
    pub dropped: Family<Vec<(String, String)>, Counter>,
}

impl Stats {
    fn dropped(&self, reason: &str) {
        self.dropped
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }
}

/// The connection a request arrived on, in the request's extensions.
#[derive(Clone)]
pub struct Connection(Arc<ConnState>);

impl Connection {
    /// This request's response is a long-lived stream (SSE): it keeps its
    /// connection for as long as it is open. Refused when streams already
    /// hold their share of the connections.
    pub fn begin_stream(&self) -> Result<(), StreamsFull> {
        self.0.begin_stream()
    }
}

/// Serve `app` on `listener` until `shutdown`, then let the connections
/// finish what they are sending (up to a few seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: Config,
    stats: Stats,
    shutdown: CancellationToken,
) {
    let table = Table::new(config.max_connections);
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::new(config.hosts.clone()),
        host::guard,
    ));
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                accept_failed(e, &table, &stats, &mut warned).await;
                continue;
            }
        };
        match table.admit() {
            Admit::Full { open } => {
                stats.dropped("refused");
                refuse(stream, open, &refusing);
            }
            Admit::Open { conn, evicted } => {
                if evicted {
                    stats.dropped("evicted");
                }
                let open = Open::new(table.clone(), conn.id, stats.clone());
                let task = conn::run(
                    stream,
                    conn,
                    app.clone(),
                    config.timeouts,
                    config.stall,
                    shutdown.clone(),
                );
                tokio::spawn(async move {
                    if let Closed::Expired(why) = task.await {
                        open.stats.dropped(why.as_str());
                    }
                    drop(open);
                });
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    while table.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An admitted connection; leaving the table when its task ends, however
/// it ends (a panicking handler included).
struct Open {
    table: Arc<Table>,
    id: u64,
    stats: Stats,
}

impl Open {
    fn new(table: Arc<Table>, id: u64, stats: Stats) -> Open {
        stats.open.inc();
        Open { table, id, stats }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.table.remove(self.id);
        self.stats.open.dec();
    }
}

/// A failed accept. Out of descriptors, close the best victim so the
/// next accept (and the rest of the daemon) has one; pause briefly either
/// way so a persistent error does not spin.
async fn accept_failed(e: io::Error, table: &Table, stats: &Stats, warned: &mut Option<Instant>) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
    let freed = out_of_fds && table.evict_one();
    if freed {
        stats.dropped("evicted");
    }
    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
        *warned = Some(Instant::now());
        tracing::warn!(
            error = %e,
            open = table.open(),
            max_connections = table.max(),
            closed_one = freed,
            "the API could not accept a connection; if this is \"Too many open files\", lower --max-connections or raise the open-files limit (ulimit -n)"
        );
    }
    let pause = if freed { 10 } else { 100 };
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

/// Answer a connection the table has no room for with a `503` and close
/// it, without holding up the accept loop.
fn refuse(stream: TcpStream, open: usize, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), answer_busy(stream, open)).await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

async fn answer_busy(mut stream: TcpStream, open: usize) -> io::Result<()> {
    let body = json!({
        "error": format!(
            "too many connections: all {open} are busy with requests or event streams; retry shortly, or raise --max-connections"
        )
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Read what the client sent, so closing does not reset the answer away.
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < 64 * 1024 {
        match stream.read(&mut buf).await? {
            0 => break,
            n => read += n,
        }
    }
    Ok(())
}
