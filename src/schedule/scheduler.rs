//! The scheduler: a timer heap of each job's next slot, earliest first.
//!
//! It sleeps until the earliest slot is due, then gives every due slot
//! exactly one outcome: dispatched (a run keyed `job@slot` is queued) or
//! skipped with a reason event. With a cap (`max_dispatch_per_tick`,
//! off unless set) at most that many slots dispatch per wake-up; the rest keep their place (earliest due first, so
//! no job starves whatever its id) and wait for the next tick, and a
//! deferred slot whose successor is already due is skipped (`tick_limit`)
//! rather than piling up.
//!
//! A wake-up's due slots are decided in chunks of [`CHUNK`], each under
//! one look at the queue, and queued together at the end of the tick.
//! Here: the heap and following applied revisions; [`tick`] is a wake-up,
//! [`dispatch`] decides slots with the guards and queues the runs,
//! [`stats`] is what the API reads, [`skip_log`] what the log says about
//! skipped slots.

mod detail;
mod dispatch;
mod skip_log;
mod stats;
mod tick;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use stats::{Lateness, LatenessSummary, SchedulerStats, StatsCell};
pub(crate) use tick::successor_wait;

use crate::calendar::slots::{Slot, SlotRule};
use crate::queue::RunQueue;
use crate::run::guards::{SkipDetail, SkipReason};
use crate::spec::model::Job;
use crate::store::{Applied, Mutation, NewEvent, format_ts};
use dispatch::{Batch, skip_event};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `SCHEDULER_MAX_DISPATCH_PER_TICK`; `None` (the default) is no cap:
    /// every due slot dispatches in its wake-up.
    pub max_dispatch_per_tick: Option<usize>,
    /// After a capped wake-up, the rest waits this long (the seeds' tick).
    pub tick: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_dispatch_per_tick: None,
            tick: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HeapEntry {
    /// First: the heap's top is the next wake-up. Ordered by the wait
    /// first, a lane-skipped hourly job held the top with its next fire
    /// time, and every other job's slots waited an hour behind it.
    fire_at: Timestamp,
    /// When the job started waiting: the fire time, or for a slot that
    /// follows one the tick cap or a full lane held back, that older slot's
    /// wait. Among slots firing together it keeps the cap and lanes fair: a
    /// job held back goes ahead of jobs that just ran, whatever its id.
    waiting_since: Timestamp,
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
    /// Skips counted for the rate-limited log lines (`&self` counts them).
    skip_log: std::sync::Mutex<skip_log::SkipLog>,
    /// Today's daily budgets (a cached view; see `schedule::budgets`).
    budgets: Arc<super::budgets::BudgetBoard>,
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
            skip_log: Default::default(),
            budgets: Default::default(),
        }
    }

    /// The budgets board the guards read (the daemon's, kept fresh by
    /// [`super::budgets::BudgetBoard::watch`]).
    pub fn with_budgets(mut self, board: Arc<super::budgets::BudgetBoard>) -> Self {
        self.budgets = board;
        self
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
            self.log_skips();
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
        for (id, job) in self.keep_wanted(&applied) {
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
            if !self.jobs.contains_key(id)
                && let Some(last) = last_slots.get(id)
            {
                catchup.extend(self.missed(id, &rule, *last, now, &mut mutations));
            }
            self.schedule_from(id, rule, hash, now);
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
        self.lead_for_first_tick();
    }

    /// The enabled jobs with a schedule in `applied`; the others lose their
    /// slots, buffered slots and next fire times.
    fn keep_wanted<'a>(&mut self, applied: &'a Applied) -> HashMap<&'a str, &'a Job> {
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
        wanted
    }

    /// The slots a job missed since `last` (the daemon was down): those
    /// its misfire policy skips are recorded in `mutations`, those it runs
    /// are returned for catch-up.
    fn missed(
        &self,
        id: &str,
        rule: &SlotRule,
        last: Timestamp,
        now: Timestamp,
        mutations: &mut Vec<Mutation>,
    ) -> Vec<(String, Slot)> {
        let missed = rule.missed(Some(last), now);
        for slot in &missed.skipped {
            let detail = SkipDetail::Missed {
                newer_slot: None,
                restarted_at: Some(now),
            };
            mutations.push(skip_event(id, SkipReason::Missed, slot, Some(detail)));
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
        self.count_skips(SkipReason::Missed, id, missed.skipped_total());
        if let Some(last_skipped) = missed.skipped.last() {
            mutations.push(Mutation::JobSlot(
                id.to_string(),
                format_ts(last_skipped.nominal),
            ));
        }
        missed
            .run
            .into_iter()
            .map(|s| (id.to_string(), s))
            .collect()
    }

    /// A new or rescheduled job: its first slot from `from` goes on the
    /// heap under a new generation (what the heap held for it is stale).
    fn schedule_from(&mut self, id: &str, rule: SlotRule, hash: String, from: Timestamp) {
        self.next_generation += 1;
        let generation = self.next_generation;
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

    /// A revision that puts many slots on one instant (10,000 jobs every
    /// second) would make its first tick late by the whole batch, before
    /// any tick was measured: start with the lead such a tick needs.
    fn lead_for_first_tick(&mut self) {
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

    fn count_skips(&self, reason: SkipReason, job: &str, n: u64) {
        self.stats.count_skips(reason.as_str(), n);
        let line = self
            .skip_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count(reason.as_str(), job, n, self.now());
        if let Some(line) = line {
            tracing::info!("{line}");
        }
    }

    /// The skip lines whose interval has passed.
    fn log_skips(&self) {
        let lines = self
            .skip_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .due(self.now());
        for line in lines {
            tracing::info!("{line}");
        }
    }
}

#[cfg(test)]
mod tests;
