//! Scenario 6: no-op throughput of a Redis deployment with 1, 2 and 4
//! worker processes, next to what `redis-benchmark` reaches on the same
//! server (the ceiling), with CPU per run in multijob and in Redis.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multijob::testkit::RedisServer;

use super::{Daemon, Figure, Scale, bin, cpu_seconds, trigger_and_wait, wait_for};

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(url: &str, slots: usize) -> Worker {
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

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let runs: u64 = match scale {
        Scale::Full => 100_000,
        Scale::Small => 2_000,
    };
    let full = scale == Scale::Full;
    for workers in [1usize, 2, 4] {
        if !full && workers != 2 {
            continue;
        }
        let redis = RedisServer::start().expect("redis-server");
        let url = redis.url();
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(tmp.path().join("jobs.d")).expect("jobs.d");
        std::fs::write(
            tmp.path().join("jobs.d/n.yaml"),
            "id: n\ntype: noop\noverlap: allow\n",
        )
        .expect("job");
        // The replica leads (schedules, applies results); workers execute.
        let leader = Daemon::start_env(
            tmp.path(),
            &[
                "--redis",
                &url,
                "--workers",
                "0",
                "--keep-runs",
                "100000000",
            ],
            &[
                ("SCHEDULER_PRESSURE_DEPTH_HIGH", "100000000"),
                ("SCHEDULER_PRESSURE_DEPTH_LOW", "1"),
            ],
        );
        assert!(wait_for(
            || leader.get("/readyz").is_some_and(|v| v["ready"] == true),
            Duration::from_secs(30)
        ));
        let pool: Vec<Worker> = (0..workers).map(|_| start_worker(&url, 64)).collect();
        // Let the leader see the workers' heartbeats.
        std::thread::sleep(Duration::from_millis(1500));
        let mut pids: Vec<u32> = pool.iter().map(|w| w.0.id()).collect();
        pids.push(leader.child.id());
        let redis_pid = redis.pid().unwrap_or(0);
        let cpu0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        let redis_cpu0 = cpu_seconds(redis_pid);
        let start = Instant::now();
        let peak = trigger_and_wait(&leader, runs, &["--redis", &url]);
        let wall = start.elapsed().as_secs_f64();
        let cpu: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu0;
        let redis_cpu = cpu_seconds(redis_pid) - redis_cpu0;
        let recorded = leader
            .get("/api/v1/status")
            .and_then(|v| v["runs_since_start"]["finished"].as_u64())
            .unwrap_or(0);
        out.push(Figure {
            scenario: "redis",
            name: format!("noop runs/s, Redis, {workers} worker process(es) ({runs} runs)"),
            value: runs as f64 / wall,
            unit: "1/s",
            target: (full && workers == 2).then_some((">=", 70_000.0)),
        });
        out.push(Figure {
            scenario: "redis",
            name: format!("  CPU per run in multijob processes ({workers} workers)"),
            value: cpu / runs as f64 * 1e6,
            unit: "µs",
            target: None,
        });
        out.push(Figure {
            scenario: "redis",
            name: format!("  CPU per run in redis-server ({workers} workers)"),
            value: redis_cpu / runs as f64 * 1e6,
            unit: "µs",
            target: None,
        });
        out.push(Figure {
            scenario: "redis",
            name: format!("  runs finished as counted by the leader ({workers} workers)"),
            value: recorded as f64,
            unit: "runs",
            target: Some((">=", runs as f64)),
        });
        out.push(Figure {
            scenario: "redis",
            name: format!("  leader peak RSS ({workers} workers)"),
            value: peak,
            unit: "MB",
            target: None,
        });
        if workers == 2 || !full {
            drop(pool);
            drop(leader);
            let n = if full { 300_000 } else { 20_000 };
            let (plain, pipelined) = ceiling(redis.port(), n);
            out.push(Figure {
                scenario: "redis",
                name: "redis-benchmark XADD/s (ceiling), plain".into(),
                value: plain,
                unit: "1/s",
                target: None,
            });
            out.push(Figure {
                scenario: "redis",
                name: "redis-benchmark XADD/s (ceiling), pipelined 16".into(),
                value: pipelined,
                unit: "1/s",
                target: None,
            });
        }
    }
}
