//! The worker pool: N tasks that claim runs, execute their handler under
//! the job's timeout, and report the outcome to the queue (which retries,
//! fails or completes the run).
//!
//! Shutdown drains: no new claims; runs in flight get a grace period, then
//! are interrupted and go back to the queue for the next start.

pub mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::jobs::{self, RunContext, RunError};
use crate::queue::{Claim, Outcome, RunQueue};

/// What every run of this process shares.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub data_dir: std::path::PathBuf,
    pub allow_command: bool,
    /// Fired when the grace period after SIGTERM ends.
    pub shutdown: CancellationToken,
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
        let deadline = tokio::time::Instant::now() + grace;
        while self.busy.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.busy.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(
                runs = left,
                "grace period over: interrupting runs; they run again after the restart"
            );
            ctx.shutdown.cancel();
            for token in queue.running_tokens() {
                token.cancel();
            }
        }
        for h in self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

async fn worker_loop(queue: Arc<RunQueue>, ctx: WorkerContext, busy: Arc<AtomicUsize>) {
    while let Some(claim) = queue.claim().await {
        busy.fetch_add(1, Ordering::SeqCst);
        let run_id = claim.run.id.clone();
        let outcome = execute(&queue, &ctx, claim).await;
        queue.finish(&run_id, outcome);
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn execute(queue: &RunQueue, ctx: &WorkerContext, claim: Claim) -> Outcome {
    let Claim { run, job, cancel } = claim;
    // noop does nothing: no task, no timer.
    if job.job_type == "noop" {
        return Outcome::Succeeded(json!({}));
    }
    if !jobs::handles(&job.job_type) {
        return Outcome::Failed(RunError::Permanent(format!(
            "job type {} has no handler in this build of multijob",
            job.job_type
        )));
    }
    let rc = RunContext {
        run_id: run.id.clone(),
        job_id: run.job_id.clone(),
        attempt: run.attempt,
        inputs: run.inputs.clone(),
        data_dir: ctx.data_dir.clone(),
        allow_command: ctx.allow_command,
        store: Some(queue.store().clone()),
        applied: Some(queue.applied()),
    };
    let timeout = Duration::from_millis(job.timeout_ms.max(1));
    let handler_cancel = cancel.clone();
    let job_for_task = job.clone();
    // A task of its own, so a panicking handler fails its run, not the worker.
    let mut task =
        tokio::spawn(async move { jobs::execute(&job_for_task, &rc, &handler_cancel).await });
    let result = tokio::select! {
        r = &mut task => Some(r),
        _ = tokio::time::sleep(timeout) => None,
    };
    match result {
        Some(Ok(Ok(output))) => Outcome::Succeeded(output),
        Some(Ok(Err(RunError::Cancelled))) => cancelled(queue, ctx, &run.id),
        Some(Ok(Err(e))) => Outcome::Failed(e),
        Some(Err(join)) => {
            Outcome::Failed(RunError::Retryable(format!("the handler crashed: {join}")))
        }
        None => {
            // Timed out: cancel the handler (a command's process group is
            // killed) and give it a moment to clean up.
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            Outcome::TimedOut
        }
    }
}

fn cancelled(queue: &RunQueue, ctx: &WorkerContext, run_id: &str) -> Outcome {
    if ctx.shutdown.is_cancelled() {
        Outcome::Interrupted
    } else {
        Outcome::Cancelled(
            queue
                .cancel_reason(run_id)
                .unwrap_or_else(|| "cancelled".to_string()),
        )
    }
}
