//! Daily budgets with the real binary, on the embedded store and on Redis
//! (a leader without workers, and two `worker --redis` processes): a job
//! with `messages_per_day: 5` whose runs send 2 messages each to a
//! loopback webhook sink runs twice, then its slots are skipped with
//! `scheduler.dispatch_skipped_budget` (1 left, its last run used 2); the
//! count survives a restart; a manual run stops at the message that would
//! pass the budget. The reset at the next local midnight is the pure
//! counter-key test in `store::budgets`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use common::deployment::{Deployment, events, runs, wait_for};
use common::worker::{FAST, WorkerProc};
use common::{Daemon, serve};
use serde_json::Value;

type Sink = Arc<Mutex<Vec<String>>>;

/// A webhook sink recording each message's text.
fn sink() -> (String, Sink) {
    let got: Sink = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(|State(got): State<Sink>, body: String| async move {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                let text = v["text"].as_str().unwrap_or_default().to_string();
                got.lock().map(|mut g| g.push(text)).ok();
                "ok"
            }),
        )
        .with_state(got.clone());
    (serve(app), got)
}

fn sent(got: &Sink) -> usize {
    got.lock().map(|g| g.len()).unwrap_or(0)
}

fn job(base: &str) -> String {
    format!(
        "kind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n---\n\
         id: spend\ntype: agent.workflow\nschedule: {{interval_sec: 1}}\n\
         budgets: {{messages_per_day: 5}}\nsteps:\n  \
         - id: one\n    message: {{connector: hook, text: \"one {{{{ run.id }}}}\"}}\n  \
         - id: two\n    message: {{connector: hook, text: \"two {{{{ run.id }}}}\"}}\n"
    )
}

/// The daemon: on Redis a leader with no workers of its own, the runs
/// going to the worker processes.
fn start(dep: &Deployment) -> Daemon {
    let Some(redis) = &dep.redis else {
        return dep.daemon();
    };
    let url = redis.url();
    let d = Daemon::start_env(
        dep.dir.path(),
        &["--redis", url.as_str(), "--workers", "0"],
        &FAST,
    );
    d.wait_until("/readyz", "ready", |_| true);
    d
}

fn budget_of(d: &Daemon) -> Value {
    let (_, job) = d.get("/api/v1/jobs/spend");
    job["budgets"][0].clone()
}

fn metric_line(d: &Daemon) -> Option<String> {
    let (_, body) = common::http_raw(&d.url, "GET", "/metrics", &[]);
    body.lines()
        .find(|l| l.starts_with("multijob_budget_remaining{"))
        .map(str::to_string)
}

fn budgets_hold(redis: bool) {
    let (base, got) = sink();
    let dep = Deployment::new(redis, &[("spend.yaml", &job(&base))]);
    dep.dir.run(&["validate"]).assert_code(0);
    let workers: Vec<WorkerProc> = match &dep.redis {
        Some(r) => vec![WorkerProc::start(r, 1), WorkerProc::start(r, 1)],
        None => Vec::new(),
    };
    let daemon = start(&dep);
    let skips = |d: &Daemon| events(d, "scheduler.dispatch_skipped_budget", "spend");
    let skipped = || skips(&daemon);
    wait_for("a slot skipped for its budget", &daemon, || {
        (!skipped().is_empty()).then_some(())
    });
    let detail = &skipped()[0]["data"]["detail"];
    assert_eq!(detail["reason"], "budget", "{detail:#}");
    assert_eq!(detail["kind"], "messages_per_day");
    assert_eq!(
        (detail["used"].as_u64(), detail["limit"].as_u64()),
        (Some(4), Some(5))
    );
    assert_eq!(detail["last_run"], 2);
    let done = runs(&daemon, "spend");
    assert_eq!(done.len(), 2, "two runs started, then skips: {done:#?}");
    assert!(done.iter().all(|r| r["status"] == "succeeded"), "{done:#?}");
    assert_eq!(sent(&got), 4);
    let b = budget_of(&daemon);
    assert_eq!(
        (b["used"].as_u64(), b["limit"].as_u64()),
        (Some(4), Some(5)),
        "{b:#}"
    );
    assert_eq!(b["scope"], "job:spend");
    assert_eq!(
        metric_line(&daemon).as_deref(),
        Some("multijob_budget_remaining{scope=\"job:spend\",kind=\"messages_per_day\"} 1")
    );

    // The count survives a restart: still no third run.
    drop(daemon);
    let daemon = start(&dep);
    let before = skips(&daemon).len();
    wait_for("more skips after the restart", &daemon, || {
        (skips(&daemon).len() > before + 1).then_some(())
    });
    assert_eq!(runs(&daemon, "spend").len(), 2);
    assert_eq!(budget_of(&daemon)["used"], 4);

    // A manual run is not a slot: it starts, its first message takes the
    // last unit and its second stops the run with a permanent error.
    let id = dep.cli(&["trigger", "spend"]).queued_run_id();
    let run = daemon.run_ended(&id);
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("budget messages_per_day of job spend exhausted (5/5 today, UTC)"),
        "{error}"
    );
    assert_eq!(run["attempt"], 1, "a budget error is not retried: {run:#}");
    assert_eq!(sent(&got), 5);
    // The daemon keeps serving, and the sink saw no sixth message.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sent(&got), 5);
    assert_eq!(daemon.get("/healthz").0, 200);
    drop(workers);
}

