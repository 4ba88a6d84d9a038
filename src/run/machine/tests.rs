//! Every transition of the run's state machine, on fixed times (a virtual
//! clock: nothing sleeps, nothing reads the time). Each test checks what
//! the store and the event log would see: the new status, the attempts,
//! the kinds of writes in order, and the events' names and data.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::run::{NewRun, Outcome, RunError, approval_record_key};
use crate::spec::model::{Job, Priority};
use crate::store::runs::{FailureState, StepRecord, StepStatus, Trigger};

const STAMP: &str = "2026-03-01T09:59:59.999Z";
const QUEUED: &str = "2026-03-01T10:00:00.000Z";
const STARTED: &str = "2026-03-01T10:00:01.000Z";
const ENDED: &str = "2026-03-01T10:00:03.000Z";

fn at(t: &str) -> Timestamp {
    t.parse().expect("a fixed test time")
}

fn job(spec: Value) -> Job {
    let mut base = json!({"id": "j", "type": "noop", "timeout_ms": 1500});
    if let (Value::Object(b), Value::Object(s)) = (&mut base, spec) {
        b.extend(s);
    }
    serde_json::from_value(base).expect("a valid job")
}

/// A job with `max_retry` retries, 5 s then 30 s apart.
fn retrying_job(max_retry: u32) -> Job {
    job(json!({"retry_policy": {"max_retry": max_retry, "backoff_sec": [5, 30]}}))
}

fn ctx<'a>(job: Option<&'a Job>, failure: &'a FailureState, now: &str) -> Context<'a> {
    Context {
        job,
        failure,
        now: at(now),
        stamp: STAMP,
    }
}

fn new_run() -> NewRun {
    NewRun {
        id: "r1".into(),
        job_id: "j".into(),
        trigger: Trigger::Manual,
        inputs: json!({"who": "me"}),
        run_key: "manual:r1".into(),
        scheduled_at: None,
        chain_depth: 0,
        due_at: None,
        extra: json!({"lateness_ms": 7}),
        requires_approval: false,
        traceparent: None,
    }
}

fn admit(job: &Job) -> (Run, Effects) {
    let admission = Admission {
        job,
        spec_hash: "h1".into(),
        revision: "rev1".into(),
        priority: Priority::Normal,
    };
    admitted(
        new_run(),
        admission,
        &ctx(Some(job), &FailureState::default(), QUEUED),
    )
}

fn start(run: &mut Run, job: &Job, now: &str) -> Effects {
    let started = Event::Started {
        owner: "pid-1".into(),
        spec_hash: "h1".into(),
        dispatch: false,
    };
    transition(run, &ctx(Some(job), &FailureState::default(), now), started)
}

/// A run of `job` whose first attempt started at `STARTED`.
fn running(job: &Job) -> Run {
    let (mut run, _) = admit(job);
    start(&mut run, job, STARTED);
    run
}

fn end(run: &mut Run, job: &Job, outcome: Outcome) -> Effects {
    transition(
        run,
        &ctx(Some(job), &FailureState::default(), ENDED),
        Event::Ended(outcome),
    )
}

