//! One panic policy for every job type: a handler that panics fails its run
//! with a clear error, and the worker that ran it goes on serving.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::clock::Clock;
use crate::jobs::{HANDLED_TYPES, Handler, Handlers};
use crate::queue::{QueueConfig, RunQueue};
use crate::run::{BoxFuture, NewRun};
use crate::spec::{SourceFile, build};
use crate::store::runs::{Run, RunStatus};
use crate::store::{Applied, Store};
use crate::worker::WorkerPool;

/// Serves a run whose inputs say `ok`; panics otherwise, before it
/// returns its future.
fn panics_at_call(a: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    if a.run.inputs["ok"] != json!(true) {
        panic!("{} broke at once", a.job.id);
    }
    Box::pin(async move { Ok(json!({"served": a.job.job_type})) })
}

/// Serves a run whose inputs say `ok`; panics otherwise, after an await.
fn panics_when_polled(a: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    Box::pin(async move {
        tokio::task::yield_now().await;
        if a.run.inputs["ok"] != json!(true) {
            panic!("{} broke later", a.job.id);
        }
        Ok(json!({"served": a.job.job_type}))
    })
}

/// Every job type the runtime runs, each with a handler that panics.
static PANICKING: [(&str, Handler); 8] = [
    ("noop", panics_at_call),
    ("simulation.heavy", panics_when_polled),
    ("command", panics_at_call),
    ("backup.export", panics_when_polled),
    ("monitor.channel", panics_at_call),
    ("report.daily", panics_when_polled),
    ("agent.workflow", panics_at_call),
    ("http.request", panics_when_polled),
];

fn job(job_type: &str) -> Arc<crate::spec::model::Job> {
    let id = format!("a-{}", job_type.replace('.', "-"));
    Arc::new(
        serde_json::from_value(json!({"id": id, "type": job_type}))
            .expect("a minimal job deserializes"),
    )
}

fn queue(applied: Applied) -> (tempfile::TempDir, Arc<RunQueue>) {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let store = Store::open_sqlite(&tmp.path().join("state.db")).expect("a store");
    let queue = RunQueue::new(
        store,
        Arc::new(applied),
        QueueConfig::default(),
        Clock::Wall,
    );
    (tmp, queue)
}

fn claim(job_type: &str, inputs: Value) -> Claim {
    let job = job(job_type);
    let mut run = crate::testkit::sample_run("run-1", &job.id, "k", RunStatus::Running);
    run.inputs = inputs;
    Claim {
        run,
        job,
        cancel: CancellationToken::new(),
    }
}

#[test]
fn the_test_table_covers_every_job_type() {
    let types: Vec<&str> = Handlers::new(&PANICKING).types().collect();
    assert_eq!(types, HANDLED_TYPES);
}

#[tokio::test]
async fn a_panic_in_any_handler_fails_its_run_and_the_next_run_succeeds() {
    let (tmp, queue) = queue(Applied::default());
    let host: Arc<dyn RunHost> = queue;
    let ctx = WorkerContext {
        handlers: Handlers::new(&PANICKING),
        ..WorkerContext::new(tmp.path().join("data"), false)
    };
    for job_type in HANDLED_TYPES {
        let id = job(job_type).id.clone();
        let how = if matches!(
            job_type,
            "noop" | "command" | "monitor.channel" | "agent.workflow"
        ) {
            "at once"
        } else {
            "later"
        };
        match execute(&host, &ctx, claim(job_type, json!({}))).await {
            Outcome::Failed(RunError::Retryable { message, .. }) => assert_eq!(
                message,
                format!("the {job_type} handler crashed: {id} broke {how}")
            ),
            other => panic!("{job_type}: {other:?}"),
        }
        let next = execute(&host, &ctx, claim(job_type, json!({"ok": true}))).await;
        match next {
            Outcome::Succeeded(output) => assert_eq!(output, json!({"served": job_type})),
            other => panic!("{job_type}: {other:?}"),
        }
    }
}

/// The jobs of `types`, one each, as the pool's queue runs them.
fn applied_with(types: &[&str]) -> Applied {
    let text: String = types
        .iter()
        .map(|t| format!("---\nid: {}\ntype: {t}\n", job(t).id))
        .collect();
    let loaded = build(&[SourceFile {
        path: "jobs.d/t.yaml".into(),
        text,
    }]);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    Applied {
        revision: None,
        snapshot: loaded.snapshot,
    }
}

async fn finished(queue: &RunQueue, id: &str) -> Run {
    for _ in 0..500 {
        if let Ok(Some((_, run))) = queue.store().run(id).await
            && matches!(run.status, RunStatus::Succeeded | RunStatus::Failed)
        {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {id} did not finish");
}

#[tokio::test]
async fn the_pools_worker_keeps_serving_after_a_handler_panics() {
    let types = ["noop", "simulation.heavy"];
    let (tmp, queue) = queue(applied_with(&types));
    let ctx = WorkerContext {
        handlers: Handlers::new(&PANICKING),
        ..WorkerContext::new(tmp.path().join("data"), false)
    };
    let busy = Arc::new(AtomicUsize::new(0));
    let pool = WorkerPool::spawn(1, queue.clone(), ctx.clone(), busy.clone());
    for job_type in types {
        let id = job(job_type).id.clone();
        let broken = queue.enqueue(vec![NewRun::manual(&id, json!({}))]);
        let run = finished(&queue, &broken[0]).await;
        assert_eq!(run.status, RunStatus::Failed, "{job_type}");
        let error = run.error.unwrap_or_default();
        assert!(
            error.contains(&format!("the {job_type} handler crashed: {id} broke")),
            "{error}"
        );
        let next = queue.enqueue(vec![NewRun::manual(&id, json!({"ok": true}))]);
        let run = finished(&queue, &next[0]).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{job_type}");
        assert_eq!(run.output, Some(json!({"served": job_type})));
    }
    assert_eq!(busy.load(std::sync::atomic::Ordering::SeqCst), 0);
    pool.drain(&queue, &ctx, Duration::from_secs(1)).await;
}

/// Stops when its token fires, and sees that the timeout fired it.
fn stops_when_cancelled(a: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    Box::pin(async move {
        a.cancel.cancelled().await;
        assert!(a.timed_out(), "cancelled by its timeout");
        Err(RunError::Cancelled)
    })
}

/// Never ends, whatever its token says.
fn ignores_its_token(_: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    Box::pin(std::future::pending())
}

static SLOW: [(&str, Handler); 2] = [
    ("noop", stops_when_cancelled),
    ("simulation.heavy", ignores_its_token),
];

#[tokio::test(start_paused = true)]
async fn past_its_timeout_a_run_is_cancelled_and_given_the_wind_down() {
    let (tmp, queue) = queue(Applied::default());
    let host: Arc<dyn RunHost> = queue;
    let ctx = WorkerContext {
        handlers: Handlers::new(&SLOW),
        ..WorkerContext::new(tmp.path().join("data"), false)
    };
    let second = Duration::from_secs(1);
    for (job_type, takes) in [("noop", second), ("simulation.heavy", second + WIND_DOWN)] {
        let mut claim = claim(job_type, json!({}));
        let mut job = (*claim.job).clone();
        job.timeout_ms = 1000;
        claim.job = Arc::new(job);
        let token = claim.cancel.clone();
        let started = tokio::time::Instant::now();
        let outcome = execute(&host, &ctx, claim).await;
        assert!(
            matches!(outcome, Outcome::TimedOut),
            "{job_type}: {outcome:?}"
        );
        assert!(token.is_cancelled(), "{job_type}");
        assert_eq!(started.elapsed(), takes, "{job_type}");
    }
}
