use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::clock::Clock;
use crate::jobs::ConnectorsByRevision;
use crate::queue::{QueueConfig, RunQueue};
use crate::run::RunHost;
use crate::spec::model::Job;
use crate::store::runs::{Run, RunStatus};
use crate::store::{Applied, Store};
use crate::workflow::files::FilesQuota;

/// What an attempt borrows, owned by the test.
struct Parts {
    _tmp: tempfile::TempDir,
    host: Arc<dyn RunHost>,
    run: Run,
    connectors: ConnectorsByRevision,
    files: Arc<FilesQuota>,
    cancel: CancellationToken,
    timed_out: AtomicBool,
}

fn parts() -> Parts {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let store = Store::open_sqlite(&tmp.path().join("state.db")).expect("a store");
    let queue = RunQueue::new(
        store,
        Arc::new(Applied::default()),
        QueueConfig::default(),
        Clock::Wall,
    );
    let mut run = crate::testkit::sample_run("run-1", "j", "k", RunStatus::Running);
    run.attempt = 1;
    Parts {
        files: Arc::new(FilesQuota::new(
            tmp.path().to_path_buf(),
            Default::default(),
        )),
        _tmp: tmp,
        host: queue,
        run,
        connectors: ConnectorsByRevision::default(),
        cancel: CancellationToken::new(),
        timed_out: AtomicBool::new(false),
    }
}

fn job(job_type: &str) -> Arc<Job> {
    Arc::new(
        serde_json::from_value(json!({"id": "j", "type": job_type}))
            .expect("a minimal job deserializes"),
    )
}

async fn run(p: &Parts, job_type: &str) -> RunResult {
    let job = job(job_type);
    let attempt = Attempt {
        run: &p.run,
        job: &job,
        host: &p.host,
        data_dir: p._tmp.path(),
        allow_command: false,
        connectors: &p.connectors,
        connector_metrics: None,
        workflow_metrics: None,
        files: &p.files,
        cancel: &p.cancel,
        timed_out: &p.timed_out,
    };
    BUILTIN.run(attempt).await
}

#[tokio::test]
async fn noop_returns_an_empty_object() {
    assert_eq!(run(&parts(), "noop").await, Ok(json!({})));
}

#[tokio::test]
async fn dispatches_by_type() {
    let p = parts();
    let out = run(&p, "simulation.heavy").await;
    assert_eq!(out, Ok(json!({"work_ms": 0, "cpu_ms": 0, "attempt": 1})));
    // allow_command is false here: reaching the command handler shows as
    // its refusal.
    match run(&p, "command").await {
        Err(RunError::Permanent(m)) => assert!(m.contains("--allow-command"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A workflow without steps or a prompt reaches the workflow handler.
    match run(&p, "agent.workflow").await {
        Err(RunError::Permanent(m)) => assert!(m.contains("inputs.prompt"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn other_types_are_a_permanent_error() {
    for job_type in ["made.up", "http.requests"] {
        assert!(!handles(job_type));
        assert_eq!(
            run(&parts(), job_type).await,
            Err(RunError::Permanent(format!(
                "job type {job_type} has no handler in this build of multijob"
            )))
        );
    }
}

#[test]
fn handled_types_are_the_table_and_every_known_type() {
    assert_eq!(BUILTIN.types().collect::<Vec<_>>(), HANDLED_TYPES);
    for job_type in HANDLED_TYPES {
        assert!(handles(job_type));
        assert!(
            crate::spec::model::JOB_TYPES.contains(&job_type),
            "{job_type}"
        );
    }
    // The runtime runs every type a job may declare.
    for job_type in crate::spec::model::JOB_TYPES {
        assert!(handles(job_type), "{job_type} has no handler");
    }
}
