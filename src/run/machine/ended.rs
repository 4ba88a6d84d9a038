//! How an attempt's end moves the run: finished, retried, queued again
//! after a shutdown, or parked for an approval.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{Context, Effects, Next, run_event};
use crate::run::{Outcome, RunError, retry};
use crate::spec::model::RetryPolicy;
use crate::store::runs::{Approval, ApprovalStatus, FailureState, Run, RunStatus, StepStatus};
use crate::store::{Mutation, format_ts};

const WORKER_LOST: &str = "worker lost: the process stopped while running (lease expired)";
const WORKER_LOST_FINAL: &str =
    "worker lost: the process stopped while running, and no retries are left";

pub(super) fn ended(run: &mut Run, ctx: &Context<'_>, outcome: Outcome) -> Effects {
    let outcome = operator_cancel_wins(run, outcome);
    // Rejected or cancelled while waiting: the step that asked ends too
    // (a pause is the only way here; approval requeues). A cancel ends
    // one that paused as the cancel came too.
    let ended = match &outcome {
        Outcome::Cancelled(reason) => Some((StepStatus::Cancelled, reason.clone())),
        Outcome::Failed(e) if run.status == RunStatus::AwaitingApproval => {
            Some((StepStatus::Failed, e.to_string()))
        }
        _ => None,
    };
    if let Some((status, error)) = ended {
        close_waiting_steps(run, status, &error);
    }
    match outcome {
        Outcome::Succeeded(output) => succeeded(run, ctx, output),
        Outcome::Interrupted => interrupted(run, ctx),
        Outcome::AwaitingApproval {
            approval_id,
            step_id,
            reason,
        } => paused(run, ctx, approval_id, step_id, reason),
        Outcome::Cancelled(reason) => {
            close_attempt(run, RunStatus::Cancelled, Some(&reason), ctx.now);
            finish_record(
                run,
                RunStatus::Cancelled,
                Some(reason.clone()),
                None,
                ctx.now,
            );
            let data = match &run.cancelled_by {
                Some(by) => json!({"run_id": run.id, "job_id": run.job_id,
                                   "by": by, "reason": run.cancel_reason}),
                None => json!({"reason": reason}),
            };
            let cancelled = run_event(ctx, run, "run.cancelled", data);
            finished(run, vec![cancelled], None)
        }
        Outcome::Failed(e) => {
            let (error, retryable) = (e.to_string(), e.is_retryable());
            let output = match e {
                RunError::WithOutput { output, .. } => Some(*output),
                _ => None,
            };
            failed(run, ctx, RunStatus::Failed, error, retryable, output)
        }
        Outcome::TimedOut => {
            let ms = ctx.job.map(|j| j.timeout_ms).unwrap_or(0);
            let error = format!("timed out after {ms} ms");
            failed(run, ctx, RunStatus::TimedOut, error, true, None)
        }
    }
}

/// An operator's cancel (`multijob cancel`) ends the run `cancelled`
/// however its attempt ended after it (a killed command fails, a step
/// cut short may time out, a shutdown interrupts), unless it succeeded
/// first: it is neither retried nor counted in the failure memory.
fn operator_cancel_wins(run: &Run, outcome: Outcome) -> Outcome {
    match (outcome, run.operator_cancel()) {
        (done @ Outcome::Succeeded(_), _) => done,
        (_, Some(text)) => Outcome::Cancelled(text),
        (other, None) => other,
    }
}

fn succeeded(run: &mut Run, ctx: &Context<'_>, output: Value) -> Effects {
    close_attempt(run, RunStatus::Succeeded, None, ctx.now);
    finish_record(run, RunStatus::Succeeded, None, Some(output), ctx.now);
    let data = json!({"attempt": run.attempt, "duration_ms": run.duration_ms});
    let mut mutations = vec![run_event(ctx, run, "run.completed", data)];
    let mut failure = None;
    // A success clears the failure memory, if there is any to clear.
    if let Some(job) = ctx.job
        && *ctx.failure != FailureState::default()
    {
        let next = retry::after_run(ctx.failure, &job.failure_memory, None, ctx.now);
        failure = Some(remember(run, next, &mut mutations));
    }
    finished(run, mutations, failure)
}

