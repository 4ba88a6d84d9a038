//! The run queue: every unfinished run, in memory, over the durable store.
//!
//! The scheduler and `trigger` enqueue; workers claim and finish. The queue
//! keeps what guards need to decide in O(1): active runs per job and lane,
//! runs waiting to start (pressure), failure memory, pending approvals.
//! Every state change is submitted to the store as it happens (group
//! commit), and on start [`RunQueue::recover`] rebuilds the queue from the
//! store: queued runs are queued again, runs that were `running` when the
//! process died are retried or failed per their retry policy.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::run::guards::{LaneLoad, Pressure};
use crate::run::{Claim, NewRun, NotQueued, Outcome, RunError, approval_record_key, retry};
use crate::spec::model::{Job, Priority};
use crate::store::runs::{
    Approval, ApprovalStatus, Attempt, FailureState, Run, RunStatus, StepStatus, Trigger, Usage,
};
use crate::store::{Applied, Mutation, NewEvent, Store, format_ts};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadyKey {
    rank: u8,
    seq: u64,
}

impl Ord for ReadyKey {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority (lower rank) first, then older first.
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ReadyKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

/// Put a run in line: the next seq (its place among runs of its priority)
/// on its entry and in the ready heap (keys an entry no longer holds are
/// skipped when popped).
fn line_up(
    seq: &mut u64,
    ready: &mut BinaryHeap<(ReadyKey, String)>,
    entry: &mut Entry,
    id: String,
) {
    *seq += 1;
    entry.ready_seq = Some(*seq);
    let key = ReadyKey {
        rank: rank(entry.run.priority),
        seq: *seq,
    };
    ready.push((key, id));
}

struct Entry {
    run: Run,
    cancel: CancellationToken,
    /// Key in the ready heap while ready (stale heap keys are skipped).
    ready_seq: Option<u64>,
    /// The approval the run waits on while `awaiting_approval`: a decision
    /// for another one (an earlier approval decided twice) is refused.
    pending_approval: Option<String>,
    /// The spec (and its hash) the run's first attempt started with: a
    /// retry or a resume after approval runs it too, not a spec applied
    /// meanwhile (SPEC: a run finishes on the spec it started with).
    started_with: Option<(Arc<Job>, String)>,
    /// A follow-up that has not started yet: counted in
    /// `Counts::follow_ups_waiting` until it starts or leaves the queue.
    waiting_follow_up: bool,
}

#[derive(Default)]
struct Counts {
    active_by_job: HashMap<String, usize>,
    active_by_flow: HashMap<String, usize>,
    running_by_flow: HashMap<String, usize>,
    approvals_by_job: HashMap<String, usize>,
    /// Follow-up runs (`schedule_job`) not started yet, by job: what
    /// `limits.queued_follow_ups` bounds.
    follow_ups_waiting: HashMap<String, usize>,
    /// Queued and not started: what pressure measures.
    waiting: usize,
    running: usize,
}

impl Counts {
    /// A follow-up run leaves the waiting ones (it started, or it ended
    /// before it could).
    fn follow_up_left(&mut self, entry: &mut Entry) {
        if std::mem::take(&mut entry.waiting_follow_up) {
            Counts::add(&mut self.follow_ups_waiting, &entry.run.job_id, -1);
        }
    }

