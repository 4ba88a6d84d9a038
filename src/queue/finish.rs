//! Moving a run on: an attempt's end, a cancel, an approval decision. The
//! run's state machine ([`crate::run::machine`]) decides; this applies its
//! result to the queue's indexes and submits its writes.

use std::cmp::Reverse;
use std::sync::Arc;

use jiff::Timestamp;

use super::RunQueue;
use super::state::{Counts, State, line_up, pressure_event};
use crate::run::Outcome;
use crate::run::machine::{self, Context, Effects, Event, Next};
use crate::store::runs::{Approval, FailureState, RunStatus};
use crate::store::{Mutation, now_rfc3339};

impl RunQueue {
    /// Record how an attempt ended: success, retry, failure, cancel.
    pub fn finish(&self, run_id: &str, outcome: Outcome) {
        self.finish_at(run_id, outcome, None);
    }

    /// [`Self::finish`] for an attempt that ended elsewhere at `ended_at`
    /// (RFC 3339, a worker process's clock): the record's end time. A
    /// time that is unreadable or ahead of this clock counts as now.
    pub fn finish_at(&self, run_id: &str, outcome: Outcome, ended_at: Option<&str>) {
        let now = self.now();
        let t = ended_at
            .and_then(|at| at.parse::<Timestamp>().ok())
            .filter(|at| *at < now)
            .unwrap_or(now);
        {
            let mut st = self.lock();
            self.finish_locked(&mut st, run_id, outcome, t);
        }
        self.released.notify_waiters();
    }

    pub(super) fn finish_locked(
        &self,
        st: &mut State,
        run_id: &str,
        outcome: Outcome,
        t: Timestamp,
    ) {
        self.apply(st, run_id, t, Event::Ended(outcome));
    }

    /// Cancel a job's active runs (`overlap: replace`): queued ones at
    /// once, running ones through their token (the worker then finishes
    /// them as cancelled).
    pub fn cancel_job_runs(&self, job_id: &str, reason: &str) -> usize {
        let t = self.now();
        let mut cancelled = 0;
        {
            let mut st = self.lock();
            let ids: Vec<(String, RunStatus)> = st
                .runs
                .values()
                .filter(|e| e.run.job_id == job_id)
                .map(|e| (e.run.id.clone(), e.run.status))
                .collect();
            for (id, status) in ids {
                cancelled += 1;
                if status == RunStatus::Running {
                    if let Some(e) = st.runs.get(&id) {
                        e.cancel.cancel();
                    }
                } else {
                    self.finish_locked(&mut st, &id, Outcome::Cancelled(reason.to_string()), t);
                }
            }
        }
        self.released.notify_waiters();
        cancelled
    }

    /// Approve or reject a pending approval, with the operator's note.
    pub fn decide(
        &self,
        approval: &Approval,
        approve: bool,
        by: &str,
        note: Option<&str>,
    ) -> Result<(), String> {
        let t = self.now();
        {
            let mut st = self.lock();
            let Some(entry) = st.runs.get_mut(&approval.run_id) else {
                return Err(format!("run {} is not waiting", approval.run_id));
            };
            if entry.run.status != RunStatus::AwaitingApproval
                || entry.pending_approval.as_deref() != Some(approval.id.as_str())
            {
                // Decided already: the store may not show it yet.
                return Err(format!(
                    "approval {} is already decided (run {} is {}); this decision was not applied",
                    approval.id,
                    approval.run_id,
                    entry.run.status.as_str()
                ));
            }
            entry.pending_approval = None;
            let event = Event::Decided {
                approval,
                approve,
                by,
                note,
            };
            self.apply(&mut st, &approval.run_id, t, event);
        }
        self.work.notify_one();
        self.released.notify_waiters();
        Ok(())
    }

    /// Move the tracked run `run_id` on by `event` at `t`, and settle the
    /// result.
    pub(super) fn apply(&self, st: &mut State, run_id: &str, t: Timestamp, event: Event<'_>) {
        let stamp = now_rfc3339();
        let no_failure = FailureState::default();
        let Some(entry) = st.runs.get_mut(run_id) else {
            return;
        };
        let was = entry.run.status;
        let ctx = Context {
            job: st.jobs.get(&entry.run.job_id).map(|(j, _)| &**j),
            failure: st.failure.get(&entry.run.job_id).unwrap_or(&no_failure),
            now: t,
            stamp: &stamp,
        };
        let effects = machine::transition(&mut entry.run, &ctx, event);
        self.settle(st, run_id, was, effects);
    }

