//! Worker groups (`multijob worker --group NAME`, a job's `worker_group`)
//! with real processes: a `run --redis` leader that only schedules, worker
//! processes per group, a real `redis-server`; and the embedded daemon,
//! whose own pool serves every group.

mod common;

use std::time::{Duration, Instant};

use common::worker::{FAST, WorkerProc};
use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;
use serde_json::Value;

fn leader(dir: &ConfigDir, redis: &RedisServer) -> Daemon {
    let url = redis.url();
    let d = Daemon::start_env(dir.path(), &["--redis", &url, "--workers", "0"], &FAST);
    d.wait_until("/readyz", "ready", |_| true);
    d
}

fn runs_of(d: &Daemon, job: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/api/v1/runs?limit=1000&job={job}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The `n` runs of `job`, once all `n` succeeded.
fn succeeded(d: &Daemon, job: &str, n: usize, secs: u64, logs: &dyn Fn() -> String) -> Vec<Value> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let r = runs_of(d, job);
        if r.len() == n && r.iter().all(|r| r["status"] == "succeeded") {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{job}: {n} runs did not succeed\n{:#?}\n{}",
        runs_of(d, job),
        logs()
    );
}

/// The worker that executed a run's last attempt.
fn worker_of(run: &Value) -> String {
    let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
    attempts
        .last()
        .and_then(|a| a["worker"].as_str())
        .unwrap_or("")
        .to_string()
}

fn trigger(dir: &ConfigDir, redis: &RedisServer, job: &str, count: u32) {
    let (url, count) = (redis.url(), count.to_string());
    dir.run(&["trigger", job, "--redis", &url, "--count", &count])
        .assert_code(0);
}

const GROUPED_JOBS: &str = "id: ga\ntype: noop\noverlap: allow\nworker_group: a\n---\n\
id: gb\ntype: noop\noverlap: allow\nworker_group: b\n---\n\
id: gc\ntype: noop\noverlap: allow\nworker_group: c\n---\n\
id: plain\ntype: noop\noverlap: allow\n";

#[test]
fn each_groups_runs_are_claimed_only_by_its_workers_and_an_unserved_group_waits() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/jobs.yaml", GROUPED_JOBS);
    let lead = leader(&dir, &redis);
    let wa = WorkerProc::start_with(&redis, 2, &["--group", "a"]);
    let wb = WorkerProc::start_with(&redis, 2, &["--group", "b", "--group", "b"]);
    let wp = WorkerProc::start(&redis, 2);
    let logs = || {
        format!(
            "--- leader ---\n{}\n--- a ---\n{}\n--- b ---\n{}\n--- plain ---\n{}",
            lead.log(),
            wa.log(),
            wb.log(),
            wp.log()
        )
    };
    // The registry lists the three, with their groups.
    lead.wait_until("/api/v1/workers", "three live workers", |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 3)
    });
    let (_, listed) = lead.get("/api/v1/workers");
    let groups_of = |node: &str| -> Value {
        let items = listed["items"].as_array().cloned().unwrap_or_default();
        let w = items.into_iter().find(|w| w["id"] == node);
        w.map(|w| w["groups"].clone()).unwrap_or(Value::Null)
    };
    assert_eq!(groups_of(&wa.node), serde_json::json!(["a"]), "{listed:#}");
    assert_eq!(groups_of(&wb.node), serde_json::json!(["b"]), "{listed:#}");
    assert_eq!(groups_of(&wp.node), serde_json::json!([]), "{listed:#}");
    assert!(listed["items"][0]["version"].is_string(), "{listed:#}");
    // Hostile registry entries are skipped; the list goes on.
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("redis");
    for (node, value) in [
        ("evil", "not numbers".to_string()),
        ("huge", "9".repeat(100_000)),
        ("old", "4 1".to_string()),
    ] {
        let _: i64 = redis::cmd("HSET")
            .arg("{mj}:workers")
            .arg(node)
            .arg(value)
            .query(&mut conn)
            .expect("HSET");
    }
    let (code, again) = lead.get("/api/v1/workers");
    assert_eq!(code, 200, "{again:#}");
    assert_eq!(
        again["items"].as_array().map(Vec::len),
        Some(3),
        "{again:#}"
    );
    // `plan` and `validate --server` name the job of the unserved group.
    let warning = "warning: jobs.d/jobs.yaml:11: job `gc`: no live worker serves group `c`: \
                   start one with `multijob worker --group c`";
    let plan = dir.run(&["plan", "--redis", &redis.url()]);
    plan.assert_code(0);
    let validate = dir.run(&["validate", "--server", &lead.url]);
    validate.assert_code(0);
    for out in [&plan, &validate] {
        assert!(out.stdout().contains(warning), "{}", out.explain());
        assert_eq!(out.stdout().matches("no live worker serves").count(), 1);
    }
    // No worker serves `c`: its runs go first, more than the leader
    // dispatches at once (4 per live slot), and must block nothing.
    trigger(&dir, &redis, "gc", 40);
    for job in ["ga", "gb", "plain"] {
        trigger(&dir, &redis, job, 6);
    }
    for run in succeeded(&lead, "ga", 6, 30, &logs) {
        assert_eq!(worker_of(&run), wa.node, "{run:#}");
    }
    for run in succeeded(&lead, "gb", 6, 30, &logs) {
        assert_eq!(worker_of(&run), wb.node, "{run:#}");
    }
    let any = [&wa.node, &wb.node, &wp.node];
    for run in succeeded(&lead, "plain", 6, 30, &logs) {
        assert!(any.contains(&&worker_of(&run)), "{run:#}");
    }
    // Group `c`'s runs wait in the queue, visible, not dispatched.
    let waiting = runs_of(&lead, "gc");
    assert_eq!(waiting.len(), 40, "{waiting:#?}");
    for run in &waiting {
        assert_eq!(run["status"], "queued", "{run:#}");
    }
    // A worker of `c` joins: they run, on it.
    let wc = WorkerProc::start_with(&redis, 2, &["--group", "c"]);
    for run in succeeded(&lead, "gc", 40, 30, &logs) {
        assert_eq!(worker_of(&run), wc.node, "{run:#}\n{}", wc.log());
    }
}

