//! A Redis deployment under faults, with real processes: replicas
//! (`run --redis`), worker-only processes (`worker --redis`), a real
//! `redis-server`, and a loopback HTTP sink that records what was sent.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use common::worker::{FAST, WorkerProc};
use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;
use serde_json::{Value, json};

fn replica(dir: &ConfigDir, redis: &RedisServer, extra: &[&str]) -> Daemon {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str()];
    args.extend_from_slice(extra);
    Daemon::start_env(dir.path(), &args, &FAST)
}

fn runs(d: &Daemon, query: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/api/v1/runs?limit=1000{query}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Process logs under `--- name ---` headers, for a failure message.
fn sections(logs: &[(&str, String)]) -> String {
    logs.iter()
        .map(|(name, log)| format!("--- {name} ---\n{log}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `n` runs of `job`, once there are `n` and all have `status`.
fn ended(d: &Daemon, job: &str, n: usize, status: &str) -> Option<Vec<Value>> {
    let r = runs(d, &format!("&job={job}"));
    (r.len() == n && r.iter().all(|r| r["status"] == status)).then_some(r)
}

fn wait_for<T>(
    what: &str,
    secs: u64,
    logs: &dyn Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}\n{}", logs());
}

fn trigger(dir: &ConfigDir, redis: &RedisServer, job: &str, count: u32) {
    let url = redis.url();
    let count = count.to_string();
    dir.run(&["trigger", job, "--redis", &url, "--count", &count])
        .assert_code(0);
}

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook sink that records each body; `/slow` answers after 4 s.
fn sink() -> (String, Received) {
    let received: Received = Arc::default();
    let state = received.clone();
    let app = axum::Router::new()
        .fallback(|State(rx): State<Received>, req: Request| async move {
            let path = req.uri().path().to_string();
            let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            rx.lock().expect("sink lock").push((path.clone(), body));
            if path == "/slow" {
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            Json(json!({"ok": true}))
        })
        .with_state(state);
    (common::serve(app), received)
}

#[test]
fn a_worker_killed_mid_run_loses_nothing_and_sends_nothing_twice() {
    let redis = RedisServer::start().expect("redis-server");
    let (sink_url, received) = sink();
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/notify.yaml",
        &format!(
            r#"kind: Connector
id: hook
provider: webhook
base_url: {sink_url}
---
id: notify
type: agent.workflow
timeout_ms: 20000
overlap: allow
retry_policy: {{max_retry: 1, backoff_sec: [0.1]}}
steps:
  - id: tell
    message: {{ connector: hook, text: "run {{{{ run.id }}}}" }}
  - id: slow
    http: {{ connector: hook, method: POST, path: /slow, timeout_ms: 10000, json: {{ run: "{{{{ run.id }}}}" }} }}
"#
        ),
    );
    // The replica only schedules; the workers are separate processes.
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/readyz", "ready", |_| true);
    let mut doomed = WorkerProc::start(&redis, 4);
    trigger(&dir, &redis, "notify", 3);
    let logs = || format!("--- leader ---\n{}", leader.log());
    // All three are in their slow step on the doomed worker.
    wait_for("three runs in their slow step", 20, &logs, || {
        (slow_calls(&received) >= 3).then_some(())
    });
    doomed.kill9();
    let survivor = WorkerProc::start(&redis, 4);
    let logs = || {
        sections(&[
            ("leader", leader.log()),
            ("doomed", doomed.log()),
            ("survivor", survivor.log()),
        ])
    };
    let done = wait_for("three runs succeeded", 30, &logs, || {
        ended(&leader, "notify", 3, "succeeded")
    });
    // The attempt on the dead worker failed as lost; the retry finished.
    for r in &done {
        let attempts = r["attempts"].as_array().cloned().unwrap_or_default();
        assert_eq!(attempts.len(), 2, "{r:#}");
        assert_eq!(attempts[0]["status"], "failed", "{r:#}");
        let error = attempts[0]["error"].as_str().unwrap_or("");
        assert!(error.starts_with("worker lost"), "{r:#}");
    }
    // Each run's message went out once, though the run executed twice.
    let rx = received.lock().expect("lock").clone();
    let messages: Vec<&Value> = rx
        .iter()
        .filter(|(p, _)| p != "/slow")
        .map(|(_, b)| b)
        .collect();
    let ids: HashSet<String> = done
        .iter()
        .map(|r| r["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(messages.len(), 3, "messages: {messages:#?}\n{}", logs());
    for id in &ids {
        let n = messages
            .iter()
            .filter(|m| m["text"] == format!("run {id}").as_str())
            .count();
        assert_eq!(n, 1, "run {id} messaged {n} times\n{messages:#?}");
    }
    // The slow step ran again on the survivor: 3 before the kill, 3 after.
    assert_eq!(rx.iter().filter(|(p, _)| p == "/slow").count(), 6);
    assert!(
        survivor
            .log()
            .contains("whose worker stopped renewing its lease"),
        "{}",
        logs()
    );
}

/// A job whose step is slow, with `retry` as its retry policy.
fn slow_job(dir: &ConfigDir, sink_url: &str, retry: &str) {
    dir.write(
        "jobs.d/slow.yaml",
        &format!(
            r#"kind: Connector
id: hook
provider: webhook
base_url: {sink_url}
---
id: slow
type: agent.workflow
timeout_ms: 20000
overlap: allow
retry_policy: {retry}
steps:
  - id: slow
    http: {{ connector: hook, method: POST, path: /slow, timeout_ms: 10000, json: {{ run: "{{{{ run.id }}}}" }} }}
"#
        ),
    );
}

fn slow_calls(received: &Received) -> usize {
    let rx = received.lock().expect("lock");
    rx.iter().filter(|(p, _)| p == "/slow").count()
}

/// A run that kills its worker every time (a poison pill) must not be run
/// again forever: a lost worker counts as a failed attempt.
#[test]
fn a_run_whose_worker_dies_is_not_run_again_without_retries_left() {
    let redis = RedisServer::start().expect("redis-server");
    let (sink_url, received) = sink();
    let dir = ConfigDir::new();
    slow_job(&dir, &sink_url, "{max_retry: 0}");
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/readyz", "ready", |_| true);
    let mut doomed = WorkerProc::start(&redis, 2);
    trigger(&dir, &redis, "slow", 1);
    let logs = || format!("--- leader ---\n{}", leader.log());
    wait_for("the run in its slow step", 20, &logs, || {
        (slow_calls(&received) >= 1).then_some(())
    });
    doomed.kill9();
    let survivor = WorkerProc::start(&redis, 2);
    let logs = || sections(&[("leader", leader.log()), ("survivor", survivor.log())]);
    let run = wait_for("the run failed", 30, &logs, || {
        ended(&leader, "slow", 1, "failed").map(|mut r| r.remove(0))
    });
    let error = run["error"].as_str().unwrap_or("");
    assert!(error.starts_with("worker lost"), "{run:#}\n{}", logs());
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(1), "{run:#}");
    // Give a wrong re-run time to show itself: the step ran once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(slow_calls(&received), 1, "{}", logs());
}

/// Issue #21: a `command` run that fails in a worker process keeps what
/// it printed: the output crosses the results stream with the failure.
#[test]
fn a_failed_command_in_a_worker_process_keeps_its_output() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/c.yaml",
        "id: c\ntype: command\nretry_policy: {max_retry: 0}\n\
         inputs: {argv: [/bin/sh, -c, 'echo out; echo oops-stderr >&2; exit 3']}\n",
    );
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/readyz", "ready", |_| true);
    let worker = WorkerProc::start_with(&redis, 1, &["--allow-command"]);
    trigger(&dir, &redis, "c", 1);
    let logs = || sections(&[("leader", leader.log()), ("worker", worker.log())]);
    let listed = wait_for("the command run failed", 20, &logs, || {
        ended(&leader, "c", 1, "failed").map(|mut r| r.remove(0))
    });
    let id = listed["id"].as_str().unwrap_or_default();
    let (_, run) = leader.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(run["error"], "exit code 3: oops-stderr", "{run:#}");
    assert_eq!(
        run["output"],
        json!({"exit_code": 3, "stdout": "out\n", "stderr": "oops-stderr\n", "truncated": false}),
        "{run:#}\n{}",
        logs()
    );
}

/// Issue #21: a `command` run in a worker process records its output as
/// it goes, so `logs` (and `trigger --wait`) read it from Redis.
#[test]
fn a_command_in_a_worker_process_records_its_output_for_logs() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/c.yaml",
        "id: c\ntype: command\ninputs: {argv: [/bin/sh, -c, 'echo from-worker; echo note >&2']}\n",
    );
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/api/v1/status", "leading, a revision applied", |v| {
        v["cluster"]["role"] == "leader" && v["revision"].is_string()
    });
    let worker = WorkerProc::start_with(&redis, 1, &["--allow-command"]);
    let waited = dir.run(&[
        "trigger",
        "c",
        "--wait",
        "--timeout",
        "30s",
        "--redis",
        &url,
    ]);
    let logs = || sections(&[("leader", leader.log()), ("worker", worker.log())]);
    assert_eq!(waited.code(), Some(0), "{}\n{}", waited.explain(), logs());
    waited.assert_line("out| from-worker", "");
    let id = waited
        .stdout()
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let shown = dir.run(&["logs", &id, "-o", "json", "--redis", &url]);
    shown.assert_code(0);
    let chunks = shown.json()["output"].clone();
    let mut texts: Vec<&str> = chunks
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["text"].as_str()).collect())
        .unwrap_or_default();
    // Two pipes read side by side: their lines may come in either order.
    texts.sort();
    assert_eq!(
        texts,
        ["from-worker\n", "note\n"],
        "{}\n{}",
        shown.explain(),
        logs()
    );
}

