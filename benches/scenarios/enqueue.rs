//! Scenario: enqueue-to-start latency of triggered runs on Redis, at a
//! steady rate and default settings (leader `run --redis --workers 0`,
//! two `worker --workers 64`). A client posts a trigger of 48 no-op runs
//! every 2 ms, as `multijob trigger --count 48` does (24,000 runs/s: half
//! the 2-worker no-op rate in the README; `MULTIJOB_BENCH_RATE_TRIGGER`
//! sets another). The triggers go round [`JOBS`] no-op jobs, so that
//! default retention (1,000 finished runs a job) keeps every run to read
//! back. Latency is each run's `started_at` less the moment its trigger
//! was posted: the wait in the inbox, admission and the claim. The first
//! 2 s are a warm-up, left out. `latency` measures the other case: the
//! scheduler's slots of many jobs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use multijob::store::Store;
use multijob::store::runs::InboxCommand;
use multijob::testkit::RedisServer;

use super::latency::Worker;
use super::{Daemon, Figure, Scale, http_get, percentile, wait_for};

/// A trigger is posted this often.
const POST_EVERY: Duration = Duration::from_millis(2);
/// No-op jobs the triggers go round.
const JOBS: usize = 600;
/// Left out of the figures: the first posts meet a cold leader.
const WARM_UP: Duration = Duration::from_secs(2);

fn now_ms() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64
}

/// Posts `per_post` runs every [`POST_EVERY`] for `secs`: how many
/// triggers were posted, and each one's first run id and when it was
/// posted (epoch ms), warm-up excluded.
fn post_load(url: &str, secs: u64, per_post: u32) -> (u64, HashMap<String, f64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::open_redis(url).await.expect("open the store");
        let start = Instant::now();
        let mut next = tokio::time::Instant::now();
        let mut posted = HashMap::new();
        let mut job = 0;
        let mut posts = 0;
        while start.elapsed() < Duration::from_secs(secs) {
            let run_id = multijob::run::new_run_id();
            let at = now_ms();
            let command = InboxCommand::Trigger {
                run_id: run_id.clone(),
                job_id: format!("n{job:03}"),
                inputs: serde_json::Value::Null,
                count: per_post,
            };
            store.post_to_inbox(&command).await.expect("post a trigger");
            posts += 1;
            if start.elapsed() >= WARM_UP {
                posted.insert(run_id, at);
            }
            job = (job + 1) % JOBS;
            next += POST_EVERY;
            tokio::time::sleep_until(next).await;
        }
        (posts, posted)
    })
}

/// Milliseconds from post to start of every finished run of a posted
/// trigger (`<id>` and `<id>-<n>` share `<id>`'s post time).
fn latencies(api: &str, posted: &HashMap<String, f64>) -> Vec<f64> {
    let mut out = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("{api}/api/v1/runs?limit=1000&status=succeeded&cursor={c}"),
            None => format!("{api}/api/v1/runs?limit=1000&status=succeeded"),
        };
        let Some(page) = http_get(&path) else { break };
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for r in &items {
            let id = r["id"].as_str().unwrap_or_default();
            // A run id is 36 characters; a bulk trigger's later runs add `-<n>`.
            let Some(posted_at) = id.get(..36).and_then(|base| posted.get(base)) else {
                continue;
            };
            let started = r["started_at"]
                .as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok());
            if let Some(s) = started {
                out.push(s.as_millisecond() as f64 - posted_at);
            }
        }
        match page["next_cursor"].as_i64() {
            Some(c) if !items.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    out
}

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let (secs, rate) = match scale {
        Scale::Full => (
            12u64,
            super::latency::rate("MULTIJOB_BENCH_RATE_TRIGGER", 24_000),
        ),
        Scale::Small => (3, 1_000),
    };
    let per_post = u32::try_from((rate as u128 * POST_EVERY.as_millis() / 1000).max(1))
        .expect("runs per post");
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("jobs.d")).expect("jobs.d");
    let jobs: String = (0..JOBS)
        .map(|i| format!("id: n{i:03}\ntype: noop\noverlap: allow\n---\n"))
        .collect();
    std::fs::write(tmp.path().join("jobs.d/noop.yaml"), jobs).expect("jobs");
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let _workers: Vec<Worker> = (0..2)
        .map(|_| Worker::start(&url, "64", &tmp.path().join("data")))
        .collect();
    let daemon = Daemon::start(tmp.path(), &["--redis", &url, "--workers", "0"]);
    assert!(
        wait_for(
            || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
            Duration::from_secs(60)
        ),
        "the daemon did not get ready"
    );
    let (posts, posted) = post_load(&url, secs, per_post);
    let all = posts * u64::from(per_post);
    let done = wait_for(
        || {
            daemon
                .get("/api/v1/status")
                .and_then(|v| v["runs_since_start"]["finished"].as_u64())
                .is_some_and(|n| n >= all)
        },
        Duration::from_secs(120),
    );
    assert!(done, "the posted runs did not finish");
    let mut lat = latencies(&daemon.url, &posted);
    let want = (posted.len() as u64) * u64::from(per_post);
    assert_eq!(lat.len() as u64, want, "a posted run is missing");
    let label = format!("redis store, triggers of {per_post} runs every 2 ms ({rate} runs/s)");
    // #26's latency target, at half the 2-worker rate.
    let p99_target = (scale == Scale::Full).then_some(("<=", 20.0));
    let [p50, p99] = super::p50_p99("enqueue", "enqueue-to-start", &label, &mut lat, p99_target);
    out.extend([p50, p99]);
    out.push(Figure {
        scenario: "enqueue",
        name: format!("enqueue-to-start max, {label}"),
        value: percentile(&mut lat, 1.0),
        unit: "ms",
        target: None,
    });
}
