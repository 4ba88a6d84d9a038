//! A first start on an invalid directory, with the real binary: the daemon
//! says no revision was ever applied and where to fix it, `status` says so
//! and exits 1 until a valid revision is applied.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon, Run};

const BROKEN: &str = "id: heartbeat\ntype: nope\nschedule:\n  interval_sec: 30\n";
const FIXED: &str = "id: heartbeat\ntype: noop\nschedule:\n  interval_sec: 30\n";

/// Wait until the daemon's log has `text`, or fail with the log.
#[track_caller]
fn wait_for_log(daemon: &Daemon, text: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if daemon.log().contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no {text:?} in the daemon's log:\n{}", daemon.log());
}

/// `multijob status ARGS`, the server given by `MULTIJOB_SERVER` when
/// `env_server` is set (the way an operator's shell has it), by the flag
/// otherwise.
fn status(daemon: &Daemon, args: &[&str], env_server: bool) -> Run {
    let mut all: Vec<String> = vec!["status".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = Command::new(common::bin());
    cmd.env_remove("MULTIJOB_API_TOKEN");
    if env_server {
        cmd.env("MULTIJOB_SERVER", &daemon.url);
    } else {
        cmd.env_remove("MULTIJOB_SERVER");
        all.push("--server".into());
        all.push(daemon.url.clone());
    }
    let output = cmd.args(&all).output().expect("spawn multijob status");
    Run {
        command: format!("multijob {}", all.join(" ")),
        output,
        listing: String::new(),
    }
}

#[track_caller]
fn assert_not_applied(run: &Run) {
    run.assert_code(1);
    let err = run.stderr();
    assert!(
        err.contains("no revision applied yet")
            && err.contains("jobs.d/heartbeat.yaml:2:7")
            && err.contains("\"nope\" is not one of")
            && err.contains("fix jobs.d/heartbeat.yaml:2 and save"),
        "status must say why nothing runs and where to fix it\n{}",
        run.explain()
    );
}

#[test]
fn first_start_on_an_invalid_dir_waits_and_status_says_why() {
    first_start_on_an_invalid_dir(&[]);
}

/// The same on a Redis deployment: the replica that leads reconciles.
#[test]
fn first_start_on_redis_with_an_invalid_dir_waits_and_status_says_why() {
    let redis = multijob::testkit::RedisServer::start().expect("redis-server");
    first_start_on_an_invalid_dir(&["--redis", &redis.url()]);
}

/// Start a daemon (with `extra` arguments) on an invalid directory, then
/// fix it: the log line, `status` in text and JSON, by flag and by
/// environment, before and after.
fn first_start_on_an_invalid_dir(extra: &[&str]) {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", BROKEN);
    let daemon = Daemon::start(d.path(), extra);
    wait_for_log(
        &daemon,
        "no revision applied yet: fix jobs.d/heartbeat.yaml:2 and save; waiting",
    );
    let log = daemon.log();
    assert!(
        !log.contains("the last good revision keeps running"),
        "there never was a good revision:\n{log}"
    );
    // The findings stay in the line: how many, and the first in full.
    assert!(
        log.contains("errors") && log.contains("heartbeat.yaml:2:7: error[schema]"),
        "the rejection's findings:\n{log}"
    );

    for env_server in [false, true] {
        let text = status(&daemon, &[], env_server);
        assert_not_applied(&text);
        text.assert_line("revision", "no revision applied yet");
        text.assert_line("reconcile rejected", "heartbeat.yaml:2:7");
        let json = status(&daemon, &["--output", "json"], env_server);
        assert_not_applied(&json);
        assert!(
            json.json()["status"]["revision"].is_null(),
            "{}",
            json.explain()
        );
    }

    d.write("jobs.d/heartbeat.yaml", FIXED);
    let ready = daemon.wait_until("/readyz", "the fixed revision applied", |v| {
        v["ready"] == true
    });
    let revision = ready["revision"].as_str().unwrap_or_default().to_string();
    assert!(!revision.is_empty(), "{ready:#}");
    for env_server in [false, true] {
        let text = status(&daemon, &[], env_server);
        text.assert_code(0)
            .assert_line("revision", &revision)
            .assert_line("heartbeat", "noop");
        assert!(text.stderr().is_empty(), "{}", text.explain());
        status(&daemon, &["--output", "json"], env_server).assert_code(0);
    }
}

#[test]
fn a_later_rejection_keeps_the_good_revision_and_status_healthy() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", FIXED);
    let daemon = Daemon::start(d.path(), &[]);
    let ready = daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    d.write("jobs.d/heartbeat.yaml", BROKEN);
    wait_for_log(
        &daemon,
        "revision rejected; the last good revision keeps running",
    );
    assert!(
        !daemon.log().contains("no revision applied yet"),
        "a revision runs:\n{}",
        daemon.log()
    );
    status(&daemon, &[], false)
        .assert_code(0)
        .assert_line("revision", ready["revision"].as_str().unwrap_or("?"))
        .assert_line("reconcile rejected", "heartbeat.yaml:2:7");
}
