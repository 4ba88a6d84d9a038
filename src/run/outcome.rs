//! How an attempt ended, and why a run failed.
//!
//! [`RunError`] is the one classification of a failure, whoever raised it
//! (a connector, a workflow action, a job handler, the worker): whether
//! retrying can help, and when the peer said to come back. A failure may
//! also carry what the work produced before it failed (a command's stdout
//! and stderr), which the run's record keeps.

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
    /// A failure that also carries what the work produced before it
    /// failed (a command's stdout, stderr and exit code): the run's record
    /// keeps it as its output. The classification, the retry-after and
    /// the message are the wrapped failure's.
    #[error("{error}")]
    WithOutput {
        error: Box<RunError>,
        output: Box<Value>,
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

    /// The same failure, carrying `output`: what the work produced before
    /// it failed. Output already carried is replaced.
    pub fn with_output(self, output: Value) -> RunError {
        let error = match self {
            RunError::WithOutput { error, .. } => error,
            other => Box::new(other),
        };
        RunError::WithOutput {
            error,
            output: Box::new(output),
        }
    }

    /// What the work produced before it failed, if the failure carries it.
    pub fn output(&self) -> Option<&Value> {
        match self {
            RunError::WithOutput { output, .. } => Some(output),
            _ => None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            RunError::WithOutput { error, .. } => error.is_retryable(),
            other => matches!(other, RunError::Retryable { .. }),
        }
    }

    /// When the peer asked to be called again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RunError::Retryable { retry_after, .. } => *retry_after,
            RunError::WithOutput { error, .. } => error.retry_after(),
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
            RunError::WithOutput { error, .. } => error.message(),
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
            RunError::WithOutput { error, output } => RunError::WithOutput {
                error: Box::new(error.map_message(rewrite)),
                output,
            },
            other => other,
        }
    }
}

pub type RunResult = Result<Value, RunError>;

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded(Value),
    /// The error's [`RunError::output`], if it carries one, becomes the
    /// run's output when this failure is final.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message_whatever_the_retry_after() {
        let later = RunError::Retryable {
            message: "GET /x returned HTTP 429: slow".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(later.to_string(), "GET /x returned HTTP 429: slow");
        assert_eq!(RunError::retryable("flaky").to_string(), "flaky");
        assert_eq!(RunError::Permanent("bad".into()).to_string(), "bad");
        assert_eq!(RunError::Cancelled.to_string(), "cancelled");
        let pause = RunError::AwaitingApproval {
            approval_id: "ap-1".into(),
            key: "run:step".into(),
            reason: "ship it?".into(),
        };
        assert_eq!(pause.to_string(), "waiting for approval ap-1: ship it?");
        assert_eq!(pause.message(), "ship it?");
    }

    #[test]
    fn a_rewritten_message_keeps_the_classification_and_the_wait() {
        let later = RunError::Retryable {
            message: "busy".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        let named = later.map_message(|m| format!("step `a`: {m}"));
        assert_eq!(
            named,
            RunError::Retryable {
                message: "step `a`: busy".into(),
                retry_after: Some(Duration::from_secs(30)),
            }
        );
        assert!(named.is_retryable());
        assert_eq!(named.retry_after(), Some(Duration::from_secs(30)));
        let refused = RunError::Permanent("no".into()).map_message(|m| format!("x: {m}"));
        assert_eq!(refused, RunError::Permanent("x: no".into()));
        assert!(!refused.is_retryable() && refused.retry_after().is_none());
        assert_eq!(
            RunError::Cancelled.map_message(|_| "changed".into()),
            RunError::Cancelled
        );
    }

    #[test]
    fn a_failure_with_output_keeps_the_classification_and_the_message() {
        let out = serde_json::json!({"exit_code": 3, "stdout": "out\n"});
        let failed = RunError::retryable("exit code 3: oops").with_output(out.clone());
        assert_eq!(failed.to_string(), "exit code 3: oops");
        assert_eq!(failed.message(), "exit code 3: oops");
        assert!(failed.is_retryable());
        assert_eq!(failed.output(), Some(&out));
        let later = RunError::Retryable {
            message: "busy".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        let later = later.with_output(out.clone());
        assert_eq!(later.retry_after(), Some(Duration::from_secs(30)));
        let named = later.map_message(|m| format!("x: {m}"));
        assert_eq!(named.to_string(), "x: busy");
        assert_eq!(named.output(), Some(&out));
        let refused = RunError::Permanent("no".into()).with_output(out.clone());
        assert!(!refused.is_retryable());
        // Wrapping again replaces the output instead of nesting.
        let again = refused.with_output(Value::Null);
        assert_eq!(again.output(), Some(&Value::Null));
        assert!(
            matches!(again, RunError::WithOutput { error, .. } if *error == RunError::Permanent("no".into()))
        );
        assert_eq!(RunError::Cancelled.output(), None);
    }
}