/// A worker loads a revision the leader applies while it runs before any
/// run of it arrives (a run's first sight of it held every run meanwhile),
/// and runs the new job.
#[test]
fn a_worker_loads_a_newly_applied_revision_before_its_runs_ask() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/api/v1/status", "leading, a revision applied", |v| {
        v["cluster"]["role"] == "leader" && v["revision"].is_string()
    });
    let worker = WorkerProc::start(&redis, 2);
    let logs = || sections(&[("leader", leader.log()), ("worker", worker.log())]);
    dir.write("jobs.d/b.yaml", "id: b\ntype: noop\n");
    leader.signal("HUP");
    // Revision 1 was loaded at the start; the worker logs the ones it
    // follows. No run has been triggered yet.
    wait_for("the worker to load revision 2", 10, &logs, || {
        worker
            .log()
            .lines()
            .any(|l| l.contains("loaded the applied revision") && l.contains("revision=2"))
            .then_some(())
    });
    assert!(runs(&leader, "").is_empty(), "{}", logs());
    trigger(&dir, &redis, "b", 1);
    wait_for("b to succeed", 20, &logs, || {
        ended(&leader, "b", 1, "succeeded")
    });
}

/// With no live worker left (the leader runs none), a dead worker's run
/// does not stay `running` until a worker joins: the leader ends its
/// attempt as lost once the lease is past, the run waits to be retried
/// (and is not started with no worker alive), and the next worker runs it.
#[test]
fn with_no_worker_left_a_dead_workers_run_waits_again_unstarted() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/slow.yaml",
        "id: slow\ntype: command\ntimeout_ms: 20000\n\
         retry_policy: {max_retry: 1, backoff_sec: [0.1]}\n\
         inputs: {argv: [/bin/sh, -c, 'sleep 3']}\n",
    );
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/api/v1/status", "leading, a revision applied", |v| {
        v["cluster"]["role"] == "leader" && v["revision"].is_string()
    });
    let mut doomed = WorkerProc::start_with(&redis, 1, &["--allow-command"]);
    trigger(&dir, &redis, "slow", 1);
    leader.wait_until("/api/v1/runs?job=slow", "the run dispatched", |v| {
        v["items"][0]["status"] == "running"
    });
    doomed.kill9();
    let logs = || {
        format!(
            "{:#?}\n{}",
            runs(&leader, "&job=slow"),
            sections(&[("leader", leader.log()), ("doomed", doomed.log())])
        )
    };
    // Waiting again: `retrying` (due, and no worker to start it).
    let queued = wait_for("the run waiting again", 30, &logs, || {
        runs(&leader, "&job=slow")
            .into_iter()
            .find(|r| r["status"] == "retrying" || r["status"] == "queued")
    });
    let error = queued["attempts"][0]["error"].as_str().unwrap_or("");
    assert!(error.starts_with("worker lost"), "{queued:#}\n{}", logs());
    let next = WorkerProc::start_with(&redis, 1, &["--allow-command"]);
    let done = wait_for("the run to succeed", 40, &logs, || {
        ended(&leader, "slow", 1, "succeeded")
    });
    let attempts = done[0]["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{:#}", done[0]);
    assert_eq!(attempts[1]["worker"], next.node.as_str(), "{:#}", done[0]);
}

