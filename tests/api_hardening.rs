//! The status API against hostile clients, through the real binary: a
//! flood of 1,100 idle and half-sent sockets under a 1,024 open-files limit,
//! heads that never end, kept-alive sockets that never ask again, event
//! streams crowding out the rest, a `Host` that is not ours (DNS
//! rebinding), a repeated `access_token`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};

const WAIT: Duration = Duration::from_secs(20);

fn noop_dir() -> ConfigDir {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    d
}

fn start(d: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    let daemon = Daemon::start_env(d.path(), extra, env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon
}

fn addr(daemon: &Daemon) -> SocketAddr {
    daemon
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the daemon's address")
}

/// This test process opens more than a thousand sockets itself.
fn raise_own_nofile(want: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        if l.rlim_cur < want {
            l.rlim_cur = want.min(l.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        }
    }
    assert!(
        l.rlim_cur >= want,
        "this test needs {want} open files; the hard limit is {}",
        l.rlim_max
    );
}

/// A raw request with exactly the headers given: (status, response).
fn raw(daemon: &Daemon, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr(daemon)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn with_host(daemon: &Daemon, host: &str) -> (u16, String) {
    raw(
        daemon,
        &format!("GET /api/v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// The server closed `s` within `within` (EOF or reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[test]
fn eleven_hundred_idle_sockets_leave_healthz_answering_within_a_second() {
    raise_own_nofile(2048);
    let d = noop_dir();
    // The flood stays open for the whole test: the header timeout is not
    // what keeps /healthz answering here, the cap and eviction are.
    let daemon =
        Daemon::start_with_nofile(d.path(), &[], &[("MULTIJOB_HEADER_TIMEOUT", "300")], 1024);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let to = addr(&daemon);
    let mut flood = Vec::new();
    // More sockets than the daemon has descriptors (as in issue #19).
    for i in 0..1100 {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("socket {i} could not connect: {e}"));
        if i % 2 == 1 {
            // Half a head: the request line and a header that never ends.
            s.write_all(b"GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .expect("send half a head");
        }
        flood.push(s);
    }
    for probe in 0..3 {
        let t0 = Instant::now();
        let (code, body) = common::http(&daemon.url, "GET", "/healthz", &[]);
        let took = t0.elapsed();
        assert_eq!(code, 200, "probe {probe}: {body}\n{}", daemon.log());
        assert!(
            took < Duration::from_secs(1),
            "probe {probe} took {took:?} with 1,100 idle sockets open"
        );
    }
    // The rest of the daemon still has descriptors: a new job is
    // reconciled from the directory and its triggered run succeeds.
    d.write("jobs.d/b.yaml", "id: b\ntype: noop\n");
    daemon.wait_until("/api/v1/jobs/b", "job b applied", |v| v["id"] == "b");
    d.run(&["trigger", "b"]).assert_code(0);
    daemon.wait_until("/api/v1/runs?job=b", "b's run succeeded", |v| {
        v["items"][0]["status"] == "succeeded"
    });
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    let evicted = sample(
        &metrics,
        "multijob_api_connections_dropped_total{reason=\"evicted\"}",
    )
    .unwrap_or(0.0);
    // 1,024 descriptors leave room for 768 connections: the rest of the
    // flood was closed to make room.
    assert!(evicted >= 300.0, "evicted {evicted}\n{metrics}");
    let open = sample(&metrics, "multijob_api_connections ").unwrap_or(f64::MAX);
    assert!(open <= 800.0, "open {open}\n{metrics}");
    let log = daemon.log();
    assert!(!log.contains("Too many open files"), "{log}");
    drop(flood);
}

#[test]
fn sockets_that_never_finish_a_head_or_ask_again_are_closed() {
    let d = noop_dir();
    let daemon = start(
        &d,
        &[],
        &[
            ("MULTIJOB_HEADER_TIMEOUT", "1"),
            ("MULTIJOB_IDLE_TIMEOUT", "6"),
        ],
    );
    let to = addr(&daemon);
    let mut silent = TcpStream::connect(to).expect("connect");
    let mut half = TcpStream::connect(to).expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("send");
    let mut kept = TcpStream::connect(to).expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\"ok\"}") {
        let n = kept.read(&mut buf).expect("the response");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    assert!(
        closed_within(&mut silent, WAIT),
        "a silent socket stays open"
    );
    assert!(
        closed_within(&mut half, WAIT),
        "a half-sent head stays open"
    );
    // A kept-alive connection may pause longer than the header timeout...
    if answered.elapsed() < Duration::from_secs(4) {
        assert!(
            !closed_within(&mut kept, Duration::from_millis(300)),
            "a kept-alive socket was closed after {:?}, before its idle timeout",
            answered.elapsed()
        );
    }
    // ...but not forever.
    assert!(
        closed_within(&mut kept, WAIT),
        "a kept-alive socket stays open"
    );
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    for (reason, n) in [("header_timeout", 2.0), ("idle_timeout", 1.0)] {
        let series = format!("multijob_api_connections_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&metrics, &series), Some(n), "{metrics}");
    }
    assert_eq!(common::http(&daemon.url, "GET", "/healthz", &[]).0, 200);
}

#[test]
fn only_ip_literals_localhost_and_allowed_names_are_answered() {
    let d = noop_dir();
    let daemon = start(&d, &["--allow-host", "dash.example"], &[]);
    let port = addr(&daemon).port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("dash.example:{port}"),
        "DASH.example".to_string(),
    ] {
        let (code, text) = with_host(&daemon, &host);
        assert_eq!(code, 200, "Host {host}: {text}");
    }
    let (code, text) = with_host(&daemon, &format!("rebind.evil.example:{port}"));
    assert_eq!(code, 403, "{text}");
    assert!(
        text.contains("--allow-host rebind.evil.example"),
        "the refusal says how to allow the name: {text}"
    );
    // Probes and the dashboard are covered too, and the daemon goes on.
    let (code, _) = raw(
        &daemon,
        "GET / HTTP/1.1\r\nHost: rebind.evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 403);
    assert_eq!(common::http(&daemon.url, "GET", "/healthz", &[]).0, 200);

    // The same list from the environment.
    let env = start(
        &d,
        &["--state", &d.path().join("env.db").display().to_string()],
        &[("MULTIJOB_ALLOW_HOSTS", "one.example,two.example")],
    );
    assert_eq!(with_host(&env, "two.example").0, 200);
    assert_eq!(with_host(&env, "dash.example").0, 403);
}

#[test]
fn a_repeated_access_token_is_refused() {
    let d = noop_dir();
    let daemon = start(&d, &[], &[("MULTIJOB_API_TOKEN", "s3cret")]);
    let get =
        |query: &str| common::http_raw(&daemon.url, "GET", &format!("/api/v1/events{query}"), &[]);
    assert_eq!(get("?access_token=s3cret").0, 200);
    for smuggled in [
        "?access_token=s3cret&access_token=wrong",
        "?access_token=wrong&access_token=s3cret",
        "?access_token=s3cret&access_token=s3cret",
    ] {
        let (code, body) = get(smuggled);
        assert_eq!(code, 400, "{smuggled}: {body}");
        assert!(body.contains("access_token is given 2 times"), "{body}");
    }
    assert_eq!(get("?access_token=wrong").0, 401);
}

#[test]
fn event_streams_leave_room_for_probes_and_api_calls() {
    let d = noop_dir();
    // 3 connections: at most 2 may be event streams.
    let daemon = start(&d, &[], &[("MULTIJOB_MAX_CONNECTIONS", "3")]);
    let first = common::SseStream::open(&daemon.url, "/api/v1/events", &[]);
    let second = common::SseStream::open(&daemon.url, "/api/v1/events", &[]);
    assert_eq!((first.status, second.status), (200, 200));
    let (code, body) = common::http_raw(
        &daemon.url,
        "GET",
        "/api/v1/events",
        &[("Accept", "text/event-stream")],
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("too many event streams"), "{body}");
    assert_eq!(common::http(&daemon.url, "GET", "/healthz", &[]).0, 200);
    let (code, page) = common::http(&daemon.url, "GET", "/api/v1/events?limit=5", &[]);
    assert_eq!(code, 200, "{page}");
    // A stream that ends gives its place back.
    drop(first);
    let again = (0..100).find_map(|_| {
        let s = common::SseStream::open(&daemon.url, "/api/v1/events", &[]);
        if s.status == 200 {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
        None
    });
    assert!(
        again.is_some(),
        "no stream after one closed\n{}",
        daemon.log()
    );
}
