//! A read-only view of the queue for guard decisions and the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, MutexGuard};

use jiff::Timestamp;

use super::Burst;
use super::state::State;
use crate::run::guards::{LaneLoad, Pressure};
use crate::store::paused::Pause;
use crate::store::runs::{FailureState, Run, RunStatus};

/// A read-only view of the queue for guard decisions and the API.
pub struct QueueView<'a> {
    pub(super) state: MutexGuard<'a, State>,
}

impl QueueView<'_> {
    pub fn active_runs(&self, job: &str) -> usize {
        self.state
            .counts
            .active_by_job
            .get(job)
            .copied()
            .unwrap_or(0)
    }

    pub fn lane(&self, flow: &str) -> LaneLoad {
        LaneLoad {
            active: self
                .state
                .counts
                .active_by_flow
                .get(flow)
                .copied()
                .unwrap_or(0),
            max: self
                .state
                .applied
                .snapshot
                .flows
                .get(flow)
                .and_then(|f| f.spec.max_active_runs),
        }
    }

    /// The job's active run ids, oldest first.
    pub fn job_run_ids(&self, job: &str) -> impl Iterator<Item = &str> {
        self.state
            .counts
            .ids_by_job
            .get(job)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The active run ids holding places in a lane, oldest first.
    pub fn lane_run_ids(&self, flow: &str) -> impl Iterator<Item = &str> {
        self.state
            .counts
            .ids_by_flow
            .get(flow)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The job's run waiting on an approval, if any.
    pub fn approval_run(&self, job: &str) -> Option<&str> {
        self.job_run_ids(job).find(|id| {
            self.state
                .runs
                .get(*id)
                .is_some_and(|e| e.run.status == RunStatus::AwaitingApproval)
        })
    }

    /// Pressure mode's state and marks.
    pub fn pressure_state(&self) -> Pressure {
        self.state.pressure
    }

    pub fn pressure(&self) -> bool {
        self.state.pressure.on
    }

    pub fn waiting(&self) -> usize {
        self.state.counts.waiting
    }

    pub fn running(&self) -> usize {
        self.state.counts.running
    }

    /// The run is queued and has not started.
    pub fn is_waiting(&self, run_id: &str) -> bool {
        self.state
            .runs
            .get(run_id)
            .is_some_and(|e| e.run.status == RunStatus::Queued)
    }

    pub fn approval_pending(&self, job: &str) -> bool {
        self.state
            .counts
            .approvals_by_job
            .get(job)
            .copied()
            .unwrap_or(0)
            > 0
    }

    pub fn failure(&self, job: &str) -> Option<&FailureState> {
        self.state.failure.get(job)
    }

    /// The job's pause, when an operator paused it.
    pub fn paused(&self, job: &str) -> Option<&Pause> {
        self.state.paused.get(job)
    }

    pub fn cooldown_until(&self, job: &str) -> Option<Timestamp> {
        self.failure(job)
            .and_then(|f| f.cooldown_until.as_ref())
            .and_then(|t| t.parse().ok())
    }

    /// Active runs per flow (for `plan`).
    pub fn active_by_flow(&self) -> HashMap<String, usize> {
        self.state.counts.active_by_flow.clone()
    }

    pub fn active_by_job(&self) -> HashMap<String, usize> {
        self.state.counts.active_by_job.clone()
    }

    /// Follow-up runs waiting to start, by job (jobs with none left out).
    pub fn follow_ups_waiting(&self) -> BTreeMap<String, usize> {
        self.state
            .counts
            .follow_ups_waiting
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// A job's last finished run.
    pub fn last_finished(&self, job: &str) -> Option<Arc<Run>> {
        self.state.last_finished.get(job).cloned()
    }

    /// Bursts still being admitted, oldest first.
    pub fn bursts(&self) -> Vec<Burst> {
        self.state.bursts.values().cloned().collect()
    }

    /// Runs that have started since the daemon did, and finished.
    pub fn totals(&self) -> (u64, u64) {
        (self.state.dispatched, self.state.finished)
    }
}