/// A worker stopped with SIGTERM hands back the runs it holds but has not
/// started: they run elsewhere without being counted as lost attempts.
#[test]
fn a_stopping_worker_hands_back_runs_it_has_not_started() {
    let redis = RedisServer::start().expect("redis-server");
    let (sink_url, received) = sink();
    let dir = ConfigDir::new();
    slow_job(&dir, &sink_url, "{max_retry: 0}");
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/readyz", "ready", |_| true);
    // One slot: the leader starts up to four runs for it, in one entry.
    let stopping = WorkerProc::start(&redis, 1);
    trigger(&dir, &redis, "slow", 3);
    let logs = || format!("--- leader ---\n{}", leader.log());
    wait_for("the first run in its slow step", 20, &logs, || {
        (slow_calls(&received) >= 1).then_some(())
    });
    // SAFETY: kill(2) with a pid this test spawned.
    unsafe { libc::kill(stopping.child.id() as i32, libc::SIGTERM) };
    let taker = WorkerProc::start(&redis, 4);
    let logs = || {
        sections(&[
            ("leader", leader.log()),
            ("stopping", stopping.log()),
            ("taker", taker.log()),
        ])
    };
    let done = wait_for("three runs succeeded", 30, &logs, || {
        ended(&leader, "slow", 3, "succeeded")
    });
    for r in &done {
        let lost = r["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["error"].as_str().unwrap_or("").starts_with("worker lost"));
        assert!(!lost, "{r:#}\n{}", logs());
    }
    assert!(
        !taker.log().contains("stopped renewing its lease"),
        "{}",
        logs()
    );
}

fn every_second(dir: &ConfigDir) {
    dir.write(
        "jobs.d/tick.yaml",
        "id: tick\ntype: noop\nschedule: {every: 1s}\noverlap: allow\n",
    );
}

/// The nominal slots of a job's scheduled runs, each once or the test fails.
fn unique_slots(runs: &[Value]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in runs.iter().filter(|r| r["trigger"] == "schedule") {
        *seen
            .entry(r["scheduled_at"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "slots dispatched twice: {dup:?}");
    let mut slots: Vec<String> = seen.into_keys().collect();
    slots.sort();
    slots
}

#[test]
fn two_schedulers_dispatch_every_slot_of_thirty_seconds_once() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    every_second(&dir);
    let a = replica(&dir, &redis, &["--workers", "2"]);
    let b = replica(&dir, &redis, &["--workers", "2"]);
    std::thread::sleep(Duration::from_secs(30));
    let all = runs(&a, "&job=tick");
    let slots = unique_slots(&all);
    assert!(
        (28..=32).contains(&slots.len()),
        "{} slots in 30 s\n--- a ---\n{}\n--- b ---\n{}",
        slots.len(),
        a.log(),
        b.log()
    );
    // Both replicas see the same history.
    let from_b = runs(&b, "&job=tick");
    assert!(from_b.len() >= slots.len() - 1);
    let leaders = [a.log(), b.log()]
        .iter()
        .filter(|l| l.contains("became leader"))
        .count();
    assert_eq!(leaders, 1, "exactly one process leads");
    // Each replica's status says who leads, and they agree.
    let (_, sa) = a.get("/api/v1/status");
    let (_, sb) = b.get("/api/v1/status");
    let roles = [&sa["cluster"]["role"], &sb["cluster"]["role"]];
    assert!(
        roles.contains(&&json!("leader")) && roles.contains(&&json!("follower")),
        "{roles:?}"
    );
    assert_eq!(sa["cluster"]["leader"], sb["cluster"]["leader"]);
    let leader = if sa["cluster"]["role"] == "leader" {
        &sa
    } else {
        &sb
    };
    assert_eq!(leader["cluster"]["leader"], leader["cluster"]["node"]);
}

#[test]
fn the_leader_killed_hands_over_and_slots_keep_firing_once() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    every_second(&dir);
    let mut a = replica(&dir, &redis, &["--workers", "2"]);
    // a leads (it started first and campaigned at once).
    let logs = || String::new();
    wait_for("a to lead", 10, &logs, || {
        a.log().contains("became leader").then_some(())
    });
    let b = replica(&dir, &redis, &["--workers", "2"]);
    std::thread::sleep(Duration::from_secs(3));
    let before = unique_slots(&runs(&b, "&job=tick")).len();
    assert!(before >= 2, "a fired {before} slots");
    let _ = a.child.kill();
    let _ = a.child.wait();
    let killed_at = Instant::now();
    let logs = || b.log();
    wait_for("b to lead", 10, &logs, || {
        b.log().contains("became leader").then_some(())
    });
    let took_over = killed_at.elapsed();
    assert!(took_over <= Duration::from_secs(5), "took {took_over:?}");
    std::thread::sleep(Duration::from_secs(4));
    let all = runs(&b, "&job=tick");
    let slots = unique_slots(&all);
    assert!(
        slots.len() >= before + 3,
        "slots before the kill {before}, after {}\n{}",
        slots.len(),
        b.log()
    );
    // Nothing stays running: runs a's workers held were re-claimed.
    wait_for("no run left running", 15, &logs, || {
        let r = runs(&b, "&job=tick&status=running");
        r.is_empty().then_some(())
    });
}

#[test]
fn a_redis_restart_is_survived_and_readyz_says_so() {
    let mut redis = RedisServer::start_with(true).expect("redis-server");
    let dir = ConfigDir::new();
    every_second(&dir);
    let d = replica(&dir, &redis, &["--workers", "2"]);
    let logs = || d.log();
    let before = wait_for("three succeeded runs", 15, &logs, || {
        let r: Vec<Value> = runs(&d, "&job=tick&status=succeeded");
        (r.len() >= 3).then_some(r)
    });
    redis.kill();
    wait_for("/readyz to say not ready", 10, &logs, || {
        let (code, _) = d.get("/readyz");
        (code == 503).then_some(())
    });
    redis.restart().expect("restart redis");
    wait_for("/readyz ready again", 20, &logs, || {
        let (code, _) = d.get("/readyz");
        (code == 200).then_some(())
    });
    // What was recorded before the crash is still there, and slots fire.
    let after = wait_for("new runs after the restart", 20, &logs, || {
        let r = runs(&d, "&job=tick&status=succeeded");
        (r.len() >= before.len() + 3).then_some(r)
    });
    let ids: HashSet<&str> = after.iter().filter_map(|r| r["id"].as_str()).collect();
    for r in &before {
        assert!(ids.contains(r["id"].as_str().unwrap_or("")), "lost {r}");
    }
    unique_slots(&after);
}

#[test]
fn overlap_replace_cancels_a_run_on_another_process() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/long.yaml",
        "id: long\ntype: simulation.heavy\nschedule: {every: 2s}\noverlap: replace\ntimeout_ms: 60000\ninputs: {work_ms: 30000}\n",
    );
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    let worker = WorkerProc::start(&redis, 2);
    let logs = || format!("{}\n--- worker ---\n{}", leader.log(), worker.log());
    // Each slot replaces the run before it, which runs in the worker
    // process: the cancellation has to cross to it.
    let cancelled = wait_for("a replaced run", 20, &logs, || {
        let r = runs(&leader, "&job=long&status=cancelled");
        (!r.is_empty()).then_some(r)
    });
    let error = cancelled[0]["error"].as_str().unwrap_or("");
    assert!(error.contains("replace"), "{:#}", cancelled[0]);
    // At most one attempt of the job runs at a time, and it is recent.
    let running = runs(&leader, "&job=long&status=running");
    assert!(running.len() <= 1, "{running:#?}");
}

