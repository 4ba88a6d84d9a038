//! Executing runs: the embedded pool of N tasks that claim runs from the
//! queue, [`execute`] (one attempt of any job type, with the one timeout
//! policy and the one panic policy: a panicking handler fails its run and
//! the worker goes on), and [`drain`] (grace, then interrupt) that the
//! pool and the Redis stream workers share. The pool reports each outcome
//! to the queue, which retries, fails or completes the run.
//!
//! This module may use `jobs`, `workflow`, `queue`, `run`, `connectors`,
//! `store`, `spec` and the leaves below them; never `reconcile`, `status`,
//! `cluster` or the daemon.

mod catch_panic;
pub mod drain;
mod execute;

pub use execute::{WIND_DOWN, execute};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::jobs::{ConnectorsByRevision, Handlers};
use crate::queue::RunQueue;
use crate::run::{BoxFuture, FollowUpHandover, NewRun, RunHost};
use crate::store::runs::StepRecord;
use crate::store::{Applied, Store};
use crate::workflow::metrics::WorkflowGauge;

impl RunHost for RunQueue {
    fn applied(&self) -> Arc<Applied> {
        RunQueue::applied(self)
    }
    fn store(&self) -> &Store {
        RunQueue::store(self)
    }
    fn clock(&self) -> Clock {
        RunQueue::clock(self)
    }
    fn cancel_reason(&self, run_id: &str) -> Option<String> {
        RunQueue::cancel_reason(self, run_id)
    }
    fn follow_up(&self, run: NewRun) -> BoxFuture<'_, FollowUpHandover> {
        let queued = self.enqueue_follow_up(run).map(|_| ());
        Box::pin(async move { Ok(queued) })
    }
    fn record_steps(&self, run_id: &str, steps: Vec<StepRecord>) {
        RunQueue::record_steps(self, run_id, steps)
    }
    fn record_usage(&self, run_id: &str, llm_tokens: u64) {
        RunQueue::record_usage(self, run_id, llm_tokens)
    }
}

/// What every run of this process shares.
#[derive(Clone)]
pub struct WorkerContext {
    pub data_dir: std::path::PathBuf,
    pub allow_command: bool,
    /// Fired when the grace period after SIGTERM ends.
    pub shutdown: CancellationToken,
    /// Where workflow `metric` steps write (the daemon's registry).
    pub workflow_metrics: Option<WorkflowGauge>,
    /// What connector calls count into.
    pub connector_metrics: Option<crate::connectors::metrics::ConnectorMetrics>,
    /// The connectors of the applied revision, rebuilt when it changes.
    pub connectors: Arc<ConnectorsByRevision>,
    /// What `files` steps may write, and the data dir's usage.
    pub files: Arc<crate::workflow::files::FilesQuota>,
    /// The handler of each job type ([`crate::jobs::BUILTIN`]).
    pub handlers: Handlers<'static>,
}

impl WorkerContext {
    pub fn new(data_dir: std::path::PathBuf, allow_command: bool) -> Self {
        WorkerContext {
            files: Arc::new(crate::workflow::files::FilesQuota::new(
                data_dir.clone(),
                Default::default(),
            )),
            data_dir,
            allow_command,
            shutdown: CancellationToken::new(),
            workflow_metrics: None,
            connector_metrics: None,
            connectors: Arc::default(),
            handlers: crate::jobs::BUILTIN,
        }
    }
}

pub struct WorkerPool {
    handles: Vec<JoinHandle<()>>,
    busy: Arc<AtomicUsize>,
    total: usize,
}

impl WorkerPool {
    /// Start `n` workers; `busy` counts the runs they execute.
    pub fn spawn(
        n: usize,
        queue: Arc<RunQueue>,
        ctx: WorkerContext,
        busy: Arc<AtomicUsize>,
    ) -> WorkerPool {
        let handles = (0..n)
            .map(|_| tokio::spawn(worker_loop(queue.clone(), ctx.clone(), busy.clone())))
            .collect();
        WorkerPool {
            handles,
            busy,
            total: n,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Stop claiming, give in-flight runs `grace`, then interrupt them.
    pub async fn drain(self, queue: &RunQueue, ctx: &WorkerContext, grace: Duration) {
        queue.drain();
        let busy = || self.busy.load(Ordering::SeqCst);
        drain::grace_then_interrupt(busy, grace, &ctx.shutdown, || queue.running_tokens()).await;
        for h in self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

async fn worker_loop(queue: Arc<RunQueue>, ctx: WorkerContext, busy: Arc<AtomicUsize>) {
    let host: Arc<dyn RunHost> = queue.clone();
    while let Some(claim) = queue.claim().await {
        busy.fetch_add(1, Ordering::SeqCst);
        let run_id = claim.run.id.clone();
        let outcome = execute(&host, &ctx, claim).await;
        queue.finish(&run_id, outcome);
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}