/// A command of group `a` that runs 3 s, retried once.
const SLOW_IN_GROUP_A: &str = "id: slow\ntype: command\nworker_group: a\ntimeout_ms: 20000\n\
     retry_policy: {max_retry: 1, backoff_sec: [0.1]}\n\
     inputs: {argv: [/bin/sh, -c, 'sleep 3']}\n";

#[test]
fn a_killed_group_worker_s_run_is_reclaimed_by_its_group_only() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/slow.yaml", SLOW_IN_GROUP_A);
    let lead = leader(&dir, &redis);
    let mut doomed = WorkerProc::start_with(&redis, 1, &["--group", "a", "--allow-command"]);
    let wb = WorkerProc::start_with(&redis, 1, &["--group", "b", "--allow-command"]);
    trigger(&dir, &redis, "slow", 1);
    lead.wait_until("/api/v1/runs?job=slow", "the run dispatched", |v| {
        v["items"][0]["status"] == "running"
    });
    // Only the doomed worker serves `a`: it has the run now.
    std::thread::sleep(Duration::from_millis(800));
    let survivor = WorkerProc::start_with(&redis, 1, &["--group", "a", "--allow-command"]);
    doomed.kill9();
    let logs = || {
        format!(
            "--- leader ---\n{}\n--- doomed ---\n{}\n--- survivor ---\n{}\n--- b ---\n{}",
            lead.log(),
            doomed.log(),
            survivor.log(),
            wb.log()
        )
    };
    let done = succeeded(&lead, "slow", 1, 40, &logs);
    let attempts = done[0]["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{:#}\n{}", done[0], logs());
    let error = attempts[0]["error"].as_str().unwrap_or("");
    assert!(error.starts_with("worker lost"), "{:#}", done[0]);
    assert_eq!(worker_of(&done[0]), survivor.node, "{}", logs());
    assert!(
        survivor.log().contains("stopped renewing its lease"),
        "{}",
        logs()
    );
    assert!(
        !wb.log().contains("stopped renewing its lease"),
        "{}",
        logs()
    );
}