/// The writes in order: `event:<name>` for events, else the write's kind.
fn kinds(effects: &Effects) -> Vec<String> {
    effects
        .mutations
        .iter()
        .map(|m| match m {
            Mutation::Event(e) => format!("event:{}", e.event_type),
            Mutation::PutRun(_) => "put_run".into(),
            Mutation::Failure(..) => "failure".into(),
            Mutation::PutApproval(_) => "put_approval".into(),
            Mutation::PutKv { .. } => "put_kv".into(),
            Mutation::Dispatch { .. } => "dispatch".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The event named `name` (job and run ids and stamp checked).
fn event(effects: &Effects, name: &str) -> Value {
    let e = effects
        .mutations
        .iter()
        .find_map(|m| match m {
            Mutation::Event(e) if e.event_type == name => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {name} event in {:?}", kinds(effects)));
    assert_eq!(e.at, STAMP);
    assert_eq!(e.job_id.as_deref(), Some("j"));
    assert_eq!(e.run_id.as_deref(), Some("r1"));
    e.data.clone()
}

/// The run record the transition writes: the last `PutRun`, equal to
/// the record it left behind.
fn written(effects: &Effects, run: &Run) -> Run {
    let put = effects.mutations.iter().rev().find_map(|m| match m {
        Mutation::PutRun(r) => Some((**r).clone()),
        _ => None,
    });
    let put = put.expect("a PutRun");
    assert_eq!(&put, run, "the record written is the run as left");
    put
}

#[test]
fn a_new_run_is_queued_with_its_trigger_data_and_merged_inputs() {
    let job = job(json!({"inputs": {"who": "job", "lang": "en"}}));
    let (run, effects) = admit(&job);
    assert_eq!(effects.next, Next::Queued);
    assert_eq!(kinds(&effects), ["event:run.queued", "put_run"]);
    assert_eq!(
        event(&effects, "run.queued"),
        json!({"trigger": "manual", "scheduled_at": null, "priority": "normal", "lateness_ms": 7})
    );
    let run = written(&effects, &run);
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.attempt, 0);
    assert_eq!(run.queued_at, "2026-03-01T10:00:00.000Z");
    assert_eq!(run.inputs, json!({"who": "me", "lang": "en"}));
    assert_eq!(
        (run.spec_hash.as_str(), run.revision.as_str()),
        ("h1", "rev1")
    );
}

#[test]
fn a_new_run_of_a_job_requiring_approval_waits_with_a_pending_approval() {
    let job = job(json!({"requires_approval": true}));
    let (run, effects) = admit(&job);
    assert_eq!(
        effects.next,
        Next::AwaitingApproval {
            approval_id: "ap-r1".into()
        }
    );
    assert_eq!(
        kinds(&effects),
        [
            "event:run.queued",
            "event:approval.requested",
            "put_approval",
            "put_run"
        ]
    );
    assert_eq!(
        event(&effects, "approval.requested"),
        json!({"approval_id": "ap-r1", "reason": "job j requires approval for every run"})
    );
    assert_eq!(written(&effects, &run).status, RunStatus::AwaitingApproval);
}

#[test]
fn starting_opens_attempt_one_under_the_owner() {
    let job = job(json!({}));
    let (mut run, _) = admit(&job);
    let effects = start(&mut run, &job, STARTED);
    assert_eq!(effects.next, Next::Running);
    assert_eq!(kinds(&effects), ["put_run", "event:run.started"]);
    assert_eq!(event(&effects, "run.started"), json!({"attempt": 1}));
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.attempt, 1);
    assert_eq!(run.started_at.as_deref(), Some("2026-03-01T10:00:01.000Z"));
    assert_eq!(run.lease_owner.as_deref(), Some("pid-1"));
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.attempts[0].n, 1);
    assert_eq!(run.attempts[0].status, RunStatus::Running);
    assert_eq!(run.attempts[0].finished_at, None);
}

#[test]
fn starting_a_dispatched_run_hands_it_to_the_cluster_after_its_record() {
    let job = job(json!({}));
    let (mut run, _) = admit(&job);
    let started = Event::Started {
        owner: "leader".into(),
        spec_hash: "h2".into(),
        dispatch: true,
    };
    let none = FailureState::default();
    let effects = transition(&mut run, &ctx(Some(&job), &none, STARTED), started);
    assert_eq!(
        kinds(&effects),
        ["put_run", "event:run.started", "dispatch"]
    );
    assert_eq!(run.spec_hash, "h2");
}

#[test]
fn success_finishes_the_run_with_its_output_and_duration() {
    let job = job(json!({}));
    let mut run = running(&job);
    let effects = end(&mut run, &job, Outcome::Succeeded(json!({"ok": true})));
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(kinds(&effects), ["event:run.completed", "put_run"]);
    assert_eq!(
        event(&effects, "run.completed"),
        json!({"attempt": 1, "duration_ms": 2000})
    );
    assert!(effects.failure.is_none(), "no failure memory to clear");
    let run = written(&effects, &run);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output, Some(json!({"ok": true})));
    assert_eq!(run.finished_at.as_deref(), Some("2026-03-01T10:00:03.000Z"));
    assert_eq!(run.lease_owner, None);
    assert_eq!(run.attempts[0].status, RunStatus::Succeeded);
    assert_eq!(run.attempts[0].finished_at, run.finished_at);
}

#[test]
fn success_clears_the_jobs_failure_memory() {
    let job = job(json!({}));
    let mut run = running(&job);
    let failing = FailureState {
        consecutive_failures: 2,
        cooldown_until: None,
        last_error: Some("boom".into()),
    };
    let effects = transition(
        &mut run,
        &ctx(Some(&job), &failing, ENDED),
        Event::Ended(Outcome::Succeeded(Value::Null)),
    );
    assert_eq!(
        kinds(&effects),
        ["event:run.completed", "failure", "put_run"]
    );
    assert_eq!(effects.failure, Some(FailureState::default()));
}

#[test]
fn a_retryable_failure_with_a_retry_left_waits_its_backoff() {
    let job = retrying_job(2);
    let mut run = running(&job);
    let failed = Outcome::Failed(RunError::retryable("boom"));
    let effects = end(&mut run, &job, failed);
    let due = at("2026-03-01T10:00:08.000Z");
    assert_eq!(effects.next, Next::Retrying { due });
    assert_eq!(kinds(&effects), ["event:run.retrying", "put_run"]);
    assert_eq!(
        event(&effects, "run.retrying"),
        json!({"attempt": 1, "error": "boom", "due_at": "2026-03-01T10:00:08.000Z"})
    );
    let run = written(&effects, &run);
    assert_eq!(run.status, RunStatus::Retrying);
    assert_eq!(run.error.as_deref(), Some("boom"));
    assert_eq!(run.lease_owner, None);
    assert_eq!(run.finished_at, None);
    assert_eq!(run.attempts[0].status, RunStatus::Failed);
    assert_eq!(run.attempts[0].error.as_deref(), Some("boom"));
}

#[test]
fn the_second_retry_waits_the_policys_second_backoff_under_attempt_two() {
    let job = retrying_job(2);
    let mut run = running(&job);
    end(&mut run, &job, Outcome::Failed(RunError::retryable("boom")));
    let none = FailureState::default();
    let due = transition(
        &mut run,
        &ctx(Some(&job), &none, "2026-03-01T10:00:08.000Z"),
        Event::Due,
    );
    assert_eq!(due.next, Next::Queued);
    assert!(due.mutations.is_empty(), "becoming due writes nothing");
    assert_eq!(
        (run.status, run.due_at.as_deref()),
        (RunStatus::Queued, None)
    );
    start(&mut run, &job, "2026-03-01T10:00:08.000Z");
    assert_eq!(run.attempt, 2);
    assert_eq!(
        run.started_at.as_deref(),
        Some(STARTED),
        "the run's start stays"
    );
    let again = transition(
        &mut run,
        &ctx(Some(&job), &none, "2026-03-01T10:00:10.000Z"),
        Event::Ended(Outcome::Failed(RunError::retryable("boom"))),
    );
    assert_eq!(
        again.next,
        Next::Retrying {
            due: at("2026-03-01T10:00:40.000Z")
        }
    );
    assert_eq!(event(&again, "run.retrying")["attempt"], 2);
    assert_eq!(run.attempts.len(), 2);
}

#[test]
fn a_failure_with_no_retry_left_fails_the_run_and_counts_in_failure_memory() {
    let job = retrying_job(0);
    let mut run = running(&job);
    let effects = end(&mut run, &job, Outcome::Failed(RunError::retryable("boom")));
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(kinds(&effects), ["event:run.failed", "failure", "put_run"]);
    assert_eq!(
        event(&effects, "run.failed"),
        json!({"attempt": 1, "error": "boom"})
    );
    let memory = effects.failure.clone().expect("failure memory");
    assert_eq!(memory.consecutive_failures, 1);
    assert_eq!(memory.last_error.as_deref(), Some("boom"));
    assert_eq!(memory.cooldown_until, None, "below the threshold of 3");
    let run = written(&effects, &run);
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Failed, Some("boom"))
    );
    assert_eq!(run.duration_ms, Some(2000));
}

