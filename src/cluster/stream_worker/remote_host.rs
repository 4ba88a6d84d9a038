//! The run host of a worker process: what a run executing here needs from
//! outside it (the applied snapshot, the store, follow-ups handed to the
//! leader), and where its step records and token usage wait to travel with
//! its result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::run::{BoxFuture, FollowUpHandover, NewRun, NotQueued, RunHost};
use crate::spec::model::Job;
use crate::store::runs::{InboxCommand, Run, StepRecord};
use crate::store::{Applied, Store, format_ts};

/// What a run executing here needs: the applied snapshot (loaded from
/// the store when a run names a spec this process has not seen), the store,
/// and a way to hand follow-ups to the leader.
pub struct RemoteHost {
    store: Store,
    applied: ArcSwap<Applied>,
    /// Job specs by hash, shared by their runs.
    jobs: std::sync::Mutex<HashMap<String, Arc<Job>>>,
    reload: tokio::sync::Mutex<()>,
    /// Step records and token usage of runs in flight, sent with the result.
    stash: std::sync::Mutex<HashMap<String, (Vec<StepRecord>, u64)>>,
    /// Why the leader cancelled a run in flight here.
    cancelled: std::sync::Mutex<HashMap<String, String>>,
    /// Where the leader publishes its queue figures.
    queue_key: String,
    /// The follow-ups waiting by job as last read from those figures, and
    /// when: a fan-out reads them once per [`FIGURES_FOR`], not once per
    /// follow-up (the leader publishes them twice a second anyway).
    waiting: std::sync::Mutex<Option<(std::time::Instant, WaitingByJob)>>,
}

/// Follow-ups waiting to start, by job.
type WaitingByJob = Arc<BTreeMap<String, usize>>;

/// How long the leader's published figures are reused here.
const FIGURES_FOR: std::time::Duration = std::time::Duration::from_millis(100);

impl RemoteHost {
    pub fn new(store: Store, applied: Arc<Applied>, queue_key: String) -> RemoteHost {
        RemoteHost {
            queue_key,
            store,
            applied: ArcSwap::new(applied),
            jobs: Default::default(),
            reload: tokio::sync::Mutex::new(()),
            stash: Default::default(),
            cancelled: Default::default(),
            waiting: Default::default(),
        }
    }

