//! Scenario: a workflow fanning out with `schedule_job` (foreach,
//! concurrency 64), embedded and on Redis with two worker processes at
//! default settings: follow-ups created per second until the last of
//! them has finished.

use std::time::{Duration, Instant};

use multijob::testkit::RedisServer;

use super::{Daemon, Figure, Scale, wait_for};

/// `fan` schedules `per_run` runs of the no-op `n`, 64 at a time.
fn write_jobs(dir: &std::path::Path, per_run: u64) {
    std::fs::create_dir_all(dir.join("jobs.d")).expect("jobs.d");
    std::fs::write(
        dir.join("jobs.d/fan.yaml"),
        format!(
            "id: fan\ntype: agent.workflow\nlimits: {{follow_ups: {per_run}}}\nsteps:\n  \
             - id: each\n    foreach: \"{{{{ range({per_run}) | list }}}}\"\n    \
             concurrency: 64\n    schedule_job: {{job: n, delay_sec: 0}}\n---\n\
             id: n\ntype: noop\noverlap: allow\nlimits: {{queued_follow_ups: 100000}}\n"
        ),
    )
    .expect("jobs");
}

/// Trigger `fan` `fans` times; seconds until every follow-up finished.
fn fan_out(daemon: &Daemon, fans: u64, per_run: u64, store: &[&str]) -> f64 {
    let start = Instant::now();
    super::trigger("fan", fans, store);
    let want = fans * per_run + fans;
    let done = wait_for(
        || {
            daemon.get("/api/v1/status").is_some_and(|v| {
                v["runs_since_start"]["finished"].as_u64() == Some(want)
                    && v["store_backlog"].as_u64() == Some(0)
            })
        },
        Duration::from_secs(600),
    );
    assert!(done, "not every follow-up finished");
    start.elapsed().as_secs_f64()
}

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let (fans, per_run) = match scale {
        Scale::Full => (2u64, 10_000u64),
        Scale::Small => (2, 500),
    };
    let total = fans * per_run;
    let mut figure = |name: String, value: f64, target| {
        out.push(Figure {
            scenario: "fanout",
            name,
            value,
            unit: "1/s",
            target,
        })
    };
    {
        let tmp = tempfile::tempdir().expect("tmp");
        write_jobs(tmp.path(), per_run);
        let daemon = Daemon::start(tmp.path(), &[]);
        let secs = fan_out(
            &daemon,
            fans,
            per_run,
            &["--dir", &tmp.path().display().to_string()],
        );
        figure(
            format!("schedule_job fan-out, embedded ({total} follow-ups)"),
            total as f64 / secs,
            None,
        );
    }
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let tmp = tempfile::tempdir().expect("tmp");
    write_jobs(tmp.path(), per_run);
    let leader = Daemon::start(tmp.path(), &["--redis", &url, "--workers", "0"]);
    assert!(wait_for(
        || leader.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(30)
    ));
    let pool: Vec<_> = (0..2)
        .map(|_| super::redis::start_worker(&url, 64))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let secs = fan_out(&leader, fans, per_run, &["--redis", &url]);
    drop(pool);
    figure(
        format!("schedule_job fan-out, Redis, 2 workers ({total} follow-ups)"),
        total as f64 / secs,
        (scale == Scale::Full).then_some((">=", 10_000.0)),
    );
}