#[test]
fn a_final_failure_keeps_the_output_it_carries_and_its_error() {
    let job = retrying_job(0);
    let mut run = running(&job);
    let printed = json!({"exit_code": 3, "stdout": "out\n", "stderr": "oops\n"});
    let failed = RunError::retryable("exit code 3: oops").with_output(printed.clone());
    let effects = end(&mut run, &job, Outcome::Failed(failed));
    assert_eq!(kinds(&effects), ["event:run.failed", "failure", "put_run"]);
    assert_eq!(event(&effects, "run.failed")["error"], "exit code 3: oops");
    let run = written(&effects, &run);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("exit code 3: oops"));
    assert_eq!(run.output, Some(printed));
}

#[test]
fn the_failure_that_reaches_the_threshold_starts_a_cooldown() {
    let job = retrying_job(0);
    let mut run = running(&job);
    let two = FailureState {
        consecutive_failures: 2,
        cooldown_until: None,
        last_error: Some("boom".into()),
    };
    let effects = transition(
        &mut run,
        &ctx(Some(&job), &two, ENDED),
        Event::Ended(Outcome::Failed(RunError::Permanent("bad".into()))),
    );
    assert_eq!(
        kinds(&effects),
        [
            "event:run.failed",
            "event:job.cooldown",
            "failure",
            "put_run"
        ]
    );
    assert_eq!(
        event(&effects, "job.cooldown"),
        json!({"consecutive_failures": 3, "cooldown_until": "2026-03-01T10:02:03.000Z"})
    );
}

