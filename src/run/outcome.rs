//! How an attempt ended, and why a run failed.

use serde_json::Value;

/// Why a run failed, and so whether retrying can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// Worth retrying (a flaky peer, a simulated failure).
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (bad input, forbidden by policy).
    #[error("{0}")]
    Permanent(String),
    /// The token fired: timeout, replace or shutdown; the caller knows which.
    #[error("cancelled")]
    Cancelled,
    /// A workflow `approval` step waits for a decision: the run pauses.
    /// `key` is the step's idempotency key: the decision is recorded
    /// under it and the step finds it when the run runs again.
    #[error("waiting for approval {approval_id}: {reason}")]
    AwaitingApproval {
        approval_id: String,
        key: String,
        reason: String,
    },
}

impl RunError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, RunError::Retryable(_))
    }
}

pub type RunResult = Result<Value, RunError>;

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded(Value),
    Failed(RunError),
    TimedOut,
    /// Cancelled by `overlap: replace` or an operator.
    Cancelled(String),
    /// The daemon is shutting down: the run goes back to the queue and
    /// this attempt does not count against its retries.
    Interrupted,
    /// A workflow `approval` step waits: the run parks in
    /// `awaiting_approval` and its attempt stays open with its number.
    /// Approved, the same attempt goes on after the approval step (one
    /// attempt, with `resumed_at`, so a pause never costs a retry);
    /// rejected, the attempt and the step end failed.
    AwaitingApproval {
        approval_id: String,
        step_id: String,
        reason: String,
    },
}
