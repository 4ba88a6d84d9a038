//! Runs as recorded: one record per run, attempts inside it (SPEC section 6
//! shape), plus the per-job state the scheduler keeps durable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::model::Priority;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    AwaitingApproval,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Retrying,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Retrying => "retrying",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Queued,
        RunStatus::AwaitingApproval,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
        RunStatus::Retrying,
    ];

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Active runs count for overlap and lanes; a run waiting for its
    /// retry is active.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Queued
                | RunStatus::AwaitingApproval
                | RunStatus::Running
                | RunStatus::Retrying
        )
    }

    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Workflow,
    Retry,
    /// The inbound listener (`kind: Trigger`) or a chat bridge, by source.
    Webhook,
    Github,
    Slack,
    Telegram,
    Sms,
}

impl Trigger {
    /// Its name in the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Workflow => "workflow",
            Trigger::Retry => "retry",
            Trigger::Webhook => "webhook",
            Trigger::Github => "github",
            Trigger::Slack => "slack",
            Trigger::Telegram => "telegram",
            Trigger::Sms => "sms",
        }
    }
}

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub n: u32,
    pub started_at: String,
    /// When the attempt went on after its approval step was approved: a
    /// pause does not end an attempt (see `run::Outcome::AwaitingApproval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<String>,
    pub finished_at: Option<String>,
    pub status: RunStatus,
    pub error: Option<String>,
    /// The worker process that executed it (a Redis deployment's node
    /// name, as `GET /api/v1/workers` lists it); absent on the embedded
    /// store, whose own pool runs everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// How a workflow step ended, or why it stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    /// The step paused the run until its approval is decided.
    AwaitingApproval,
    /// The step was cut short (or not started) by a shutdown: the run is
    /// queued again and goes on from this step.
    Interrupted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::AwaitingApproval => "awaiting_approval",
            StepStatus::Interrupted => "interrupted",
        }
    }
}

/// A workflow step's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub status: StepStatus,
    pub output: Value,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The prompt variant an `llm`/`agent` step with `variants` used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// On a step waiting for an approval: the outputs of what completed
    /// inside it (a skill's steps, `foreach` items) by path (`create`,
    /// `each:2/send`), so that the run resumes without doing them again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub completed: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub llm_tokens: u64,
}

/// A run (SPEC section 6 fields, plus what the runtime needs). Fields
/// with a default may be absent: the Redis store leaves them out (see
/// `store::redis::record`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub job_id: String,
    pub status: RunStatus,
    pub trigger: Trigger,
    #[serde(default = "empty_object")]
    pub inputs: Value,
    /// 1-based; 0 before the first attempt starts.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    pub scheduled_at: Option<String>,
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub spec_hash: String,
    pub revision: String,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub usage: Usage,
    pub output: Option<Value>,
    /// `job@slot` for scheduled runs, unique: a slot is dispatched once.
    pub run_key: String,
    /// When a retrying or delayed run becomes ready.
    pub due_at: Option<String>,
    #[serde(default = "normal_priority")]
    pub priority: Priority,
    pub flow: Option<String>,
    /// `schedule_job` follow-up depth.
    #[serde(default)]
    pub chain_depth: u32,
    /// Process holding the run while it is `running`.
    pub lease_owner: Option<String>,
    /// Who cancelled the run (`multijob cancel`; `--by` or `$USER@host`),
    /// set from the request on: an attempt that ends any other way than
    /// succeeding then ends the run `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// Why, as the operator said (`--reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// The run's OpenTelemetry trace id (32 hex): random, or the trace of
    /// an inbound `traceparent` it continues. Empty on older records.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// The span of another system that started the run (an inbound
    /// `traceparent`'s parent id): its root span's parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent_span: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn normal_priority() -> Priority {
    Priority::Normal
}

impl Run {
    /// What an operator's cancel says in the record's error and its
    /// messages: `cancelled by WHO: REASON` (`None` when not cancelled by
    /// one).
    pub fn operator_cancel(&self) -> Option<String> {
        let by = self.cancelled_by.as_deref()?;
        Some(match self.cancel_reason.as_deref() {
            Some(reason) => format!("cancelled by {by}: {reason}"),
            None => format!("cancelled by {by}"),
        })
    }
}

/// A job's failure memory (SPEC section 4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureState {
    pub consecutive_failures: u32,
    pub cooldown_until: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    /// The run was cancelled while it waited: nothing is left to decide.
    Cancelled,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub run_id: String,
    pub job_id: String,
    /// The workflow step that asked, or None for `requires_approval`.
    pub step_id: Option<String>,
    pub reason: Option<String>,
    pub status: ApprovalStatus,
    pub requested_at: String,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    /// Why the operator decided as they did (`approvals approve --note`);
    /// records from before notes read as None.
    #[serde(default)]
    pub note: Option<String>,
}

/// Longest note kept with an approval decision: a sentence or a link, not
/// a report. The CLI refuses a longer one, and so does the daemon for a
/// command that did not come through the CLI.
pub const MAX_APPROVAL_NOTE_BYTES: usize = 2048;