#[test]
fn a_permanent_failure_is_not_retried_with_retries_left() {
    let job = retrying_job(3);
    let mut run = running(&job);
    let effects = end(
        &mut run,
        &job,
        Outcome::Failed(RunError::Permanent("bad input".into())),
    );
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("bad input"));
}

#[test]
fn a_timeout_with_a_retry_left_is_an_attempts_timeout_and_retries() {
    let job = retrying_job(1);
    let mut run = running(&job);
    let effects = end(&mut run, &job, Outcome::TimedOut);
    assert_eq!(
        kinds(&effects),
        ["event:run.timed_out", "event:run.retrying", "put_run"]
    );
    assert_eq!(
        event(&effects, "run.timed_out"),
        json!({"attempt": 1, "error": "timed out after 1500 ms", "retrying": true})
    );
    assert_eq!(run.status, RunStatus::Retrying);
    assert_eq!(run.attempts[0].status, RunStatus::TimedOut);
}

#[test]
fn a_final_timeout_ends_the_run_timed_out_without_a_failed_event() {
    let job = retrying_job(0);
    let mut run = running(&job);
    let effects = end(&mut run, &job, Outcome::TimedOut);
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(
        kinds(&effects),
        ["event:run.timed_out", "failure", "put_run"]
    );
    assert_eq!(event(&effects, "run.timed_out")["retrying"], false);
    assert_eq!(run.status, RunStatus::TimedOut);
    assert_eq!(run.error.as_deref(), Some("timed out after 1500 ms"));
}

#[test]
fn a_timeout_of_a_deleted_job_uses_the_defaults_and_keeps_no_memory() {
    let job = retrying_job(3);
    let mut run = running(&job);
    let none = FailureState::default();
    let effects = transition(
        &mut run,
        &ctx(None, &none, ENDED),
        Event::Ended(Outcome::TimedOut),
    );
    assert_eq!(
        effects.next,
        Next::Finished,
        "the default policy has no retry"
    );
    assert_eq!(kinds(&effects), ["event:run.timed_out", "put_run"]);
    assert_eq!(run.error.as_deref(), Some("timed out after 0 ms"));
}

#[test]
fn cancelling_a_running_run_closes_its_attempt_and_keeps_failure_memory() {
    let job = job(json!({}));
    let mut run = running(&job);
    let reason = "replaced by a newer run of j";
    let effects = end(&mut run, &job, Outcome::Cancelled(reason.into()));
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(kinds(&effects), ["event:run.cancelled", "put_run"]);
    assert_eq!(event(&effects, "run.cancelled"), json!({"reason": reason}));
    assert!(effects.failure.is_none());
    let run = written(&effects, &run);
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Cancelled, Some(reason))
    );
    assert_eq!(run.attempts[0].status, RunStatus::Cancelled);
}

