//! The scheduler: a timer heap of each job's next slot, earliest first.
//!
//! It sleeps until the earliest slot is due, then gives every due slot
//! exactly one outcome: dispatched (a run keyed `job@slot` is queued) or
//! skipped with a reason event. At most `max_dispatch_per_tick` slots
//! dispatch per wake-up; the rest keep their place (earliest due first, so
//! no job starves whatever its id) and wait for the next tick, and a
//! deferred slot whose successor is already due is skipped (`tick_limit`)
//! rather than piling up.
//!
//! A wake-up's due slots are decided in chunks of [`CHUNK`], each under
//! one look at the queue, and queued together at the end of the tick.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::calendar::slots::{Slot, SlotRule};
use crate::queue::RunQueue;
use crate::run::guards::{self, Decision, GuardInput, SkipReason};
use crate::run::{NewRun, new_run_id};
use crate::spec::model::Job;
use crate::store::runs::Trigger;
use crate::store::{Applied, Mutation, NewEvent, format_ts};

/// Slots decided under one lock of the queue: a lock per slot contended
/// with every worker's claim and finish; one for a 10,000-slot tick would
/// hold the API's reads for tens of milliseconds.
///
/// The runs are queued once per tick, not per chunk: queued per chunk,
/// they started at once and their workers competed with the rest of the
/// tick for the two cores, which made the last slots later (p99 of the
/// 10,000-jobs bench 260-544 ms with one enqueue, 409-590 ms per chunk).
const CHUNK: usize = 256;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `SCHEDULER_MAX_DISPATCH_PER_TICK`.
    pub max_dispatch_per_tick: usize,
    /// After a capped wake-up, the rest waits this long (the seeds' tick).
    pub tick: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_dispatch_per_tick: 80,
            tick: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HeapEntry {
    /// When the job started waiting: the fire time, or for a slot that
    /// follows one the tick cap or a full lane held back, that older slot's
    /// wait. Ordering by it first is what keeps the cap and lanes fair: a
    /// job held back goes ahead of jobs that just ran, whatever its id.
    waiting_since: Timestamp,
    fire_at: Timestamp,
    nominal: Timestamp,
    /// Shared with the job's schedule: re-pushing a slot copies no string.
    job: Arc<str>,
    generation: u64,
}

struct JobSchedule {
    rule: SlotRule,
    /// Hash of the schedule block: a change reschedules from now.
    schedule_hash: String,
    generation: u64,
    /// The slot in the heap was held back by the tick cap.
    deferred: bool,
}

/// What the scheduler has done since start, for status and benchmarks.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SchedulerStats {
    pub dispatched: u64,
    pub skipped: HashMap<&'static str, u64>,
    pub lateness: LatenessSummary,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LatenessSummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Dispatch lateness (enqueue time − fire time), log-linear buckets of
/// 1/16 of a power of two: ~6% precision, fixed memory.
#[derive(Debug, Clone)]
pub struct Lateness {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            buckets: vec![0; 64 * 16],
            count: 0,
            max_us: 0,
        }
    }
}

impl Lateness {
    fn index(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let power = 63 - us.leading_zeros() as usize; // >= 4
        let sub = ((us >> (power - 4)) & 15) as usize;
        (power - 3) * 16 + sub
    }

    fn upper(index: usize) -> u64 {
        if index < 16 {
            return index as u64;
        }
        let power = index / 16 + 3;
        let sub = (index % 16) as u64;
        ((16 + sub + 1) << (power - 4)).saturating_sub(1)
    }

    pub fn record(&mut self, us: u64) {
        let i = Self::index(us).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper(i).min(self.max_us);
            }
        }
        self.max_us
    }

    pub fn summary(&self) -> LatenessSummary {
        LatenessSummary {
            count: self.count,
            p50_ms: self.quantile_us(0.5) as f64 / 1000.0,
            p99_ms: self.quantile_us(0.99) as f64 / 1000.0,
            max_ms: self.max_us as f64 / 1000.0,
        }
    }
}

/// Shared, read by the API.
#[derive(Default)]
pub struct StatsCell {
    inner: Mutex<(u64, HashMap<&'static str, u64>, Lateness)>,
    /// Also told of lateness measured when a slot decided ahead becomes
    /// ready (the daemon's Prometheus histogram).
    observer: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Each scheduled job's next fire time, as the heap holds it.
    next_fire: Mutex<HashMap<String, Timestamp>>,
}

impl StatsCell {
    /// Record the lateness (µs) of a slot decided ahead, once it is ready.
    pub fn record_lateness(&self, us: u64) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .2
            .record(us);
        if let Some(observe) = self.observer.get() {
            observe(us);
        }
    }

    /// Also report ahead-decided slots' lateness here; set once.
    pub fn set_observer(&self, observe: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.observer.set(observe);
    }

