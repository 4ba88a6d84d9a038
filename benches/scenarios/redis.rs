//! Scenario 6: no-op throughput of a Redis deployment with 1, 2 and 4
//! worker processes, next to what `redis-benchmark` reaches on the same
//! server (the ceiling), with CPU per run in multijob and in Redis.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multijob::testkit::RedisServer;

use super::{Daemon, Figure, Scale, bin, cpu_seconds, trigger_and_wait, wait_for};

pub(crate) struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_worker(url: &str, slots: usize) -> Worker {
    use std::io::BufRead;
    let mut child = Command::new(bin())
        .args(["worker", "--redis", url, "--workers"])
        .arg(slots.to_string())
        .arg("--data-dir")
        .arg(std::env::temp_dir().join("multijob-bench-worker"))
        .env("RUST_LOG", crate::daemon_log_filter())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("worker line");
    assert!(
        line.starts_with("worker "),
        "worker did not start: {line:?}"
    );
    Worker(child)
}

/// `redis-benchmark` XADD rate, plain and pipelined (16).
fn ceiling(port: u16, n: u64) -> (f64, f64) {
    let rate = |pipeline: &str| {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-n",
                &n.to_string(),
                "-q",
                "-P",
                pipeline,
            ])
            .args([
                "XADD",
                "bench:ceiling",
                "MAXLEN",
                "~",
                "10000",
                "*",
                "f",
                "v",
            ])
            .output();
        // "XADD ...: 123456.79 requests per second, p50=..."
        out.ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .and_then(|text| {
                text.rsplit(':').next().and_then(|rest| {
                    rest.split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                })
            })
            .unwrap_or(0.0)
    };
    (rate("1"), rate("16"))
}

/// What the leader runs with: as shipped (retention keeps 1,000 finished
/// runs per job, pressure mode at its default thresholds), or the tuned
/// settings of the older README figures (retention and pressure off).
#[derive(Clone, Copy, PartialEq)]
enum Settings {
    Defaults,
    Tuned,
}

impl Settings {
    fn label(self) -> &'static str {
        match self {
            Settings::Defaults => "defaults",
            Settings::Tuned => "retention+pressure off",
        }
    }
}

/// A leader (`run --redis --workers 0`) on `url`, with the bundled
/// no-op job `n`, ready.
fn start_leader(dir: &std::path::Path, url: &str, settings: Settings) -> Daemon {
    std::fs::create_dir_all(dir.join("jobs.d")).expect("jobs.d");
    std::fs::write(
        dir.join("jobs.d/n.yaml"),
        "id: n\ntype: noop\noverlap: allow\n",
    )
    .expect("job");
    let mut args = vec!["--redis", url, "--workers", "0"];
    let mut env = Vec::new();
    if settings == Settings::Tuned {
        args.extend(["--keep-runs", "100000000"]);
        env.extend([
            ("SCHEDULER_PRESSURE_DEPTH_HIGH", "100000000"),
            ("SCHEDULER_PRESSURE_DEPTH_LOW", "1"),
        ]);
    }
    let leader = Daemon::start_env(dir, &args, &env);
    assert!(wait_for(
        || leader.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(30)
    ));
    leader
}

