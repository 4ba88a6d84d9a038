//! The run queue: every unfinished run, in memory, over the durable store.
//! The scheduler and `trigger` enqueue; workers claim and finish. The queue
//! keeps the lock and what guards need to decide in O(1): active runs per
//! job and lane, runs waiting to start (pressure), failure memory, pending
//! approvals. How a run moves is decided by the run's state machine
//! ([`crate::run::machine`]); the queue follows the move in its indexes and
//! submits the writes as they happen (group commit). On start
//! [`RunQueue::recover`] rebuilds the queue from the store. It uses `clock`,
//! `spec`, `store` and `run`, nothing above them.

mod admit;
mod cancel;
mod claim;
mod finish;
mod operator;
mod recover;
mod state;
#[cfg(test)]
mod tests;
mod trace;
mod view;

use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use cancel::Cancelled;
pub use operator::Unchanged;
pub use recover::RecoverySummary;
pub use view::QueueView;

use crate::clock::Clock;
use crate::run::guards::Pressure;
use crate::store::runs::{Run, RunStatus};
use crate::store::{Applied, Mutation, Store};
use state::{State, job_cache};

/// Uncommitted store writes above which workers stop claiming: twice what
/// the SQLite writer takes in one batch, so a busy writer always finds a
/// full one waiting (and each run's writes mostly fall in one batch).
const MAX_STORE_BACKLOG: usize = 131_072;
/// What queueing a run submits: its record and its `run.queued` event.
const WRITES_PER_QUEUED_RUN: usize = 2;

#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Runs waiting to start at which pressure mode turns on.
    pub pressure_high: usize,
    /// ... and at which it turns off again.
    pub pressure_low: usize,
    /// Finished runs kept per job.
    pub keep_runs: usize,
    /// Identifies this process as the holder of the runs it executes.
    pub owner: String,
    /// A Redis deployment: a started run is also handed to the ready
    /// stream (in the same store batch as its record), where any worker
    /// process claims it.
    pub remote_dispatch: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            pressure_high: 300,
            pressure_low: 180,
            keep_runs: 1000,
            owner: format!("pid-{}", std::process::id()),
            remote_dispatch: false,
        }
    }
}

/// A `trigger --count` burst while its runs are admitted into the queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Burst {
    pub inbox_id: i64,
    pub job_id: String,
    /// Runs admitted so far (including those queued before a restart).
    pub admitted: u32,
    pub total: u32,
}

pub struct RunQueue {
    state: Mutex<State>,
    /// Told how late (µs) a scheduled run decided ahead of its fire time
    /// became ready, measured when it does.
    lateness_sink: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Workers wait here for ready runs.
    work: Notify,
    /// The scheduler waits here for runs to finish (buffered slots).
    released: Notify,
    store: Store,
    config: QueueConfig,
    clock: Clock,
}

impl RunQueue {
    pub fn new(
        store: Store,
        applied: Arc<Applied>,
        config: QueueConfig,
        clock: Clock,
    ) -> Arc<RunQueue> {
        let pressure = Pressure::new(config.pressure_high, config.pressure_low);
        Arc::new(RunQueue {
            state: Mutex::new(State::new(applied, pressure)),
            lateness_sink: std::sync::OnceLock::new(),
            work: Notify::new(),
            released: Notify::new(),
            store,
            config,
            clock,
        })
    }

    /// Where the lateness of scheduled runs queued ahead goes (the
    /// scheduler's statistics); set once.
    pub fn set_lateness_sink(&self, sink: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.lateness_sink.set(sink);
    }

    /// The applied snapshot runs start under.
    pub fn applied(&self) -> Arc<Applied> {
        self.lock().applied.clone()
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts possibly off by one;
        // keeping the daemon up is worth more than refusing all work.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> QueueView<'_> {
        QueueView { state: self.lock() }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Record how far a burst got; `None` once it is all admitted.
    pub fn set_burst(&self, inbox_id: i64, burst: Option<Burst>) {
        let mut st = self.lock();
        match burst {
            Some(b) => {
                st.bursts.insert(inbox_id, b);
            }
            None => {
                st.bursts.remove(&inbox_id);
            }
        }
    }

    /// Wait until a run finishes (the scheduler's buffered slots).
    /// Resolves at the next release after this call: it listens at once,
    /// so call it before checking what a release would change (a release
    /// between the check and the await is not missed).
    pub fn released(&self) -> impl std::future::Future<Output = ()> + Send + Unpin + '_ {
        let mut next = Box::pin(self.released.notified());
        next.as_mut().enable();
        next
    }

    /// A new revision: specs for runs not yet started, lane limits.
    pub fn set_applied(&self, applied: Arc<Applied>) {
        let jobs = job_cache(&applied);
        let mut st = self.lock();
        st.applied = applied;
        st.jobs = jobs;
        let mut mutations = Vec::new();
        operator::drop_deleted_pauses(&mut st, &mut mutations);
        self.submit(mutations);
        drop(st);
        // Lane limits may have grown: parked runs may start.
        self.work.notify_waiters();
    }

    /// Whether a live worker serves worker group `group`, as the last
    /// read of the heartbeats said (`None` before the first read).
    pub fn serves_group(&self, group: &str) -> Option<bool> {
        self.lock().served.as_ref().map(|s| s.contains(group))
    }