fn interrupted(run: &mut Run, ctx: &Context<'_>) -> Effects {
    // The next execution goes on from the step cut short.
    if let Some(last) = run.steps.last_mut()
        && last.status == StepStatus::Cancelled
    {
        last.status = StepStatus::Interrupted;
    }
    close_attempt(
        run,
        RunStatus::Cancelled,
        Some("interrupted by shutdown; the run is queued again"),
        ctx.now,
    );
    // Does not count against retries.
    run.attempt = run.attempt.saturating_sub(1);
    run.status = RunStatus::Queued;
    run.lease_owner = None;
    let data = json!({"trigger": run.trigger, "reason": "interrupted by shutdown"});
    let mutations = vec![
        run_event(ctx, run, "run.queued", data),
        Mutation::PutRun(Box::new(run.clone())),
    ];
    Effects::new(Next::Interrupted, mutations)
}

fn paused(
    run: &mut Run,
    ctx: &Context<'_>,
    approval_id: String,
    step_id: String,
    reason: String,
) -> Effects {
    // Open, keeping its number: the wait is part of it.
    if let Some(a) = run.attempts.last_mut()
        && a.finished_at.is_none()
    {
        a.status = RunStatus::AwaitingApproval;
    }
    run.status = RunStatus::AwaitingApproval;
    run.lease_owner = None;
    let approval = Approval {
        id: approval_id.clone(),
        run_id: run.id.clone(),
        job_id: run.job_id.clone(),
        step_id: Some(step_id),
        reason: Some(reason.clone()),
        status: ApprovalStatus::Pending,
        requested_at: format_ts(ctx.now),
        decided_at: None,
        decided_by: None,
        note: None,
    };
    let data = json!({"approval_id": approval_id, "reason": reason, "step": approval.step_id});
    let mutations = vec![
        run_event(ctx, run, "approval.requested", data),
        Mutation::PutApproval(approval),
        Mutation::PutRun(Box::new(run.clone())),
    ];
    // Still active: it waits for the decision, not for a worker.
    Effects::new(Next::AwaitingApproval { approval_id }, mutations)
}

/// A failed or timed-out attempt: retried while the policy allows (and
/// the error is worth it), else the run's final outcome, whose record
/// keeps `output`: what the work produced before it failed, if it said.
fn failed(
    run: &mut Run,
    ctx: &Context<'_>,
    status: RunStatus,
    error: String,
    retryable: bool,
    output: Option<Value>,
) -> Effects {
    close_attempt(run, status, Some(&error), ctx.now);
    let wait = retryable
        .then(|| retry::backoff(&policy(ctx), run.attempt))
        .flatten();
    let mut mutations = Vec::with_capacity(4);
    if status == RunStatus::TimedOut {
        // `retrying` tells a final timeout (a run outcome) from an attempt's.
        let data = json!({"attempt": run.attempt, "error": error, "retrying": wait.is_some()});
        mutations.push(run_event(ctx, run, "run.timed_out", data));
    }
    if let Some(wait) = wait {
        let due = later(ctx.now, wait);
        run.status = RunStatus::Retrying;
        run.error = Some(error.clone());
        run.due_at = Some(format_ts(due));
        run.lease_owner = None;
        let data = json!({"attempt": run.attempt, "error": error, "due_at": run.due_at});
        mutations.push(run_event(ctx, run, "run.retrying", data));
        mutations.push(Mutation::PutRun(Box::new(run.clone())));
        // Still active: counts for overlap and lanes.
        return Effects::new(Next::Retrying { due }, mutations);
    }
    finish_record(run, status, Some(error.clone()), output, ctx.now);
    if status == RunStatus::Failed {
        let data = json!({"attempt": run.attempt, "error": error});
        mutations.push(run_event(ctx, run, "run.failed", data));
    }
    let mut failure = None;
    if let Some(job) = ctx.job {
        let prev = ctx.failure;
        let next = retry::after_run(prev, &job.failure_memory, Some(&error), ctx.now);
        if next.cooldown_until.is_some() && next.cooldown_until != prev.cooldown_until {
            let data = json!({"consecutive_failures": next.consecutive_failures, "cooldown_until": next.cooldown_until});
            mutations.push(run_event(ctx, run, "job.cooldown", data));
        }
        failure = Some(remember(run, next, &mut mutations));
    }
    finished(run, mutations, failure)
}

