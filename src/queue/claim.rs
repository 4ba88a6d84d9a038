//! Handing ready runs to workers: due runs join the line, lanes that are
//! full park theirs, and the first run that may start is started.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::state::{State, line_up};
use super::{MAX_STORE_BACKLOG, RunQueue, WRITES_PER_QUEUED_RUN};
use crate::run::machine::{self, Context, Event};
use crate::run::{Claim, Outcome};
use crate::spec::model::Job;
use crate::store::runs::{FailureState, RunStatus, Trigger};

impl RunQueue {
    /// Wait for a ready run and start it. `None` once draining.
    pub async fn claim(&self) -> Option<Claim> {
        // Start no more work than the store can record: a run's outcome
        // must not outrun its durability (and memory stays bounded). The
        // records of runs still waiting are in that backlog too and are
        // already in memory: a burst of 100,000 triggered runs must not
        // keep every worker idle until all of them are written as queued.
        loop {
            let waiting = self.lock().counts.waiting;
            let allowed = MAX_STORE_BACKLOG + WRITES_PER_QUEUED_RUN * waiting;
            // Runs queued meanwhile raise the allowance: look again soon.
            tokio::select! {
                _ = self.store.wait_for_backlog(allowed) => break,
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_due = {
                let mut st = self.lock();
                if st.draining {
                    return None;
                }
                if let Some(claim) = self.try_claim_locked(&mut st) {
                    return Some(claim);
                }
                st.delayed.peek().map(|Reverse((due, _))| *due)
            };
            match next_due {
                Some(due) => {
                    let wait = self.clock.until(due).max(Duration::from_millis(1));
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn try_claim_locked(&self, st: &mut State) -> Option<Claim> {
        let t = self.now();
        self.promote_due(st, t);
        while let Some((key, id)) = st.ready.pop() {
            let Some(entry) = st.runs.get(&id) else {
                continue;
            };
            if entry.ready_seq != Some(key.seq) || entry.run.status != RunStatus::Queued {
                continue;
            }
            let Some(current) = st.jobs.get(&entry.run.job_id).cloned() else {
                // The job was deleted before this run (or its retry) started.
                let reason = if entry.run.attempt == 0 {
                    "the job was deleted before the run started"
                } else {
                    "the job was deleted while the run waited to go on"
                };
                self.finish_locked(st, &id, Outcome::Cancelled(reason.into()), t);
                continue;
            };
            let (job, hash) = entry.started_with.clone().unwrap_or(current);
            if let Some(group) = &job.worker_group
                && (st.served.as_ref().is_some_and(|s| !s.contains(group)) || group_full(st, group))
            {
                if let Some(entry) = st.runs.get_mut(&id) {
                    entry.ready_seq = None;
                }
                st.unserved.entry(group.clone()).or_default().push_back(id);
                continue;
            }
            if lane_full(st, &job) {
                if let Some(entry) = st.runs.get_mut(&id) {
                    entry.ready_seq = None;
                }
                if let Some(flow) = &job.flow {
                    st.parked.entry(flow.clone()).or_default().push_back(id);
                }
                continue;
            }
            return self.start(st, &id, job, hash, t);
        }
        None
    }

    /// Delayed runs whose time has come become ready.
    fn promote_due(&self, st: &mut State, t: Timestamp) {
        // Becoming due decides nothing from the job and writes no event.
        let no_failure = FailureState::default();
        let ctx = Context {
            job: None,
            failure: &no_failure,
            now: t,
            stamp: "",
        };
        while let Some(Reverse((due, _))) = st.delayed.peek() {
            if *due > t {
                break;
            }
            let Some(Reverse((_, id))) = st.delayed.pop() else {
                break;
            };
            let Some(entry) = st.runs.get_mut(&id) else {
                continue;
            };
            if entry.run.status == RunStatus::Retrying {
                st.counts.waiting += 1;
            } else if entry.run.trigger == Trigger::Schedule
                && entry.run.attempt == 0
                && let Some(sink) = self.lateness_sink.get()
                && let Some(due) = entry
                    .run
                    .due_at
                    .as_ref()
                    .and_then(|d| d.parse::<Timestamp>().ok())
            {
                // A slot decided ahead is dispatched now.
                sink(t.duration_since(due).as_micros().max(0) as u64);
            }
            // Writes nothing: the record says `retrying` until it starts.
            machine::transition(&mut entry.run, &ctx, Event::Due);
            line_up(&mut st.seq, &mut st.ready, entry, id);
        }
    }

    /// Start the queued run `id` on `job` (the spec its first attempt
    /// started with, or the current one).
    fn start(
        &self,
        st: &mut State,
        id: &str,
        job: Arc<Job>,
        spec_hash: String,
        t: Timestamp,
    ) -> Option<Claim> {
        let event = Event::Started {
            owner: self.config.owner.clone(),
            spec_hash,
            dispatch: self.config.remote_dispatch,
        };
        self.apply(st, id, t, event);
        let entry = st.runs.get_mut(id)?;
        entry.ready_seq = None;
        if entry.started_with.is_none() {
            entry.started_with = Some((job.clone(), entry.run.spec_hash.clone()));
        }
        Some(Claim {
            run: entry.run.clone(),
            job,
            cancel: entry.cancel.clone(),
        })
    }
}

/// The worker group has as many runs running as its window allows.
fn group_full(st: &State, group: &str) -> bool {
    let running = st.counts.running_by_group.get(group).copied().unwrap_or(0);
    st.group_windows
        .get(group)
        .is_some_and(|max| running >= *max)
}

/// The job's lane (flow) has as many running runs as it may.
fn lane_full(st: &State, job: &Job) -> bool {
    let Some(flow) = &job.flow else {
        return false;
    };
    let max = st
        .applied
        .snapshot
        .flows
        .get(flow)
        .and_then(|f| f.spec.max_active_runs);
    let running = st.counts.running_by_flow.get(flow).copied().unwrap_or(0);
    max.is_some_and(|m| running >= m as usize)
}