#[test]
fn a_follower_shows_the_leaders_queue() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/n.yaml", "id: n\ntype: noop\noverlap: allow\n");
    // No process executes runs: what is triggered waits in the queue.
    let leader = replica(&dir, &redis, &["--workers", "0"]);
    leader.wait_until("/api/v1/status", "leading, a revision applied", |v| {
        v["cluster"]["role"] == "leader" && v["revision"].is_string()
    });
    let follower = replica(&dir, &redis, &["--workers", "0"]);
    follower.wait_until("/api/v1/status", "following", |v| {
        v["cluster"]["role"] == "follower"
    });
    trigger(&dir, &redis, "n", 7);
    leader.wait_until("/api/v1/status", "seven queued", |v| v["queue_depth"] == 7);
    let seen = follower.wait_until("/api/v1/status", "the leader's queue", |v| {
        v["queue_depth"] == 7
    });
    assert_eq!(seen["running"], 0, "{seen}");
    assert_eq!(seen["pressure_mode"], false, "{seen}");
    assert!(
        seen["cluster"]["queue_from_leader_at"].is_string(),
        "{seen}"
    );
    // The leader's own status says nothing of a leader's copy.
    let (_, own) = leader.get("/api/v1/status");
    assert!(own["cluster"]["queue_from_leader_at"].is_null(), "{own}");
    // A follower does not reconcile: it shows the leader's last reconcile.
    assert_eq!(own["last_reconcile"]["result"], "applied", "{own}");
    assert_eq!(seen["last_reconcile"], own["last_reconcile"], "{seen}");
    // A follower's job views come from the store: its own queue is empty.
    for path in ["/api/v1/jobs/n", "/api/v1/jobs"] {
        let (code, v) = follower.get(path);
        assert_eq!(code, 200, "{v}");
        let job = if path.ends_with("/n") {
            &v
        } else {
            &v["items"][0]
        };
        assert_eq!(job["active_runs"], 7, "{path}: {v:#}");
        assert!(job["last_run"]["id"].is_string(), "{path}: {v:#}");
    }
}

