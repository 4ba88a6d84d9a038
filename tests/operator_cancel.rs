//! `multijob cancel` with the real binary: on the embedded store beside a
//! running daemon, and on a Redis deployment (runs executed by the replica
//! itself, and by a separate `multijob worker` process). One table of
//! cases runs on each: a running `command` leaves no process behind, runs
//! that have not started end at once (awaiting approval, parked behind a
//! full lane), a workflow stops at its step, finished, unknown and
//! repeated cancels are refused, and the daemon keeps serving throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::worker::{FAST, WorkerProc};
use common::{ConfigDir, Daemon};
use multijob::cli::store_access::{StoreAccess, StoreArgs};
use multijob::store::runs::InboxCommand;
use multijob::testkit::RedisServer;
use serde_json::{Value, json};

/// Where the runs execute.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Redis,
    /// A replica without workers, and a `multijob worker` process.
    RedisWorker,
}

/// What the slow peer of the workflow saw.
#[derive(Default)]
struct Seen {
    slow: AtomicUsize,
    after: AtomicUsize,
}

struct Deployment {
    backend: Backend,
    dir: ConfigDir,
    daemon: Daemon,
    redis: Option<RedisServer>,
    worker: Option<WorkerProc>,
    seen: Arc<Seen>,
}

/// A local HTTP peer whose `/slow` answers after a minute.
fn slow_peer() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let (slow, after) = (seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(move || async move {
                slow.slow.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        )
        .route(
            "/after",
            axum::routing::get(move || async move {
                after.after.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        );
    (common::serve(app), seen)
}

fn config(base: &str, pids: &str) -> String {
    format!(
        r#"kind: Connector
id: peer
provider: http
base_url: {base}
---
kind: Flow
id: one
max_active_runs: 1
---
id: sleepy
type: command
timeout_ms: 120000
retry_policy: {{max_retry: 2}}
inputs: {{argv: [/bin/sh, -c, 'echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait']}}
---
id: quick
type: noop
---
id: gate
type: noop
requires_approval: true
---
id: hold
type: command
flow: one
timeout_ms: 120000
inputs: {{argv: [/bin/sh, -c, 'sleep 300; true']}}
---
id: behind
type: noop
flow: one
---
id: flow
type: agent.workflow
timeout_ms: 120000
steps:
  - id: wait
    http: {{connector: peer, path: /slow}}
  - id: after
    http: {{connector: peer, path: /after}}
---
id: tick
type: noop
schedule: {{every: 1s}}
"#
    )
}

/// The daemon of `backend` on `dir`: the replica of a Redis deployment
/// (without workers of its own for [`Backend::RedisWorker`]).
fn launch(backend: Backend, dir: &ConfigDir, redis: Option<&RedisServer>) -> Daemon {
    let url = redis.map(RedisServer::url).unwrap_or_default();
    match backend {
        Backend::Sqlite => Daemon::start(dir.path(), &["--allow-command"]),
        Backend::Redis => {
            Daemon::start_env(dir.path(), &["--allow-command", "--redis", &url], &FAST)
        }
        Backend::RedisWorker => {
            Daemon::start_env(dir.path(), &["--redis", &url, "--workers", "0"], &FAST)
        }
    }
}

impl Deployment {
    fn start(backend: Backend) -> Deployment {
        let (base, seen) = slow_peer();
        let dir = ConfigDir::new();
        let pids = dir.path().join("pids").display().to_string();
        dir.write("jobs.d/jobs.yaml", &config(&base, &pids));
        let redis =
            (backend != Backend::Sqlite).then(|| RedisServer::start().expect("redis-server"));
        let daemon = launch(backend, &dir, redis.as_ref());
        let worker = (backend == Backend::RedisWorker).then(|| {
            let redis = redis.as_ref().expect("a redis");
            WorkerProc::start_with(redis, 2, &["--allow-command"])
        });
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        Deployment {
            backend,
            dir,
            daemon,
            redis,
            worker,
            seen,
        }
    }

    /// Stop the daemon (SIGTERM, its writes flushed).
    fn stop(&mut self) {
        self.daemon.signal("TERM");
        let start = Instant::now();
        while self.daemon.is_running() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the daemon did not stop\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A daemon again on the same store.
    fn restart(&mut self) {
        self.daemon = launch(self.backend, &self.dir, self.redis.as_ref());
        self.daemon
            .wait_until("/readyz", "ready", |v| v["ready"] == true);
    }

    /// `multijob ARGS` on this deployment's store.
    fn cli(&self, args: &[&str]) -> common::Run {
        let mut all = args.to_vec();
        let url = self.redis.as_ref().map(RedisServer::url);
        if let Some(url) = &url {
            all.extend(["--redis", url.as_str()]);
        }
        self.dir.run(&all)
    }

    fn trigger(&self, job: &str) -> String {
        let out = self.cli(&["trigger", job]);
        out.assert_code(0);
        out.stdout()
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no run id\n{}", out.explain()))
            .to_string()
    }

    fn logs(&self) -> String {
        let worker = self
            .worker
            .as_ref()
            .map(WorkerProc::log)
            .unwrap_or_default();
        format!("{}\n--- worker ---\n{worker}", self.daemon.log())
    }

    /// The run's record once `ok` holds, or a failure with the logs.
    #[track_caller]
    fn wait_run(&self, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        let mut last = Value::Null;
        while start.elapsed() < Duration::from_secs(30) {
            last = self.daemon.get(&format!("/api/v1/runs/{id}")).1;
            if ok(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("run {id}: {what}; last record: {last:#}\n{}", self.logs());
    }

    #[track_caller]
    fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_run(id, &format!("not {status}"), |r| r["status"] == status)
    }

    /// The CLI's way into this deployment's store.
    fn store(&self) -> StoreAccess {
        let args = StoreArgs {
            dir: self.dir.path().to_path_buf(),
            state: None,
            redis: self.redis.as_ref().map(RedisServer::url),
        };
        StoreAccess::open(&args).expect("the store")
    }
}

/// The pids in the file once it holds `n`.
fn pids(path: &std::path::Path, n: usize) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() >= n || start.elapsed() > Duration::from_secs(20) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) S ...`: the state follows the last `)`.
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !stat.is_empty() && !state.starts_with('Z') && !state.starts_with('X')
}

/// Finished, unknown and malformed runs are refused with a clear error.
fn refusals(d: &Deployment) {
    let id = d.trigger("quick");
    d.wait_status(&id, "succeeded");
    let out = d.cli(&["cancel", &id]);
    out.assert_code(1);
    let want = format!("run {id} (job quick) is already ended as succeeded; nothing to cancel");
    assert!(out.stderr().contains(&want), "{}", out.explain());
    assert_eq!(d.wait_status(&id, "succeeded")["cancelled_by"], Value::Null);
    let out = d.cli(&["cancel", "no-such-run-0000"]);
    out.assert_code(1);
    assert!(
        out.stderr().contains("no run `no-such-run-0000`"),
        "{}",
        out.explain()
    );
    let out = d.cli(&["cancel", "abc"]);
    out.assert_code(1);
    assert!(
        out.stderr().contains("at least 8 characters"),
        "{}",
        out.explain()
    );
    let long = "x".repeat(1001);
    let out = d.cli(&["cancel", &id, "--reason", &long]);
    out.assert_code(1);
    assert!(
        out.stderr().contains("keep it to 1000"),
        "{}",
        out.explain()
    );
}

/// Runs that have not started end at once and never start: one waiting
/// for its approval (closed as cancelled), one parked behind a full lane.
fn waiting_runs(d: &Deployment) {
    let id = d.trigger("gate");
    d.wait_status(&id, "awaiting_approval");
    // A prefix of the id is enough.
    let out = d.cli(&["cancel", &id[..20], "--by", "ann", "--reason", "not today"]);
    out.assert_code(0)
        .assert_line(&format!("cancelled {id} (job gate)"), "by ann: not today");
    let run = d.wait_status(&id, "cancelled");
    assert_eq!(
        (run["attempt"].as_u64(), &run["started_at"]),
        (Some(0), &Value::Null)
    );
    let approvals = d
        .cli(&["approvals", "list", "--all", "--output", "json"])
        .json();
    let closed = approvals
        .as_array()
        .and_then(|a| a.iter().find(|x| x["run_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("no approval for {id}: {approvals:#}"));
    assert_eq!(
        (&closed["status"], &closed["decided_by"]),
        (&json!("cancelled"), &json!("ann"))
    );

    let hold = d.trigger("hold");
    d.wait_status(&hold, "running");
    let behind = d.trigger("behind");
    d.wait_status(&behind, "queued");
    std::thread::sleep(Duration::from_millis(300));
    d.wait_status(&behind, "queued");
    d.cli(&["cancel", &behind, "--by", "ann"])
        .assert_code(0)
        .assert_line(&format!("cancelled {behind} (job behind)"), "by ann");
    let run = d.wait_status(&behind, "cancelled");
    assert_eq!(run["attempts"], json!([]), "it never started: {run:#}");
    assert_eq!(run["error"], "cancelled by ann", "{run:#}");
    d.cli(&["cancel", &hold, "--by", "ann"]).assert_code(0);
    d.wait_status(&hold, "cancelled");
}

/// A running `command` ends cancelled within seconds with who and why on
/// its record and in a `run.cancelled` event, and its whole process group
/// is gone; a second cancel says it was already cancelled, and a cancel
/// replayed straight into the inbox changes nothing.
fn running_command(d: &Deployment) {
    let id = d.trigger("sleepy");
    d.wait_status(&id, "running");
    let pids = pids(&d.dir.path().join("pids"), 2);
    assert_eq!(pids.len(), 2, "the shell and its child\n{}", d.logs());
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
    let started = Instant::now();
    let out = d.cli(&[
        "cancel", &id, "--reason", "stuck", "--by", "ann", "-o", "json",
    ]);
    out.assert_code(0);
    let report = out.json();
    assert_eq!(
        (
            &report["result"],
            &report["status"],
            &report["by"],
            &report["reason"]
        ),
        (
            &json!("cancelled"),
            &json!("cancelled"),
            &json!("ann"),
            &json!("stuck")
        ),
        "{report:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let run = d.wait_status(&id, "cancelled");
    assert_eq!(run["cancelled_by"], "ann", "{run:#}");
    assert_eq!(run["cancel_reason"], "stuck", "{run:#}");
    assert_eq!(run["error"], "cancelled by ann: stuck", "{run:#}");
    assert_eq!(
        run["attempts"].as_array().map(Vec::len),
        Some(1),
        "not retried: {run:#}"
    );
    let gone = Instant::now();
    while pids.iter().any(|p| alive(*p)) && gone.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(
        left.is_empty(),
        "processes left behind: {left:?}\n{}",
        d.logs()
    );
    let (_, events) = d.daemon.get("/api/v1/events?type=run.cancelled&job=sleepy");
    let data: Vec<&Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(
        data,
        [&json!({"run_id": id, "job_id": "sleepy", "by": "ann", "reason": "stuck"})],
        "{events:#}"
    );
    let out = d.cli(&["cancel", &id, "--by", "bob"]);
    out.assert_code(1);
    let want = "is already cancelled by ann: stuck; nothing to cancel";
    assert!(out.stderr().contains(want), "{}", out.explain());
    replayed(d, &id);
}

/// Cancels the CLI would refuse, posted straight into the inbox: the run
/// and an unknown one. The daemon logs them, changes nothing, and serves.
fn replayed(d: &Deployment, id: &str) {
    let store = d.store();
    for run_id in [id, "no-such-run-0000"] {
        let replay = InboxCommand::Cancel {
            run_id: run_id.into(),
            by: "mallory".into(),
            reason: Some("again".into()),
        };
        store.post(&replay).expect("posted");
    }
    let start = Instant::now();
    while !store.inbox().expect("the inbox").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the daemon never read the inbox\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = d.wait_status(id, "cancelled");
    assert_eq!(run["cancelled_by"], "ann", "{run:#}");
}

/// A workflow cancelled while its HTTP step waits on a slow peer: the call
/// is dropped, the run ends cancelled, and the next step never runs.
fn workflow_step(d: &Deployment) {
    let id = d.trigger("flow");
    let start = Instant::now();
    while d.seen.slow.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the step never called\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.cli(&["cancel", &id, "--reason", "peer is down"])
        .assert_code(0)
        .assert_line(&format!("cancelled {id} (job flow) by "), ": peer is down");
    let run = d.wait_status(&id, "cancelled");
    let steps: Vec<(&str, &str)> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(steps, [("wait", "cancelled")], "{run:#}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.seen.after.load(Ordering::SeqCst), 0, "the later step ran");
    assert_eq!(
        d.seen.slow.load(Ordering::SeqCst),
        1,
        "the step was retried"
    );
}

/// With no daemon reading the inbox the cancel waits there (exit 0, and
/// it says so); the next daemon on the store applies it.
fn posted_while_no_daemon(backend: Backend) {
    let mut d = Deployment::start(backend);
    let id = d.trigger("gate");
    d.wait_status(&id, "awaiting_approval");
    d.stop();
    let out = d.cli(&[
        "cancel",
        &id,
        "--wait-timeout",
        "1s",
        "--by",
        "ann",
        "-o",
        "json",
    ]);
    out.assert_code(0);
    let report = out.json();
    assert_eq!(
        (&report["result"], &report["status"]),
        (&json!("posted"), &json!("awaiting_approval")),
        "{report:#}"
    );
    let message = report["message"].as_str().unwrap_or("");
    assert!(
        message.contains("no daemon read it within 1s"),
        "{report:#}"
    );
    // A second one finds the first waiting and posts nothing more.
    d.cli(&["cancel", &id, "--wait-timeout", "0s"])
        .assert_code(0);
    assert_eq!(d.store().inbox().expect("the inbox").len(), 1);
    d.restart();
    let run = d.wait_status(&id, "cancelled");
    assert_eq!(run["cancelled_by"], "ann", "{run:#}");
    keeps_serving(&d);
}

/// The API answers and the scheduled job keeps running after the cancels.
fn keeps_serving(d: &Deployment) {
    let (code, _) = d.daemon.get("/api/v1/status");
    assert_eq!(code, 200, "{}", d.logs());
    let ticks = |d: &Deployment| {
        let (_, page) = d
            .daemon
            .get("/api/v1/runs?job=tick&status=succeeded&limit=1000");
        page["items"].as_array().map(Vec::len).unwrap_or(0)
    };
    let before = ticks(d);
    let start = Instant::now();
    while ticks(d) < before + 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the schedule stopped\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn table(backend: Backend) {
    let d = Deployment::start(backend);
    refusals(&d);
    waiting_runs(&d);
    running_command(&d);
    workflow_step(&d);
    keeps_serving(&d);
}

#[test]
fn cancel_on_the_embedded_store() {
    table(Backend::Sqlite);
}

#[test]
fn cancel_on_redis() {
    table(Backend::Redis);
}

#[test]
fn a_cancel_waits_for_the_daemon_on_the_embedded_store() {
    posted_while_no_daemon(Backend::Sqlite);
}

#[test]
fn a_cancel_waits_for_the_daemon_on_redis() {
    posted_while_no_daemon(Backend::Redis);
}

/// The run executes in a `multijob worker` process: the cancel crosses to
/// it through the deployment's cancel hash.
#[test]
fn cancel_on_redis_of_a_run_in_a_worker_process() {
    let d = Deployment::start(Backend::RedisWorker);
    running_command(&d);
    workflow_step(&d);
    keeps_serving(&d);
}
