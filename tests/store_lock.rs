//! One daemon per embedded store, against the real binary (#21): a second
//! daemon on the same store is refused and the first is unharmed; a start
//! whose port is taken never touches the store; a killed daemon's lock is
//! taken over; the CLI keeps working beside a running daemon; `trigger`
//! says when no daemon reads the store (embedded and Redis).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;

/// A job that writes one file per run, every second.
const STAMP: &str = "id: stamp\ntype: agent.workflow\nschedule: {every: 1s}\nsteps:\n  \
     - id: w\n    files: {write: \"slots/{{ run.id }}.txt\", content: x}\n";

const NOOP: &str = "id: once\ntype: noop\n";

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// `multijob run` that is expected to end by itself (refused), with a
/// deadline so a wrong start cannot hang the test.
fn run_expecting_exit(dir: &ConfigDir, listen: &str) -> common::Run {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    let all: Vec<String> = ["run", "--listen", listen, "--dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([path.display().to_string()])
        .collect();
    std::thread::spawn(move || {
        let _ = tx.send(common::run(&all, Some(&path)));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the refused daemon did not exit within 20 s")
}

#[test]
fn a_second_daemon_on_the_same_store_is_refused_and_each_slot_runs_once() {
    let d = ConfigDir::new();
    d.write("jobs.d/stamp.yaml", STAMP);
    let first = Daemon::start(d.path(), &[]);
    first.wait_until("/api/v1/jobs/stamp", "job stamp", |v| v["id"] == "stamp");
    let addr = first.url.trim_start_matches("http://").to_string();

    let second = run_expecting_exit(&d, "127.0.0.1:0");
    second.assert_code(1);
    let state = d.path().join(".multijob").join("state.db");
    let expected = format!(
        "another multijob (pid {}, listening on {addr}, since ",
        first.child.id()
    );
    let err = second.stderr();
    assert!(err.contains(&expected), "{}", second.explain());
    assert!(
        err.contains(&format!(") holds {}", state.display())),
        "{}",
        second.explain()
    );
    assert!(
        err.contains("another store with --dir or --state"),
        "{}",
        second.explain()
    );
    assert!(!err.contains("resuming"), "{}", second.explain());

    // The first goes on: three more slots, one file and one run each.
    std::thread::sleep(Duration::from_secs(3));
    let (_, runs) = first.get("/api/v1/runs?job=stamp&limit=200");
    let runs = runs["items"].as_array().cloned().unwrap_or_default();
    let succeeded = runs.iter().filter(|r| r["status"] == "succeeded").count();
    let written = files_in(&d.path().join(".multijob/data/slots"));
    assert!(succeeded >= 2, "{runs:#?}\n{}", first.log());
    // A run may be between its write and its record when we look.
    assert!(
        written == succeeded || written == succeeded + 1,
        "{written} files for {succeeded} succeeded runs\n{}",
        d.listing()
    );
    let log = first.log();
    assert!(!log.contains("UNIQUE constraint failed"), "{log}");
}

#[test]
fn a_start_whose_port_is_taken_leaves_the_store_untouched() {
    let d = ConfigDir::new();
    d.write("jobs.d/once.yaml", NOOP);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_expecting_exit(&d, &addr);
    out.assert_code(1);
    assert!(
        out.stderr().contains(&format!("listening on {addr}")),
        "{}",
        out.explain()
    );
    assert!(!out.stderr().contains("resuming"), "{}", out.explain());
    assert!(
        !d.path().join(".multijob").exists(),
        "a refused start created the store's folder\n{}",
        d.listing()
    );
}

#[test]
fn a_killed_daemons_lock_is_taken_over_by_the_next_start() {
    let d = ConfigDir::new();
    d.write("jobs.d/once.yaml", NOOP);
    let first = Daemon::start(d.path(), &[]);
    first.wait_until("/api/v1/jobs/once", "job once", |v| v["id"] == "once");
    let pid = first.child.id();
    first.signal("KILL");
    drop(first);

    let next = Daemon::start(d.path(), &[]);
    next.wait_until("/api/v1/jobs/once", "job once", |v| v["id"] == "once");
    let log = next.log();
    assert!(
        log.contains(&format!("took over a stale lock from pid {pid}")),
        "{log}"
    );
    // It works: a triggered run ends.
    let id = d.trigger("once", &[]);
    assert_eq!(next.run_ended(&id)["status"], "succeeded");
}

#[test]
fn the_cli_reads_and_queues_beside_a_running_daemon() {
    let d = ConfigDir::new();
    d.write("jobs.d/once.yaml", NOOP);
    d.write(
        "jobs.d/gated.yaml",
        "id: gated\ntype: noop\nrequires_approval: true\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/api/v1/jobs/gated", "job gated", |v| v["id"] == "gated");

    let state = d.path().join(".multijob/state.db");
    let state = state.display().to_string();
    d.run(&["plan", "--state", &state, "--detailed-exitcode"])
        .assert_code(0);
    let id = d.trigger("once", &[]);
    assert_eq!(daemon.run_ended(&id)["status"], "succeeded");
    let gated = d.trigger("gated", &[]);
    daemon.wait_until(&format!("/api/v1/runs/{gated}"), "awaiting approval", |v| {
        v["status"] == "awaiting_approval"
    });
    d.run(&["approvals", "list"])
        .assert_code(0)
        .assert_line("", &gated);
    let status = ["status", "--server", &daemon.url].map(String::from);
    common::run(&status, None).assert_code(0);
    let log = daemon.log();
    assert!(!log.contains("another multijob"), "{log}");
}

/// `trigger` without a daemon says its run waits for one; with one, not.
fn trigger_says_when_no_daemon_reads(redis: Option<&str>) {
    const NOBODY: &str = "queued; no daemon is running on this store";
    let d = ConfigDir::new();
    d.write("jobs.d/once.yaml", NOOP);
    let extra: Vec<&str> = match redis {
        Some(url) => vec!["--redis", url],
        None => vec![],
    };
    let mut daemon = Daemon::start(d.path(), &extra);
    daemon.wait_until("/api/v1/jobs/once", "job once", |v| v["id"] == "once");
    let mut args = vec!["trigger", "once"];
    args.extend_from_slice(&extra);
    // The leader of a Redis deployment says it is there once elected.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = d.run(&args);
        out.assert_code(0);
        if !out.stdout().contains(NOBODY) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            out.explain(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.signal("TERM");
    let stopped = Instant::now();
    while daemon.is_running() && stopped.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = d.run(&args);
    out.assert_code(0)
        .assert_line("queued;", "start one with `multijob run`");
    assert!(out.stdout().contains(NOBODY), "{}", out.explain());
}

#[test]
fn trigger_says_when_no_daemon_reads_the_embedded_store() {
    trigger_says_when_no_daemon_reads(None);
}

#[test]
fn trigger_says_when_no_daemon_reads_the_redis_store() {
    let server = RedisServer::start().expect("redis-server");
    trigger_says_when_no_daemon_reads(Some(&server.url()));
}
