//! A run about to be queued: what its trigger knows, and why it may be
//! refused.

use jiff::Timestamp;
use serde_json::Value;

use crate::store::runs::Trigger;

/// A new run's description; the queue fills in the rest.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub job_id: String,
    pub trigger: Trigger,
    pub inputs: Value,
    pub run_key: String,
    pub scheduled_at: Option<Timestamp>,
    pub chain_depth: u32,
    /// Not ready before this time (delayed follow-ups).
    pub due_at: Option<Timestamp>,
    /// Event data merged into `run.queued` (e.g. schedule lateness).
    pub extra: Value,
    /// The run waits for an approval before it starts, whatever its job
    /// says: its inbound trigger or skill requires one.
    pub requires_approval: bool,
    /// The W3C `traceparent` of the request that started the run (an
    /// inbound webhook's): the run continues that trace.
    pub traceparent: Option<String>,
}

impl NewRun {
    pub fn manual(job_id: &str, inputs: Value) -> NewRun {
        let id = new_run_id();
        NewRun {
            run_key: format!("manual:{id}"),
            id,
            job_id: job_id.to_string(),
            trigger: Trigger::Manual,
            inputs,
            scheduled_at: None,
            chain_depth: 0,
            due_at: None,
            extra: Value::Null,
            requires_approval: false,
            traceparent: None,
        }
    }
}

/// Why a run was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotQueued {
    /// A run with this id is in the queue already (a command handled twice).
    Duplicate,
    /// No such job in the applied revision.
    NoSuchJob,
    /// The job is disabled: it gets no new runs.
    Disabled,
    /// A follow-up, while `waiting` follow-up runs of its job wait to
    /// start: its `limits.queued_follow_ups` (`limit`) is reached.
    FollowUpsFull { waiting: usize, limit: u32 },
}

/// A new run id: UUID v7, so ids sort by creation time.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
