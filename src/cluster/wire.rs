//! What travels between processes on the streams: a worker's result.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run::Outcome;
use crate::run::RunError;
use crate::store::runs::StepRecord;

/// An attempt's outcome, as a worker reports it to the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireOutcome {
    Succeeded {
        output: Value,
    },
    Failed {
        error: String,
        retryable: bool,
        /// What the work produced before it failed (a command's stdout and
        /// stderr), for the run's record. Absent from older workers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
    },
    TimedOut,
    Cancelled {
        reason: String,
    },
    Interrupted,
    AwaitingApproval {
        approval_id: String,
        step_id: String,
        reason: String,
    },
}

impl From<Outcome> for WireOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Succeeded(output) => WireOutcome::Succeeded { output },
            Outcome::Failed(e) => match e {
                RunError::AwaitingApproval {
                    approval_id,
                    key,
                    reason,
                } => WireOutcome::AwaitingApproval {
                    approval_id,
                    step_id: key,
                    reason,
                },
                RunError::Cancelled => WireOutcome::Cancelled {
                    reason: "cancelled".into(),
                },
                other => WireOutcome::Failed {
                    retryable: other.is_retryable(),
                    error: other.to_string(),
                    output: other.output().cloned(),
                },
            },
            Outcome::TimedOut => WireOutcome::TimedOut,
            Outcome::Cancelled(reason) => WireOutcome::Cancelled { reason },
            Outcome::Interrupted => WireOutcome::Interrupted,
            Outcome::AwaitingApproval {
                approval_id,
                step_id,
                reason,
            } => WireOutcome::AwaitingApproval {
                approval_id,
                step_id,
                reason,
            },
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(w: WireOutcome) -> Self {
        match w {
            WireOutcome::Succeeded { output } => Outcome::Succeeded(output),
            WireOutcome::Failed {
                error,
                retryable,
                output,
            } => {
                let error = if retryable {
                    RunError::retryable(error)
                } else {
                    RunError::Permanent(error)
                };
                Outcome::Failed(match output {
                    Some(output) => error.with_output(output),
                    None => error,
                })
            }
            WireOutcome::TimedOut => Outcome::TimedOut,
            WireOutcome::Cancelled { reason } => Outcome::Cancelled(reason),
            WireOutcome::Interrupted => Outcome::Interrupted,
            WireOutcome::AwaitingApproval {
                approval_id,
                step_id,
                reason,
            } => Outcome::AwaitingApproval {
                approval_id,
                step_id,
                reason,
            },
        }
    }
}

/// One entry of the results stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    /// The attempt this result ends; a stale result (the run moved on) is
    /// dropped by the leader.
    pub attempt: u32,
    pub outcome: WireOutcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub llm_tokens: u64,
    /// The worker process that ran it.
    pub worker: String,
    /// When the worker began executing (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the attempt ended on the worker (RFC 3339): the record's end
    /// and duration, on the same clock as `started_at`, not when the
    /// leader got to the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When the leader started (or resumed) the attempt, as the record the
    /// worker got says. A run handed back and started again keeps its
    /// attempt number: this tells a late result of the earlier start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_survive_the_trip_with_their_retry_class() {
        let cases = vec![
            Outcome::Succeeded(json!({"a": 1})),
            Outcome::Failed(RunError::retryable("flaky")),
            Outcome::Failed(RunError::Permanent("bad input".into())),
            Outcome::Failed(RunError::retryable("exit code 3").with_output(json!({"stdout": "x"}))),
            Outcome::TimedOut,
            Outcome::Cancelled("replaced".into()),
            Outcome::Interrupted,
            Outcome::AwaitingApproval {
                approval_id: "ap-1".into(),
                step_id: "k".into(),
                reason: "why".into(),
            },
        ];
        for o in cases {
            let wire = WireOutcome::from(o.clone());
            let text = serde_json::to_string(&wire).expect("serialize");
            let back: WireOutcome = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, wire);
            let again = WireOutcome::from(Outcome::from(back));
            assert_eq!(again, wire, "{text}");
        }
        let retryable = Outcome::from(WireOutcome::Failed {
            error: "x".into(),
            retryable: true,
            output: None,
        });
        assert!(matches!(retryable, Outcome::Failed(e) if e.is_retryable()));
    }

    #[test]
    fn a_failure_from_an_older_worker_has_no_output_and_one_without_output_sends_none() {
        let old = r#"{"kind": "failed", "error": "exit code 3", "retryable": true}"#;
        let parsed: WireOutcome = serde_json::from_str(old).expect("an older worker's failure");
        let Outcome::Failed(e) = Outcome::from(parsed) else {
            panic!("a failure");
        };
        assert_eq!((e.to_string(), e.output()), ("exit code 3".into(), None));
        let plain = WireOutcome::from(Outcome::Failed(RunError::retryable("flaky")));
        let text = serde_json::to_string(&plain).expect("serialize");
        assert!(!text.contains("output"), "{text}");
        let with = WireOutcome::from(Outcome::Failed(
            RunError::retryable("exit code 3").with_output(json!({"stdout": "out\n"})),
        ));
        let back = Outcome::from(with);
        assert!(
            matches!(back, Outcome::Failed(e) if e.output() == Some(&json!({"stdout": "out\n"})) && e.is_retryable())
        );
    }
}
