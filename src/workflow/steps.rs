//! A step list in order: what completed before a pause is reused, every
//! step that started (or was skipped) gets a record, and the first failure
//! ends the list unless the step continues on error.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::{BoxFuture, Engine, Frame, StepResult, to_template_value};
use crate::run::RunError;
use crate::spec::model::Step;
use crate::store::runs::{StepRecord, StepStatus};

impl Engine<'_> {
    /// Runs `steps` in order; the result is the last step's output.
    pub(super) fn run_steps<'s>(
        &'s self,
        steps: &'s [Step],
        inputs: Value,
        frame: &'s Frame<'s>,
        records: &'s mut Vec<StepRecord>,
    ) -> BoxFuture<'s, StepResult> {
        Box::pin(async move {
            let inputs = to_template_value(&inputs);
            let mut outputs = Map::new();
            let mut last = Value::Null;
            for step in steps {
                if frame.cancel.is_cancelled() {
                    // Recorded, so an interrupted run knows where to go on.
                    records.push(record(step, StepStatus::Cancelled, Value::Null, None, 0));
                    return Err(RunError::Cancelled);
                }
                // Completed before the run paused: not done again.
                let path = format!("{}{}", frame.scope, step.id);
                let reused = if frame.depth == 0 {
                    frame.progress.resume.top.get(&step.id).map(|r| {
                        records.push(r.clone());
                        r.output.clone()
                    })
                } else {
                    frame.progress.reused(&path)
                };
                if let Some(output) = reused {
                    outputs.insert(step.id.clone(), json!({"output": output}));
                    last = output;
                    continue;
                }
                let started = Instant::now();
                let base = self.context(&inputs, &outputs, frame.run);
                let result = self.run_step(step, &base, frame).await;
                let duration_ms = started.elapsed().as_millis() as u64;
                let output = match result {
                    Ok(Some((output, item_errors))) => {
                        let done = record(
                            step,
                            StepStatus::Succeeded,
                            output.clone(),
                            item_errors,
                            duration_ms,
                        );
                        records.push(done);
                        output
                    }
                    Ok(None) => {
                        records.push(record(
                            step,
                            StepStatus::Skipped,
                            Value::Null,
                            None,
                            duration_ms,
                        ));
                        Value::Null
                    }
                    Err(e) => {
                        stop_or_go_on(step, e, duration_ms, frame, records)?;
                        Value::Null
                    }
                };
                // Top-level steps are on their records already.
                if frame.depth > 0 {
                    frame.progress.completed(&path, &output);
                }
                outputs.insert(step.id.clone(), json!({"output": output}));
                last = output;
            }
            Ok(last)
        })
    }
}

/// Records a step that ended in `e`: the run stops (cancelled, paused for
/// an approval, or failed), or goes on past a step that continues on error.
fn stop_or_go_on(
    step: &Step,
    e: RunError,
    duration_ms: u64,
    frame: &Frame<'_>,
    records: &mut Vec<StepRecord>,
) -> Result<(), RunError> {
    match e {
        RunError::Cancelled => {
            records.push(record(
                step,
                StepStatus::Cancelled,
                Value::Null,
                None,
                duration_ms,
            ));
            Err(RunError::Cancelled)
        }
        // The run pauses here; it runs again once decided.
        pause @ RunError::AwaitingApproval { .. } => {
            let mut paused = record(
                step,
                StepStatus::AwaitingApproval,
                Value::Null,
                None,
                duration_ms,
            );
            if frame.depth == 0 {
                paused.completed = frame.progress.inside(&step.id);
            }
            records.push(paused);
            Err(pause)
        }
        e => {
            let message = format!("step `{}`: {e}", step.id);
            records.push(record(
                step,
                StepStatus::Failed,
                Value::Null,
                Some(message.clone()),
                duration_ms,
            ));
            if step.continue_on_error {
                return Ok(());
            }
            Err(match e {
                RunError::Retryable { retry_after, .. } => RunError::Retryable {
                    message,
                    retry_after,
                },
                _ => RunError::Permanent(message),
            })
        }
    }
}

fn record(
    step: &Step,
    status: StepStatus,
    output: Value,
    error: Option<String>,
    duration_ms: u64,
) -> StepRecord {
    StepRecord {
        id: step.id.clone(),
        status,
        output,
        error,
        duration_ms,
        variant: None,
        completed: BTreeMap::new(),
    }
}
