//! The run's state machine: how a run moves between `queued`, `running`,
//! `retrying`, `awaiting_approval` and its final states. [`transition`]
//! takes the run's record, what the decision needs ([`Context`]: the job's
//! retry policy and failure memory, the job's failure state, the time) and
//! what happened ([`Event`]); it changes the record and returns where the
//! run now is ([`Next`]) with the store writes and events to submit
//! ([`Effects`]); [`admitted`] is a new run's first state. No IO, no locks,
//! no clock reads (time is an argument): the queue keeps the lock, its
//! indexes and submitting. It uses `spec` (the job), `store` (the run's
//! records, mutations, events) and the rest of `run` (outcomes, retry).

mod admit;
mod ended;
#[cfg(test)]
mod tests;

use jiff::Timestamp;
use serde_json::{Value, json};

pub use admit::{Admission, admitted};

use super::Outcome;
use crate::spec::model::Job;
use crate::store::runs::{Approval, ApprovalStatus, Attempt, FailureState, Run, RunStatus};
use crate::store::{Mutation, NewEvent, format_ts};

/// What a transition needs besides the run's record.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The run's job as applied: its retry policy, failure memory and
    /// timeout. `None` when the job is gone (defaults apply, and no
    /// failure memory is kept).
    pub job: Option<&'a Job>,
    /// The job's failure state before this transition.
    pub failure: &'a FailureState,
    /// When it happens: attempts, records and due times use it.
    pub now: Timestamp,
    /// The time (RFC 3339) the events are stamped with: the event log's
    /// wall clock, which a virtual clock does not move.
    pub stamp: &'a str,
}

/// What happened to a run.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A worker takes the queued run: a new attempt, or the attempt paused
    /// for an approval goes on. `dispatch`: the run is also handed to the
    /// cluster's ready stream (a Redis deployment).
    Started {
        owner: String,
        spec_hash: String,
        dispatch: bool,
    },
    /// A delayed or retrying run's due time came: it is queued.
    Due,
    /// The attempt ended, or a run not running was cancelled.
    Ended(Outcome),
    /// A decision on the approval the run waits for.
    Decided {
        approval: &'a Approval,
        approve: bool,
        by: &'a str,
        note: Option<&'a str>,
    },
    /// Recovery found the run `running` under a process that died.
    WorkerLost,
}

/// Where the run is after a transition: what the queue's indexes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Executing on a worker.
    Running,
    /// Queued: in line (or, for a new run due later, among the delayed).
    Queued,
    /// Cut short by a shutdown and queued again; the attempt did not count.
    /// It goes on after the restart, or at once when it ran elsewhere.
    Interrupted,
    /// Waits until `due` for its next attempt.
    Retrying { due: Timestamp },
    /// Parked until approval `approval_id` is decided.
    AwaitingApproval { approval_id: String },
    /// Succeeded, failed, timed out or cancelled: it leaves the queue.
    Finished,
}

/// What a transition gives the queue to apply and submit.
#[derive(Debug)]
pub struct Effects {
    pub next: Next,
    /// Store writes and events, in the order they must be applied; a run
    /// whose state changed ends with its `PutRun`.
    pub mutations: Vec<Mutation>,
    /// The job's new failure state, when it changed (its `Failure` write
    /// is in `mutations`).
    pub failure: Option<FailureState>,
}

impl Effects {
    fn new(next: Next, mutations: Vec<Mutation>) -> Effects {
        Effects {
            next,
            mutations,
            failure: None,
        }
    }
}

/// Move `run` on by `event`.
pub fn transition(run: &mut Run, ctx: &Context<'_>, event: Event<'_>) -> Effects {
    match event {
        Event::Started {
            owner,
            spec_hash,
            dispatch,
        } => started(run, ctx, owner, spec_hash, dispatch),
        Event::Due => {
            if run.status == RunStatus::Retrying {
                run.status = RunStatus::Queued;
            }
            run.due_at = None;
            Effects::new(Next::Queued, Vec::new())
        }
        Event::Ended(outcome) => ended::ended(run, ctx, outcome),
        Event::Decided {
            approval,
            approve,
            by,
            note,
        } => decided(run, ctx, approval, approve, by, note),
        // Cancelled before its process died: not worth another attempt.
        Event::WorkerLost => match run.operator_cancel() {
            Some(text) => ended::ended(run, ctx, Outcome::Cancelled(text)),
            None => ended::worker_lost(run, ctx),
        },
    }
}