#[test]
fn budgets_on_the_embedded_store() {
    budgets_hold(false);
}

#[test]
fn budgets_on_redis_shared_by_two_worker_processes() {
    budgets_hold(true);
}

/// A budget added by a hot reload holds the job's slots back as soon as
/// it is spent: the board, which listens to run ends only while some job
/// has a budget, starts listening with the revision that brings one. (Not
/// listening, it learnt of the spending at its next full read, 10 s
/// later: slots kept dispatching and their runs failed at the budget.)
#[test]
fn a_budget_added_by_a_reload_holds_slots_back_once_spent() {
    let (base, got) = sink();
    let unbudgeted = job(&base).replace("budgets: {messages_per_day: 5}\n", "");
    let dep = Deployment::new(false, &[("spend.yaml", &unbudgeted)]);
    let daemon = dep.daemon();
    wait_for("a first run's messages", &daemon, || {
        (sent(&got) >= 2).then_some(())
    });
    // Room for five runs after the reload is applied, whenever it is.
    let limit = sent(&got) + 10;
    dep.dir.write(
        "jobs.d/spend.yaml",
        &job(&base).replace("messages_per_day: 5", &format!("messages_per_day: {limit}")),
    );
    wait_for("a slot skipped for its budget", &daemon, || {
        let skipped = events(&daemon, "scheduler.dispatch_skipped_budget", "spend");
        (!skipped.is_empty()).then_some(())
    });
    // A slot or two more: still skipped, and no run started past the budget.
    std::thread::sleep(Duration::from_millis(2500));
    let done = runs(&daemon, "spend");
    let failed: Vec<&Value> = done.iter().filter(|r| r["status"] != "succeeded").collect();
    assert!(
        failed.is_empty(),
        "a run started past the budget: {failed:#?}"
    );
    // Spent to the unit (messages sent before the job had a budget are
    // not counted against it).
    let budget = budget_of(&daemon);
    assert_eq!(budget["used"].as_u64(), Some(limit as u64), "{budget:#}");
    assert!(sent(&got) >= limit);
}

/// A budget that is not a positive whole number is refused by `validate`
/// with the field named.
#[test]
fn a_bad_budget_is_refused_with_its_field() {
    for bad in ["0", "-1", "2.5", "\"five\"", "{}"] {
        let dep = Deployment::new(
            false,
            &[(
                "x.yaml",
                &format!("id: x\ntype: noop\nbudgets: {{messages_per_day: {bad}}}\n"),
            )],
        );
        let out = dep.dir.run(&["validate"]);
        out.assert_code(1);
        assert!(out.stdout().contains("budgets"), "{bad}: {}", out.explain());
    }
    let unknown = Deployment::new(
        false,
        &[(
            "x.yaml",
            "id: x\ntype: noop\nbudgets: {tokens_per_day: 5}\n",
        )],
    );
    let out = unknown.dir.run(&["validate"]);
    out.assert_code(1);
    assert!(out.stdout().contains("tokens_per_day"), "{}", out.explain());
}