    fn add(map: &mut HashMap<String, usize>, key: &str, delta: isize) {
        if delta >= 0 {
            *map.entry(key.to_string()).or_default() += delta as usize;
        } else if let Some(v) = map.get_mut(key) {
            *v = v.saturating_sub(delta.unsigned_abs());
            if *v == 0 {
                map.remove(key);
            }
        }
    }
}

struct State {
    /// Boxed: growing the map moves pointers, not whole runs.
    runs: HashMap<String, Box<Entry>, foldhash::fast::RandomState>,
    ready: BinaryHeap<(ReadyKey, String)>,
    delayed: BinaryHeap<Reverse<(Timestamp, String)>>,
    /// Ready runs held back because their lane is full of running runs.
    parked: HashMap<String, VecDeque<String>>,
    counts: Counts,
    pressure: Pressure,
    failure: HashMap<String, FailureState>,
    finished_since_prune: HashMap<String, usize>,
    /// Each job's last finished run (the API shows it with the job).
    last_finished: HashMap<String, Arc<Run>>,
    applied: Arc<Applied>,
    /// Each job's spec, shared by its runs (built once per revision, so a
    /// run never deep-copies its job).
    jobs: HashMap<String, (Arc<Job>, String)>,
    draining: bool,
    seq: u64,
    dispatched: u64,
    finished: u64,
    /// `trigger --count` bursts being admitted, by inbox id.
    bursts: std::collections::BTreeMap<i64, Burst>,
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

/// A read-only view of the queue for guard decisions and the API.
pub struct QueueView<'a> {
    state: MutexGuard<'a, State>,
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
    pub fn follow_ups_waiting(&self) -> std::collections::BTreeMap<String, usize> {
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

/// The job's inputs overlaid with a trigger's inputs (templates only; the
/// trigger never changes policy).
fn merged_inputs(job: &Job, extra: &Value) -> Value {
    let mut base = job.inputs.clone();
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    Value::Object(base)
}

impl RunQueue {
    pub fn new(
        store: Store,
        applied: Arc<Applied>,
        config: QueueConfig,
        clock: Clock,
    ) -> Arc<RunQueue> {
        Arc::new(RunQueue {
            state: Mutex::new(State {
                runs: HashMap::default(),
                ready: BinaryHeap::new(),
                delayed: BinaryHeap::new(),
                parked: HashMap::new(),
                counts: Counts::default(),
                pressure: Pressure::new(config.pressure_high, config.pressure_low),
                failure: HashMap::new(),
                finished_since_prune: HashMap::new(),
                last_finished: HashMap::new(),
                jobs: job_cache(&applied),
                applied,
                draining: false,
                seq: 0,
                dispatched: 0,
                finished: 0,
                bursts: Default::default(),
            }),
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
        drop(st);
        // Lane limits may have grown: parked runs may start.
        self.work.notify_waiters();
    }

    fn submit(&self, mutations: Vec<Mutation>) {
        if let Err(e) = self.store.submit(mutations) {
            tracing::error!(error = %e, "queue: store write failed");
        }
    }

    /// Load failure memory and unfinished runs from the store. Runs that
    /// were `running` belonged to a process that died: their attempt
    /// failed (lease lost) and they are retried or failed by policy.
    pub async fn recover(&self) -> Result<RecoverySummary, crate::store::StoreError> {
        self.recover_holding(&std::collections::HashSet::new())
            .await
    }

    /// [`recover`](Self::recover), except that `running` runs in `held`
    /// are still owned by a live worker elsewhere (a Redis deployment's
    /// dispatched runs): they stay `running` and their result is awaited.
    pub async fn recover_holding(
        &self,
        held: &std::collections::HashSet<String>,
    ) -> Result<RecoverySummary, crate::store::StoreError> {
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
            for mut run in runs {
                let job = st.jobs.get(&run.job_id).map(|(j, _)| j.clone());
                match run.status {
                    RunStatus::Running if held.contains(&run.id) => {
                        summary.held += 1;
                        self.insert_locked(&mut st, run);
                        continue;
                    }
                    RunStatus::Running => {
                        summary.orphaned += 1;
                        close_attempt(
                            &mut run,
                            RunStatus::Failed,
                            Some("worker lost: the process stopped while running (lease expired)"),
                            t,
                        );
                        let policy = job
                            .as_ref()
                            .map(|j| j.retry_policy.clone())
                            .unwrap_or_default();
                        match retry::backoff(&policy, run.attempt) {
                            Some(wait) => {
                                run.status = RunStatus::Retrying;
                                let due =
                                    t + jiff::SignedDuration::try_from(wait).unwrap_or_default();
                                run.due_at = Some(format_ts(due));
                                mutations.push(Mutation::Event(
                                    NewEvent::new("run.retrying", json!({"attempt": run.attempt, "reason": "worker lost", "due_at": run.due_at}))
                                        .job(run.job_id.clone())
                                        .run(run.id.clone()),
                                ));
                                summary.retried += 1;
                            }
                            None => {
                                let error = "worker lost: the process stopped while running, and no retries are left".to_string();
                                finish_record(
                                    &mut run,
                                    RunStatus::Failed,
                                    Some(error.clone()),
                                    None,
                                    t,
                                );
                                if let Some(job) = &job {
                                    let prev =
                                        st.failure.get(&run.job_id).cloned().unwrap_or_default();
                                    let next = retry::after_run(
                                        &prev,
                                        &job.failure_memory,
                                        Some(&error),
                                        t,
                                    );
                                    mutations
                                        .push(Mutation::Failure(run.job_id.clone(), next.clone()));
                                    st.failure.insert(run.job_id.clone(), next);
                                }
                                mutations.push(Mutation::Event(
                                    NewEvent::new(
                                        "run.failed",
                                        json!({"attempt": run.attempt, "error": error}),
                                    )
                                    .job(run.job_id.clone())
                                    .run(run.id.clone()),
                                ));
                                mutations.push(Mutation::PutRun(Box::new(run)));
                                summary.failed += 1;
                                continue;
                            }
                        }
                    }
                    RunStatus::Queued => summary.requeued += 1,
                    RunStatus::Retrying => summary.retrying += 1,
                    RunStatus::AwaitingApproval => summary.awaiting_approval += 1,
                    _ => continue,
                }
                mutations.push(Mutation::PutRun(Box::new(run.clone())));
                self.insert_locked(&mut st, run);
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

    /// Track a run (not yet in the queue) in the right structure.
    fn insert_locked(&self, st: &mut State, run: Run) {
        let id = run.id.clone();
        Counts::add(&mut st.counts.active_by_job, &run.job_id, 1);
        if let Some(flow) = &run.flow {
            Counts::add(&mut st.counts.active_by_flow, flow, 1);
        }
        // Not started yet (queued, delayed or awaiting approval before its
        // first attempt): a follow-up counts against its job's
        // `limits.queued_follow_ups` until it starts.
        let waiting_follow_up = run.trigger == Trigger::Workflow
            && run.attempt == 0
            && matches!(run.status, RunStatus::Queued | RunStatus::AwaitingApproval);
        if waiting_follow_up {
            Counts::add(&mut st.counts.follow_ups_waiting, &run.job_id, 1);
        }
        let mut entry = Entry {
            run,
            cancel: CancellationToken::new(),
            ready_seq: None,
            pending_approval: None,
            started_with: None,
            waiting_follow_up,
        };
        match entry.run.status {
            RunStatus::Queued => {
                let due = entry
                    .run
                    .due_at
                    .as_ref()
                    .and_then(|d| d.parse::<Timestamp>().ok());
                st.counts.waiting += 1;
                match due {
                    Some(due) if due > self.now() => st.delayed.push(Reverse((due, id.clone()))),
                    _ => line_up(&mut st.seq, &mut st.ready, &mut entry, id.clone()),
                }
            }
            RunStatus::Running => {
                st.counts.running += 1;
                if let Some(flow) = &entry.run.flow {
                    Counts::add(&mut st.counts.running_by_flow, flow, 1);
                }
            }
            RunStatus::Retrying => {
                let due = entry
                    .run
                    .due_at
                    .as_ref()
                    .and_then(|d| d.parse::<Timestamp>().ok())
                    .unwrap_or_else(|| self.now());
                st.delayed.push(Reverse((due, id.clone())));
            }
            _ => {}
        }
        st.runs.insert(id, Box::new(entry));
    }

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

    /// [`enqueue`](Self::enqueue), with each run's id or why it was not queued.
    fn admit(&self, new_runs: Vec<NewRun>) -> Vec<Result<String, NotQueued>> {
        if new_runs.is_empty() {
            return Vec::new();
        }
        let t = self.now();
        let queued_at = format_ts(t);
        let mut mutations = Vec::with_capacity(new_runs.len() * 2 + 2);
        let mut out = Vec::with_capacity(new_runs.len());
        let mut ready = 0;
        {
            let mut st = self.lock();
            for n in new_runs {
                let (job, hash) = match admissible(&st, &n) {
                    Ok(job) => job,
                    Err(why) => {
                        out.push(Err(why));
                        continue;
                    }
                };
                let revision = st
                    .applied
                    .revision
                    .as_ref()
                    .map(|r| r.id.clone())
                    .unwrap_or_default();
                let priority = st.applied.snapshot.effective_priority(&job);
                let status = if job.requires_approval {
                    RunStatus::AwaitingApproval
                } else {
                    RunStatus::Queued
                };
                let run = Run {
                    id: n.id,
                    job_id: n.job_id,
                    status,
                    trigger: n.trigger,
                    inputs: merged_inputs(&job, &n.inputs),
                    attempt: 0,
                    attempts: Vec::new(),
                    scheduled_at: n.scheduled_at.map(format_ts),
                    queued_at: queued_at.clone(),
                    started_at: None,
                    finished_at: None,
                    duration_ms: None,
                    error: None,
                    spec_hash: hash,
                    revision,
                    steps: Vec::new(),
                    usage: Usage::default(),
                    output: None,
                    run_key: n.run_key,
                    due_at: n.due_at.map(format_ts),
                    priority,
                    flow: job.flow.clone(),
                    chain_depth: n.chain_depth,
                    lease_owner: None,
                };
                let mut data = json!({"trigger": run.trigger, "scheduled_at": run.scheduled_at, "priority": run.priority});
                if let (Value::Object(d), Value::Object(extra)) = (&mut data, &n.extra) {
                    d.extend(extra.clone());
                }
                mutations.push(Mutation::Event(
                    NewEvent::new("run.queued", data)
                        .job(run.job_id.clone())
                        .run(run.id.clone()),
                ));
                let mut pending_approval = None;
                if status == RunStatus::AwaitingApproval {
                    let approval = Approval {
                        id: format!("ap-{}", run.id),
                        run_id: run.id.clone(),
                        job_id: run.job_id.clone(),
                        step_id: None,
                        reason: Some(format!(
                            "job {} requires approval for every run",
                            run.job_id
                        )),
                        status: ApprovalStatus::Pending,
                        requested_at: queued_at.clone(),
                        decided_at: None,
                        decided_by: None,
                    };
                    Counts::add(&mut st.counts.approvals_by_job, &run.job_id, 1);
                    mutations.push(Mutation::Event(
                        NewEvent::new(
                            "approval.requested",
                            json!({"approval_id": approval.id, "reason": approval.reason}),
                        )
                        .job(run.job_id.clone())
                        .run(run.id.clone()),
                    ));
                    pending_approval = Some(approval.id.clone());
                    mutations.push(Mutation::PutApproval(approval));
                } else {
                    ready += 1;
                }
                mutations.push(Mutation::PutRun(Box::new(run.clone())));
                out.push(Ok(run.id.clone()));
                let id = run.id.clone();
                self.insert_locked(&mut st, run);
                if let Some(entry) = st.runs.get_mut(&id) {
                    entry.pending_approval = pending_approval;
                }
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
        // Delayed runs whose time has come become ready.
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
                entry.run.status = RunStatus::Queued;
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
            entry.run.due_at = None;
            if let Some(entry) = st.runs.get_mut(&id) {
                line_up(&mut st.seq, &mut st.ready, entry, id);
            }
        }
        while let Some((key, id)) = st.ready.pop() {
            let Some(entry) = st.runs.get(&id) else {
                continue;
            };
            if entry.ready_seq != Some(key.seq) || entry.run.status != RunStatus::Queued {
                continue;
            }
            let job_id = entry.run.job_id.clone();
            let Some(current) = st.jobs.get(&job_id).cloned() else {
                // The job was deleted before this run (or its retry) started.
                let run_id = id.clone();
                let reason = if entry.run.attempt == 0 {
                    "the job was deleted before the run started"
                } else {
                    "the job was deleted while the run waited to go on"
                };
                self.finish_locked(st, &run_id, Outcome::Cancelled(reason.into()), t);
                continue;
            };
            let (job, hash) = entry.started_with.clone().unwrap_or(current);
            if let Some(flow) = &job.flow {
                let max = st
                    .applied
                    .snapshot
                    .flows
                    .get(flow)
                    .and_then(|f| f.spec.max_active_runs);
                let running = st.counts.running_by_flow.get(flow).copied().unwrap_or(0);
                if max.is_some_and(|m| running >= m as usize) {
                    if let Some(entry) = st.runs.get_mut(&id) {
                        entry.ready_seq = None;
                    }
                    st.parked.entry(flow.clone()).or_default().push_back(id);
                    continue;
                }
                Counts::add(&mut st.counts.running_by_flow, flow, 1);
            }
            st.counts.waiting = st.counts.waiting.saturating_sub(1);
            st.counts.running += 1;
            st.dispatched += 1;
            let started = format_ts(t);
            let owner = self.config.owner.clone();
            let entry = st.runs.get_mut(&id)?;
            st.counts.follow_up_left(entry);
            let run = &mut entry.run;
            run.status = RunStatus::Running;
            run.started_at.get_or_insert_with(|| started.clone());
            run.spec_hash = hash;
            run.lease_owner = Some(owner);
            match run.attempts.last_mut() {
                // Approved after a pause: the open attempt goes on.
                Some(a) if a.finished_at.is_none() => {
                    a.status = RunStatus::Running;
                    a.resumed_at = Some(started);
                }
                _ => {
                    run.attempt += 1;
                    run.attempts.push(Attempt {
                        n: run.attempt,
                        started_at: started,
                        resumed_at: None,
                        finished_at: None,
                        status: RunStatus::Running,
                        error: None,
                    });
                }
            }
            entry.ready_seq = None;
            if entry.started_with.is_none() {
                entry.started_with = Some((job.clone(), run.spec_hash.clone()));
            }
            let claim = Claim {
                run: run.clone(),
                job,
                cancel: entry.cancel.clone(),
            };
            let event = NewEvent::new("run.started", json!({"attempt": claim.run.attempt}))
                .job(claim.run.job_id.clone())
                .run(claim.run.id.clone());
            let waiting = st.counts.waiting;
            let flip = st.pressure.update(waiting);
            let mut mutations = vec![
                Mutation::PutRun(Box::new(claim.run.clone())),
                Mutation::Event(event),
            ];
            if self.config.remote_dispatch {
                mutations.push(Mutation::Dispatch {
                    run_id: claim.run.id.clone(),
                });
            }
            if let Some(on) = flip {
                mutations.push(pressure_event(on, waiting, &st.pressure));
            }
            self.submit(mutations);
            return Some(claim);
        }
        None
    }

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

    fn finish_locked(&self, st: &mut State, run_id: &str, outcome: Outcome, t: Timestamp) {
        let Some(entry) = st.runs.get_mut(run_id) else {
            return;
        };
        let was = entry.run.status;
        let run = &mut entry.run;
        let job = st.jobs.get(&run.job_id).map(|(j, _)| j.clone());
        let mut mutations = Vec::with_capacity(3);
        let ev = |t: &str, data: Value, run: &Run| {
            Mutation::Event(
                NewEvent::new(t, data)
                    .job(run.job_id.clone())
                    .run(run.id.clone()),
            )
        };
        // Leaving `running` frees a worker and a lane place.
        if was == RunStatus::Running {
            st.counts.running = st.counts.running.saturating_sub(1);
            if let Some(flow) = &run.flow {
                Counts::add(&mut st.counts.running_by_flow, flow, -1);
            }
        } else if was == RunStatus::Queued {
            st.counts.waiting = st.counts.waiting.saturating_sub(1);
        } else if was == RunStatus::AwaitingApproval {
            Counts::add(&mut st.counts.approvals_by_job, &run.job_id, -1);
            // Rejected or cancelled while waiting: the step that asked
            // ends too (a pause is the only way here; approval requeues).
            let ended = match &outcome {
                Outcome::Cancelled(reason) => Some((StepStatus::Cancelled, reason.clone())),
                Outcome::Failed(e) => Some((StepStatus::Failed, e.to_string())),
                _ => None,
            };
            if let Some((status, error)) = ended {
                close_waiting_steps(run, status, &error);
            }
        }
        let final_failure: Option<String>;
        match outcome {
            Outcome::Succeeded(output) => {
                close_attempt(run, RunStatus::Succeeded, None, t);
                finish_record(run, RunStatus::Succeeded, None, Some(output), t);
                mutations.push(ev(
                    "run.completed",
                    json!({"attempt": run.attempt, "duration_ms": run.duration_ms}),
                    run,
                ));
                final_failure = None;
                if let Some(job) = &job {
                    let prev = st.failure.get(&run.job_id).cloned().unwrap_or_default();
                    if prev != FailureState::default() {
                        let next = retry::after_run(&prev, &job.failure_memory, None, t);
                        mutations.push(Mutation::Failure(run.job_id.clone(), next.clone()));
                        st.failure.insert(run.job_id.clone(), next);
                    }
                }
            }
            Outcome::Interrupted => {
                // The next execution goes on from the step cut short.
                if let Some(last) = run.steps.last_mut()
                    && last.status == StepStatus::Cancelled
                {
                    last.status = StepStatus::Interrupted;
                }
                close_attempt(
                    run,
                    RunStatus::Cancelled,
                    Some("interrupted by shutdown; the run is queued again"),
                    t,
                );
                // Does not count against retries.
                run.attempt = run.attempt.saturating_sub(1);
                run.status = RunStatus::Queued;
                run.lease_owner = None;
                mutations.push(ev(
                    "run.queued",
                    json!({"trigger": run.trigger, "reason": "interrupted by shutdown"}),
                    run,
                ));
                mutations.push(Mutation::PutRun(Box::new(run.clone())));
                self.submit(mutations);
                if self.config.remote_dispatch {
                    // A worker process stopped, not this one: the run goes
                    // back in line now.
                    st.counts.waiting += 1;
                    line_up(&mut st.seq, &mut st.ready, entry, run_id.to_string());
                    self.work.notify_one();
                }
                // Stays active; here it runs after the restart.
                return;
            }
            Outcome::AwaitingApproval {
                approval_id,
                step_id,
                reason,
            } => {
                // Open, keeping its number: the wait is part of it.
                if let Some(a) = run.attempts.last_mut()
                    && a.finished_at.is_none()
                {
                    a.status = RunStatus::AwaitingApproval;
                }
                run.status = RunStatus::AwaitingApproval;
                run.lease_owner = None;
                let approval = Approval {
                    id: approval_id.clone(),
                    run_id: run.id.clone(),
                    job_id: run.job_id.clone(),
                    step_id: Some(step_id),
                    reason: Some(reason.clone()),
                    status: ApprovalStatus::Pending,
                    requested_at: format_ts(t),
                    decided_at: None,
                    decided_by: None,
                };
                mutations.push(ev(
                    "approval.requested",
                    json!({"approval_id": approval_id, "reason": reason, "step": approval.step_id}),
                    run,
                ));
                mutations.push(Mutation::PutApproval(approval));
                mutations.push(Mutation::PutRun(Box::new(run.clone())));
                let job_id = run.job_id.clone();
                entry.pending_approval = Some(approval_id);
                Counts::add(&mut st.counts.approvals_by_job, &job_id, 1);
                self.submit(mutations);
                // Still active: it waits for the decision, not for a worker.
                return;
            }
            Outcome::Cancelled(reason) => {
                close_attempt(run, RunStatus::Cancelled, Some(&reason), t);
                finish_record(run, RunStatus::Cancelled, Some(reason.clone()), None, t);
                mutations.push(ev("run.cancelled", json!({"reason": reason}), run));
                final_failure = None;
            }
            outcome @ (Outcome::Failed(_) | Outcome::TimedOut) => {
                let (attempt_status, error, retryable) = match &outcome {
                    Outcome::TimedOut => (
                        RunStatus::TimedOut,
                        format!(
                            "timed out after {} ms",
                            job.as_ref().map(|j| j.timeout_ms).unwrap_or(0)
                        ),
                        true,
                    ),
                    Outcome::Failed(e) => (RunStatus::Failed, e.to_string(), e.is_retryable()),
                    _ => (RunStatus::Failed, String::new(), false),
                };
                close_attempt(run, attempt_status, Some(&error), t);
                let policy = job
                    .as_ref()
                    .map(|j| j.retry_policy.clone())
                    .unwrap_or_default();
                let wait = if retryable {
                    retry::backoff(&policy, run.attempt)
                } else {
                    None
                };
                if attempt_status == RunStatus::TimedOut {
                    // `retrying` tells a final timeout (a run outcome) from
                    // an attempt's.
                    mutations.push(ev(
                        "run.timed_out",
                        json!({"attempt": run.attempt, "error": error, "retrying": wait.is_some()}),
                        run,
                    ));
                }
                match wait {
                    Some(wait) => {
                        let due = jiff::SignedDuration::try_from(wait)
                            .ok()
                            .and_then(|w| t.checked_add(w).ok())
                            .unwrap_or(t);
                        run.status = RunStatus::Retrying;
                        run.error = Some(error.clone());
                        run.due_at = Some(format_ts(due));
                        run.lease_owner = None;
                        mutations.push(ev(
                            "run.retrying",
                            json!({"attempt": run.attempt, "error": error, "due_at": run.due_at}),
                            run,
                        ));
                        mutations.push(Mutation::PutRun(Box::new(run.clone())));
                        st.delayed.push(Reverse((due, run_id.to_string())));
                        self.submit(mutations);
                        // Still active: counts for overlap and lanes.
                        self.work.notify_one();
                        return;
                    }
                    None => {
                        finish_record(run, attempt_status, Some(error.clone()), None, t);
                        if attempt_status == RunStatus::Failed {
                            mutations.push(ev(
                                "run.failed",
                                json!({"attempt": run.attempt, "error": error}),
                                run,
                            ));
                        }
                        final_failure = Some(error);
                    }
                }
            }
        }
        // Terminal from here: the run leaves the queue.
        if let Some(error) = &final_failure
            && let Some(job) = &job
        {
            let prev = st.failure.get(&run.job_id).cloned().unwrap_or_default();
            let next = retry::after_run(&prev, &job.failure_memory, Some(error), t);
            if next.cooldown_until.is_some() && next.cooldown_until != prev.cooldown_until {
                mutations.push(ev(
                    "job.cooldown",
                    json!({"consecutive_failures": next.consecutive_failures, "cooldown_until": next.cooldown_until}),
                    run,
                ));
            }
            mutations.push(Mutation::Failure(run.job_id.clone(), next.clone()));
            st.failure.insert(run.job_id.clone(), next);
        }
        // The run leaves the queue: moved out, cloned once for the store.
        let Some(mut entry) = st.runs.remove(run_id) else {
            return;
        };
        st.counts.follow_up_left(&mut entry);
        let run = entry.run;
        mutations.push(Mutation::PutRun(Box::new(run.clone())));
        let run = Arc::new(run);
        st.last_finished
            .insert(run.job_id.clone(), Arc::clone(&run));
        st.finished += 1;
        Counts::add(&mut st.counts.active_by_job, &run.job_id, -1);
        if let Some(flow) = &run.flow {
            Counts::add(&mut st.counts.active_by_flow, flow, -1);
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
        let waiting = st.counts.waiting;
        if let Some(on) = st.pressure.update(waiting) {
            mutations.push(pressure_event(on, waiting, &st.pressure));
        }
        self.submit(mutations);
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

    /// Why a running run's token fired: replace (cancelled) or not.
    pub fn cancel_reason(&self, run_id: &str) -> Option<String> {
        let st = self.lock();
        st.runs
            .get(run_id)
            .filter(|e| e.cancel.is_cancelled())
            .map(|e| format!("replaced by a newer run of {}", e.run.job_id))
    }

    /// Approve or reject a pending approval.
    pub fn decide(&self, approval: &Approval, approve: bool, by: &str) -> Result<(), String> {
        let t = self.now();
        let mut mutations = Vec::new();
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
            let decided = Approval {
                status: if approve {
                    ApprovalStatus::Approved
                } else {
                    ApprovalStatus::Rejected
                },
                decided_at: Some(format_ts(t)),
                decided_by: Some(by.to_string()),
                ..approval.clone()
            };
            let event = if approve {
                "approval.approved"
            } else {
                "approval.rejected"
            };
            mutations.push(Mutation::Event(
                NewEvent::new(event, json!({"approval_id": decided.id, "by": by}))
                    .job(decided.job_id.clone())
                    .run(decided.run_id.clone()),
            ));
            if let Some(step) = &decided.step_id {
                // What the approval step finds when the run runs again.
                mutations.push(Mutation::PutKv {
                    key: approval_record_key(step),
                    value: json!({
                        "decision": if approve { "approved" } else { "rejected" },
                        "decided_at": decided.decided_at,
                        "by": by,
                    }),
                });
            }
            mutations.push(Mutation::PutApproval(decided));
            if approve {
                Counts::add(&mut st.counts.approvals_by_job, &approval.job_id, -1);
                st.counts.waiting += 1;
                let st = &mut *st;
                if let Some(entry) = st.runs.get_mut(&approval.run_id) {
                    entry.run.status = RunStatus::Queued;
                    if let Some(a) = entry.run.attempts.last_mut()
                        && a.finished_at.is_none()
                    {
                        a.status = RunStatus::Queued;
                    }
                    mutations.push(Mutation::PutRun(Box::new(entry.run.clone())));
                    line_up(&mut st.seq, &mut st.ready, entry, approval.run_id.clone());
                }
            } else {
                self.submit(std::mem::take(&mut mutations));
                let reason = format!("approval {} rejected by {by}", approval.id);
                self.finish_locked(
                    &mut st,
                    &approval.run_id,
                    Outcome::Failed(RunError::Permanent(reason)),
                    t,
                );
            }
            // Under the lock, like every write of a run's state (see
            // `enqueue`).
            self.submit(mutations);
        }
        self.work.notify_one();
        self.released.notify_waiters();
        Ok(())
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
    pub fn record_start(&self, run_id: &str, started_at: String) {
        let mut st = self.lock();
        let Some(entry) = st.runs.get_mut(run_id) else {
            return;
        };
        let run = &mut entry.run;
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

fn job_cache(applied: &Applied) -> HashMap<String, (Arc<Job>, String)> {
    applied
        .snapshot
        .jobs
        .iter()
        .map(|(id, r)| (id.clone(), (Arc::new(r.spec.clone()), r.hash.clone())))
        .collect()
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

fn pressure_event(on: bool, waiting: usize, p: &Pressure) -> Mutation {
    let t = if on {
        "scheduler.pressure_on"
    } else {
        "scheduler.pressure_off"
    };
    Mutation::Event(NewEvent::new(
        t,
        json!({"waiting": waiting, "high": p.high, "low": p.low}),
    ))
}

/// When the run's current attempt was started, or resumed after an
/// approval: different for each time the queue hands the run out, even
/// under one attempt number (an interrupted run keeps its number).
pub fn dispatch_mark(run: &Run) -> Option<String> {
    let a = run.attempts.last()?;
    Some(a.resumed_at.clone().unwrap_or_else(|| a.started_at.clone()))
}

fn close_attempt(run: &mut Run, status: RunStatus, error: Option<&str>, t: Timestamp) {
    if let Some(a) = run.attempts.last_mut()
        && a.finished_at.is_none()
    {
        a.finished_at = Some(format_ts(t));
        a.status = status;
        a.error = error.map(str::to_string);
    }
}

/// Step records still waiting for an approval, ended with the run.
fn close_waiting_steps(run: &mut Run, status: StepStatus, error: &str) {
    for step in &mut run.steps {
        if step.status == StepStatus::AwaitingApproval {
            step.status = status;
            step.error = Some(error.to_string());
            // Nothing resumes now.
            step.completed.clear();
        }
    }
}

fn finish_record(
    run: &mut Run,
    status: RunStatus,
    error: Option<String>,
    output: Option<Value>,
    t: Timestamp,
) {
    run.status = status;
    run.error = error;
    run.output = output;
    run.due_at = None;
    run.lease_owner = None;
    run.finished_at = Some(format_ts(t));
    run.duration_ms = run
        .started_at
        .as_ref()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|s| t.duration_since(s).as_millis().max(0) as u64);
}

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
