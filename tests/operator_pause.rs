//! `multijob pause`, `resume` and `reset` with the real binary, on the
//! embedded store beside a running daemon and on Redis: one table of
//! checks over both backends.

mod common;

use std::time::Duration;

use common::Daemon;
use common::deployment::{Deployment, events, runs, wait_for};

const TICK: &str = "id: tick\ntype: noop\nschedule: {every: 1s}\n";
/// Fails every attempt; cools down after two failures in a row.
const FLAKY: &str = "id: flaky\ntype: simulation.heavy\nschedule: {every: 1s}\n\
failure_memory: {threshold: 2, cooldown_sec: 600, cooldown_max_sec: 600}\ninputs: {fail_attempts: 1000}\n";

fn pause_and_resume(redis: bool) {
    let dep = Deployment::new(redis, &[("tick.yaml", TICK)]);
    let daemon = dep.daemon();
    wait_for("a first scheduled run", &daemon, || {
        (!runs(&daemon, "tick").is_empty()).then_some(())
    });
    let out = dep.cli(&["pause", "tick", "--note", "vendor down", "--by", "ann"]);
    out.assert_code(0).assert_line(
        "paused job tick (by ann: vendor down)",
        "until `multijob resume tick`",
    );
    let again = dep.cli(&["pause", "tick", "--by", "bob"]);
    again
        .assert_code(0)
        .assert_line("job tick is already paused since", "by ann: vendor down");
    // Slots now skip, each with its event, and no scheduled run starts.
    let skipped = wait_for("two paused skips", &daemon, || {
        let e = events(&daemon, "scheduler.dispatch_skipped_paused", "tick");
        (e.len() >= 2).then_some(e)
    });
    assert_eq!(skipped[0]["data"]["reason"], "paused", "{:#}", skipped[0]);
    let before = runs(&daemon, "tick").len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        runs(&daemon, "tick").len(),
        before,
        "a paused job got a scheduled run"
    );
    // A manual run still goes ahead, and says so.
    let trig = dep.cli(&["trigger", "tick"]);
    trig.assert_code(0)
        .assert_line("job tick is paused", "this manual run goes ahead");
    // The API, `status` and `plan` show it.
    let (_, job) = daemon.get("/api/v1/jobs/tick");
    assert_eq!(job["paused"]["by"], "ann", "{job:#}");
    assert_eq!(job["paused"]["note"], "vendor down");
    let args = ["status", "--server", &daemon.url, "--output", "json"].map(String::from);
    let status = common::run(&args, None);
    let status = status.assert_code(0).json();
    let row = status["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["id"] == "tick").cloned());
    assert_eq!(row.map(|r| r["paused"]["by"].clone()), Some("ann".into()));
    dep.cli(&["plan"])
        .assert_code(0)
        .assert_line("  job/tick paused outside git since", "by ann: vendor down");
    let plan = dep.cli(&["plan", "--output", "json"]);
    let plan = plan.assert_code(0).json();
    assert_eq!(plan["outside_git"][0]["id"], "tick", "{plan:#}");
    assert_eq!(plan["outside_git"][0]["paused"]["note"], "vendor down");
    // The pause survives a restart.
    drop(daemon);
    let daemon = dep.daemon();
    let (_, job) = daemon.get("/api/v1/jobs/tick");
    assert_eq!(job["paused"]["by"], "ann", "lost on restart: {job:#}");
    let seen = events(&daemon, "scheduler.dispatch_skipped_paused", "tick").len();
    wait_for("a paused skip after the restart", &daemon, || {
        (events(&daemon, "scheduler.dispatch_skipped_paused", "tick").len() > seen).then_some(())
    });
    // Resume: the next slot runs.
    dep.cli(&["resume", "tick", "--by", "bob"])
        .assert_code(0)
        .assert_line("resumed job tick (paused since", "by ann: vendor down");
    let scheduled = |d: &Daemon| {
        runs(d, "tick")
            .iter()
            .filter(|r| r["trigger"] == "schedule")
            .count()
    };
    let before = scheduled(&daemon);
    wait_for("a scheduled run after resume", &daemon, || {
        (scheduled(&daemon) > before).then_some(())
    });
    assert_eq!(
        events(&daemon, "job.resumed", "tick")[0]["data"]["by"],
        "bob"
    );
    dep.cli(&["resume", "tick"])
        .assert_code(0)
        .assert_line("job tick is not paused", "nothing to resume");
    dep.cli(&["plan"])
        .assert_code(0)
        .assert_stdout_lacks("outside git");
    hostile(&dep, &daemon);
    from_git(&dep, &daemon);
}

