//! How an attempt ended, and why a run failed.
//!
//! [`RunError`] is the one classification of a failure, whoever raised it
//! (a connector, a workflow action, a job handler, the worker): whether
//! retrying can help, and when the peer said to come back.

use std::time::Duration;

use serde_json::Value;

/// Why a run failed, and so whether retrying can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// Worth retrying (a flaky peer, a simulated failure). `retry_after`
    /// is when the peer asked to be called again (an HTTP `Retry-After`),
    /// if it said.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
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
    /// A retryable failure whose peer did not say when to come back.
    pub fn retryable(message: impl Into<String>) -> RunError {
        RunError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, RunError::Retryable { .. })
    }

    /// When the peer asked to be called again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RunError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What went wrong, without the classification: the message of a
    /// failure, `cancelled`, or the reason a run waits for approval.
    pub fn message(&self) -> &str {
        match self {
            RunError::Retryable { message, .. } | RunError::Permanent(message) => message,
            RunError::Cancelled => "cancelled",
            RunError::AwaitingApproval { reason, .. } => reason,
        }
    }

    /// The same failure with its message rewritten (a prefix naming where
    /// it happened, secrets scrubbed): the classification and the
    /// retry-after stay. A cancellation or a pause has no message to
    /// rewrite and is returned as is.
    pub fn map_message(self, rewrite: impl FnOnce(String) -> String) -> RunError {
        match self {
            RunError::Retryable {
                message,
                retry_after,
            } => RunError::Retryable {
                message: rewrite(message),
                retry_after,
            },
            RunError::Permanent(message) => RunError::Permanent(rewrite(message)),
            other => other,
        }
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
