//! Scenario: signed webhooks into the embedded store, at the defaults.
//!
//! One `kind: Trigger` (source `webhook`, no rate limit) starts a `noop`
//! job. Clients hold keep-alive connections and send requests signed as
//! the webhook connector signs them, each with its own delivery id, so
//! every `202` is a run durably queued (and then run by the same daemon).
//! - accepted/s: 32 connections sending as fast as answers come back;
//! - accept latency: the same, paced at half the measured rate, p50/p99
//!   of send-to-answer;
//! - slowloris: 500 connections each trickling a request head one byte a
//!   second while a client sends signed requests; the daemon's RSS before
//!   and during, and whether the signed requests were accepted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{Daemon, Figure, Scale, percentile, rss_of, wait_for};

/// A percentile (0..1) of `v`; NaN for none.
fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    percentile(v, p)
}

const SECRET: &str = "bench-hook-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn write_config(dir: &std::path::Path) {
    let jobs = dir.join("jobs.d");
    std::fs::create_dir_all(&jobs).expect("jobs.d");
    std::fs::write(
        jobs.join("hook.yaml"),
        "id: fulfil\ntype: noop\noverlap: allow\n---\n\
         kind: Trigger\nid: bench\nsource: webhook\njob: fulfil\n\
         secret: ${env:BENCH_HOOK_SECRET}\ninputs: {order: \"{{ payload.id }}\"}\n",
    )
    .expect("config");
}

/// A keep-alive HTTP/1.1 client for `POST /hooks/bench`.
struct Client {
    reader: BufReader<TcpStream>,
    addr: String,
}

impl Client {
    fn connect(addr: &str) -> Option<Client> {
        let s = TcpStream::connect(addr).ok()?;
        s.set_nodelay(true).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        Some(Client {
            reader: BufReader::new(s),
            addr: addr.to_string(),
        })
    }

    /// Send one signed delivery; its status code.
    fn post(&mut self, delivery: &str) -> Option<u16> {
        let body = format!("{{\"id\":\"{delivery}\",\"amount\":12.5}}");
        let t = jiff::Timestamp::now().as_second();
        let sig = multijob::signature::multijob_header(SECRET, t, body.as_bytes());
        let head = format!(
            "POST /hooks/bench HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-Multijob-Signature: {sig}\r\nX-Multijob-Delivery: {delivery}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.reader.get_mut().write_all(head.as_bytes()).ok()?;
        let mut line = String::new();
        self.reader.read_line(&mut line).ok()?;
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).ok()?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).ok()?;
        Some(status)
    }
}

/// `threads` clients sending for `secs`, each paced to one request per
/// `gap` (none: as fast as answers come); latencies (ms) of the `202`s
/// and the count of other answers.
fn load(
    addr: &str,
    threads: usize,
    secs: f64,
    gap: Option<Duration>,
    tag: &str,
) -> (Vec<f64>, u64) {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, tag) = (addr.to_string(), tag.to_string());
            std::thread::spawn(move || {
                let (mut lat, mut other) = (Vec::new(), 0u64);
                let Some(mut client) = Client::connect(&addr) else {
                    return (lat, 1);
                };
                let mut next = Instant::now();
                let mut i = 0u64;
                while Instant::now() < stop {
                    if let Some(gap) = gap {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += gap;
                    }
                    i += 1;
                    let t0 = Instant::now();
                    match client.post(&format!("{tag}-{t}-{i}")) {
                        Some(202) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                        Some(_) => other += 1,
                        None => {
                            other += 1;
                            match Client::connect(&addr) {
                                Some(c) => client = c,
                                None => break,
                            }
                        }
                    }
                }
                (lat, other)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut other = 0;
    for h in handles {
        let (lat, o) = h.join().unwrap_or_default();
        all.extend(lat);
        other += o;
    }
    (all, other)
}

/// `n` connections trickling a request head, one byte a second, until
/// `stop`; returns how many were open at the end.
fn slowloris(addr: &str, n: usize, stop: Instant) -> std::thread::JoinHandle<usize> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let mut socks: Vec<TcpStream> = (0..n)
            .filter_map(|_| TcpStream::connect(&addr).ok())
            .collect();
        let head = b"POST /hooks/bench HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let mut i = 0;
        while Instant::now() < stop {
            let byte = [head[i.min(head.len() - 1)]];
            socks.retain_mut(|s| s.write_all(&byte).is_ok());
            i += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        socks.len()
    })
}

