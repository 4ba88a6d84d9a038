//! Admitting new runs: why one may not be queued, and queueing the rest.

use std::sync::Arc;

use super::RunQueue;
use super::state::{Counts, State, pressure_event};
use crate::run::machine::{self, Admission, Context, Next};
use crate::run::{NewRun, NotQueued};
use crate::spec::model::Job;
use crate::store::now_rfc3339;
use crate::store::runs::{FailureState, Trigger};

impl RunQueue {
    /// Add runs. Returns the ids of the runs queued (a run whose id is
    /// already queued, whose job is gone or disabled, or a follow-up
    /// beyond its job's `limits.queued_follow_ups`, is not). Pressure is
    /// measured after.
    pub fn enqueue(&self, new_runs: Vec<NewRun>) -> Vec<String> {
        self.admit(new_runs)
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }

    /// Queue one follow-up run (`schedule_job`), or say why not. The
    /// job's `limits.queued_follow_ups` is checked under the queue's lock,
    /// so follow-ups scheduled at once (foreach items, several workers)
    /// cannot pass it together.
    pub fn enqueue_follow_up(&self, run: NewRun) -> Result<String, NotQueued> {
        self.admit(vec![run])
            .pop()
            .unwrap_or(Err(NotQueued::NoSuchJob))
    }

    /// Queue one run, or say why not (an inbound request answers with it).
    pub fn enqueue_one(&self, run: NewRun) -> Result<String, NotQueued> {
        self.admit(vec![run])
            .pop()
            .unwrap_or(Err(NotQueued::NoSuchJob))
    }

    /// [`enqueue`](Self::enqueue), with each run's id or why it was not queued.
    fn admit(&self, new_runs: Vec<NewRun>) -> Vec<Result<String, NotQueued>> {
        if new_runs.is_empty() {
            return Vec::new();
        }
        let t = self.now();
        let stamp = now_rfc3339();
        let no_failure = FailureState::default();
        let mut mutations = Vec::with_capacity(new_runs.len() * 2 + 2);
        let mut out = Vec::with_capacity(new_runs.len());
        let mut ready = 0;
        {
            let mut st = self.lock();
            for n in new_runs {
                let (job, spec_hash) = match admissible(&st, &n) {
                    Ok(job) => job,
                    Err(why) => {
                        out.push(Err(why));
                        continue;
                    }
                };
                let admission = Admission {
                    job: &job,
                    spec_hash,
                    revision: st
                        .applied
                        .revision
                        .as_ref()
                        .map(|r| r.id.clone())
                        .unwrap_or_default(),
                    priority: st.applied.snapshot.effective_priority(&job),
                };
                let ctx = Context {
                    job: Some(&job),
                    failure: &no_failure,
                    now: t,
                    stamp: &stamp,
                };
                let (run, effects) = machine::admitted(n, admission, &ctx);
                mutations.extend(effects.mutations);
                let id = run.id.clone();
                st.insert(run, t);
                let st = &mut *st;
                match (effects.next, st.runs.get_mut(&id)) {
                    (Next::AwaitingApproval { approval_id }, Some(entry)) => {
                        Counts::add(&mut st.counts.approvals_by_job, &entry.run.job_id, 1);
                        entry.pending_approval = Some(approval_id);
                    }
                    _ => ready += 1,
                }
                out.push(Ok(id));
            }
            let waiting = st.counts.waiting;
            if let Some(on) = st.pressure.update(waiting) {
                mutations.push(pressure_event(on, waiting, &st.pressure));
            }
            // Under the lock: a worker may claim and finish one of these
            // runs the moment it is released, and the store applies writes
            // in submission order, so a queued record sent after that
            // run's final one would overwrite it.
            self.submit(mutations);
        }
        for _ in 0..ready {
            self.work.notify_one();
        }
        out
    }
}

/// The job a new run is for, or why it may not be queued: a run already
/// tracked (a command handled twice, as when a new leader re-reads the
/// inbox), an unknown or disabled job, or a follow-up beyond its job's
/// `limits.queued_follow_ups` (`chain_depth` bounds depth, not breadth).
fn admissible(st: &State, n: &NewRun) -> Result<(Arc<Job>, String), NotQueued> {
    if st.runs.contains_key(&n.id) {
        return Err(NotQueued::Duplicate);
    }
    let Some((job, hash)) = st.jobs.get(&n.job_id).cloned() else {
        tracing::warn!(job = %n.job_id, "enqueue: no such job; run dropped");
        return Err(NotQueued::NoSuchJob);
    };
    // Whoever asks: a trigger or follow-up handed over before the job was
    // disabled gets no run either.
    if !job.enabled {
        tracing::warn!(job = %n.job_id, run = %n.id, "enqueue: the job is disabled; run dropped");
        return Err(NotQueued::Disabled);
    }
    if n.trigger == Trigger::Workflow {
        let waiting = st
            .counts
            .follow_ups_waiting
            .get(&n.job_id)
            .copied()
            .unwrap_or(0);
        let limit = job.limits.queued_follow_ups;
        if waiting >= limit as usize {
            return Err(NotQueued::FollowUpsFull { waiting, limit });
        }
    }
    Ok((job, hash))
}