    /// The next fire time of a job the scheduler holds a slot for.
    pub fn next_fire(&self, job: &str) -> Option<Timestamp> {
        self.next_fire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job)
            .copied()
    }

    fn set_next_fire(&self, job: &str, at: Option<Timestamp>) {
        let mut m = self.next_fire.lock().unwrap_or_else(|p| p.into_inner());
        match at {
            Some(t) => {
                if let Some(v) = m.get_mut(job) {
                    *v = t;
                } else {
                    m.insert(job.to_string(), t);
                }
            }
            None => {
                m.remove(job);
            }
        }
    }

    /// Several jobs' next fire times under one lock.
    fn set_next_fires(&self, updates: Vec<(Arc<str>, Option<Timestamp>)>) {
        if updates.is_empty() {
            return;
        }
        let mut m = self.next_fire.lock().unwrap_or_else(|p| p.into_inner());
        for (job, at) in updates {
            match at {
                Some(t) => {
                    if let Some(v) = m.get_mut(&*job) {
                        *v = t;
                    } else {
                        m.insert(job.to_string(), t);
                    }
                }
                None => {
                    m.remove(&*job);
                }
            }
        }
    }

    fn retain_next_fire(&self, keep: impl Fn(&str) -> bool) {
        self.next_fire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    pub fn snapshot(&self) -> SchedulerStats {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        SchedulerStats {
            dispatched: g.0,
            skipped: g.1.clone(),
            lateness: g.2.summary(),
        }
    }
}

pub struct Scheduler {
    queue: Arc<RunQueue>,
    config: SchedulerConfig,
    jobs: HashMap<String, JobSchedule>,
    heap: BinaryHeap<Reverse<HeapEntry>>,
    /// `buffer_one` slots waiting for the job's active run to finish.
    buffered: HashMap<String, Slot>,
    next_generation: u64,
    applied: Arc<Applied>,
    stats: Arc<StatsCell>,
    /// Earliest time the next capped tick may run.
    not_before: Option<Timestamp>,
    /// How long before their fire time slots are decided: a tick that
    /// takes long (10,000 slots due at once take ~100 ms to queue) starts
    /// that much earlier, and its runs wait in the queue until their fire
    /// time, so the last slot is not late by the whole batch. Zero while
    /// ticks are cheap, so small deployments decide at the fire time.
    lead: Duration,
}

/// Ticks cheaper than this decide slots at their fire time.
const LEAD_THRESHOLD: Duration = Duration::from_millis(1);
/// What deciding and queueing one slot costs, roughly (release build, this
/// project's machine), for the first tick of a revision.
const ESTIMATED_SLOT_COST: Duration = Duration::from_micros(10);
/// A first tick estimated cheaper than this gets no lead up front.
const PRIOR_THRESHOLD: Duration = Duration::from_millis(5);
/// The most a slot is decided ahead of its fire time.
const MAX_LEAD: Duration = Duration::from_millis(250);

/// The lead for the next tick: enough for what the last one cost, and
/// decaying slowly, so a small tick between two big ones does not make the
/// next big one late again.
fn next_lead(previous: Duration, cost: Duration) -> Duration {
    let needed = if cost < LEAD_THRESHOLD {
        Duration::ZERO
    } else {
        (cost * 3 / 2 + Duration::from_millis(2)).min(MAX_LEAD)
    };
    let lead = needed.max(previous * 7 / 8);
    if lead < LEAD_THRESHOLD {
        Duration::ZERO
    } else {
        lead
    }
}

/// When a job's next slot starts waiting, given how its current slot (that
/// had waited since `waited`) ended. A slot its full lane held back passes
/// its wait on, so the job goes ahead of lane-mates that just had a turn:
/// with a fresh wait, jobs sharing a lane tie every tick and the id breaks
/// the tie, so the later id never runs.
fn successor_wait(
    waited: Timestamp,
    next_fire: Timestamp,
    outcome: Option<SkipReason>,
) -> Timestamp {
    match outcome {
        Some(SkipReason::FlowLimit) => waited.min(next_fire),
        _ => next_fire,
    }
}

fn schedule_hash(job: &Job) -> String {
    crate::spec::snapshot::spec_hash(&job.schedule)
}

impl Scheduler {
    pub fn new(queue: Arc<RunQueue>, config: SchedulerConfig, stats: Arc<StatsCell>) -> Self {
        let sink = stats.clone();
        queue.set_lateness_sink(Box::new(move |us| sink.record_lateness(us)));
        Scheduler {
            queue,
            config,
            jobs: HashMap::new(),
            heap: BinaryHeap::new(),
            buffered: HashMap::new(),
            next_generation: 0,
            applied: Arc::new(Applied::default()),
            stats,
            not_before: None,
            lead: Duration::ZERO,
        }
    }

