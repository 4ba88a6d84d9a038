//! A wake-up: every due slot (up to the tick cap) gets its outcome, a
//! chunk at a time; a slot whose successor is already due is skipped, and
//! the lead for the next wake-up is measured.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::dispatch::Batch;
use super::{HeapEntry, Scheduler, next_lead};
use crate::calendar::slots::Slot;
use crate::run::guards::{SkipDetail, SkipReason};
use crate::store::Mutation;

/// Slots decided under one lock of the queue: a lock per slot contended
/// with every worker's claim and finish; one for a 10,000-slot tick would
/// hold the API's reads for tens of milliseconds.
///
/// The runs are queued once per tick, not per chunk: queued per chunk,
/// they started at once and their workers competed with the rest of the
/// tick for the two cores, which made the last slots later (p99 of the
/// 10,000-jobs bench 260-544 ms with one enqueue, 409-590 ms per chunk).
pub(super) const CHUNK: usize = 256;

/// When a job's next slot starts waiting, given how its current slot (that
/// had waited since `waited`) ended. A slot its full lane held back passes
/// its wait on, so the job goes ahead of lane-mates that just had a turn:
/// with a fresh wait, jobs sharing a lane tie every tick and the id breaks
/// the tie, so the later id never runs.
/// Generic over the time type: the simulation keeps times as nanoseconds.
pub(crate) fn successor_wait<T: Ord>(waited: T, next_fire: T, outcome: Option<SkipReason>) -> T {
    match outcome {
        Some(SkipReason::FlowLimit) => waited.min(next_fire),
        _ => next_fire,
    }
}

impl Scheduler {
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
            .map_or(usize::MAX, |cap| cap.saturating_sub(batch.len()));
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
                self.defer_waiting(entry, horizon, now);
                break;
            }
            let slot = Slot {
                nominal: entry.nominal,
                fire_at: entry.fire_at,
            };
            let next = js.rule.next_slot(entry.nominal);
            let deferred = js.deferred;
            next_fires.push((entry.job.clone(), next.map(|n| n.fire_at)));
            // A newer slot is already due: this one is too late to matter.
            if let Some(n) = next.filter(|n| n.fire_at <= now) {
                self.supersede(entry, n, deferred, &slot, &mut mutations);
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

    /// The tick cap is reached: `entry` keeps its place, every job left
    /// waiting is marked deferred, and the next tick waits a tick.
    fn defer_waiting(&mut self, entry: HeapEntry, horizon: Timestamp, now: Timestamp) {
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
        self.not_before =
            Some(now + jiff::SignedDuration::try_from(self.config.tick).unwrap_or_default());
    }

    /// `entry`'s slot is skipped for its successor `next`, already due: a
    /// slot the cap held back is skipped for the tick limit, else missed.
    fn supersede(
        &mut self,
        entry: HeapEntry,
        next: Slot,
        deferred: bool,
        slot: &Slot,
        mutations: &mut Vec<Mutation>,
    ) {
        self.heap.push(Reverse(HeapEntry {
            // The successor of a held-back slot inherits its wait.
            waiting_since: entry.waiting_since,
            fire_at: next.fire_at,
            nominal: next.nominal,
            job: entry.job.clone(),
            generation: entry.generation,
        }));
        let (reason, detail) = if deferred {
            (
                SkipReason::TickLimit,
                SkipDetail::TickLimit {
                    newer_slot: next.nominal,
                },
            )
        } else {
            (
                SkipReason::Missed,
                SkipDetail::Missed {
                    newer_slot: Some(next.nominal),
                    restarted_at: None,
                },
            )
        };
        self.skip_slot(&entry.job, reason, slot, Some(detail), mutations);
    }
}

/// A wake-up in progress: its time and what it has decided so far.
pub(super) struct TickState {
    now: Timestamp,
    /// Slots firing up to here are decided now (`now` + the lead).
    horizon: Timestamp,
    batch: Batch,
    mutations: Vec<Mutation>,
}