#[test]
fn results_a_gone_leader_read_and_never_acknowledged_are_taken_over() {
    // An old leader whose renewal hung can read results for a moment
    // after a new one took over; they stay pending under its name. Here
    // a consumer named `ghost` takes a result while the leader is stopped
    // (SIGSTOP), and is never heard of again.
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/slow.yaml",
        "id: slow\ntype: simulation.heavy\ninputs: {work_ms: 1500}\n",
    );
    // The default leader TTL (5 s): the stop must not cost the term.
    let url = redis.url();
    let leader = Daemon::start(dir.path(), &["--redis", &url, "--workers", "0"]);
    let worker = WorkerProc::start(&redis, 1);
    let logs = || format!("{}\n--- worker ---\n{}", leader.log(), worker.log());
    leader.wait_until("/readyz", "ready", |v| v["ready"] == true);
    trigger(&dir, &redis, "slow", 1);
    wait_for("the run to start", 20, &logs, || {
        (!runs(&leader, "&job=slow&status=running").is_empty()).then_some(())
    });
    leader.signal("STOP");
    let port = redis.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let taken = wait_for("the ghost to take the result", 20, &logs, || {
        let got = cli(&[
            "XREADGROUP",
            "GROUP",
            "leader",
            "ghost",
            "COUNT",
            "10",
            "STREAMS",
            "{mj}:results",
            ">",
        ]);
        (!got.trim().is_empty()).then_some(got)
    });
    leader.signal("CONT");
    assert!(taken.contains("\"run_id\""), "{taken}");
    let done = wait_for("the run to finish", 40, &logs, || {
        let r = runs(&leader, "&job=slow&status=succeeded");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(done.len(), 1);
    let pending = cli(&["XPENDING", "{mj}:results", "leader"]);
    assert!(pending.trim_start().starts_with('0'), "{pending}");
}

#[test]
fn the_only_replica_outlives_a_redis_outage_longer_than_its_term() {
    // The leader's term (1.5 s here) runs out while Redis is away. It
    // used to exit, leaving a one-replica deployment with none; now it
    // starts over as a follower once Redis answers, and wins again.
    let mut redis = RedisServer::start_with(true).expect("redis-server");
    let dir = ConfigDir::new();
    every_second(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = redis.url();
    let d = Daemon::start_on(
        &format!("127.0.0.1:{port}"),
        dir.path(),
        &["--redis", &url, "--workers", "2"],
        &FAST,
    );
    let logs = || d.log();
    let before = wait_for("three succeeded runs", 15, &logs, || {
        let r: Vec<Value> = runs(&d, "&job=tick&status=succeeded");
        (r.len() >= 3).then_some(r)
    });
    let (_, status) = d.get("/api/v1/status");
    let first_node = status["cluster"]["node"].clone();
    redis.kill();
    std::thread::sleep(Duration::from_secs(4));
    redis.restart().expect("restart redis");
    wait_for("the replica to lead again, started over", 30, &logs, || {
        let (code, v) = d.get("/api/v1/status");
        (code == 200 && v["cluster"]["role"] == "leader" && v["cluster"]["node"] != first_node)
            .then_some(())
    });
    let after = wait_for("new runs after the outage", 20, &logs, || {
        let r = runs(&d, "&job=tick&status=succeeded");
        (r.len() >= before.len() + 3).then_some(r)
    });
    let ids: HashSet<&str> = after.iter().filter_map(|r| r["id"].as_str()).collect();
    for r in &before {
        assert!(ids.contains(r["id"].as_str().unwrap_or("")), "lost {r}");
    }
    unique_slots(&after);
    assert!(
        d.log().contains("starts again as a follower"),
        "{}",
        d.log()
    );
}
