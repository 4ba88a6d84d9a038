//! `multijob check` and `expect: {success_within}` with a real daemon, on
//! the embedded store and on Redis: exit 0 while a job succeeds, 2 once it
//! has not succeeded for `success_within` (also while the daemon is
//! stopped with SIGSTOP: the check judges with its own clock), 1 when it
//! cannot tell; the daemon raises each change once as an event and shows
//! `multijob_expectation_ok`.

mod common;

use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};

const SUCCEEDING: &str = "id: beat\ntype: simulation.heavy\nschedule: {every: 1s}\nexpect: {success_within: 5s}\nfailure_memory: {enabled: false}\ninputs: {work_ms: 10}\n";
const FAILING: &str = "id: beat\ntype: simulation.heavy\nschedule: {every: 1s}\nexpect: {success_within: 5s}\nfailure_memory: {enabled: false}\ninputs: {work_ms: 10, fail_rate: 1}\n";

/// Runs `check` with `store` args; it must answer within 5 s (a stopped
/// daemon must not make the read hang).
fn check(d: &ConfigDir, store: &[&str], extra: &[&str]) -> common::Run {
    let started = Instant::now();
    let run = d.run(&[&["check"], extra, store].concat());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "check took {:?}\n{}",
        started.elapsed(),
        run.explain()
    );
    run
}

/// Polls `check` until it exits `code`; the time it took.
#[track_caller]
fn until_code(d: &ConfigDir, store: &[&str], code: i32, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let run = check(d, store, &[]);
        if run.code() == Some(code) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "check did not exit {code} within {within:?}\n{}",
            run.explain()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn events(daemon: &Daemon, kind: &str) -> Vec<serde_json::Value> {
    let (_, page) = daemon.get(&format!("/api/v1/events?type={kind}&limit=50"));
    page["items"].as_array().cloned().unwrap_or_default()
}

fn metric_line(daemon: &Daemon) -> String {
    let (_, body) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    body.lines()
        .find(|l| l.starts_with("multijob_expectation_ok{"))
        .unwrap_or("")
        .to_string()
}

fn check_follows_the_job_and_outlives_a_stopped_daemon(redis: Option<&str>) {
    let d = ConfigDir::new();
    d.write("jobs.d/beat.yaml", SUCCEEDING);
    let store: Vec<&str> = redis.map(|url| vec!["--redis", url]).unwrap_or_default();
    let daemon = Daemon::start(d.path(), &store);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);

    // Succeeding: exit 0, the JSON names the job, its last success and the expectation.
    daemon.wait_until("/api/v1/expectations", "a success", |v| {
        v["items"][0]["last_success"].is_string()
    });
    let ok = check(&d, &store, &["-o", "json"]);
    ok.assert_code(0);
    let verdicts = ok.json();
    assert_eq!(verdicts[0]["job"], "beat", "{verdicts:#}");
    assert_eq!(verdicts[0]["expectation"]["success_within"], "5s");
    assert!(verdicts[0]["last_success"].is_string(), "{verdicts:#}");
    assert_eq!(verdicts[0]["broken"], false);
    let via_api = common::run(
        &["check".into(), "--server".into(), daemon.url.clone()],
        None,
    );
    via_api.assert_code(0);

    // Failing: exit 2 once 5 s passed without a success.
    d.write("jobs.d/beat.yaml", FAILING);
    let took = until_code(&d, &store, 2, Duration::from_secs(7));
    let broken = check(&d, &store, &["-o", "json"]);
    broken.assert_code(2);
    let v = broken.json();
    assert_eq!(v[0]["broken"], true, "{v:#}");
    assert!(v[0]["last_success"].is_string(), "{v:#}");
    let text = check(&d, &store, &[]);
    text.assert_line("beat BROKEN for", "no success within 5s");
    // The daemon raises the change once, and its gauge follows.
    daemon.wait_until("/api/v1/events?type=expectation.broken", "the event", |p| {
        p["items"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(
        metric_line(&daemon).ends_with(" 0"),
        "{}",
        metric_line(&daemon)
    );
    std::thread::sleep(Duration::from_secs(3));
    let raised = events(&daemon, "expectation.broken");
    assert_eq!(raised.len(), 1, "one event per change: {raised:#?}");
    assert_eq!(raised[0]["data"]["job"], "beat");
    assert_eq!(raised[0]["data"]["within"], "5s");

    // Succeeding again: exit 0, restored once.
    d.write("jobs.d/beat.yaml", SUCCEEDING);
    until_code(&d, &store, 0, Duration::from_secs(10));
    daemon.wait_until(
        "/api/v1/events?type=expectation.restored",
        "restored",
        |p| p["items"].as_array().is_some_and(|a| a.len() == 1),
    );
    assert!(
        metric_line(&daemon).ends_with(" 1"),
        "{}",
        metric_line(&daemon)
    );

    // A stopped daemon runs nothing: the check catches it by the clock.
    daemon.signal("STOP");
    let stopped = until_code(&d, &store, 2, Duration::from_secs(8));
    daemon.signal("CONT");
    assert!(
        stopped > Duration::from_secs(1),
        "broken too early: {stopped:?}"
    );
    until_code(&d, &store, 0, Duration::from_secs(10));
    eprintln!("broken {took:?} after the edit; {stopped:?} after SIGSTOP");
}

#[test]
fn check_follows_the_job_and_outlives_a_stopped_daemon_sqlite() {
    check_follows_the_job_and_outlives_a_stopped_daemon(None);
}

#[test]
fn check_follows_the_job_and_outlives_a_stopped_daemon_redis() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    check_follows_the_job_and_outlives_a_stopped_daemon(Some(&server.url()));
}

#[test]
fn check_without_a_store_or_a_server_exits_1_and_says_why() {
    let d = ConfigDir::new();
    let none = d.run(&["check"]);
    none.assert_code(1);
    none.assert_stderr_has("no store at");
    let unreachable = common::run(
        &[
            "check".into(),
            "--server".into(),
            "127.0.0.1:1".into(),
            "--timeout".into(),
            "2s".into(),
        ],
        None,
    );
    unreachable.assert_code(1);
    unreachable.assert_stderr_has("cannot reach the daemon");
    let bad = common::run(&["check".into(), "--server".into(), "ftp://x".into()], None);
    bad.assert_code(1);
    bad.assert_stderr_has("use http://");
}

#[test]
fn a_malformed_expectation_is_refused_with_its_place() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nexpect: {success_within: soon}\n",
    );
    d.write(
        "jobs.d/b.yaml",
        "id: b\ntype: noop\nexpect: {success_within: 0s}\n",
    );
    d.write("jobs.d/c.yaml", "id: c\ntype: noop\nexpect: {within: 5s}\n");
    let run = d.run(&["validate"]);
    run.assert_code(1);
    let out = format!("{}{}", run.stdout(), run.stderr());
    for file in ["a.yaml", "b.yaml", "c.yaml"] {
        assert!(out.contains(file), "{file} not reported:\n{out}");
    }
    assert!(out.contains("must be a positive duration"), "{out}");
}