    fn now(&self) -> Timestamp {
        self.queue.clock().now()
    }

    /// Run until cancelled, following applied revisions.
    pub async fn run(
        mut self,
        mut applied_rx: watch::Receiver<Arc<Applied>>,
        last_slots: HashMap<String, Timestamp>,
        cancel: CancellationToken,
    ) {
        let first = applied_rx.borrow_and_update().clone();
        self.apply(first, &last_slots);
        let queue = self.queue.clone();
        // Listening before each tick: a release just after a tick buffered
        // slots is not missed.
        let mut released = queue.released();
        loop {
            let lead = jiff::SignedDuration::try_from(self.lead).unwrap_or_default();
            let mut wake = self
                .heap
                .peek()
                .map(|Reverse(e)| e.fire_at.checked_sub(lead).unwrap_or(e.fire_at));
            if let (Some(w), Some(nb)) = (wake, self.not_before) {
                wake = Some(w.max(nb));
            }
            let sleep = match wake {
                Some(w) => self.queue.clock().until(w),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
                changed = applied_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let applied = applied_rx.borrow_and_update().clone();
                    self.apply(applied, &HashMap::new());
                }
                _ = &mut released, if !self.buffered.is_empty() => {}
            }
            released = queue.released();
            self.tick();
        }
    }

    /// Follow a new applied snapshot: new and rescheduled jobs get slots
    /// from now; deleted and disabled jobs lose theirs; on start, slots
    /// missed since `last_slots` follow each job's misfire policy.
    pub fn apply(&mut self, applied: Arc<Applied>, last_slots: &HashMap<String, Timestamp>) {
        self.queue.set_applied(applied.clone());
        let now = self.now();
        let mut catchup: Vec<(String, Slot)> = Vec::new();
        let mut mutations = Vec::new();
        let mut wanted: HashMap<&str, &Job> = HashMap::new();
        for (id, r) in &applied.snapshot.jobs {
            if r.spec.enabled && r.spec.schedule.is_some() {
                wanted.insert(id.as_str(), &r.spec);
            }
        }
        self.jobs.retain(|id, _| wanted.contains_key(id.as_str()));
        self.stats.retain_next_fire(|id| wanted.contains_key(id));
        self.buffered
            .retain(|id, _| wanted.contains_key(id.as_str()));
        for (id, job) in wanted {
            let hash = schedule_hash(job);
            if self.jobs.get(id).is_some_and(|j| j.schedule_hash == hash) {
                continue;
            }
            let Some(schedule) = &job.schedule else {
                continue;
            };
            let rule = match SlotRule::compile(schedule, id) {
                Ok(rule) => rule,
                Err(e) => {
                    // Validation rejects this; a stored spec from an older
                    // binary could still carry it.
                    tracing::error!(job = id, error = %e, "schedule does not compile; job not scheduled");
                    continue;
                }
            };
            let is_new = !self.jobs.contains_key(id);
            self.next_generation += 1;
            let generation = self.next_generation;
            let from = now;
            if is_new && let Some(last) = last_slots.get(id) {
                let missed = rule.missed(Some(*last), now);
                for slot in &missed.skipped {
                    mutations.push(skip_event(id, SkipReason::Missed, slot, json!({})));
                }
                if missed.skipped_more > 0 {
                    mutations.push(Mutation::Event(
                        NewEvent::new(
                            SkipReason::Missed.event_type(),
                            json!({"count": missed.skipped_more, "note": "older missed slots, counted"}),
                        )
                        .job(id.to_string()),
                    ));
                }
                self.count_skips(SkipReason::Missed, missed.skipped_total());
                if let Some(last_skipped) = missed.skipped.last() {
                    mutations.push(Mutation::JobSlot(
                        id.to_string(),
                        format_ts(last_skipped.nominal),
                    ));
                }
                catchup.extend(missed.run.into_iter().map(|s| (id.to_string(), s)));
            }
            let first = rule.next_slot(from);
            self.stats.set_next_fire(id, first.map(|s| s.fire_at));
            if let Some(slot) = first {
                self.heap.push(Reverse(HeapEntry {
                    waiting_since: slot.fire_at,
                    fire_at: slot.fire_at,
                    nominal: slot.nominal,
                    job: Arc::from(id),
                    generation,
                }));
            }
            self.jobs.insert(
                id.to_string(),
                JobSchedule {
                    rule,
                    schedule_hash: hash,
                    generation,
                    deferred: false,
                },
            );
        }
        if let Err(e) = self.queue.store().submit(mutations) {
            tracing::error!(error = %e, "scheduler: store write failed");
        }
        self.applied = applied;
        // Catch-up runs go through the guards like any slot, except that
        // they do not overlap each other (see `dispatch_slots`).
        if !catchup.is_empty() {
            let mut batch = Batch::default();
            let mut mutations = Vec::new();
            self.dispatch_slots(catchup, true, now, &mut batch, &mut mutations);
            self.flush(batch, mutations);
        }
        // A revision that puts many slots on one instant (10,000 jobs every
        // second) would make its first tick late by the whole batch, before
        // any tick was measured: start with the lead such a tick needs.
        if let Some(Reverse(first)) = self.heap.peek() {
            let at = first.fire_at;
            let n = self
                .heap
                .iter()
                .filter(|Reverse(e)| e.fire_at == at)
                .count();
            let estimate = ESTIMATED_SLOT_COST * u32::try_from(n).unwrap_or(u32::MAX);
            if estimate >= PRIOR_THRESHOLD {
                self.lead = self.lead.max(next_lead(Duration::ZERO, estimate));
            }
        }
    }

    fn count_skips(&self, reason: SkipReason, n: u64) {
        if n == 0 {
            return;
        }
        let mut g = self.stats.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g.1.entry(reason.as_str()).or_default() += n;
    }

    /// Give every due slot its outcome, up to the tick cap.
    pub fn tick(&mut self) {
        let Some(mut t) = self.begin_tick() else {
            return;
        };
        while self.tick_chunk(&mut t) {}
        let batch = std::mem::take(&mut t.batch);
        let mutations = std::mem::take(&mut t.mutations);
        self.flush(batch, mutations);
        // The scheduler's clock: a paused test clock measures zero here, so
        // deterministic tests never decide ahead.
        let cost = self.now().duration_since(t.now);
        self.lead = next_lead(self.lead, Duration::try_from(cost).unwrap_or_default());
    }

    /// Start a wake-up: `None` while a capped tick's pause lasts. Buffered
    /// slots whose job went idle dispatch first: they are oldest.
    fn begin_tick(&mut self) -> Option<TickState> {
        let now = self.now();
        if self.not_before.is_some_and(|nb| now < nb) {
            return None;
        }
        self.not_before = None;
        let mut t = TickState {
            now,
            horizon: now
                .checked_add(jiff::SignedDuration::try_from(self.lead).unwrap_or_default())
                .unwrap_or(now),
            batch: Batch::default(),
            mutations: Vec::new(),
        };
        if self.buffered.is_empty() {
            return Some(t);
        }
        let idle: Vec<String> = {
            let view = self.queue.view();
            self.buffered
                .keys()
                .filter(|j| view.active_runs(j) == 0)
                .cloned()
                .collect()
        };
        let slots: Vec<(String, Slot)> = idle
            .into_iter()
            .filter_map(|job| self.buffered.remove(&job).map(|slot| (job, slot)))
            .collect();
        self.dispatch_slots(slots, false, now, &mut t.batch, &mut t.mutations);
        Some(t)
    }

    /// Decide up to [`CHUNK`] due slots into the tick's batch; `true`
    /// when more are due in this tick.
    fn tick_chunk(&mut self, t: &mut TickState) -> bool {
        let now = t.now;
        let horizon = t.horizon;
        let mut batch = std::mem::take(&mut t.batch);
        let mut mutations = std::mem::take(&mut t.mutations);
        let mut next_fires: Vec<(Arc<str>, Option<Timestamp>)> = Vec::new();
        let mut due: Vec<(Arc<str>, Slot)> = Vec::new();
        // Each due slot's own wait and its successor, pushed once the guards
        // have decided: a slot its lane holds back passes its wait on.
        let mut successors: Vec<(HeapEntry, Option<Slot>)> = Vec::new();
        // Only as many as the cap has room for go to the guards; skips
        // do not count, so the next chunk looks again.
        let room = self
            .config
            .max_dispatch_per_tick
            .saturating_sub(batch.len());
        let limit = room.min(CHUNK);
        let mut more = false;
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.fire_at > horizon {
                break;
            }
            if room > 0 && due.len() == limit {
                more = true;
                break;
            }
            let Some(Reverse(entry)) = self.heap.pop() else {
                break;
            };
            let Some(js) = self.jobs.get(&*entry.job) else {
                continue;
            };
            if js.generation != entry.generation {
                continue;
            }
            if room == 0 {
                // Keep its place; mark every job left waiting as deferred.
                self.heap.push(Reverse(entry));
                let waiting: Vec<Arc<str>> = self
                    .heap
                    .iter()
                    .filter(|Reverse(e)| e.fire_at <= horizon)
                    .map(|Reverse(e)| e.job.clone())
                    .collect();
                for j in waiting {
                    if let Some(js) = self.jobs.get_mut(&*j) {
                        js.deferred = true;
                    }
                }
                self.not_before = Some(
                    now + jiff::SignedDuration::try_from(self.config.tick).unwrap_or_default(),
                );
                break;
            }
            let slot = Slot {
                nominal: entry.nominal,
                fire_at: entry.fire_at,
            };
            let next = js.rule.next_slot(entry.nominal);
            let deferred = js.deferred;
            let superseded = next.is_some_and(|n| n.fire_at <= now);
            next_fires.push((entry.job.clone(), next.map(|n| n.fire_at)));
            // A newer slot is already due: this one is too late to matter.
            if superseded {
                if let Some(n) = next {
                    self.heap.push(Reverse(HeapEntry {
                        // The successor of a held-back slot inherits its wait.
                        waiting_since: entry.waiting_since,
                        fire_at: n.fire_at,
                        nominal: n.nominal,
                        job: entry.job.clone(),
                        generation: entry.generation,
                    }));
                }
                let reason = if deferred {
                    SkipReason::TickLimit
                } else {
                    SkipReason::Missed
                };
                mutations.push(skip_event(&entry.job, reason, &slot, json!({})));
                mutations.push(Mutation::JobSlot(
                    entry.job.to_string(),
                    format_ts(slot.nominal),
                ));
                self.count_skips(reason, 1);
                continue;
            }
            if let Some(js) = self.jobs.get_mut(&*entry.job) {
                js.deferred = false;
            }
            due.push((entry.job.clone(), slot));
            successors.push((entry, next));
        }
        let outcomes = self.dispatch_slots(due, false, now, &mut batch, &mut mutations);
        for ((entry, next), outcome) in successors.into_iter().zip(outcomes) {
            if let Some(n) = next {
                self.heap.push(Reverse(HeapEntry {
                    waiting_since: successor_wait(entry.waiting_since, n.fire_at, outcome),
                    fire_at: n.fire_at,
                    nominal: n.nominal,
                    job: entry.job,
                    generation: entry.generation,
                }));
            }
        }
        self.stats.set_next_fires(next_fires);
        t.batch = batch;
        t.mutations = mutations;
        more
    }

    /// Decide slots in order; dispatches are added to `batch`. Returns
    /// each slot's skip reason, in order (`None`: not skipped).
    fn dispatch_slots<J: AsRef<str>>(
        &mut self,
        slots: Vec<(J, Slot)>,
        catchup: bool,
        now: Timestamp,
        batch: &mut Batch,
        mutations: &mut Vec<Mutation>,
    ) -> Vec<Option<SkipReason>> {
        let mut outcomes = Vec::with_capacity(slots.len());
        if slots.is_empty() {
            return outcomes;
        }
        let queue = self.queue.clone();
        let applied = self.applied.clone();
        let mut replace = Vec::new();
        {
            // One lock for all: taken per slot, it contended with every
            // worker's claim and finish.
            let view = queue.view();
            for (job_id, slot) in slots {
                let job_id = job_id.as_ref();
                let Some(job) = applied.snapshot.jobs.get(job_id).map(|r| &r.spec) else {
                    outcomes.push(None);
                    continue;
                };
                let lane = job.flow.as_ref().map(|f| {
                    let mut l = view.lane(f);
                    l.active += batch.by_flow.get(f).copied().unwrap_or(0);
                    l
                });
                // run_all asks for each missed slot, so one restart's catch-up
                // runs do not overlap each other; runs active before still do.
                let own = if catchup {
                    0
                } else {
                    batch.by_job.get(job_id).copied().unwrap_or(0)
                };
                let decision = guards::decide(&GuardInput {
                    priority: applied.snapshot.effective_priority(job),
                    overlap: job.overlap,
                    active_runs: view.active_runs(job_id) + own,
                    buffered: self.buffered.contains_key(job_id),
                    lane,
                    pressure: view.pressure(),
                    cooldown_until: view.cooldown_until(job_id),
                    approval_pending: view.approval_pending(job_id),
                    now,
                });
                outcomes.push(match decision {
                    Decision::Skip(reason) => Some(reason),
                    _ => None,
                });
                match decision {
                    Decision::Skip(reason) => {
                        mutations.push(skip_event(job_id, reason, &slot, json!({})));
                        mutations.push(Mutation::JobSlot(
                            job_id.to_string(),
                            format_ts(slot.nominal),
                        ));
                        self.count_skips(reason, 1);
                    }
                    Decision::Buffer => {
                        self.buffered.insert(job_id.to_string(), slot);
                    }
                    Decision::Dispatch | Decision::Replace => {
                        if decision == Decision::Replace {
                            replace.push(job_id.to_string());
                        }
                        let nominal = format_ts(slot.nominal);
                        let run = NewRun {
                            id: new_run_id(),
                            job_id: job_id.to_string(),
                            trigger: Trigger::Schedule,
                            inputs: serde_json::Value::Null,
                            run_key: format!("{job_id}@{nominal}"),
                            scheduled_at: Some(slot.nominal),
                            chain_depth: 0,
                            // Decided ahead: it waits in the queue until its
                            // fire time (the queue records its lateness then).
                            due_at: (slot.fire_at > now).then_some(slot.fire_at),
                            extra: if catchup {
                                json!({"catchup": true})
                            } else {
                                serde_json::Value::Null
                            },
                        };
                        mutations.push(Mutation::JobSlot(job_id.to_string(), nominal));
                        batch.push(run, slot.fire_at, job.flow.clone());
                    }
                }
            }
        }
        // Before the new runs are queued, as a replace requires.
        for job_id in replace {
            let n = queue.cancel_job_runs(&job_id, "replaced by a newer slot (overlap: replace)");
            tracing::debug!(job = job_id, cancelled = n, "overlap replace");
        }
        outcomes
    }

    fn flush(&mut self, batch: Batch, mutations: Vec<Mutation>) {
        let batch = batch.runs;
        if let Err(e) = self.queue.store().submit(mutations) {
            tracing::error!(error = %e, "scheduler: store write failed");
        }
        if batch.is_empty() {
            return;
        }
        // Lateness: from the fire time to the moment the run is queued.
        // The `run.queued` event carries it as of now (`late_ms`, for the
        // metrics); the scheduler's own figure is taken once `enqueue`
        // returned, so it includes the queueing itself.
        let at = self.now();
        let mut fires = Vec::with_capacity(batch.len());
        let runs: Vec<NewRun> = batch
            .into_iter()
            .map(|(mut run, fire)| {
                let late_us = at.duration_since(fire).as_micros().max(0) as u64;
                // A misfire catch-up is late by design, not by the scheduler;
                // a run decided ahead is measured when it becomes ready.
                if run.extra.get("catchup").is_none() && run.due_at.is_none() {
                    fires.push(fire);
                }
                // A run decided ahead is not late yet: the event says how
                // far ahead, and its lateness is measured when it is ready.
                let (field, ms) = match run.due_at {
                    Some(due) => ("ahead_ms", due.duration_since(at).as_micros().max(0) as f64),
                    None => ("late_ms", late_us as f64),
                };
                let value = serde_json::Value::from(ms / 1000.0);
                match &mut run.extra {
                    serde_json::Value::Object(m) => {
                        m.insert(field.into(), value);
                    }
                    other => *other = json!({ field: value }),
                }
                run
            })
            .collect();
        let queued = self.queue.enqueue(runs);
        let queued_at = self.now();
        let mut g = self.stats.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += queued.len() as u64;
        for fire in fires {
            g.2.record(queued_at.duration_since(fire).as_micros().max(0) as u64);
        }
    }
}