    /// The worker groups the live workers serve (a Redis leader reads
    /// them from the workers' heartbeats), each with its window: the most
    /// runs of the group running at once. Runs of other groups wait,
    /// queued, until a worker of theirs is live, and runs of a group at
    /// its window until one of its runs ends. Held runs of a served group
    /// line up again, as many as its window has room for.
    pub fn set_served_groups(&self, windows: std::collections::HashMap<String, usize>) {
        let mut st = self.lock();
        st.served = Some(windows.keys().cloned().collect());
        st.group_windows = windows;
        let rooms: Vec<(String, usize)> = st
            .unserved
            .keys()
            .filter_map(|group| {
                let window = st.group_windows.get(group)?;
                let running = st.counts.running_by_group.get(group).copied();
                Some((group.clone(), window.saturating_sub(running.unwrap_or(0))))
            })
            .collect();
        let mut woke = false;
        for (group, room) in rooms {
            woke |= st.line_up_held(&group, room) > 0;
        }
        st.unserved.retain(|_, held| !held.is_empty());
        drop(st);
        if woke {
            self.work.notify_waiters();
        }
    }

    fn submit(&self, mutations: Vec<Mutation>) {
        if let Err(e) = self.store.submit(mutations) {
            tracing::error!(error = %e, "queue: store write failed");
        }
    }

    /// Why a running run's token fired: an operator's cancel, or a newer
    /// run replacing it.
    pub fn cancel_reason(&self, run_id: &str) -> Option<String> {
        let st = self.lock();
        st.runs
            .get(run_id)
            .filter(|e| e.cancel.is_cancelled())
            .map(|e| {
                e.run
                    .operator_cancel()
                    .unwrap_or_else(|| format!("replaced by a newer run of {}", e.run.job_id))
            })
    }

    /// Stop handing out runs (shutdown).
    pub fn drain(&self) {
        self.lock().draining = true;
        self.work.notify_waiters();
    }

    /// Tokens of the runs executing now (to interrupt them after the grace).
    pub fn running_tokens(&self) -> Vec<CancellationToken> {
        self.lock()
            .runs
            .values()
            .filter(|e| e.run.status == RunStatus::Running)
            .map(|e| e.cancel.clone())
            .collect()
    }

    /// The running runs with their tokens (a new Redis leader watches
    /// those it recovered as held by live workers).
    pub fn running_runs_tokens(&self) -> Vec<(String, CancellationToken)> {
        self.lock()
            .runs
            .values()
            .filter(|e| e.run.status == RunStatus::Running)
            .map(|e| (e.run.id.clone(), e.cancel.clone()))
            .collect()
    }

    /// Attach a workflow's step records to a running run (kept with its
    /// record when it finishes).
    pub fn record_steps(&self, run_id: &str, steps: Vec<crate::store::runs::StepRecord>) {
        if let Some(entry) = self.lock().runs.get_mut(run_id) {
            entry.run.steps = steps;
        }
    }

    /// Record the LLM tokens a run used (kept with its record).
    pub fn record_usage(&self, run_id: &str, llm_tokens: u64) {
        if let Some(entry) = self.lock().runs.get_mut(run_id) {
            entry.run.usage.llm_tokens = llm_tokens;
        }
    }

    /// When a worker elsewhere really began the current attempt (a Redis
    /// deployment records the hand-off time at claim; the worker's clock
    /// says when it started executing).
    pub fn record_start(&self, run_id: &str, started_at: String, worker: &str) {
        let mut st = self.lock();
        let Some(entry) = st.runs.get_mut(run_id) else {
            return;
        };
        let run = &mut entry.run;
        if let Some(a) = run.attempts.last_mut() {
            a.worker = Some(worker.to_string());
        }
        match run.attempts.last_mut() {
            // A resumed attempt started before its pause.
            Some(a) if a.resumed_at.is_some() => a.resumed_at = Some(started_at),
            Some(a) => {
                if run.attempt <= 1 {
                    run.started_at = Some(started_at.clone());
                }
                a.started_at = started_at;
            }
            None => {}
        }
    }

    /// When a running run's current attempt was started or resumed here
    /// (see [`dispatch_mark`]).
    pub fn run_dispatch_mark(&self, run_id: &str) -> Option<String> {
        self.lock()
            .runs
            .get(run_id)
            .and_then(|e| dispatch_mark(&e.run))
    }

    /// An unfinished run's status and attempt.
    pub fn run_status(&self, run_id: &str) -> Option<(RunStatus, u32)> {
        self.lock()
            .runs
            .get(run_id)
            .map(|e| (e.run.status, e.run.attempt))
    }

    /// A run as the queue holds it (unfinished runs only).
    pub fn get(&self, run_id: &str) -> Option<Run> {
        self.lock().runs.get(run_id).map(|e| e.run.clone())
    }
}

/// When the run's current attempt was started, or resumed after an
/// approval: different for each time the queue hands the run out, even
/// under one attempt number (an interrupted run keeps its number).
pub fn dispatch_mark(run: &Run) -> Option<String> {
    let a = run.attempts.last()?;
    Some(a.resumed_at.clone().unwrap_or_else(|| a.started_at.clone()))
}
