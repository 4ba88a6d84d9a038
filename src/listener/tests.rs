//! The listener over real sockets on 127.0.0.1:0, in process: eviction,
//! refusal, timeouts, the streams' share, hosts, oversized heads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// A response far larger than the socket buffers: it ends (as a body)
/// long before the peer has read it.
const BIG: usize = 32 << 20;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(max_connections: usize, header: Duration, idle: Duration) -> Config {
    Config {
        max_connections,
        timeouts: Timeouts { header, idle },
        stall: Duration::from_secs(30),
        hosts: HostPolicy::default(),
    }
}

struct Server {
    addr: SocketAddr,
    stats: Stats,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// One message per request that reached `/hang`.
    hung: mpsc::Receiver<()>,
}

/// `/ok` answers, `/hang` never does, `/stream` holds a stream open.
async fn start(config: Config) -> Server {
    let (tx, hung) = mpsc::channel(16);
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/hang",
            get(move || {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(()).await;
                    std::future::pending::<&'static str>().await
                }
            }),
        )
        .route("/stream", get(stream))
        .route("/big", get(|| async { vec![b'x'; BIG] }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let stats = Stats::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        app,
        config,
        stats.clone(),
        shutdown.clone(),
    ));
    Server {
        addr,
        stats,
        shutdown,
        task,
        hung,
    }
}

async fn stream(Extension(conn): Extension<Connection>) -> Response {
    match conn.begin_stream() {
        Ok(()) => {
            let first = tokio_stream::iter([Ok::<_, Infallible>(Bytes::from("hi\n"))]);
            Body::from_stream(first.chain(tokio_stream::pending())).into_response()
        }
        Err(full) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("streams full: {}", full.max),
        )
            .into_response(),
    }
}

impl Server {
    fn dropped(&self, reason: &str) -> u64 {
        self.stats
            .dropped
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .get()
    }

    /// Wait until the server has accepted `n` connections in all.
    async fn until_open(&self, n: i64) {
        timeout(WAIT, async {
            while self.stats.open.get() < n {
                tokio::time::sleep(ms(5)).await;
            }
        })
        .await
        .expect("the server accepted the connections");
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// One request on a new connection: (status, whole response text).
async fn request(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = connect(addr).await;
    s.write_all(head.as_bytes()).await.expect("send");
    read_response(&mut s).await
}

async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

async fn get_path(addr: SocketAddr, path: &str) -> (u16, String) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    request(addr, &head).await
}

/// The server closed the socket within `within` (EOF or reset).
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn at_the_cap_a_new_connection_closes_the_oldest_idle_one() {
    let server = start(config(4, Duration::from_secs(60), Duration::from_secs(60))).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(server.addr).await);
    }
    server.until_open(4).await;
    let (code, text) = get_path(server.addr, "/ok").await;
    assert_eq!(code, 200, "{text}");
    assert!(
        closed(&mut idle[0], WAIT).await,
        "the oldest idle socket was closed"
    );
    assert!(!closed(&mut idle[3], ms(200)).await, "the newest stays");
    assert_eq!(server.dropped("evicted"), 1);
}

#[tokio::test]
async fn when_every_connection_is_inside_a_request_a_newcomer_gets_503() {
    let mut server = start(config(2, Duration::from_secs(60), Duration::from_secs(60))).await;
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let mut s = connect(server.addr).await;
        s.write_all(b"GET /hang HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("send");
        hanging.push(s);
        timeout(WAIT, server.hung.recv())
            .await
            .expect("the request reached its handler");
    }
    let (code, text) = get_path(server.addr, "/ok").await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("too many connections"), "{text}");
    assert!(text.contains("--max-connections"), "{text}");
    assert_eq!(server.dropped("refused"), 1);
    // The requests in flight were left alone.
    assert!(!closed(&mut hanging[0], ms(200)).await);
}

