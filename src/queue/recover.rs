//! Rebuilding the queue from the store on start: failure memory, each
//! job's last run, unfinished runs and pending approvals.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;

use super::RunQueue;
use super::state::{Counts, State};
use crate::run::machine::{self, Context, Event, Next};
use crate::store::runs::{FailureState, Run, RunStatus};
use crate::store::{Mutation, StoreError, now_rfc3339};

/// What recovery found on start.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoverySummary {
    pub requeued: usize,
    pub retrying: usize,
    pub awaiting_approval: usize,
    /// Runs that were `running` when the process died.
    pub orphaned: usize,
    pub retried: usize,
    pub failed: usize,
    /// Runs still executing on a live worker elsewhere (Redis).
    pub held: usize,
}

impl RunQueue {
    /// Load failure memory and unfinished runs from the store. Runs that
    /// were `running` belonged to a process that died: their attempt
    /// failed (lease lost) and they are retried or failed by policy.
    pub async fn recover(&self) -> Result<RecoverySummary, StoreError> {
        self.recover_holding(&HashSet::new()).await
    }

    /// [`recover`](Self::recover), except that `running` runs in `held`
    /// are still owned by a live worker elsewhere (a Redis deployment's
    /// dispatched runs): they stay `running` and their result is awaited.
    pub async fn recover_holding(
        &self,
        held: &HashSet<String>,
    ) -> Result<RecoverySummary, StoreError> {
        self.load_paused().await?;
        let failures = self.store.failure_states().await?;
        let job_ids: Vec<String> = self.lock().jobs.keys().cloned().collect();
        let last = self.store.last_runs(job_ids).await?;
        let approvals = self.store.approvals(true).await?;
        let runs = self.store.active_runs().await?;
        let mut summary = RecoverySummary::default();
        let mut mutations = Vec::new();
        let t = self.now();
        {
            let mut st = self.lock();
            st.failure = failures.into_iter().collect();
            st.last_finished = last
                .into_iter()
                .filter(|(_, r)| r.status.is_terminal())
                .map(|(job, r)| (job, Arc::new(r)))
                .collect();
            for run in runs {
                restore(&mut st, run, held, t, &mut summary, &mut mutations);
            }
            for a in &approvals {
                let Some(entry) = st.runs.get_mut(&a.run_id) else {
                    continue;
                };
                entry.pending_approval = Some(a.id.clone());
                Counts::add(&mut st.counts.approvals_by_job, &a.job_id, 1);
            }
            // Under the lock, like every write of a run's state (see
            // `enqueue`).
            self.submit(mutations);
        }
        self.work.notify_waiters();
        Ok(summary)
    }
}

/// Put one unfinished run from the store back in the queue; a run that
/// was `running` under a process that died (not `held`) goes through the
/// state machine as a lost worker.
fn restore(
    st: &mut State,
    mut run: Run,
    held: &HashSet<String>,
    t: Timestamp,
    summary: &mut RecoverySummary,
    mutations: &mut Vec<Mutation>,
) {
    match run.status {
        RunStatus::Running if held.contains(&run.id) => {
            summary.held += 1;
            st.insert(run, t);
            return;
        }
        RunStatus::Running => {
            summary.orphaned += 1;
            let stamp = now_rfc3339();
            let no_failure = FailureState::default();
            let ctx = Context {
                job: st.jobs.get(&run.job_id).map(|(j, _)| &**j),
                failure: st.failure.get(&run.job_id).unwrap_or(&no_failure),
                now: t,
                stamp: &stamp,
            };
            let effects = machine::transition(&mut run, &ctx, Event::WorkerLost);
            mutations.extend(effects.mutations);
            if let Some(failure) = effects.failure {
                st.failure.insert(run.job_id.clone(), failure);
            }
            if effects.next == Next::Finished {
                summary.failed += 1;
            } else {
                summary.retried += 1;
                st.insert(run, t);
            }
            return;
        }
        RunStatus::Queued => summary.requeued += 1,
        RunStatus::Retrying => summary.retrying += 1,
        RunStatus::AwaitingApproval => summary.awaiting_approval += 1,
        _ => return,
    }
    mutations.push(Mutation::PutRun(Box::new(run.clone())));
    st.insert(run, t);
}
