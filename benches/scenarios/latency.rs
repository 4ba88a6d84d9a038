//! Scenario 7: enqueue-to-start latency at a steady load, both stores.
//!
//! The load is N `noop` jobs every 2 s, each with a fixed jitter in
//! [0, 1 s) (jitter must stay below the interval), so N runs arrive spread
//! over one second, then a second passes with none; N is half of the no-op
//! throughput measured for that store (see the README's tables: on Redis
//! half the 2-worker rate, 24,000; `MULTIJOB_BENCH_RATE_EMBEDDED` and
//! `MULTIJOB_BENCH_RATE_REDIS` override it). Latency is each run's
//! `started_at` less the moment it could start: its `queued_at`, plus the
//! `ahead_ms` of its `run.queued` event when the scheduler decided the slot
//! ahead of its fire time (up to 250 ms ahead when ticks are expensive, as
//! on Redis: such a run waits in the queue on purpose until it fires).
//! `started_at - queued_at`, which counts that wait, is reported beside it.
//! The runs of slots in the first interval after the daemon is ready are
//! reported apart: a cold start, not the steady load.
//! `MULTIJOB_BENCH_LEADER_THREADS=N` gives the Redis leader N runtime threads;
//! `MULTIJOB_BENCH_WORKER_SLOTS=N` gives each worker N slots (default 64).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use multijob::testkit::RedisServer;

use super::{Daemon, Figure, Scale, bin, http_get, percentile, wait_for};

pub(super) fn rate(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_jobs(dir: &std::path::Path, n: usize) {
    let jobs = dir.join("jobs.d");
    std::fs::create_dir_all(&jobs).expect("jobs.d");
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "id: l{i:05}\ntype: noop\nschedule: {{every: 2s, jitter_sec: 1}}\noverlap: allow\n---\n"
        ));
    }
    std::fs::write(jobs.join("load.yaml"), text).expect("jobs");
}

/// Run id → how far ahead of its fire time the scheduler queued it, in ms
/// (the `ahead_ms` of its `run.queued` event; absent: queued when due),
/// for runs queued up to `until` (epoch ms). The pages stop there: the
/// load goes on while they are read, and at half the 2-worker rate the
/// reader never caught up with the events still arriving (the leader
/// parsing pages for it without end, its memory growing).
fn queued_ahead(url: &str, until: f64) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut after = 0i64;
    loop {
        let path = format!("{url}/api/v1/events?limit=1000&type=run.queued&after={after}");
        let Some(page) = http_get(&path) else { break };
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for e in &items {
            if let (Some(run), Some(ms)) = (e["run_id"].as_str(), e["data"]["ahead_ms"].as_f64()) {
                out.insert(run.to_string(), ms);
            }
        }
        let past = items.last().and_then(|e| e["at"].as_str()).and_then(|at| {
            at.parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_millisecond() as f64 > until)
        });
        match page["next_cursor"].as_i64() {
            Some(c) if !items.is_empty() && past != Some(true) => after = c,
            _ => break,
        }
    }
    out
}

/// Latencies in ms of finished runs with slots in a window (epoch ms):
/// started - the moment it could start (`ready`), started - queued
/// (`queued`), and `ready` for the runs of the first cycle after the
/// start (`first_cycle`, slots before the window), not in the other two.
#[derive(Default)]
struct Latencies {
    ready: Vec<f64>,
    queued: Vec<f64>,
    first_cycle: Vec<f64>,
}

/// Of every finished run, paging the API (see [`Latencies`]). The first
/// cycle is apart: it measures a cold start (workers that joined before
/// the leader applied its jobs load all 12,500 of them then), not the
/// steady load. Slots after the window are left out: they fired while
/// these pages were read, and reading them competes with the runs.
fn latencies(url: &str, (steady_from, steady_to): (f64, f64)) -> Latencies {
    // A run of the window is queued before its slot, which is before
    // `steady_to`.
    let ahead = queued_ahead(url, steady_to);
    let mut out = Latencies::default();
    let mut cursor: Option<i64> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{url}/api/v1/runs?limit=1000&status=succeeded&cursor={c}"),
            None => format!("{url}/api/v1/runs?limit=1000&status=succeeded"),
        };
        let Some(page) = http_get(&path) else { break };
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for r in &items {
            let ts = |k: &str| {
                r[k].as_str()
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_millisecond() as f64)
            };
            if let (Some(q), Some(s)) = (ts("queued_at"), ts("started_at")) {
                let id = r["id"].as_str().unwrap_or_default();
                let could_start = q + ahead.get(id).copied().unwrap_or(0.0);
                let slot = ts("scheduled_at").unwrap_or(q);
                if slot >= steady_to {
                    continue;
                } else if slot < steady_from {
                    out.first_cycle.push(s - could_start);
                } else {
                    out.ready.push(s - could_start);
                    out.queued.push(s - q);
                }
            }
        }
        match page["next_cursor"].as_i64() {
            Some(c) if !items.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    out
}