/// One measured burst: `runs` no-op runs through a leader and `workers`
/// worker processes (64 slots each) on a fresh Redis. Returns runs/s.
fn burst(
    scale: Scale,
    workers: usize,
    settings: Settings,
    out: &mut Vec<Figure>,
) -> (f64, RedisServer) {
    let runs: u64 = match scale {
        Scale::Full => 100_000,
        Scale::Small => 2_000,
    };
    let full = scale == Scale::Full;
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let leader = start_leader(tmp.path(), &url, settings);
    let pool: Vec<Worker> = (0..workers).map(|_| start_worker(&url, 64)).collect();
    // Let the leader see the workers' heartbeats.
    std::thread::sleep(Duration::from_millis(1500));
    let worker_pids: Vec<u32> = pool.iter().map(|w| w.0.id()).collect();
    let leader_pid = leader.child.id();
    let redis_pid = redis.pid().unwrap_or(0);
    let workers_cpu = || worker_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let (leader0, workers0, redis0) = (
        cpu_seconds(leader_pid),
        workers_cpu(),
        cpu_seconds(redis_pid),
    );
    let start = Instant::now();
    let peak = trigger_and_wait(&leader, runs, &["--redis", &url]);
    let wall = start.elapsed().as_secs_f64();
    let per_run = |secs: f64| secs / runs as f64 * 1e6;
    let leader_cpu = per_run(cpu_seconds(leader_pid) - leader0);
    let workers_cpu = per_run(workers_cpu() - workers0);
    let redis_cpu = per_run(cpu_seconds(redis_pid) - redis0);
    let recorded = leader
        .get("/api/v1/status")
        .and_then(|v| v["runs_since_start"]["finished"].as_u64())
        .unwrap_or(0);
    let label = settings.label();
    let rate = runs as f64 / wall;
    let target =
        (full && workers == 2 && settings == Settings::Defaults).then_some((">=", 70_000.0));
    let mut figure = |name: String, value: f64, unit: &'static str, target| {
        out.push(Figure {
            scenario: "redis",
            name,
            value,
            unit,
            target,
        })
    };
    figure(
        format!("noop runs/s, Redis, {workers} worker(s), {label} ({runs} runs)"),
        rate,
        "1/s",
        target,
    );
    for (whose, cpu) in [
        ("leader", leader_cpu),
        ("workers", workers_cpu),
        ("redis-server", redis_cpu),
    ] {
        figure(format!("  CPU per run, {whose}"), cpu, "µs", None);
    }
    figure(
        "  runs finished as counted by the leader".into(),
        recorded as f64,
        "runs",
        Some((">=", runs as f64)),
    );
    figure("  leader peak RSS".into(), peak, "MB", None);
    (rate, redis)
}

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let full = scale == Scale::Full;
    let mut two_workers = 0.0;
    for workers in [1usize, 2, 4] {
        if !full && workers != 2 {
            continue;
        }
        let (rate, redis) = burst(scale, workers, Settings::Defaults, out);
        if workers != 2 {
            continue;
        }
        two_workers = rate;
        let n = if full { 300_000 } else { 20_000 };
        let (plain, pipelined) = ceiling(redis.port(), n);
        for (how, value) in [("plain", plain), ("pipelined 16", pipelined)] {
            out.push(Figure {
                scenario: "redis",
                name: format!("redis-benchmark XADD/s (ceiling), {how}"),
                value,
                unit: "1/s",
                target: None,
            });
        }
    }
    if full {
        burst(scale, 2, Settings::Tuned, out);
    }
    let best = peers(scale, out);
    if best > 0.0 {
        out.push(Figure {
            scenario: "redis",
            name: "2 workers at defaults / best peer".into(),
            value: two_workers / best,
            unit: "x",
            target: full.then_some((">=", 2.0)),
        });
    }
}

/// The peers of `../shared/peers` (a copy set up with its `run.sh setup`,
/// named by `MULTIJOB_BENCH_PEERS`) on a fresh Redis of the same build, in
/// this run: BullMQ (one Worker, concurrency 50) and apalis-redis tuned
/// (`promote+nolock`), each draining a bulk-added backlog. Returns the
/// best rate (0 when the peers are not set up).
fn peers(scale: Scale, out: &mut Vec<Figure>) -> f64 {
    let Some(dir) = std::env::var_os("MULTIJOB_BENCH_PEERS").map(std::path::PathBuf::from) else {
        eprintln!("redis: MULTIJOB_BENCH_PEERS unset: no peers in this run");
        return 0.0;
    };
    let n = match scale {
        Scale::Full => "50000",
        Scale::Small => "2000",
    };
    let mut best = 0.0f64;
    let runs: [(&str, Command); 2] = [
        ("BullMQ", {
            let mut c = Command::new("node");
            c.current_dir(dir.join("bullmq"))
                .args(["bench.js", n, "50"]);
            c
        }),
        ("apalis-redis promote+nolock", {
            let mut c = Command::new(dir.join("rust/target/release/apalis_bench"));
            c.args([n, "50", "10", "promote+nolock"]);
            c
        }),
    ];
    for (name, mut cmd) in runs {
        let redis = RedisServer::start().expect("redis-server");
        let output = cmd
            .env("REDIS_PORT", redis.port().to_string())
            .env("REDIS_URL", redis.url())
            .stderr(Stdio::null())
            .output();
        let rate = output
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find_map(|v| v["process_jobs_per_s"].as_f64())
            })
            .unwrap_or(0.0);
        if rate == 0.0 {
            eprintln!(
                "redis: peer {name} gave no figure (is {} set up?)",
                dir.display()
            );
        }
        best = best.max(rate);
        out.push(Figure {
            scenario: "redis",
            name: format!("peer {name} jobs/s ({n} jobs)"),
            value: rate,
            unit: "1/s",
            target: None,
        });
    }
    best
}