fn started(
    run: &mut Run,
    ctx: &Context<'_>,
    owner: String,
    spec_hash: String,
    dispatch: bool,
) -> Effects {
    let started = format_ts(ctx.now);
    run.status = RunStatus::Running;
    run.started_at.get_or_insert_with(|| started.clone());
    run.spec_hash = spec_hash;
    run.lease_owner = Some(owner);
    match run.attempts.last_mut() {
        // Approved after a pause: the open attempt goes on.
        Some(a) if a.finished_at.is_none() => {
            a.status = RunStatus::Running;
            a.resumed_at = Some(started);
        }
        _ => {
            run.attempt += 1;
            run.attempts.push(Attempt {
                n: run.attempt,
                started_at: started,
                resumed_at: None,
                finished_at: None,
                status: RunStatus::Running,
                error: None,
                worker: None,
            });
        }
    }
    let mut mutations = vec![
        Mutation::PutRun(Box::new(run.clone())),
        run_event(ctx, run, "run.started", json!({"attempt": run.attempt})),
    ];
    if dispatch {
        mutations.push(Mutation::Dispatch {
            run_id: run.id.clone(),
            group: ctx.job.and_then(|j| j.worker_group.clone()),
        });
    }
    Effects::new(Next::Running, mutations)
}

/// Approved, the run is queued again and its paused attempt goes on when
/// it starts; rejected, the waiting step and the run fail. Either way the
/// decision is recorded where the approval step finds it. The operator's
/// note, when there is one, goes with the decision everywhere it is told.
fn decided(
    run: &mut Run,
    ctx: &Context<'_>,
    approval: &Approval,
    approve: bool,
    by: &str,
    note: Option<&str>,
) -> Effects {
    let decided = Approval {
        status: if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Rejected
        },
        decided_at: Some(format_ts(ctx.now)),
        decided_by: Some(by.to_string()),
        note: note.map(str::to_string),
        ..approval.clone()
    };
    let with_note = |mut data: Value| {
        if let Some(note) = note {
            data["note"] = json!(note);
        }
        data
    };
    let kind = if approve {
        "approval.approved"
    } else {
        "approval.rejected"
    };
    let mut mutations = vec![Mutation::Event(
        stamped(
            ctx,
            kind,
            with_note(json!({"approval_id": decided.id, "by": by})),
        )
        .job(decided.job_id.clone())
        .run(decided.run_id.clone()),
    )];
    if let Some(step) = &decided.step_id {
        // What the approval step finds when the run runs again.
        mutations.push(Mutation::PutKv {
            key: super::approval_record_key(step),
            value: with_note(json!({
                "decision": if approve { "approved" } else { "rejected" },
                "decided_at": decided.decided_at,
                "by": by,
            })),
        });
    }
    mutations.push(Mutation::PutApproval(decided));
    if !approve {
        let because = note.map(|n| format!(": {n}")).unwrap_or_default();
        let reason = format!("approval {} rejected by {by}{because}", approval.id);
        let failed = Outcome::Failed(super::RunError::Permanent(reason));
        let mut effects = ended::ended(run, ctx, failed);
        mutations.append(&mut effects.mutations);
        effects.mutations = mutations;
        return effects;
    }
    run.status = RunStatus::Queued;
    if let Some(a) = run.attempts.last_mut()
        && a.finished_at.is_none()
    {
        a.status = RunStatus::Queued;
    }
    mutations.push(Mutation::PutRun(Box::new(run.clone())));
    Effects::new(Next::Queued, mutations)
}

/// An event stamped with the context's time.
fn stamped(ctx: &Context<'_>, kind: &str, data: Value) -> NewEvent {
    NewEvent {
        event_type: kind.to_string(),
        at: ctx.stamp.to_string(),
        job_id: None,
        run_id: None,
        data,
    }
}

/// An event about `run`.
fn run_event(ctx: &Context<'_>, run: &Run, kind: &str, data: Value) -> Mutation {
    Mutation::Event(
        stamped(ctx, kind, data)
            .job(run.job_id.clone())
            .run(run.id.clone()),
    )
}