/// A `multijob worker` process on Redis, stopped when dropped.
pub(super) struct Worker(Child);

impl Worker {
    pub(super) fn start(url: &str, slots: &str, data_dir: &std::path::Path) -> Worker {
        Worker(
            Command::new(bin())
                .args(["worker", "--redis", url, "--workers", slots])
                .arg("--data-dir")
                .arg(data_dir)
                .env("RUST_LOG", crate::daemon_log_filter())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("worker"),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let (secs, embedded_n, redis_n) = match scale {
        Scale::Full => (
            10u64,
            rate("MULTIJOB_BENCH_RATE_EMBEDDED", 8_000),
            // Half the 2-worker no-op rate at defaults (44,800-47,900/s in
            // sessions 20-21), where #26 asks for p99 <= 20 ms.
            rate("MULTIJOB_BENCH_RATE_REDIS", 24_000),
        ),
        Scale::Small => (3, 200, 200),
    };
    let env = [
        ("SCHEDULER_PRESSURE_DEPTH_HIGH", "100000000"),
        ("SCHEDULER_PRESSURE_DEPTH_LOW", "1"),
    ];
    let leader_threads = std::env::var("MULTIJOB_BENCH_LEADER_THREADS").ok();
    // Each worker's slots (default 64, as in the throughput scenario).
    let worker_slots =
        std::env::var("MULTIJOB_BENCH_WORKER_SLOTS").unwrap_or_else(|_| "64".to_string());
    for store in ["embedded", "redis"] {
        let n = if store == "embedded" {
            embedded_n
        } else {
            redis_n
        };
        let tmp = tempfile::tempdir().expect("tmp");
        write_jobs(tmp.path(), n);
        let redis = (store == "redis").then(|| RedisServer::start().expect("redis-server"));
        let url = redis.as_ref().map(|r| r.url());
        let mut args: Vec<&str> = vec!["--workers", "16", "--keep-runs", "100000000"];
        let mut _workers = Vec::new();
        if let Some(u) = &url {
            args = vec!["--redis", u, "--workers", "0", "--keep-runs", "100000000"];
            // The leader's runtime threads (default: 1 with --workers 0).
            if let Some(threads) = leader_threads.as_deref() {
                args.extend(["--threads", threads]);
            }
            for _ in 0..2 {
                _workers.push(Worker::start(u, &worker_slots, &tmp.path().join("data")));
            }
        }
        let daemon = Daemon::start_env(tmp.path(), &args, &env);
        assert!(
            wait_for(
                || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
                Duration::from_secs(60)
            ),
            "the {store} daemon did not get ready with {n} jobs"
        );
        // Slots from one interval (2 s) after the daemon was ready on.
        let steady_from = jiff::Timestamp::now().as_millisecond() as f64 + 2_000.0;
        std::thread::sleep(Duration::from_secs(secs + 2));
        // Runs of later slots still finish while the pages are read.
        let steady_to = jiff::Timestamp::now().as_millisecond() as f64 - 1_000.0;
        let Latencies {
            ready: mut lat,
            queued: mut from_queued,
            mut first_cycle,
        } = latencies(&daemon.url, (steady_from, steady_to));
        assert!(!lat.is_empty(), "no finished run on the {store} store");
        let label = format!("{store} store, {n} runs/s arriving");
        // The target is #26's, for Redis at half the 2-worker rate.
        let p99_target = (store == "redis" && scale == Scale::Full).then_some(("<=", 20.0));
        out.extend(super::p50_p99(
            "latency",
            "ready-to-start",
            &label,
            &mut lat,
            p99_target,
        ));
        let mut figure = |name: String, value: f64| {
            out.push(Figure {
                scenario: "latency",
                name,
                value,
                unit: "ms",
                target: None,
            })
        };
        figure(
            format!("queued-to-start p99 (counts the scheduler's lead), {label}"),
            percentile(&mut from_queued, 0.99),
        );
        if !first_cycle.is_empty() {
            let n = first_cycle.len();
            figure(
                format!("ready-to-start p99 of the first cycle after start, {label} ({n} runs)"),
                percentile(&mut first_cycle, 0.99),
            );
        }
    }
}