/// The run was `running` under a process that died: its attempt failed
/// (lease lost), and it is retried or failed per its retry policy.
pub(super) fn worker_lost(run: &mut Run, ctx: &Context<'_>) -> Effects {
    close_attempt(run, RunStatus::Failed, Some(WORKER_LOST), ctx.now);
    if let Some(wait) = retry::backoff(&policy(ctx), run.attempt) {
        let due = later(ctx.now, wait);
        run.status = RunStatus::Retrying;
        run.due_at = Some(format_ts(due));
        let data = json!({"attempt": run.attempt, "reason": "worker lost", "due_at": run.due_at});
        let mutations = vec![
            run_event(ctx, run, "run.retrying", data),
            Mutation::PutRun(Box::new(run.clone())),
        ];
        return Effects::new(Next::Retrying { due }, mutations);
    }
    let error = WORKER_LOST_FINAL.to_string();
    finish_record(run, RunStatus::Failed, Some(error.clone()), None, ctx.now);
    let mut mutations = Vec::with_capacity(3);
    let mut failure = None;
    if let Some(job) = ctx.job {
        let next = retry::after_run(ctx.failure, &job.failure_memory, Some(&error), ctx.now);
        failure = Some(remember(run, next, &mut mutations));
    }
    let data = json!({"attempt": run.attempt, "error": error});
    mutations.push(run_event(ctx, run, "run.failed", data));
    finished(run, mutations, failure)
}

/// The job's failure state after this run, written.
fn remember(run: &Run, failure: FailureState, mutations: &mut Vec<Mutation>) -> FailureState {
    mutations.push(Mutation::Failure(run.job_id.clone(), failure.clone()));
    failure
}

/// The run's final record written after `mutations`: it leaves the queue.
fn finished(run: &Run, mut mutations: Vec<Mutation>, failure: Option<FailureState>) -> Effects {
    mutations.push(Mutation::PutRun(Box::new(run.clone())));
    Effects {
        next: Next::Finished,
        mutations,
        failure,
    }
}

/// The job's retry policy; the default one when the job is gone.
fn policy(ctx: &Context<'_>) -> RetryPolicy {
    ctx.job.map(|j| j.retry_policy.clone()).unwrap_or_default()
}

/// `now + wait`, or `now` when that is out of range.
fn later(now: Timestamp, wait: Duration) -> Timestamp {
    SignedDuration::try_from(wait)
        .ok()
        .and_then(|w| now.checked_add(w).ok())
        .unwrap_or(now)
}

fn close_attempt(run: &mut Run, status: RunStatus, error: Option<&str>, t: Timestamp) {
    if let Some(a) = run.attempts.last_mut()
        && a.finished_at.is_none()
    {
        a.finished_at = Some(format_ts(t));
        a.status = status;
        a.error = error.map(str::to_string);
    }
}

/// Step records still waiting for an approval, ended with the run.
fn close_waiting_steps(run: &mut Run, status: StepStatus, error: &str) {
    for step in &mut run.steps {
        if step.status == StepStatus::AwaitingApproval {
            step.status = status;
            step.error = Some(error.to_string());
            // Nothing resumes now.
            step.completed.clear();
        }
    }
}

fn finish_record(
    run: &mut Run,
    status: RunStatus,
    error: Option<String>,
    output: Option<Value>,
    t: Timestamp,
) {
    run.status = status;
    run.error = error;
    run.output = output;
    run.due_at = None;
    run.lease_owner = None;
    run.finished_at = Some(format_ts(t));
    run.duration_ms = run
        .started_at
        .as_ref()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|s| t.duration_since(s).as_millis().max(0) as u64);
}