/// A request from another process (the CLI) for the daemon to act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum InboxCommand {
    Trigger {
        run_id: String,
        job_id: String,
        inputs: Value,
        /// Runs to queue (load tests); ids after the first get a suffix.
        #[serde(default = "one")]
        count: u32,
    },
    Decide {
        approval_id: String,
        approve: bool,
        by: String,
        /// The operator's note; inbox rows from before notes have none.
        #[serde(default)]
        note: Option<String>,
    },
    /// `multijob cancel`: end an unfinished run `cancelled` (a running
    /// one through its executor). A run that already ended is left alone.
    Cancel {
        run_id: String,
        /// `--by`, or `$USER@host`.
        by: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A `schedule_job` step on a worker process asks the leader to queue
    /// a follow-up (Redis deployments; one process enqueues directly).
    FollowUp {
        run_id: String,
        job_id: String,
        inputs: Value,
        run_key: String,
        chain_depth: u32,
        /// RFC 3339; not ready before.
        due_at: Option<String>,
        #[serde(default)]
        extra: Value,
    },
    /// `multijob pause`: the job's slots are skipped until `Resume`.
    Pause {
        job_id: String,
        #[serde(default)]
        note: Option<String>,
        by: String,
    },
    /// `multijob resume`.
    Resume { job_id: String, by: String },
    /// `multijob reset`: forget the job's failures and cooldown.
    ResetFailures { job_id: String, by: String },
    /// An inbound request or chat command's run (`inbound::Intake` on a
    /// Redis replica), with the id the sender was answered with: handled
    /// twice (two replicas, a retried delivery), it is queued once.
    Inbound {
        run_id: String,
        job_id: String,
        trigger: Trigger,
        inputs: Value,
        run_key: String,
        #[serde(default)]
        requires_approval: bool,
        #[serde(default)]
        extra: Value,
        /// The inbound request's W3C `traceparent`, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// `multijob memory reset`: forget an agent memory (a job's, or a
    /// shared `memory: KEY`).
    MemoryReset { key: String, by: String },
    /// `multijob backfill`: one run per nominal slot in `[from, to)`
    /// (RFC 3339), keyed `job@slot` like the scheduler's; refused when
    /// the window holds more than `max`.
    Backfill {
        job_id: String,
        from: String,
        to: String,
        max: u64,
        by: String,
    },
    /// An inbound `action: sync` trigger's verified push, received by a
    /// Redis replica: the leader (the process that pulls) fetches now.
    GitSync {
        trigger: String,
        #[serde(default)]
        delivery_id: Option<String>,
    },
}

fn one() -> u32 {
    1
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub job_id: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: usize,
    /// Only runs older than this cursor (a run's seq).
    pub before: Option<i64>,
}

/// What `plan` needs of the live state beyond the applied snapshot: each
/// job's last slot and the unfinished runs per job and per flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveState {
    /// Job id → nominal time of the last slot that got an outcome.
    pub last_slots: std::collections::HashMap<String, jiff::Timestamp>,
    /// Runs queued, running, retrying or awaiting approval, per job.
    pub active_runs_by_job: std::collections::HashMap<String, usize>,
    /// The same, per flow.
    pub active_runs_by_flow: std::collections::HashMap<String, usize>,
}

impl LiveState {
    /// From the stored `(job, last slot RFC 3339)` pairs and the
    /// unfinished runs; a slot that does not parse as a time is left out.
    pub fn gather(slots: Vec<(String, String)>, active: &[Run]) -> LiveState {
        let mut live = LiveState::default();
        for (job, slot) in slots {
            if let Ok(t) = slot.parse() {
                live.last_slots.insert(job, t);
            }
        }
        for run in active {
            *live
                .active_runs_by_job
                .entry(run.job_id.clone())
                .or_default() += 1;
            if let Some(flow) = &run.flow {
                *live.active_runs_by_flow.entry(flow.clone()).or_default() += 1;
            }
        }
        live
    }
}

/// Approvals pending first, then newest first: the order both backends
/// list them in.
pub fn sort_approvals(items: &mut [Approval]) {
    items.sort_by(|a, b| {
        (
            a.status != ApprovalStatus::Pending,
            std::cmp::Reverse(&a.requested_at),
        )
            .cmp(&(
                b.status != ApprovalStatus::Pending,
                std::cmp::Reverse(&b.requested_at),
            ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Rows written before notes existed (an inbox command, an approval
    /// record) still read, with no note.
    #[test]
    fn records_from_before_notes_read_without_one() {
        let old =
            json!({"command": "decide", "approval_id": "ap-1", "approve": true, "by": "cli:me"});
        let command: InboxCommand = serde_json::from_value(old).expect("old inbox row");
        assert!(matches!(command, InboxCommand::Decide { note: None, .. }));
        let old = json!({"id": "ap-1", "run_id": "r", "job_id": "j", "step_id": null,
            "reason": null, "status": "approved", "requested_at": "2026-01-01T00:00:00.000Z",
            "decided_at": "2026-01-01T00:01:00.000Z", "decided_by": "cli:me"});
        let approval: Approval = serde_json::from_value(old).expect("old approval");
        assert_eq!(approval.note, None);
        assert_eq!(approval.decided_by.as_deref(), Some("cli:me"));
    }
}