#[tokio::test]
async fn a_connection_that_does_not_complete_its_head_is_closed_after_the_header_timeout() {
    let server = start(config(16, ms(300), Duration::from_secs(60))).await;
    let mut silent = connect(server.addr).await;
    let mut trickle = connect(server.addr).await;
    trickle
        .write_all(b"GET /ok HTTP/1.1\r\n")
        .await
        .expect("send");
    // Bytes keep coming, but the head never ends: no extension.
    let trickling = async {
        for _ in 0..50 {
            if trickle.write_all(b"X-A: b\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(ms(100)).await;
        }
    };
    timeout(WAIT, trickling).await.expect("the trickle was cut");
    assert!(closed(&mut trickle, WAIT).await);
    assert!(closed(&mut silent, WAIT).await);
    assert_eq!(server.dropped("header_timeout"), 2);
    assert_eq!(get_path(server.addr, "/ok").await.0, 200);
}

#[tokio::test]
async fn a_kept_alive_connection_waits_the_idle_timeout_not_the_header_timeout() {
    let server = start(config(16, ms(200), ms(2000))).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok") {
        let n = timeout(WAIT, s.read(&mut buf))
            .await
            .expect("a response")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // Well past the header timeout, the pause between requests is allowed.
    assert!(
        !closed(&mut s, ms(800)).await,
        "closed before the idle timeout"
    );
    assert!(closed(&mut s, WAIT).await, "closed after the idle timeout");
    assert_eq!(server.dropped("idle_timeout"), 1);
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_response_past_the_idle_timeout() {
    let server = start(config(16, ms(300), ms(300))).await;
    let mut s = connect(server.addr).await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    let mut head = None;
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(ms(20)).await;
        let n = timeout(WAIT, s.read(&mut buf))
            .await
            .expect("data keeps coming")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        if head.is_none() {
            let text = String::from_utf8_lossy(&buf[..n.min(512)]).into_owned();
            let end = text.find("\r\n\r\n").expect("the head in the first read") + 4;
            head = Some(text[..end].to_string());
            got += n - end;
        } else {
            got += n;
        }
        if got >= BIG {
            break;
        }
    }
    assert!(
        started.elapsed() > ms(600),
        "the read was not slow enough to outlast the idle timeout"
    );
    assert_eq!(got, BIG, "cut after {got} bytes; head {head:?}");
    // Then, idle, it is closed.
    assert!(closed(&mut s, WAIT).await);
}

#[tokio::test]
async fn streams_hold_at_most_their_share_of_the_connections() {
    // 3 connections: 2 may be streams, one stays for everything else.
    let server = start(config(3, Duration::from_secs(60), Duration::from_secs(60))).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = connect(server.addr).await;
        s.write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("hi") {
            let n = timeout(WAIT, s.read(&mut buf))
                .await
                .expect("data")
                .expect("read");
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        streams.push(s);
    }
    let (code, text) = get_path(server.addr, "/stream").await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("streams full: 2"), "{text}");
    assert_eq!(get_path(server.addr, "/ok").await.0, 200);
    // Streams are busy: making room never closes them.
    for s in &mut streams {
        assert!(!closed(s, ms(100)).await);
    }
}

#[tokio::test]
async fn hosts_outside_the_policy_are_refused_with_the_fix() {
    let mut c = config(8, Duration::from_secs(60), Duration::from_secs(60));
    c.hosts = HostPolicy::new(&["dash.example".to_string()]).expect("policy");
    let server = start(c).await;
    let head =
        |host: &str| format!("GET /ok HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (code, text) = request(server.addr, &head("evil.example:8080")).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("--allow-host evil.example"), "{text}");
    assert_eq!(
        request(server.addr, &head("dash.example:8080")).await.0,
        200
    );
    assert_eq!(request(server.addr, &head("localhost")).await.0, 200);
    assert_eq!(request(server.addr, &head("[::1]:80")).await.0, 200);
}

#[tokio::test]
async fn an_oversized_head_gets_431_and_the_server_goes_on() {
    let server = start(config(8, Duration::from_secs(60), Duration::from_secs(60))).await;
    let big = "a".repeat(limits::MAX_HEADER_BYTES + 1);
    let head = format!("GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n");
    let (code, text) = request(server.addr, &head).await;
    assert_eq!(code, 431, "{}", &text[..text.len().min(200)]);
    assert_eq!(get_path(server.addr, "/ok").await.0, 200);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_ends() {
    let server = start(config(8, Duration::from_secs(60), Duration::from_secs(60))).await;
    let mut idle = connect(server.addr).await;
    server.until_open(1).await;
    server.shutdown.cancel();
    assert!(closed(&mut idle, WAIT).await);
    timeout(WAIT, server.task)
        .await
        .expect("serve ended")
        .expect("serve did not panic");
}