#[test]
fn an_operators_cancel_ends_a_failing_attempt_cancelled_with_who_and_why() {
    let job = retrying_job(3);
    let mut run = running(&job);
    run.cancelled_by = Some("ann@host".into());
    run.cancel_reason = Some("stuck".into());
    // The killed process fails its attempt: not retried, not remembered.
    let killed = Outcome::Failed(RunError::retryable("exit code 143"));
    let effects = end(&mut run, &job, killed);
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(kinds(&effects), ["event:run.cancelled", "put_run"]);
    assert_eq!(
        event(&effects, "run.cancelled"),
        json!({"run_id": "r1", "job_id": "j", "by": "ann@host", "reason": "stuck"})
    );
    assert!(effects.failure.is_none());
    let run = written(&effects, &run);
    let text = Some("cancelled by ann@host: stuck");
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Cancelled, text)
    );
    assert_eq!(run.attempts[0].error.as_deref(), text);
    assert_eq!(run.cancelled_by.as_deref(), Some("ann@host"));
}

#[test]
fn an_operators_cancel_does_not_undo_a_success_that_came_first() {
    let job = job(json!({}));
    let mut run = running(&job);
    run.cancelled_by = Some("ann@host".into());
    let effects = end(&mut run, &job, Outcome::Succeeded(json!({"ok": true})));
    assert_eq!(kinds(&effects), ["event:run.completed", "put_run"]);
    assert_eq!(run.status, RunStatus::Succeeded);
}

#[test]
fn an_operators_cancel_of_a_run_that_paused_meanwhile_ends_it() {
    let job = job(json!({}));
    let mut run = running(&job);
    run.cancelled_by = Some("ann@host".into());
    let paused = Outcome::AwaitingApproval {
        approval_id: "a1".into(),
        step_id: "ask".into(),
        reason: "ok?".into(),
    };
    let effects = end(&mut run, &job, paused);
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.error.as_deref(), Some("cancelled by ann@host"));
}

#[test]
fn a_run_cancelled_before_its_worker_was_lost_is_not_retried() {
    let job = retrying_job(3);
    let mut run = running(&job);
    run.cancelled_by = Some("ann@host".into());
    let effects = transition(
        &mut run,
        &ctx(Some(&job), &FailureState::default(), ENDED),
        Event::WorkerLost,
    );
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(effects.failure.is_none());
}

#[test]
fn cancelling_a_queued_run_finishes_it_without_an_attempt() {
    let job = job(json!({}));
    let (mut run, _) = admit(&job);
    let effects = end(&mut run, &job, Outcome::Cancelled("by an operator".into()));
    assert_eq!(kinds(&effects), ["event:run.cancelled", "put_run"]);
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.attempts.is_empty());
    assert_eq!(run.duration_ms, None, "it never started");
}

fn step(id: &str, status: StepStatus) -> StepRecord {
    StepRecord {
        id: id.into(),
        status,
        output: Value::Null,
        error: None,
        duration_ms: 0,
        variant: None,
        completed: BTreeMap::from([("create".to_string(), json!(1))]),
    }
}

#[test]
fn a_shutdown_requeues_the_run_without_counting_the_attempt() {
    let job = retrying_job(0);
    let mut run = running(&job);
    run.steps = vec![
        step("a", StepStatus::Succeeded),
        step("b", StepStatus::Cancelled),
    ];
    let effects = end(&mut run, &job, Outcome::Interrupted);
    assert_eq!(effects.next, Next::Interrupted);
    assert_eq!(kinds(&effects), ["event:run.queued", "put_run"]);
    assert_eq!(
        event(&effects, "run.queued"),
        json!({"trigger": "manual", "reason": "interrupted by shutdown"})
    );
    let run = written(&effects, &run);
    assert_eq!((run.status, run.attempt), (RunStatus::Queued, 0));
    assert_eq!(run.lease_owner, None);
    assert_eq!(run.steps[0].status, StepStatus::Succeeded);
    assert_eq!(
        run.steps[1].status,
        StepStatus::Interrupted,
        "it goes on from there"
    );
    assert_eq!(run.attempts[0].status, RunStatus::Cancelled);
    assert_eq!(
        run.attempts[0].error.as_deref(),
        Some("interrupted by shutdown; the run is queued again")
    );
}