/// A paused job is still reconciled from git: an update keeps the pause,
/// deleting the job drops it.
fn from_git(dep: &Deployment, daemon: &Daemon) {
    dep.cli(&["pause", "tick", "--by", "ann"]).assert_code(0);
    dep.dir
        .write("jobs.d/tick.yaml", &format!("{TICK}description: updated\n"));
    dep.dir
        .write("jobs.d/other.yaml", "id: other\ntype: noop\n");
    daemon.signal("HUP");
    let job = daemon.wait_until("/api/v1/jobs/tick", "the update", |j| {
        j["spec"]["description"] == "updated"
    });
    assert_eq!(
        job["paused"]["by"], "ann",
        "an update from git dropped the pause: {job:#}"
    );
    dep.dir.remove("jobs.d/tick.yaml");
    daemon.signal("HUP");
    daemon.wait_until("/api/v1/jobs/other", "the deletion", |_| true);
    wait_for("the pause dropped with the job", daemon, || {
        let resumed = events(daemon, "job.resumed", "tick");
        resumed
            .iter()
            .any(|e| e["data"]["by"] == "reconcile")
            .then_some(())
    });
    dep.cli(&["plan"])
        .assert_code(0)
        .assert_stdout_lacks("outside git");
}

/// Unknown jobs and malformed input fail clearly; the daemon keeps serving.
fn hostile(dep: &Deployment, daemon: &Daemon) {
    for cmd in ["pause", "resume", "reset"] {
        let out = dep.cli(&[cmd, "tik"]);
        out.assert_code(1);
        assert!(
            out.stderr()
                .contains("no job `tik` in the applied revision")
                && out.stderr().contains("did you mean `tick`?"),
            "{}",
            out.explain()
        );
    }
    let long = "x".repeat(100_000);
    dep.cli(&["pause", &long]).assert_code(1);
    let (code, _) = daemon.get("/readyz");
    assert_eq!(code, 200, "the daemon stopped serving\n{}", daemon.log());
}

fn reset_clears_a_cooldown(redis: bool) {
    let dep = Deployment::new(redis, &[("flaky.yaml", FLAKY)]);
    let daemon = dep.daemon();
    let cooling = daemon.wait_until("/api/v1/jobs/flaky", "the cooldown", |v| {
        v["failure_memory"]["cooldown_until"].is_string()
    });
    let failures = cooling["failure_memory"]["consecutive_failures"]
        .as_u64()
        .unwrap_or(0);
    wait_for("a cooldown skip", &daemon, || {
        (!events(&daemon, "scheduler.dispatch_skipped_cooldown", "flaky").is_empty()).then_some(())
    });
    let before = runs(&daemon, "flaky").len();
    let out = dep.cli(&["reset", "flaky", "--by", "ann"]);
    out.assert_code(0).assert_line(
        &format!("reset the failure memory of job flaky: cleared {failures} consecutive failures, a cooldown until"),
        "its next slot runs",
    );
    let reset = events(&daemon, "job.failure_memory_reset", "flaky");
    assert_eq!(reset.len(), 1, "{reset:?}");
    assert_eq!(reset[0]["data"]["by"], "ann");
    assert!(
        reset[0]["data"]["previous"]["cooldown_until"].is_string(),
        "{:#}",
        reset[0]
    );
    wait_for("a run after the reset", &daemon, || {
        (runs(&daemon, "flaky").len() > before).then_some(())
    });
    // A second reset right away may find the new failure, or nothing to clear.
    let again = dep.cli(&["reset", "flaky", "-o", "json"]);
    again.assert_code(0);
    assert_eq!(again.json()["action"], "reset");
}

#[test]
fn pause_and_resume_on_the_embedded_store() {
    pause_and_resume(false);
}

#[test]
fn pause_and_resume_on_redis() {
    pause_and_resume(true);
}

#[test]
fn reset_clears_a_cooldown_on_the_embedded_store() {
    reset_clears_a_cooldown(false);
}

#[test]
fn reset_clears_a_cooldown_on_redis() {
    reset_clears_a_cooldown(true);
}