    /// Follow-ups waiting to start of `job`, from the leader's figures
    /// (read again when older than [`FIGURES_FOR`]); `None`: none published.
    async fn follow_ups_waiting(&self, job: &str) -> Option<usize> {
        let fresh = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FIGURES_FOR)
            .map(|(_, w)| w.clone());
        let waiting = match fresh {
            Some(w) => w,
            None => {
                let Store::Redis(r) = &self.store else {
                    return None;
                };
                let read =
                    crate::cluster::leader::follow_ups_waiting(r.connection(), &self.queue_key);
                let w = Arc::new(read.await?);
                *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now(), w.clone()));
                w
            }
        };
        Some(waiting.get(job).copied().unwrap_or(0))
    }

    /// Load the applied snapshot when the leader has applied a revision
    /// this process has not loaded, before its runs arrive: loaded on a
    /// run's first sight instead, every run dispatched meanwhile waited
    /// (at 12,500 jobs, the first 200 ms of runs after a start waited
    /// 30 to 90 ms for it).
    pub(super) async fn follow_applied(&self) {
        let Store::Redis(r) = &self.store else {
            return;
        };
        let seq = match r.applied_seq().await {
            Ok(Some(seq)) => seq,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "worker: cannot read the applied revision");
                return;
            }
        };
        let loaded =
            |host: &Self| host.applied.load().revision.as_ref().map(|r| r.seq) >= Some(seq);
        if loaded(self) {
            return;
        }
        let _one_reload = self.reload.lock().await;
        if loaded(self) {
            return;
        }
        self.load_applied().await;
    }

    /// Load the applied snapshot, saying which and how long it took; the
    /// caller holds `reload`, so one load runs at a time.
    async fn load_applied(&self) {
        let started = std::time::Instant::now();
        match self.store.applied().await {
            Ok(applied) => {
                tracing::info!(
                    revision = applied.revision.as_ref().map_or(0, |r| r.seq),
                    jobs = applied.snapshot.jobs.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "worker: loaded the applied revision"
                );
                self.applied.store(Arc::new(applied));
            }
            Err(e) => tracing::warn!(error = %e, "worker: cannot load the applied snapshot"),
        }
    }

    /// The spec a run was started with (by hash), reloading the applied
    /// snapshot once when this process has not seen it yet.
    pub(super) async fn job_for(&self, run: &Run) -> Option<Arc<Job>> {
        if let Some(job) = self.cached(run) {
            return Some(job);
        }
        {
            let _one_reload = self.reload.lock().await;
            if let Some(job) = self.cached(run) {
                return Some(job);
            }
            self.load_applied().await;
        }
        if let Some(job) = self.cached(run) {
            return Some(job);
        }
        // The job changed again since the run started: run it as applied
        // now (the leader's queue does the same for runs not yet started).
        let applied = self.applied.load();
        applied
            .snapshot
            .runnable_job(&run.job_id)
            .map(|r| Arc::new(r.into_owned().spec))
    }

    fn cached(&self, run: &Run) -> Option<Arc<Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = jobs.get(&run.spec_hash) {
            return Some(j.clone());
        }
        let applied = self.applied.load();
        // A skill's derived job too: the leader queued it the same way.
        let r = applied.snapshot.runnable_job(&run.job_id)?;
        if r.hash != run.spec_hash {
            return None;
        }
        let r = r.into_owned();
        let job = Arc::new(r.spec);
        jobs.insert(r.hash, job.clone());
        Some(job)
    }

    /// The leader cancelled `run_id`, which runs here, for `reason`.
    pub(super) fn cancelled_by_leader(&self, run_id: String, reason: String) {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id, reason);
    }

    /// The step records and token usage of a run that ended here (and
    /// forget why it was cancelled).
    pub(super) fn take_stash(&self, run_id: &str) -> (Vec<StepRecord>, u64) {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        self.stash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id)
            .unwrap_or_default()
    }
}

impl RunHost for RemoteHost {
    fn applied(&self) -> Arc<Applied> {
        self.applied.load_full()
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn clock(&self) -> Clock {
        Clock::Wall
    }
    fn cancel_reason(&self, run_id: &str) -> Option<String> {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned()
    }
    fn follow_up(&self, run: NewRun) -> BoxFuture<'_, FollowUpHandover> {
        Box::pin(async move {
            let limit = match self.applied.load().snapshot.jobs.get(&run.job_id) {
                Some(job) => job.spec.limits.queued_follow_ups,
                None => return Ok(Err(NotQueued::NoSuchJob)),
            };
            // The leader checks the limit when it queues the run; its
            // figures (at most 0.6 s old) let the step fail here
            // too, instead of succeeding for a run the leader drops.
            if let Some(waiting) = self.follow_ups_waiting(&run.job_id).await
                && waiting >= limit as usize
            {
                return Ok(Err(NotQueued::FollowUpsFull { waiting, limit }));
            }
            let command = InboxCommand::FollowUp {
                run_id: run.id,
                job_id: run.job_id,
                inputs: run.inputs,
                run_key: run.run_key,
                chain_depth: run.chain_depth,
                due_at: run.due_at.map(format_ts),
                extra: run.extra,
            };
            self.store
                .post_to_inbox(&command)
                .await
                .map(|_| Ok(()))
                .map_err(|e| format!("handing the follow-up to the leader: {e}"))
        })
    }
    fn record_steps(&self, run_id: &str, steps: Vec<StepRecord>) {
        self.stash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run_id.to_string())
            .or_default()
            .0 = steps;
    }
    fn record_usage(&self, run_id: &str, llm_tokens: u64) {
        self.stash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run_id.to_string())
            .or_default()
            .1 = llm_tokens;
    }
}
