//! A run's record as layout 5 stores it: JSON without the fields that
//! hold their default (null, empty, zero, `normal`), with `run_key` right
//! after `status`, so the batch script reads job, status and run key with
//! one anchored match. A typical finished no-op run takes 620 bytes
//! instead of 810; every byte crosses into the batch script's Lua (which
//! hashes each string it is given), the `ready` stream and the workers.
//!
//! Decoding reads both layouts: a layout 4 record has every field, so it
//! decodes the same (runs in flight when a deployment was upgraded, and
//! the records a migration has not reached yet).

use serde::Serialize;
use serde_json::Value;

use crate::spec::model::Priority;
use crate::store::StoreError;
use crate::store::runs::{Attempt, Run, RunStatus, StepRecord, Trigger, Usage};

/// Whether `text` is a record as this layout writes it (what a migration
/// leaves alone): layout 4 records have `trigger` after `status`.
pub(super) fn is_current(text: &str) -> bool {
    let Some(after) = text.find(r#","status":""#) else {
        return false;
    };
    let rest = &text[after + r#","status":""#.len()..];
    rest.split_once('"')
        .is_some_and(|(_, tail)| tail.starts_with(r#","run_key":""#))
}

/// The record of `run`, as layout 5 stores it.
pub(super) fn encode(run: &Run) -> Result<String, StoreError> {
    // Sized for a typical record: growing from empty took ~8 copies.
    let mut buf = Vec::with_capacity(768);
    serde_json::to_writer(&mut buf, &Record::of(run))
        .map_err(|e| StoreError::corrupt(&run.id, e))?;
    String::from_utf8(buf).map_err(|e| StoreError::corrupt(&run.id, e))
}

/// A stored record of either layout.
pub fn decode(text: &str) -> Result<Run, serde_json::Error> {
    serde_json::from_str(text)
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.is_empty())
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_normal(p: &Priority) -> bool {
    *p == Priority::Normal
}

fn no_tokens(u: &Usage) -> bool {
    u.llm_tokens == 0
}

/// `Run`'s fields by reference, in the stored order. Built by destructuring
/// every field (no `..`), so a field added to `Run` does not compile until
/// it is stored here too.
#[derive(Serialize)]
struct Record<'a> {
    id: &'a str,
    job_id: &'a str,
    status: RunStatus,
    run_key: &'a str,
    trigger: Trigger,
    #[serde(skip_serializing_if = "is_empty_object")]
    inputs: &'a Value,
    #[serde(skip_serializing_if = "is_zero_u32")]
    attempt: u32,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attempts: Vec<StoredAttempt<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_at: Option<&'a str>,
    queued_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    spec_hash: &'a str,
    revision: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    steps: &'a [StepRecord],
    #[serde(skip_serializing_if = "no_tokens")]
    usage: &'a Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    due_at: Option<&'a str>,
    #[serde(skip_serializing_if = "is_normal")]
    priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    chain_depth: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_parent_span: Option<&'a str>,
}

#[derive(Serialize)]
struct StoredAttempt<'a> {
    n: u32,
    started_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<&'a str>,
    status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<&'a str>,
}

impl<'a> StoredAttempt<'a> {
    fn of(a: &'a Attempt) -> StoredAttempt<'a> {
        let Attempt {
            n,
            started_at,
            resumed_at,
            finished_at,
            status,
            error,
            worker,
        } = a;
        StoredAttempt {
            n: *n,
            started_at,
            resumed_at: resumed_at.as_deref(),
            finished_at: finished_at.as_deref(),
            status: *status,
            error: error.as_deref(),
            worker: worker.as_deref(),
        }
    }
}

impl<'a> Record<'a> {
    fn of(run: &'a Run) -> Record<'a> {
        let Run {
            id,
            job_id,
            status,
            trigger,
            inputs,
            attempt,
            attempts,
            scheduled_at,
            queued_at,
            started_at,
            finished_at,
            duration_ms,
            error,
            spec_hash,
            revision,
            steps,
            usage,
            output,
            run_key,
            due_at,
            priority,
            flow,
            chain_depth,
            lease_owner,
            cancelled_by,
            cancel_reason,
            trace_id,
            trace_parent_span,
        } = run;
        Record {
            id,
            job_id,
            status: *status,
            run_key,
            trigger: *trigger,
            inputs,
            attempt: *attempt,
            attempts: attempts.iter().map(StoredAttempt::of).collect(),
            scheduled_at: scheduled_at.as_deref(),
            queued_at,
            started_at: started_at.as_deref(),
            finished_at: finished_at.as_deref(),
            duration_ms: *duration_ms,
            error: error.as_deref(),
            spec_hash,
            revision,
            steps,
            usage,
            output: output.as_ref(),
            due_at: due_at.as_deref(),
            priority: *priority,
            flow: flow.as_deref(),
            chain_depth: *chain_depth,
            lease_owner: lease_owner.as_deref(),
            cancelled_by: cancelled_by.as_deref(),
            cancel_reason: cancel_reason.as_deref(),
            trace_id,
            trace_parent_span: trace_parent_span.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::runs::StepStatus;
    use crate::testkit::sample_run;

    /// A run with every field away from its default.
    fn full_run() -> Run {
        let mut run = sample_run("r1", "job", "job@2026-12-07T00:00:00Z", RunStatus::Failed);
        run.trigger = Trigger::Schedule;
        run.inputs = serde_json::json!({"sku": "A-1"});
        run.attempt = 2;
        run.attempts = vec![Attempt {
            n: 1,
            started_at: "2026-12-07T00:00:01Z".into(),
            resumed_at: Some("2026-12-07T00:00:02Z".into()),
            finished_at: Some("2026-12-07T00:00:03Z".into()),
            status: RunStatus::Failed,
            error: Some("exit 3".into()),
            worker: Some("w1".into()),
        }];
        run.scheduled_at = Some("2026-12-07T00:00:00Z".into());
        run.started_at = Some("2026-12-07T00:00:01Z".into());
        run.finished_at = Some("2026-12-07T00:00:03Z".into());
        run.duration_ms = Some(2000);
        run.error = Some("exit 3".into());
        run.steps = vec![StepRecord {
            id: "fetch".into(),
            status: StepStatus::Failed,
            output: serde_json::json!({"code": 500}),
            error: Some("HTTP 500".into()),
            duration_ms: 12,
            variant: Some("b".into()),
            completed: [("each:1/send".to_string(), serde_json::json!(1))].into(),
        }];
        run.usage = Usage { llm_tokens: 12 };
        run.output = Some(serde_json::json!({}));
        run.due_at = Some("2026-12-07T00:01:00Z".into());
        run.priority = Priority::High;
        run.flow = Some("daily".into());
        run.chain_depth = 3;
        run.lease_owner = Some("w1".into());
        run.cancelled_by = Some("ops@host".into());
        run.cancel_reason = Some("wrong sku".into());
        run.trace_id = "0af7651916cd43dd8448eb211c80319c".into();
        run.trace_parent_span = Some("b7ad6b7169203331".into());
        run
    }

    #[test]
    fn every_field_survives_the_round_trip() {
        let run = full_run();
        let text = encode(&run).unwrap();
        assert_eq!(decode(&text).unwrap(), run);
        assert!(is_current(&text), "{text}");
    }

    #[test]
    fn defaults_are_left_out_and_come_back() {
        let run = sample_run("r2", "job", "manual:r2", RunStatus::Queued);
        let text = encode(&run).unwrap();
        for absent in [
            "null",
            "\"steps\"",
            "\"attempts\"",
            "\"priority\"",
            "\"usage\"",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(
            text.starts_with(
                r#"{"id":"r2","job_id":"job","status":"queued","run_key":"manual:r2","#
            ),
            "{text}"
        );
        assert_eq!(decode(&text).unwrap(), run);
        // `inputs` left out reads as `{}`, not null; a null output stays.
        let mut nulls = run.clone();
        nulls.inputs = Value::Null;
        assert_eq!(decode(&encode(&nulls).unwrap()).unwrap(), nulls);
    }

    #[test]
    fn a_layout_4_record_decodes_and_is_not_current() {
        let run = full_run();
        let old = serde_json::to_string(&run).unwrap();
        assert!(!is_current(&old), "{old}");
        assert_eq!(decode(&old).unwrap(), run);
        let plain = sample_run("r3", "job", "manual:r3", RunStatus::Queued);
        let old = serde_json::to_string(&plain).unwrap();
        assert!(!is_current(&old));
        assert_eq!(decode(&old).unwrap(), plain);
    }
}
