//! Scenario: the cost of traces. The same N no-op runs on the embedded
//! store, with `MULTIJOB_OTLP_ENDPOINT` unset and then pointing at a local
//! sink that answers every export `200` at once; runs/s of each and the
//! ratio (target: tracing on keeps >= 90% of the throughput).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Daemon, Figure, Scale, trigger_and_wait, wait_for};

/// A sink that reads each request (by Content-Length), answers `200` and
/// counts it in `received`.
pub fn counting_sink(received: Arc<AtomicU64>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let addr = listener.local_addr().expect("the sink's address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let received = Arc::clone(&received);
            std::thread::spawn(move || serve(conn, &received));
        }
    });
    format!("http://{addr}")
}

fn serve(mut conn: std::net::TcpStream, received: &AtomicU64) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + 4 + len);
        received.fetch_add(1, Ordering::Relaxed);
        let reply =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if conn.write_all(reply).is_err() {
            return;
        }
    }
}

/// Runs/s of `runs` no-op runs, with `env` set on the daemon.
fn runs_per_sec(runs: u64, env: &[(&str, &str)]) -> f64 {
    let tmp = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(tmp.path().join("jobs.d")).expect("jobs.d");
    std::fs::write(
        tmp.path().join("jobs.d/n.yaml"),
        "id: n\ntype: noop\noverlap: allow\n",
    )
    .expect("the job");
    let mut all = vec![
        ("SCHEDULER_PRESSURE_DEPTH_HIGH", "100000000"),
        ("SCHEDULER_PRESSURE_DEPTH_LOW", "1"),
    ];
    all.extend_from_slice(env);
    let daemon = Daemon::start_env(
        tmp.path(),
        &["--workers", "16", "--keep-runs", "100000000"],
        &all,
    );
    assert!(wait_for(
        || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(30)
    ));
    let start = Instant::now();
    let dir = tmp.path().display().to_string();
    trigger_and_wait(&daemon, runs, &["--dir", &dir]);
    runs as f64 / start.elapsed().as_secs_f64()
}

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let runs: u64 = match scale {
        Scale::Full => 100_000,
        Scale::Small => 2_000,
    };
    let off = runs_per_sec(runs, &[]);
    let endpoint = counting_sink(Arc::default());
    let on = runs_per_sec(runs, &[("MULTIJOB_OTLP_ENDPOINT", &endpoint)]);
    let full = scale == Scale::Full;
    out.push(Figure {
        scenario: "otlp",
        name: format!("noop runs/s, traces off ({runs} runs, 16 workers)"),
        value: off,
        unit: "1/s",
        target: None,
    });
    out.push(Figure {
        scenario: "otlp",
        name: "noop runs/s, traces on (OTLP/HTTP to a local sink)".into(),
        value: on,
        unit: "1/s",
        target: None,
    });
    out.push(Figure {
        scenario: "otlp",
        name: "throughput with traces on / off".into(),
        value: on / off,
        unit: "ratio",
        target: full.then_some((">=", 0.9)),
    });
}