/// A wake-up in progress: its time and what it has decided so far.
struct TickState {
    now: Timestamp,
    /// Slots firing up to here are decided now (`now` + the lead).
    horizon: Timestamp,
    batch: Batch,
    mutations: Vec<Mutation>,
}

/// Runs a tick dispatches, with counts per job and lane so guards see
/// them in O(1).
#[derive(Default)]
struct Batch {
    runs: Vec<(NewRun, Timestamp)>,
    by_job: HashMap<String, usize>,
    by_flow: HashMap<String, usize>,
}

impl Batch {
    fn push(&mut self, run: NewRun, fire_at: Timestamp, flow: Option<String>) {
        *self.by_job.entry(run.job_id.clone()).or_default() += 1;
        if let Some(flow) = flow {
            *self.by_flow.entry(flow).or_default() += 1;
        }
        self.runs.push((run, fire_at));
    }

    fn len(&self) -> usize {
        self.runs.len()
    }
}

fn skip_event(job: &str, reason: SkipReason, slot: &Slot, extra: serde_json::Value) -> Mutation {
    let mut data = json!({"slot": format_ts(slot.nominal), "reason": reason.as_str()});
    if let (serde_json::Value::Object(d), serde_json::Value::Object(e)) = (&mut data, extra) {
        d.extend(e);
    }
    Mutation::Event(NewEvent::new(reason.event_type(), data).job(job.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler over `jobs` 1-second jobs (overlap allow), no workers.
    fn rig(jobs: usize, cap: usize) -> (tempfile::TempDir, Scheduler, Arc<StatsCell>) {
        let text: String = (0..jobs)
            .map(|i| {
                format!("id: j{i:04}\ntype: noop\noverlap: allow\nschedule: {{every: 1s}}\n---\n")
            })
            .collect();
        rig_of(&text, cap, &HashMap::new())
    }

    /// A scheduler over the jobs in `text`, started with `last_slots`
    /// (each job's last decided slot, as after a restart), no workers.
    fn rig_of(
        text: &str,
        cap: usize,
        last_slots: &HashMap<String, Timestamp>,
    ) -> (tempfile::TempDir, Scheduler, Arc<StatsCell>) {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open_sqlite(&tmp.path().join("s.db")).unwrap();
        let text = text.to_string();
        let loaded = crate::spec::build(&[crate::spec::SourceFile {
            path: "jobs.d/t.yaml".into(),
            text,
        }]);
        let applied = Arc::new(Applied {
            revision: None,
            snapshot: loaded.snapshot,
        });
        let clock = crate::clock::Clock::virtual_at("2026-11-22T10:00:00.500Z".parse().unwrap());
        let queue = RunQueue::new(
            store,
            applied.clone(),
            crate::queue::QueueConfig {
                pressure_high: 1_000_000,
                pressure_low: 1,
                ..Default::default()
            },
            clock,
        );
        let stats = Arc::new(StatsCell::default());
        let config = SchedulerConfig {
            max_dispatch_per_tick: cap,
            ..SchedulerConfig::default()
        };
        let mut s = Scheduler::new(queue, config, stats.clone());
        s.apply(applied, last_slots);
        (tmp, s, stats)
    }

    /// Start the next ready run and finish it at once; its job id.
    async fn run_one(queue: &RunQueue) -> Option<String> {
        let claim = tokio::time::timeout(Duration::from_millis(10), queue.claim())
            .await
            .ok()??;
        queue.finish(
            &claim.run.id,
            crate::run::Outcome::Succeeded(serde_json::Value::Null),
        );
        Some(claim.run.job_id)
    }

    /// Regression (QA): in a lane of one, the job whose id sorts later never
    /// ran: both came due together every tick, a lane skip did not keep the
    /// slot's wait, so the id broke the tie every time.
    #[tokio::test(start_paused = true)]
    async fn jobs_sharing_a_lane_take_turns_whatever_their_ids() {
        for (first, second) in [("lane-a", "lane-b"), ("zz-late", "aa-early")] {
            let text = format!(
                "kind: Flow\nid: lane\nmax_active_runs: 1\n---\n\
                 id: {first}\ntype: noop\nflow: lane\nschedule: {{every: 1s}}\n---\n\
                 id: {second}\ntype: noop\nflow: lane\nschedule: {{every: 1s}}\n"
            );
            let (_tmp, mut s, stats) = rig_of(&text, 80, &HashMap::new());
            let queue = s.queue.clone();
            let mut ran = Vec::new();
            for _ in 0..6 {
                tokio::time::advance(Duration::from_secs(1)).await;
                s.tick();
                ran.push(run_one(&queue).await.unwrap_or_default());
            }
            // One dispatch per tick, and the lane alternates.
            for pair in ran.windows(2) {
                assert_ne!(pair[0], pair[1], "{ran:?}");
            }
            // Every slot has exactly one outcome.
            let snap = stats.snapshot();
            assert_eq!(snap.dispatched, 6, "{snap:?}");
            assert_eq!(snap.skipped.get("flow_limit"), Some(&6), "{snap:?}");
        }
    }

    /// Regression (QA): `run_all` with `max_catchup_runs: 3` queued one
    /// catch-up run; `overlap: forbid` saw the first as active and skipped
    /// the other two.
    #[tokio::test(start_paused = true)]
    async fn run_all_queues_every_catchup_slot_within_the_cap() {
        let text = "id: every2\ntype: noop\nschedule: {every: 2s, misfire: run_all, max_catchup_runs: 3}\n";
        // The clock starts at 10:00:00.500: 10:00:00 was decided before a
        // downtime of 11 s, so 5 slots were missed.
        let last: Timestamp = "2026-11-22T09:59:50Z".parse().unwrap();
        let last_slots = HashMap::from([("every2".to_string(), last)]);
        let (_tmp, s, stats) = rig_of(text, 80, &last_slots);
        let snap = stats.snapshot();
        assert_eq!(snap.dispatched, 3, "{snap:?}");
        assert_eq!(snap.skipped.get("overlap"), None, "{snap:?}");
        assert_eq!(s.queue.view().active_runs("every2"), 3);
    }

    /// The catch-up runs of one restart do not overlap each other, but a
    /// run still active from before the restart does overlap them.
    #[tokio::test(start_paused = true)]
    async fn run_all_catchup_still_skips_for_a_run_active_before() {
        let text = "id: every2\ntype: noop\nschedule: {every: 2s, misfire: run_all, max_catchup_runs: 3}\n";
        let (_tmp, mut s, stats) = rig_of(text, 80, &HashMap::new());
        // A run from before the restart, still queued.
        s.queue.enqueue(vec![NewRun {
            id: new_run_id(),
            job_id: "every2".into(),
            trigger: Trigger::Manual,
            inputs: serde_json::Value::Null,
            run_key: "manual".into(),
            scheduled_at: None,
            chain_depth: 0,
            due_at: None,
            extra: serde_json::Value::Null,
        }]);
        let last: Timestamp = "2026-11-22T09:59:50Z".parse().unwrap();
        let applied = s.applied.clone();
        s.jobs.clear();
        s.apply(applied, &HashMap::from([("every2".to_string(), last)]));
        let snap = stats.snapshot();
        assert_eq!(snap.dispatched, 0, "{snap:?}");
        assert_eq!(snap.skipped.get("overlap"), Some(&3), "{snap:?}");
    }

    #[test]
    fn a_slot_held_back_by_its_lane_passes_its_wait_on() {
        let t = |s: &str| -> Timestamp { s.parse().unwrap() };
        let (waited, next) = (t("2026-11-22T10:00:01Z"), t("2026-11-22T10:00:02Z"));
        assert_eq!(
            successor_wait(waited, next, Some(SkipReason::FlowLimit)),
            waited
        );
        // A job busy with its own run, or that ran, waits afresh.
        assert_eq!(successor_wait(waited, next, None), next);
        assert_eq!(
            successor_wait(waited, next, Some(SkipReason::Overlap)),
            next
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_of_several_chunks_dispatches_every_slot_once() {
        let (_tmp, mut s, stats) = rig(3 * CHUNK + 7, 1_000_000);
        tokio::time::advance(Duration::from_secs(1)).await;
        s.tick();
        assert_eq!(stats.snapshot().dispatched, 3 * CHUNK as u64 + 7);
        assert_eq!(s.queue.view().waiting(), 3 * CHUNK + 7);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_decided_ahead_wait_until_their_fire_time() {
        // The clock starts at 10:00:00.500; slots fire on whole seconds.
        let (_tmp, mut s, stats) = rig(3, 1_000_000);
        let observed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = observed.clone();
        stats.set_observer(Box::new(move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        s.lead = Duration::from_millis(200);
        // 10:00:00.850: the 10:00:01 slots are within the lead.
        tokio::time::advance(Duration::from_millis(350)).await;
        s.tick();
        assert_eq!(stats.snapshot().dispatched, 3);
        let queue = s.queue.clone();
        assert_eq!(queue.view().waiting(), 3, "queued, waiting for their time");
        // Not startable before the fire time...
        let early = tokio::time::timeout(Duration::from_millis(140), queue.claim()).await;
        assert!(early.is_err(), "a run started before its slot fired");
        // ...and startable at it, with its lateness measured then.
        let claim = tokio::time::timeout(Duration::from_millis(20), queue.claim())
            .await
            .expect("ready at its fire time")
            .expect("a claim");
        assert_eq!(
            claim.run.scheduled_at.as_deref(),
            Some("2026-11-22T10:00:01.000Z")
        );
        let lateness = stats.snapshot().lateness;
        assert_eq!(lateness.count, 3);
        assert!(lateness.max_ms <= 10.0, "{lateness:?}");
        // The daemon's metrics hear of them too.
        assert_eq!(observed.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tick_cap_holds_across_chunks() {
        let cap = CHUNK + 10;
        let (_tmp, mut s, stats) = rig(3 * CHUNK, cap);
        tokio::time::advance(Duration::from_secs(1)).await;
        s.tick();
        assert_eq!(stats.snapshot().dispatched, cap as u64);
        let deferred = s.jobs.values().filter(|j| j.deferred).count();
        assert_eq!(deferred, 3 * CHUNK - cap);
    }

    #[test]
    fn the_lead_follows_tick_cost_and_decays_slowly() {
        let ms = Duration::from_millis;
        // Cheap ticks decide at the fire time.
        assert_eq!(
            next_lead(Duration::ZERO, Duration::from_micros(300)),
            Duration::ZERO
        );
        // A 100 ms tick starts the next one 152 ms early; capped at 250 ms.
        assert_eq!(next_lead(Duration::ZERO, ms(100)), ms(152));
        assert_eq!(next_lead(Duration::ZERO, ms(400)), MAX_LEAD);
        // A small tick in between keeps most of it.
        assert_eq!(next_lead(ms(152), Duration::ZERO), ms(133));
        // Many small ticks bring it back to zero.
        let mut lead = ms(152);
        for _ in 0..60 {
            lead = next_lead(lead, Duration::ZERO);
        }
        assert_eq!(lead, Duration::ZERO);
    }

    #[test]
    fn lateness_quantiles_are_close() {
        let mut l = Lateness::default();
        for us in 1..=10_000u64 {
            l.record(us);
        }
        let p50 = l.quantile_us(0.5) as f64;
        let p99 = l.quantile_us(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.07, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "{p99}");
        assert_eq!(l.quantile_us(1.0), 10_000);
        for us in [0, 1, 15, 16, 17, 1000, 123_456, u32::MAX as u64] {
            let i = Lateness::index(us);
            assert!(Lateness::upper(i) >= us, "{us} -> {i}");
        }
    }
}
