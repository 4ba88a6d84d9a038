//! A new run's first state: its record, queued or (for a job that
//! requires approval) waiting for a decision.

use serde_json::{Value, json};

use super::{Context, Effects, Next, run_event};
use crate::otel::{new_trace_id, parse_traceparent};
use crate::run::NewRun;
use crate::spec::model::{Job, Priority};
use crate::store::runs::{Approval, ApprovalStatus, Run, RunStatus, Usage};
use crate::store::{Mutation, format_ts};

/// What the applied revision says about a new run of a job.
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    pub job: &'a Job,
    /// The job's spec hash as applied.
    pub spec_hash: String,
    /// The applied revision's id (empty before the first).
    pub revision: String,
    /// The job's priority, its flow's default applied.
    pub priority: Priority,
}

/// A new run's record and what queueing it writes: its `run.queued` event
/// (with the trigger's `extra` data), and for a job that requires approval
/// its pending approval.
pub fn admitted(n: NewRun, a: Admission<'_>, ctx: &Context<'_>) -> (Run, Effects) {
    let queued_at = format_ts(ctx.now);
    // The job's own gate, else the one its inbound trigger or skill asked for.
    let gate = if a.job.requires_approval {
        Some(format!("job {} requires approval for every run", n.job_id))
    } else if n.requires_approval {
        Some(format!(
            "its {} trigger requires approval for every run",
            n.trigger.as_str()
        ))
    } else {
        None
    };
    let status = if gate.is_some() {
        RunStatus::AwaitingApproval
    } else {
        RunStatus::Queued
    };
    // An inbound `traceparent` is continued; a malformed one is ignored
    // (W3C trace context), and the run starts its own trace.
    let (trace_id, trace_parent_span) = match n.traceparent.as_deref().and_then(parse_traceparent) {
        Some((trace, span)) => (trace, Some(span)),
        None => (new_trace_id(), None),
    };
    let run = Run {
        id: n.id,
        job_id: n.job_id,
        status,
        trigger: n.trigger,
        inputs: merged_inputs(a.job, &n.inputs),
        attempt: 0,
        attempts: Vec::new(),
        scheduled_at: n.scheduled_at.map(format_ts),
        queued_at: queued_at.clone(),
        started_at: None,
        finished_at: None,
        duration_ms: None,
        error: None,
        spec_hash: a.spec_hash,
        revision: a.revision,
        steps: Vec::new(),
        usage: Usage::default(),
        output: None,
        run_key: n.run_key,
        due_at: n.due_at.map(format_ts),
        priority: a.priority,
        flow: a.job.flow.clone(),
        chain_depth: n.chain_depth,
        lease_owner: None,
        cancelled_by: None,
        cancel_reason: None,
        trace_id,
        trace_parent_span,
    };
    let mut data =
        json!({"trigger": run.trigger, "scheduled_at": run.scheduled_at, "priority": run.priority});
    if let (Value::Object(d), Value::Object(extra)) = (&mut data, n.extra) {
        d.extend(extra);
    }
    let mut mutations = Vec::with_capacity(4);
    mutations.push(run_event(ctx, &run, "run.queued", data));
    let mut next = Next::Queued;
    if status == RunStatus::AwaitingApproval {
        let approval = Approval {
            id: format!("ap-{}", run.id),
            run_id: run.id.clone(),
            job_id: run.job_id.clone(),
            step_id: None,
            reason: gate,
            status: ApprovalStatus::Pending,
            requested_at: queued_at,
            decided_at: None,
            decided_by: None,
            note: None,
        };
        let data = json!({"approval_id": approval.id, "reason": approval.reason});
        mutations.push(run_event(ctx, &run, "approval.requested", data));
        next = Next::AwaitingApproval {
            approval_id: approval.id.clone(),
        };
        mutations.push(Mutation::PutApproval(approval));
    }
    mutations.push(Mutation::PutRun(Box::new(run.clone())));
    (run, Effects::new(next, mutations))
}

/// The job's inputs overlaid with a trigger's inputs (templates only; the
/// trigger never changes policy).
fn merged_inputs(job: &Job, extra: &Value) -> Value {
    let mut base = job.inputs.clone();
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    Value::Object(base)
}
