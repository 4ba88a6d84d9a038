//! Operator overrides the queue keeps for the scheduler: paused jobs and
//! the reset of a job's failure memory. The scheduler reads the paused set
//! from the queue's memory each tick (no store round-trip); each change is
//! written to the store under the queue's lock, in order, with its event,
//! so it survives a restart and a change of Redis leader.

use std::collections::HashSet;

use serde_json::json;

use super::RunQueue;
use super::state::State;
use crate::store::paused::{PAUSED_KEY, Pause, Paused, paused_value};
use crate::store::runs::FailureState;
use crate::store::{Mutation, NewEvent, StoreError, now_rfc3339};

/// Why an override changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unchanged {
    NoSuchJob,
    AlreadyPaused(Pause),
    NotPaused,
    NoFailureMemory,
}

impl std::fmt::Display for Unchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unchanged::NoSuchJob => write!(f, "no such job in the applied revision"),
            Unchanged::AlreadyPaused(p) => write!(
                f,
                "already paused since {} by {}{}",
                p.since,
                p.by,
                p.note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            ),
            Unchanged::NotPaused => write!(f, "not paused"),
            Unchanged::NoFailureMemory => {
                write!(
                    f,
                    "no failure memory to clear (no failures since its last success)"
                )
            }
        }
    }
}

impl RunQueue {
    /// Pause `job_id`: its slots are skipped until [`resume`](Self::resume).
    pub fn pause(&self, job_id: &str, note: Option<String>, by: &str) -> Result<Pause, Unchanged> {
        let mut st = self.lock();
        if !st.jobs.contains_key(job_id) {
            return Err(Unchanged::NoSuchJob);
        }
        if let Some(p) = st.paused.get(job_id) {
            return Err(Unchanged::AlreadyPaused(p.clone()));
        }
        let pause = Pause {
            since: now_rfc3339(),
            by: by.to_string(),
            note,
        };
        st.paused.insert(job_id.to_string(), pause.clone());
        let event = NewEvent::new(
            "job.paused",
            json!({"since": pause.since, "by": by, "note": pause.note}),
        )
        .job(job_id.to_string());
        self.submit(vec![paused_write(&st.paused), Mutation::Event(event)]);
        Ok(pause)
    }

    /// Let a paused job's next slots run again; returns the pause it ends.
    pub fn resume(&self, job_id: &str, by: &str) -> Result<Pause, Unchanged> {
        let mut st = self.lock();
        let Some(pause) = st.paused.remove(job_id) else {
            return Err(if st.jobs.contains_key(job_id) {
                Unchanged::NotPaused
            } else {
                Unchanged::NoSuchJob
            });
        };
        let event = resumed_event(job_id, &pause, json!({"by": by}));
        self.submit(vec![paused_write(&st.paused), Mutation::Event(event)]);
        Ok(pause)
    }

    /// Forget `job_id`'s consecutive failures and cooldown; returns what
    /// was cleared.
    pub fn reset_failures(&self, job_id: &str, by: &str) -> Result<FailureState, Unchanged> {
        let mut st = self.lock();
        if !st.jobs.contains_key(job_id) {
            return Err(Unchanged::NoSuchJob);
        }
        let previous = st
            .failure
            .remove(job_id)
            .filter(|f| *f != FailureState::default())
            .ok_or(Unchanged::NoFailureMemory)?;
        let event = NewEvent::new(
            "job.failure_memory_reset",
            json!({"by": by, "previous": previous}),
        )
        .job(job_id.to_string());
        self.submit(vec![
            Mutation::Failure(job_id.to_string(), FailureState::default()),
            Mutation::Event(event),
        ]);
        Ok(previous)
    }

    /// The run keys of `job_id`'s unfinished runs (a slot the scheduler
    /// queued a moment ago may not be in the store yet).
    pub fn active_run_keys(&self, job_id: &str) -> HashSet<String> {
        let st = self.lock();
        st.runs
            .values()
            .filter(|e| e.run.job_id == job_id)
            .map(|e| e.run.run_key.clone())
            .collect()
    }

    /// Load the paused jobs from the store (start, or taking the lead).
    pub(super) async fn load_paused(&self) -> Result<(), StoreError> {
        let paused = self.store.paused().await?;
        let mut st = self.lock();
        st.paused = paused;
        let mut mutations = Vec::new();
        drop_deleted_pauses(&mut st, &mut mutations);
        self.submit(mutations);
        Ok(())
    }
}

/// A job deleted from git takes its pause with it (a disabled one keeps
/// it: enabling it again finds it still paused).
pub(super) fn drop_deleted_pauses(st: &mut State, mutations: &mut Vec<Mutation>) {
    if st.applied.revision.is_none() || st.paused.is_empty() {
        return;
    }
    let gone: Vec<String> = st
        .paused
        .keys()
        .filter(|id| !st.jobs.contains_key(*id))
        .cloned()
        .collect();
    for id in &gone {
        if let Some(pause) = st.paused.remove(id) {
            let why = json!({"by": "reconcile", "reason": "the job was deleted from git"});
            mutations.push(Mutation::Event(resumed_event(id, &pause, why)));
        }
    }
    if !gone.is_empty() {
        mutations.push(paused_write(&st.paused));
    }
}

fn paused_write(paused: &Paused) -> Mutation {
    Mutation::PutKv {
        key: PAUSED_KEY.to_string(),
        value: paused_value(paused),
    }
}

/// `job.resumed`: `data` plus the pause it ends.
fn resumed_event(job_id: &str, pause: &Pause, mut data: serde_json::Value) -> NewEvent {
    if let serde_json::Value::Object(m) = &mut data {
        m.insert("paused_since".into(), json!(pause.since));
        m.insert("paused_by".into(), json!(pause.by));
        m.insert("note".into(), json!(pause.note));
    }
    NewEvent::new("job.resumed", data).job(job_id.to_string())
}
