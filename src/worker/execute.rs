//! One attempt of a claimed run, the same for every job type: the handler
//! from the job-type table, one timeout policy and one panic policy.
//!
//! Timeout: past the job's `timeout_ms` the worker marks the attempt timed
//! out and fires the run's token; the handler gets [`WIND_DOWN`] to stop (a
//! command's process group gets SIGTERM, then SIGKILL) and the attempt ends
//! `timed_out` whatever it returns. Panic: the handler is polled under
//! [`CatchPanic`], so a panic in any handler, at its first poll or later,
//! fails its run (retryable, by the job's retry policy) and the worker goes
//! on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt;

use super::WorkerContext;
use super::catch_panic::CatchPanic;
use crate::jobs::Attempt;
use crate::otel;
use crate::run::{Claim, Outcome, RunError, RunHost, RunResult};

/// How long a handler has to stop after its timeout fired its token.
pub const WIND_DOWN: Duration = Duration::from_secs(5);

/// Run one attempt of a claimed run, in its span: a child of the run's
/// root span, the parent of its steps' and requests' spans.
pub async fn execute(host: &Arc<dyn RunHost>, ctx: &WorkerContext, claim: Claim) -> Outcome {
    let Some(parent) = otel::run_context(&claim.run.trace_id, &claim.run.id) else {
        return attempt(host, ctx, claim).await;
    };
    let attributes = vec![
        KeyValue::new("multijob.run_id", claim.run.id.clone()),
        KeyValue::new("multijob.job_id", claim.run.job_id.clone()),
        KeyValue::new("multijob.attempt", i64::from(claim.run.attempt)),
    ];
    let name = format!("attempt {}", claim.run.attempt);
    let span = otel::child_of(&parent, name, attributes);
    let outcome = attempt(host, ctx, claim).with_context(span.clone()).await;
    let error = match &outcome {
        Outcome::Succeeded(_) | Outcome::AwaitingApproval { .. } => None,
        Outcome::Failed(e) => Some(e.to_string()),
        Outcome::TimedOut => Some("timed out".to_string()),
        Outcome::Cancelled(why) => Some(why.clone()),
        Outcome::Interrupted => Some("interrupted by a shutdown".to_string()),
    };
    otel::end(&span, error.as_deref());
    outcome
}

/// Run one attempt of a claimed run with its job type's handler, under the
/// job's timeout, with panics contained.
async fn attempt(host: &Arc<dyn RunHost>, ctx: &WorkerContext, claim: Claim) -> Outcome {
    let Claim { run, job, cancel } = claim;
    let timed_out = AtomicBool::new(false);
    let attempt = Attempt {
        run: &run,
        job: &job,
        host,
        data_dir: &ctx.data_dir,
        allow_command: ctx.allow_command,
        connectors: &ctx.connectors,
        connector_metrics: ctx.connector_metrics.as_ref(),
        workflow_metrics: ctx.workflow_metrics.as_ref(),
        files: &ctx.files,
        cancel: &cancel,
        timed_out: &timed_out,
    };
    let handlers = ctx.handlers;
    // The handler is called inside the guarded future, so a panic before
    // its first await is contained too.
    let mut handler = CatchPanic::new(async move { handlers.run(attempt).await });
    let limit = Duration::from_millis(job.timeout_ms.max(1));
    // A handler that is done at its first poll (noop) never starts the timer.
    let finished = match tokio::time::timeout(limit, &mut handler).await {
        Ok(finished) => finished,
        Err(_) => {
            timed_out.store(true, Ordering::SeqCst);
            cancel.cancel();
            let _ = tokio::time::timeout(WIND_DOWN, handler).await;
            return Outcome::TimedOut;
        }
    };
    match finished {
        Ok(result) => outcome(host.as_ref(), ctx, &run.id, result),
        Err(panic) => {
            tracing::error!(
                run_id = run.id,
                job_type = job.job_type,
                panic,
                "a run's handler panicked; the run fails"
            );
            Outcome::Failed(RunError::retryable(format!(
                "the {} handler crashed: {panic}",
                job.job_type
            )))
        }
    }
}

/// What a handler's result means for the run.
fn outcome(host: &dyn RunHost, ctx: &WorkerContext, run_id: &str, result: RunResult) -> Outcome {
    match result {
        Ok(output) => Outcome::Succeeded(output),
        Err(RunError::AwaitingApproval {
            approval_id,
            key,
            reason,
        }) => Outcome::AwaitingApproval {
            approval_id,
            step_id: key,
            reason,
        },
        // Stopped by shutdown: it runs again; otherwise by someone's cancel.
        Err(RunError::Cancelled) if ctx.shutdown.is_cancelled() => Outcome::Interrupted,
        Err(RunError::Cancelled) => Outcome::Cancelled(
            host.cancel_reason(run_id)
                .unwrap_or_else(|| "cancelled".to_string()),
        ),
        Err(e) => Outcome::Failed(e),
    }
}

#[cfg(test)]
mod tests;