#[test]
fn after_a_shutdown_the_run_starts_again_as_attempt_one() {
    let job = retrying_job(0);
    let mut run = running(&job);
    end(&mut run, &job, Outcome::Interrupted);
    start(&mut run, &job, "2026-03-01T10:05:00.000Z");
    assert_eq!(run.attempt, 1);
    let numbers: Vec<u32> = run.attempts.iter().map(|a| a.n).collect();
    assert_eq!(numbers, [1, 1]);
}

fn pause(run: &mut Run, job: &Job) -> Effects {
    run.steps = vec![step("ask", StepStatus::AwaitingApproval)];
    let paused = Outcome::AwaitingApproval {
        approval_id: "ap-1".into(),
        step_id: "r1:ask".into(),
        reason: "ship it?".into(),
    };
    end(run, job, paused)
}

#[test]
fn a_pause_for_approval_keeps_the_attempt_open() {
    let job = job(json!({}));
    let mut run = running(&job);
    let effects = pause(&mut run, &job);
    assert_eq!(
        effects.next,
        Next::AwaitingApproval {
            approval_id: "ap-1".into()
        }
    );
    assert_eq!(
        kinds(&effects),
        ["event:approval.requested", "put_approval", "put_run"]
    );
    assert_eq!(
        event(&effects, "approval.requested"),
        json!({"approval_id": "ap-1", "reason": "ship it?", "step": "r1:ask"})
    );
    let Some(Mutation::PutApproval(approval)) = effects.mutations.get(1) else {
        panic!("no approval written");
    };
    assert_eq!(approval.status, ApprovalStatus::Pending);
    assert_eq!(approval.requested_at, "2026-03-01T10:00:03.000Z");
    let run = written(&effects, &run);
    assert_eq!((run.status, run.attempt), (RunStatus::AwaitingApproval, 1));
    assert_eq!(run.lease_owner, None);
    assert_eq!(run.attempts[0].status, RunStatus::AwaitingApproval);
    assert_eq!(run.attempts[0].finished_at, None);
}

fn pending() -> Approval {
    Approval {
        id: "ap-1".into(),
        run_id: "r1".into(),
        job_id: "j".into(),
        step_id: Some("r1:ask".into()),
        reason: Some("ship it?".into()),
        status: ApprovalStatus::Pending,
        requested_at: ENDED.into(),
        decided_at: None,
        decided_by: None,
        note: None,
    }
}

fn decide(run: &mut Run, job: &Job, approve: bool) -> Effects {
    let approval = pending();
    let decided = Event::Decided {
        approval: &approval,
        approve,
        by: "ops",
        note: None,
    };
    let none = FailureState::default();
    transition(
        run,
        &ctx(Some(job), &none, "2026-03-01T10:01:00.000Z"),
        decided,
    )
}

#[test]
fn an_approval_queues_the_run_and_records_the_decision_for_the_step() {
    let job = job(json!({}));
    let mut run = running(&job);
    pause(&mut run, &job);
    let effects = decide(&mut run, &job, true);
    assert_eq!(effects.next, Next::Queued);
    assert_eq!(
        kinds(&effects),
        [
            "event:approval.approved",
            "put_kv",
            "put_approval",
            "put_run"
        ]
    );
    assert_eq!(
        event(&effects, "approval.approved"),
        json!({"approval_id": "ap-1", "by": "ops"})
    );
    let Some(Mutation::PutKv { key, value }) = effects.mutations.get(1) else {
        panic!("no decision record");
    };
    assert_eq!(key, &approval_record_key("r1:ask"));
    assert_eq!(
        value,
        &json!({"decision": "approved", "decided_at": "2026-03-01T10:01:00.000Z", "by": "ops"})
    );
    let Some(Mutation::PutApproval(approval)) = effects.mutations.get(2) else {
        panic!("no approval written");
    };
    assert_eq!(approval.status, ApprovalStatus::Approved);
    assert_eq!(approval.decided_by.as_deref(), Some("ops"));
    let run = written(&effects, &run);
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.attempts[0].status, RunStatus::Queued);
}