/// A group's dispatched runs are held by its worker, not lost, when the
/// leader changes: the new leader's recovery reads the group's stream.
#[test]
fn a_new_leader_keeps_a_groups_dispatched_runs_running() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/slow.yaml",
        "id: slow\ntype: command\nworker_group: a\noverlap: allow\ntimeout_ms: 20000\n\
         inputs: {argv: [/bin/sh, -c, 'sleep 4']}\n",
    );
    let mut first = leader(&dir, &redis);
    let wa = WorkerProc::start_with(&redis, 2, &["--group", "a", "--allow-command"]);
    trigger(&dir, &redis, "slow", 2);
    first.wait_until(
        "/api/v1/runs?job=slow&status=running",
        "two runs dispatched",
        |v| v["items"].as_array().map(Vec::len) == Some(2),
    );
    let _ = first.child.kill();
    let _ = first.child.wait();
    let second = leader(&dir, &redis);
    let logs = || format!("--- leader ---\n{}\n--- a ---\n{}", second.log(), wa.log());
    for run in succeeded(&second, "slow", 2, 40, &logs) {
        let attempts = run["attempts"].as_array().map(Vec::len);
        assert_eq!(attempts, Some(1), "{run:#}\n{}", logs());
        assert_eq!(worker_of(&run), wa.node, "{run:#}");
    }
}

#[test]
fn a_bad_group_name_is_refused_before_the_worker_starts() {
    let redis = RedisServer::start().expect("redis-server");
    for bad in ["has space", "-x", "", "a,b"] {
        let args = [
            "worker".to_string(),
            "--redis".into(),
            redis.url(),
            format!("--group={bad}"),
        ];
        let run = common::run(&args, None);
        // A usage error exits 1 here, as every usage error does (2 is
        // `plan --detailed-exitcode`'s "changes").
        run.assert_code(1);
        run.assert_stderr_has("worker group name");
    }
}

#[test]
fn a_job_naming_a_group_with_spaces_fails_validate_with_its_line() {
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/bad.yaml",
        "id: fine\ntype: noop\n---\nid: bad\ntype: noop\nworker_group: has space\n",
    );
    let run = dir.run(&["validate"]);
    assert_ne!(run.code(), Some(0), "{}", run.explain());
    let all = format!("{}{}", run.stdout(), run.stderr());
    assert!(all.contains("jobs.d/bad.yaml:6"), "{}", run.explain());
    assert!(all.contains("worker_group"), "{}", run.explain());
}

#[test]
fn the_embedded_pool_serves_every_group() {
    let dir = ConfigDir::new();
    dir.write("jobs.d/jobs.yaml", GROUPED_JOBS);
    let d = Daemon::start(dir.path(), &[]);
    let id = dir.trigger("gc", &[]);
    let run = d.run_ended(&id);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log());
    let (code, listed) = d.get("/api/v1/workers");
    assert_eq!(code, 200);
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{listed:#}");
    assert_eq!(items[0]["groups"], serde_json::json!(["*"]), "{listed:#}");
    assert!(items[0]["slots"].as_u64().unwrap_or(0) >= 1, "{listed:#}");
    // Its pool serves every group: nothing to warn of.
    for args in [vec!["plan"], vec!["validate", "--server", &d.url]] {
        let out = dir.run(&args);
        out.assert_code(0);
        assert!(
            !out.stdout().contains("no live worker"),
            "{}",
            out.explain()
        );
    }
    // Moving a job to another group is a change `plan` shows (the daemon
    // stopped first: it would apply the change itself).
    drop(d);
    dir.write(
        "jobs.d/jobs.yaml",
        &GROUPED_JOBS.replace("worker_group: c", "worker_group: gpu"),
    );
    let out = dir.run(&["plan"]);
    out.assert_code(0);
    assert!(out.stdout().contains("worker_group"), "{}", out.explain());
    assert!(out.stdout().contains("gpu"), "{}", out.explain());
    // A daemon that is not there is an error that says so.
    let out = dir.run(&["validate", "--server", "127.0.0.1:1"]);
    out.assert_code(1);
    out.assert_stderr_has("is the daemon running?");
}

