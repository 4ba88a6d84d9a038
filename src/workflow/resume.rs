//! Resuming a run: what an earlier execution completed is reused, not done
//! again, and what completes inside a step is kept only when an approval
//! can pause the run.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{Engine, MAX_USES_DEPTH};
use crate::spec::model::{Action, Step};
use crate::store::runs::{StepRecord, StepStatus};

/// What an earlier execution of the run completed before it paused for an
/// approval or was interrupted by a shutdown: the run resumes after it
/// instead of from its first step, so an order created before the pause
/// or the restart is not created again (SPEC 5: `approval` pauses the
/// run).
#[derive(Debug, Default)]
pub struct Resume {
    /// Top-level steps that completed, by id: their records are reused.
    pub(super) top: BTreeMap<String, StepRecord>,
    /// Outputs of what completed inside the step that paused, by path.
    pub(super) inner: BTreeMap<String, Value>,
}

impl Resume {
    /// From the step records of the run's last execution. A pause (the
    /// last record waits for an approval) or an interruption (the last
    /// record was cut short by a shutdown) resumes; a run retried after a
    /// failure runs from its first step (at-least-once, with idempotency
    /// keys).
    pub fn from_records(records: &[StepRecord]) -> Resume {
        match records.split_last() {
            Some((paused, done))
                if paused.status == StepStatus::AwaitingApproval
                    || paused.status == StepStatus::Interrupted =>
            {
                Resume {
                    top: done.iter().map(|r| (r.id.clone(), r.clone())).collect(),
                    inner: paused.completed.clone(),
                }
            }
            _ => Resume::default(),
        }
    }
}

/// Shared by the frames of one execution: what to reuse, and what
/// completed inside steps (kept on the record of a step that pauses).
pub(super) struct Progress {
    pub(super) resume: Resume,
    /// Only when an approval is within reach: nothing else can pause.
    pub(super) collect: bool,
    pub(super) done: std::sync::Mutex<BTreeMap<String, Value>>,
}

impl Progress {
    pub(super) fn reused(&self, path: &str) -> Option<Value> {
        let out = self.resume.inner.get(path)?.clone();
        self.completed(path, &out);
        Some(out)
    }

    pub(super) fn completed(&self, path: &str, output: &Value) {
        if self.collect {
            self.done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path.to_string(), output.clone());
        }
    }

    /// What completed inside the step `id` (its items and nested steps).
    pub(super) fn inside(&self, id: &str) -> BTreeMap<String, Value> {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.iter()
            .filter(|(path, _)| {
                path.strip_prefix(id)
                    .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(':'))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Engine<'_> {
    /// Whether an `approval` step is among `steps` or the skills they
    /// use: only then can the run pause, and what completes inside a step
    /// is worth keeping for the resume.
    pub(super) fn reaches_approval(&self, steps: &[Step]) -> bool {
        self.approval_within(steps, 0, &mut HashMap::new())
    }

    /// Each skill is looked into again only when reached less deep than
    /// before, so a skill used by many steps of many skills costs once
    /// per depth, not once per path to it (which is exponential).
    fn approval_within<'s>(
        &'s self,
        steps: &'s [Step],
        depth: usize,
        seen: &mut HashMap<&'s str, usize>,
    ) -> bool {
        depth <= MAX_USES_DEPTH
            && steps.iter().any(|s| match &s.action {
                Action::Approval(_) => true,
                Action::Uses(id) => {
                    if seen.get(id.as_str()).is_some_and(|&d| d <= depth + 1) {
                        return false;
                    }
                    seen.insert(id.as_str(), depth + 1);
                    self.skills
                        .get(id)
                        .is_some_and(|k| self.approval_within(&k.spec.steps, depth + 1, seen))
                }
                _ => false,
            })
    }
}