fn fig(name: &str, value: f64, unit: &'static str, target: Option<(&'static str, f64)>) -> Figure {
    Figure {
        scenario: "inbound",
        name: name.to_string(),
        value,
        unit,
        target,
    }
}

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let (secs, threads, slow) = match scale {
        Scale::Full => (10.0, 32, 500),
        Scale::Small => (1.0, 4, 20),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    write_config(tmp.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::start_env(
        tmp.path(),
        &["--inbound-listen", &addr],
        &[("BENCH_HOOK_SECRET", SECRET)],
    );
    let up = wait_for(
        || Client::connect(&addr).and_then(|mut c| c.post("warm-up")) == Some(202),
        Duration::from_secs(20),
    );
    assert!(up, "the inbound listener never accepted a signed request");
    let rate = max_rate(&addr, threads, secs, out);
    half_rate(&addr, threads, secs, rate, out);
    beside_slow_clients(&daemon, &addr, slow, secs, out);
}

/// As fast as answers come back; the accepted rate.
fn max_rate(addr: &str, threads: usize, secs: f64, out: &mut Vec<Figure>) -> f64 {
    let (lat, other) = load(addr, threads, secs, None, "max");
    let rate = lat.len() as f64 / secs;
    assert!(
        !lat.is_empty(),
        "no signed request was accepted ({other} refused)"
    );
    out.push(fig(
        "inbound: signed webhooks accepted/s (embedded)",
        rate,
        "/s",
        Some((">=", 5_000.0)),
    ));
    out.push(fig(
        "inbound: requests not accepted during the max-rate run",
        other as f64,
        "",
        None,
    ));
    rate
}

/// Half of `rate`, spread over the clients: the accept latency.
fn half_rate(addr: &str, threads: usize, secs: f64, rate: f64, out: &mut Vec<Figure>) {
    let gap = Duration::from_secs_f64(threads as f64 / (rate / 2.0).max(1.0));
    let (mut lat, other) = load(addr, threads, secs, Some(gap), "half");
    out.push(fig(
        "inbound: accept latency p50 at half rate",
        pct(&mut lat, 0.5),
        "ms",
        None,
    ));
    out.push(fig(
        "inbound: accept latency p99 at half rate",
        pct(&mut lat, 0.99),
        "ms",
        Some(("<=", 20.0)),
    ));
    out.push(fig(
        "inbound: requests not accepted at half rate",
        other as f64,
        "",
        None,
    ));
}

/// `slow` clients trickling request heads while one client sends signed
/// requests: the daemon's RSS, and whether the signed ones got in.
fn beside_slow_clients(daemon: &Daemon, addr: &str, slow: usize, secs: f64, out: &mut Vec<Figure>) {
    let (_, rss_before) = rss_of(daemon.child.id());
    // Past the 5 s header timeout, so the listener has cut them by the end.
    let hold = Duration::from_secs_f64(secs.max(8.0));
    let slow_clients = slowloris(addr, slow, Instant::now() + hold);
    std::thread::sleep(Duration::from_secs(2));
    let (mut lat, other) = load(
        addr,
        2,
        hold.as_secs_f64() - 2.0,
        Some(Duration::from_millis(20)),
        "slow",
    );
    let (_, rss_during) = rss_of(daemon.child.id());
    let still_open = slow_clients.join().unwrap_or(0);
    out.push(fig(
        &format!("inbound: RSS growth under {slow} slow clients"),
        rss_during - rss_before,
        "MB",
        None,
    ));
    out.push(fig(
        "inbound: RSS under slow clients",
        rss_during,
        "MB",
        None,
    ));
    out.push(fig(
        "inbound: slow clients still open after the header timeout",
        still_open as f64,
        "",
        None,
    ));
    out.push(fig(
        "inbound: signed requests accepted beside slow clients",
        lat.len() as f64,
        "",
        None,
    ));
    out.push(fig(
        "inbound: p99 latency beside slow clients",
        pct(&mut lat, 0.99),
        "ms",
        None,
    ));
    out.push(fig(
        "inbound: signed requests refused beside slow clients",
        other as f64,
        "",
        None,
    ));
}
