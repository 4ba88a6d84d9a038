//! The daemon says what happens, at `info`, against the real binary (#21):
//! a line per finished run, rate-limited lines for skipped slots, a line
//! per change of an applied revision, a warning for an API open to the
//! network without a token, and no colour codes in a piped log.

mod common;

use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};

/// The first log line holding every one of `parts`, waiting for it.
#[track_caller]
fn log_line(daemon: &Daemon, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let log = daemon.log();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no log line with {parts:?}\n--- daemon log ---\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A finished run's line, from the embedded daemon or a Redis leader.
fn finished_run_lines(redis: Option<&str>) {
    let d = ConfigDir::new();
    d.write("jobs.d/ok.yaml", "id: ok\ntype: noop\n");
    d.write(
        "jobs.d/bad.yaml",
        "id: bad\ntype: command\nretry_policy: {max_retry: 0}\n\
         inputs: {argv: [/bin/sh, -c, 'echo oops >&2; exit 3']}\n",
    );
    let store: Vec<&str> = redis.map(|url| vec!["--redis", url]).unwrap_or_default();
    let mut extra = vec!["--allow-command"];
    extra.extend_from_slice(&store);
    let daemon = Daemon::start(d.path(), &extra);
    daemon.wait_until("/api/v1/jobs/bad", "job bad", |v| v["id"] == "bad");

    let ok = d.trigger("ok", &store);
    daemon.run_ended(&ok);
    let line = log_line(&daemon, &["run finished", &ok]);
    for field in [
        "job=ok",
        &format!("run={ok}"),
        "trigger=manual",
        "attempt=1",
        "status=succeeded",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing in {line:?}");
    }
    assert!(!line.contains("error="), "{line:?}");

    let bad = d.trigger("bad", &store);
    let run = daemon.run_ended(&bad);
    assert_eq!(run["error"], "exit code 3: oops", "{run:#}");
    let line = log_line(&daemon, &["run finished", &bad]);
    for field in [
        "job=bad",
        "status=failed",
        "attempt=1",
        "error=\"exit code 3: oops\"",
    ] {
        assert!(line.contains(field), "{field} missing in {line:?}");
    }
    assert!(
        !daemon.log().contains('\u{1b}'),
        "colour codes in a piped log:\n{}",
        daemon.log()
    );
}

#[test]
fn a_finished_run_is_one_line_with_its_job_id_trigger_attempt_status_duration_and_error() {
    finished_run_lines(None);
}

#[test]
fn a_redis_leader_logs_a_finished_run_in_one_line_too() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    finished_run_lines(Some(&server.url()));
}

#[test]
fn an_applied_revision_logs_each_change_with_its_field_paths() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/heartbeat.yaml",
        "id: heartbeat\ntype: noop\nschedule: {every: 1h}\n",
    );
    d.write("jobs.d/old.yaml", "id: old\ntype: noop\n");
    let daemon = Daemon::start(d.path(), &["--watch-poll", "0.2"]);
    log_line(&daemon, &["job/heartbeat created"]);
    d.write(
        "jobs.d/heartbeat.yaml",
        "id: heartbeat\ntype: noop\nschedule: {every: 2h}\n",
    );
    d.remove("jobs.d/old.yaml");
    d.write("jobs.d/new.yaml", "id: new\ntype: noop\n");
    log_line(&daemon, &["job/heartbeat updated: schedule.every"]);
    log_line(&daemon, &["job/old deleted"]);
    log_line(&daemon, &["job/new created"]);
}

#[test]
fn many_skipped_slots_give_a_few_lines_not_one_per_slot() {
    let d = ConfigDir::new();
    for i in 0..30 {
        d.write(
            &format!("jobs.d/j{i}.yaml"),
            &format!("id: j{i:02}\ntype: noop\nschedule: {{every: 1s}}\n"),
        );
    }
    let daemon = Daemon::start_env(d.path(), &[], &[("SCHEDULER_MAX_DISPATCH_PER_TICK", "1")]);
    // The first skip is said at once, the ones after it ten seconds later.
    log_line(&daemon, &["skipped 1 slot: tick_limit (job j"]);
    let burst = log_line(&daemon, &["slots in the last 1", "s: tick_limit (jobs j"]);
    let (_, status) = daemon.get("/api/v1/status");
    let log = daemon.log();
    let lines = log.lines().filter(|l| l.contains("tick_limit")).count();
    assert!(lines <= 3, "{lines} lines about tick_limit\n{log}");
    let skipped: u64 = burst
        .split("skipped ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(skipped >= 100, "{burst:?}\n{status:#}");
    assert!(burst.contains("... and "), "{burst:?}");
}

#[test]
fn an_api_open_to_the_network_without_a_token_is_warned_about() {
    let d = ConfigDir::new();
    d.write("jobs.d/ok.yaml", "id: ok\ntype: noop\n");
    const WARNING: &str = "without a token";
    let open = Daemon::start_on("0.0.0.0:0", d.path(), &[], &[]);
    let line = log_line(&open, &[WARNING]);
    assert!(
        line.contains("WARN") && line.contains("MULTIJOB_API_TOKEN"),
        "{line:?}"
    );
    drop(open);

    let d = ConfigDir::new();
    d.write("jobs.d/ok.yaml", "id: ok\ntype: noop\n");
    let guarded = Daemon::start_on(
        "0.0.0.0:0",
        d.path(),
        &[],
        &[("MULTIJOB_API_TOKEN", "s3cret-token")],
    );
    log_line(&guarded, &["multijob is running"]);
    assert!(!guarded.log().contains(WARNING), "{}", guarded.log());

    let d = ConfigDir::new();
    d.write("jobs.d/ok.yaml", "id: ok\ntype: noop\n");
    let local = Daemon::start(d.path(), &[]);
    log_line(&local, &["multijob is running"]);
    assert!(!local.log().contains(WARNING), "{}", local.log());
}