#[test]
fn an_approved_run_goes_on_in_the_same_attempt_with_resumed_at() {
    let job = job(json!({}));
    let mut run = running(&job);
    pause(&mut run, &job);
    decide(&mut run, &job, true);
    let effects = start(&mut run, &job, "2026-03-01T10:01:05.000Z");
    assert_eq!(event(&effects, "run.started"), json!({"attempt": 1}));
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.attempts[0].status, RunStatus::Running);
    assert_eq!(run.attempts[0].started_at, STARTED);
    assert_eq!(
        run.attempts[0].resumed_at.as_deref(),
        Some("2026-03-01T10:01:05.000Z")
    );
}

#[test]
fn a_rejection_fails_the_waiting_step_and_the_run() {
    let job = retrying_job(3);
    let mut run = running(&job);
    pause(&mut run, &job);
    let effects = decide(&mut run, &job, false);
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(
        kinds(&effects),
        [
            "event:approval.rejected",
            "put_kv",
            "put_approval",
            "event:run.failed",
            "failure",
            "put_run"
        ]
    );
    let error = "approval ap-1 rejected by ops";
    assert_eq!(
        event(&effects, "run.failed"),
        json!({"attempt": 1, "error": error})
    );
    let run = written(&effects, &run);
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Failed, Some(error))
    );
    assert_eq!(run.steps[0].status, StepStatus::Failed);
    assert_eq!(run.steps[0].error.as_deref(), Some(error));
    assert!(run.steps[0].completed.is_empty(), "nothing resumes now");
    assert_eq!(run.attempts[0].status, RunStatus::Failed);
}

#[test]
fn cancelling_a_run_waiting_for_approval_closes_the_waiting_step() {
    let job = job(json!({}));
    let mut run = running(&job);
    pause(&mut run, &job);
    let effects = end(&mut run, &job, Outcome::Cancelled("by an operator".into()));
    assert_eq!(kinds(&effects), ["event:run.cancelled", "put_run"]);
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.steps[0].status, StepStatus::Cancelled);
    assert_eq!(run.steps[0].error.as_deref(), Some("by an operator"));
    assert!(run.steps[0].completed.is_empty());
}

fn lose_worker(run: &mut Run, job: Option<&Job>) -> Effects {
    let none = FailureState::default();
    transition(run, &ctx(job, &none, ENDED), Event::WorkerLost)
}

#[test]
fn a_lost_worker_with_a_retry_left_is_retried() {
    let job = retrying_job(1);
    let mut run = running(&job);
    let effects = lose_worker(&mut run, Some(&job));
    assert_eq!(
        effects.next,
        Next::Retrying {
            due: at("2026-03-01T10:00:08.000Z")
        }
    );
    assert_eq!(kinds(&effects), ["event:run.retrying", "put_run"]);
    assert_eq!(
        event(&effects, "run.retrying"),
        json!({"attempt": 1, "reason": "worker lost", "due_at": "2026-03-01T10:00:08.000Z"})
    );
    let run = written(&effects, &run);
    assert_eq!(run.status, RunStatus::Retrying);
    assert_eq!(run.attempts[0].status, RunStatus::Failed);
    assert_eq!(
        run.attempts[0].error.as_deref(),
        Some("worker lost: the process stopped while running (lease expired)")
    );
}

#[test]
fn a_lost_worker_with_no_retry_left_fails_the_run() {
    let job = retrying_job(0);
    let mut run = running(&job);
    let effects = lose_worker(&mut run, Some(&job));
    assert_eq!(effects.next, Next::Finished);
    assert_eq!(kinds(&effects), ["failure", "event:run.failed", "put_run"]);
    let error = "worker lost: the process stopped while running, and no retries are left";
    assert_eq!(
        event(&effects, "run.failed"),
        json!({"attempt": 1, "error": error})
    );
    assert_eq!(
        effects.failure.as_ref().map(|f| f.consecutive_failures),
        Some(1)
    );
    let run = written(&effects, &run);
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Failed, Some(error))
    );
}

#[test]
fn a_lost_worker_of_a_deleted_job_fails_without_failure_memory() {
    let job = retrying_job(2);
    let mut run = running(&job);
    let effects = lose_worker(&mut run, None);
    assert_eq!(kinds(&effects), ["event:run.failed", "put_run"]);
    assert!(effects.failure.is_none());
}