    /// Follow a run's move from `was` in the indexes, and submit the
    /// transition's writes: the one place a tracked run's change of state
    /// reaches the store. Under the lock, like every write of a run's
    /// state (see `admit`).
    fn settle(&self, st: &mut State, run_id: &str, was: RunStatus, effects: Effects) {
        let Effects {
            next,
            mut mutations,
            failure,
        } = effects;
        let Some(entry) = st.runs.get_mut(run_id) else {
            self.submit(mutations);
            return;
        };
        // A place of the group is free: a run held for it may start.
        if let Some(group) = st.counts.left(entry, was)
            && st.line_up_held(&group, 1) > 0
        {
            self.work.notify_one();
        }
        let Some(entry) = st.runs.get_mut(run_id) else {
            self.submit(mutations);
            return;
        };
        if let Some(failure) = failure {
            st.failure.insert(entry.run.job_id.clone(), failure);
        }
        match next {
            Next::Running => {
                st.counts.running += 1;
                if let Some(flow) = &entry.run.flow {
                    Counts::add(&mut st.counts.running_by_flow, flow, 1);
                }
                // The spec it started with (a first attempt's is set just
                // after this), else the current one.
                let group = entry
                    .started_with
                    .as_ref()
                    .map(|(j, _)| j)
                    .or_else(|| st.jobs.get(&entry.run.job_id).map(|(j, _)| j))
                    .and_then(|j| j.worker_group.clone());
                st.counts.started_in_group(entry, group);
                st.dispatched += 1;
                st.counts.follow_up_left(entry);
                self.measure_pressure(st, &mut mutations);
            }
            Next::Queued => {
                st.counts.waiting += 1;
                line_up(&mut st.seq, &mut st.ready, entry, run_id.to_string());
            }
            // Stays active; here it runs after the restart.
            Next::Interrupted => {
                if self.config.remote_dispatch {
                    // A worker process stopped, not this one: the run goes
                    // back in line now.
                    st.counts.waiting += 1;
                    line_up(&mut st.seq, &mut st.ready, entry, run_id.to_string());
                    self.work.notify_one();
                }
            }
            // Still active: counts for overlap and lanes.
            Next::Retrying { due } => {
                st.delayed.push(Reverse((due, run_id.to_string())));
                self.work.notify_one();
            }
            Next::AwaitingApproval { approval_id } => {
                Counts::add(&mut st.counts.approvals_by_job, &entry.run.job_id, 1);
                entry.pending_approval = Some(approval_id);
            }
            Next::Finished => self.leave(st, run_id, &mut mutations),
        }
        self.submit(mutations);
    }

    /// A finished run leaves the queue: its job's last run, its lane
    /// place (a parked run may start), a prune of old runs now and then.
    fn leave(&self, st: &mut State, run_id: &str, mutations: &mut Vec<Mutation>) {
        let Some(mut entry) = st.runs.remove(run_id) else {
            return;
        };
        st.counts.follow_up_left(&mut entry);
        let run = Arc::new(entry.run);
        log_finished(&run);
        super::trace::run_ended(&run);
        st.last_finished
            .insert(run.job_id.clone(), Arc::clone(&run));
        st.finished += 1;
        st.counts.track(&run, false);
        if let Some(flow) = &run.flow {
            // A lane place is free: a parked run of the lane may start.
            if let Some(parked) = st.parked.get_mut(flow)
                && let Some(next) = parked.pop_front()
                && let Some(entry) = st.runs.get_mut(&next)
            {
                line_up(&mut st.seq, &mut st.ready, entry, next);
                self.work.notify_one();
            }
        }
        let count = st
            .finished_since_prune
            .entry(run.job_id.clone())
            .or_default();
        *count += 1;
        // Prune in batches: one delete per `keep/10` finished runs.
        if *count >= (self.config.keep_runs / 10).max(1) {
            *count = 0;
            mutations.push(Mutation::PruneRuns {
                job_id: run.job_id.clone(),
                keep: self.config.keep_runs,
            });
        }
        self.measure_pressure(st, mutations);
    }

    /// Pressure after runs started or left: an event when it flips.
    fn measure_pressure(&self, st: &mut State, mutations: &mut Vec<Mutation>) {
        let waiting = st.counts.waiting;
        if let Some(on) = st.pressure.update(waiting) {
            mutations.push(pressure_event(on, waiting, &st.pressure));
        }
    }
}

/// The daemon's line for a finished run: one line, no JSON (at 10,000
/// runs a second it is written 10,000 times a second). A run without an
/// error has no `error` field (tracing records an `Option` only when set).
fn log_finished(run: &crate::store::runs::Run) {
    let error = run.error.as_deref().and_then(|e| e.lines().next());
    tracing::info!(
        job = %run.job_id,
        run = %run.id,
        trigger = %run.trigger.as_str(),
        attempt = run.attempt,
        status = %run.status.as_str(),
        duration_ms = run.duration_ms.unwrap_or(0),
        trace_id = %run.trace_id,
        error,
        "run finished"
    );
}