/// `run --redis URL --group a`: the replica's own workers run group `a`'s
/// jobs (and ungrouped ones) with no `worker` process, list themselves
/// with the group, and a group no one serves still waits queued.
#[test]
fn a_replica_given_a_group_runs_its_jobs_and_no_other_group() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/jobs.yaml", GROUPED_JOBS);
    let url = redis.url();
    let d = Daemon::start_env(
        dir.path(),
        &["--redis", &url, "--workers", "2", "--group", "a"],
        &FAST,
    );
    d.wait_until("/readyz", "ready", |v| v["ready"] == true);
    trigger(&dir, &redis, "ga", 3);
    trigger(&dir, &redis, "plain", 2);
    trigger(&dir, &redis, "gb", 1);
    succeeded(&d, "ga", 3, 20, &|| d.log());
    succeeded(&d, "plain", 2, 20, &|| d.log());
    let (_, listed) = d.get("/api/v1/workers");
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{listed:#}");
    assert_eq!(items[0]["groups"], serde_json::json!(["a"]), "{listed:#}");
    // `b` has no worker: its run is queued, visibly, not lost or run here.
    std::thread::sleep(Duration::from_millis(500));
    let gb = runs_of(&d, "gb");
    assert_eq!(gb.len(), 1, "{gb:#?}");
    assert_eq!(gb[0]["status"], "queued", "{gb:#?}\n{}", d.log());
}

#[test]
fn a_group_without_redis_is_refused_with_the_reason() {
    let dir = ConfigDir::new();
    dir.write("jobs.d/jobs.yaml", GROUPED_JOBS);
    let run = dir.run(&["run", "--group", "a"]);
    run.assert_code(1);
    run.assert_stderr_has("--group needs --redis");
    let bad = dir.run(&["run", "--group", "has space"]);
    bad.assert_code(1);
    bad.assert_stderr_has("worker group name");
}

/// When every worker of a group dies, the leader ends its runs' attempts
/// as lost once their lease is past: the run waits for its group again
/// instead of showing `running` for good, and a worker of the group that
/// joins later runs it.
#[test]
fn a_group_whose_only_worker_died_has_its_run_wait_again() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/slow.yaml", SLOW_IN_GROUP_A);
    let lead = leader(&dir, &redis);
    let mut doomed = WorkerProc::start_with(&redis, 1, &["--group", "a", "--allow-command"]);
    trigger(&dir, &redis, "slow", 1);
    lead.wait_until("/api/v1/runs?job=slow", "the run dispatched", |v| {
        v["items"][0]["status"] == "running"
    });
    doomed.kill9();
    let logs = || {
        format!(
            "--- leader ---\n{}\n--- doomed ---\n{}",
            lead.log(),
            doomed.log()
        )
    };
    // The heartbeat goes stale after 5 s, the lease after 1.5 s; the
    // leader looks every 5 s.
    let start = Instant::now();
    let queued = loop {
        let runs = runs_of(&lead, "slow");
        // Waiting again for a worker of the group (`retrying` until due).
        if let Some(run) = runs
            .first()
            .filter(|r| r["status"] == "queued" || r["status"] == "retrying")
        {
            break run.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the run did not wait again\n{runs:#?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let attempts = queued["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1, "{queued:#}");
    let error = attempts[0]["error"].as_str().unwrap_or("");
    assert!(error.starts_with("worker lost"), "{queued:#}");
    assert!(
        lead.log()
            .contains("no live worker is left to claim these runs"),
        "{}",
        logs()
    );
    let rescuer = WorkerProc::start_with(&redis, 1, &["--group", "a", "--allow-command"]);
    let done = succeeded(&lead, "slow", 1, 40, &logs);
    assert_eq!(worker_of(&done[0]), rescuer.node, "{:#}", done[0]);
    let attempts = done[0]["attempts"].as_array().map(Vec::len);
    assert_eq!(attempts, Some(2), "{:#}", done[0]);
}
