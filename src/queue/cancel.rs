//! An operator's cancel of one run (`multijob cancel`). A run that has not
//! started (queued, waiting for its retry, awaiting approval) ends
//! `cancelled` at once and leaves the queue, its lane and its approval; a
//! running one keeps its place until its executor stops: its token fires
//! and who and why are on its record from now on (written at once), so
//! however the attempt ends after this (killed, failed, interrupted, its
//! process lost) the run ends `cancelled` (see `run::machine::ended`).
//!
//! In a Redis deployment the run may execute in another process (a
//! `multijob worker`, or a replica's own workers): the leader writes the
//! fired token to the deployment's `cancel` hash (run id → reason; see
//! `cluster::leader::forward_cancels`, which retries a failed write), and
//! each worker looks up the runs it holds there every 200 ms. The field
//! stays until the run's result is recorded, so a worker that claims the
//! run after the cancel, or misses a look, still finds it: nothing is lost
//! the way a pub/sub message can be.

use super::RunQueue;
use crate::run::Outcome;
use crate::store::Mutation;
use crate::store::runs::RunStatus;

/// What a cancel did to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// It had not started: it ended `cancelled` now. `approval`: the one
    /// it was waiting for, which nothing will decide now.
    Ended {
        job_id: String,
        was: RunStatus,
        approval: Option<String>,
    },
    /// It is running: its executor was told, and it ends `cancelled` when
    /// the handler stops.
    Stopping { job_id: String },
    /// A cancel by `by` came first: this one changes nothing.
    AlreadyCancelling { by: String },
    /// The queue does not hold it: it ended already, or never was.
    NotActive,
}

impl RunQueue {
    /// Cancel the unfinished run `run_id` for the operator `by`.
    pub fn cancel_run(&self, run_id: &str, by: &str, reason: Option<&str>) -> Cancelled {
        let t = self.now();
        let result = {
            let mut st = self.lock();
            let Some(entry) = st.runs.get_mut(run_id) else {
                return Cancelled::NotActive;
            };
            if let Some(earlier) = &entry.run.cancelled_by {
                return Cancelled::AlreadyCancelling {
                    by: earlier.clone(),
                };
            }
            entry.run.cancelled_by = Some(by.to_string());
            entry.run.cancel_reason = reason.map(str::to_string);
            let (job_id, was) = (entry.run.job_id.clone(), entry.run.status);
            if was == RunStatus::Running {
                entry.cancel.cancel();
                // Written now: a leader that takes over before the run
                // ends still finds who cancelled it and why.
                self.submit(vec![Mutation::PutRun(Box::new(entry.run.clone()))]);
                Cancelled::Stopping { job_id }
            } else {
                let approval = entry.pending_approval.take();
                let text = entry.run.operator_cancel().unwrap_or_default();
                // A parked run must not be handed a lane place later.
                let state = &mut *st;
                for parked in state.parked.values_mut().chain(state.unserved.values_mut()) {
                    parked.retain(|id| id != run_id);
                }
                self.finish_locked(&mut st, run_id, Outcome::Cancelled(text), t);
                Cancelled::Ended {
                    job_id,
                    was,
                    approval,
                }
            }
        };
        self.released.notify_waiters();
        result
    }
}
