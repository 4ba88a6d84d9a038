//! Deciding slots: the admission guards say dispatch, buffer, replace or
//! skip for each, under one look at the queue; the dispatched runs are
//! queued together, and their lateness measured.

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::json;

use super::Scheduler;
use super::detail::skip_detail;
use crate::calendar::slots::Slot;
use crate::queue::QueueView;
use crate::run::guards::{self, Decision, GuardInput, SkipDetail, SkipReason};
use crate::run::{NewRun, new_run_id};
use crate::spec::model::{Job, Priority};
use crate::store::runs::Trigger;
use crate::store::{Mutation, NewEvent, format_ts};

impl Scheduler {
    /// Decide slots in order; dispatches are added to `batch`. Returns
    /// each slot's skip reason, in order (`None`: not skipped).
    pub(super) fn dispatch_slots<J: AsRef<str>>(
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
                let guard = Guarded {
                    job_id,
                    job,
                    slot,
                    catchup,
                    now,
                };
                let decision = self.decide(
                    &guard,
                    &view,
                    batch,
                    applied.snapshot.effective_priority(job),
                );
                outcomes.push(match decision {
                    Decision::Skip(reason) => Some(reason),
                    _ => None,
                });
                match decision {
                    Decision::Skip(reason) => {
                        let detail = match reason {
                            SkipReason::Budget => self.budget_detail(job_id, guard.now),
                            _ => skip_detail(reason, job_id, job, &view, batch),
                        };
                        self.skip_slot(job_id, reason, &slot, detail, mutations)
                    }
                    Decision::Buffer => {
                        self.buffered.insert(job_id.to_string(), slot);
                    }
                    Decision::Dispatch | Decision::Replace => {
                        if decision == Decision::Replace {
                            replace.push(job_id.to_string());
                        }
                        let run = guard.scheduled_run();
                        mutations.push(Mutation::JobSlot(
                            job_id.to_string(),
                            format_ts(slot.nominal),
                        ));
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

    /// What the guards say about one slot, counting the runs this tick
    /// already dispatched as active.
    fn decide(
        &self,
        guard: &Guarded<'_>,
        view: &QueueView<'_>,
        batch: &Batch,
        priority: Priority,
    ) -> Decision {
        let (job_id, job) = (guard.job_id, guard.job);
        let lane = job.flow.as_ref().map(|f| {
            let mut l = view.lane(f);
            l.active += batch.by_flow.get(f).copied().unwrap_or(0);
            l
        });
        // run_all asks for each missed slot, so one restart's catch-up
        // runs do not overlap each other; runs active before still do.
        let own = if guard.catchup {
            0
        } else {
            batch.by_job.get(job_id).copied().unwrap_or(0)
        };
        guards::decide(&GuardInput {
            priority,
            overlap: job.overlap,
            active_runs: view.active_runs(job_id) + own,
            buffered: self.buffered.contains_key(job_id),
            lane,
            pressure: view.pressure(),
            cooldown_until: view.cooldown_until(job_id),
            approval_pending: view.approval_pending(job_id),
            paused: view.paused(job_id).is_some(),
            budget_exhausted: self.budgets.blocking(job_id, guard.now).is_some(),
            now: guard.now,
        })
    }

    /// A slot skipped for `reason`: its event (with what the guard saw),
    /// the job's last slot, the count.
    pub(super) fn skip_slot(
        &self,
        job_id: &str,
        reason: SkipReason,
        slot: &Slot,
        detail: Option<SkipDetail>,
        mutations: &mut Vec<Mutation>,
    ) {
        mutations.push(skip_event(job_id, reason, slot, detail));
        mutations.push(Mutation::JobSlot(
            job_id.to_string(),
            format_ts(slot.nominal),
        ));
        self.count_skips(reason, job_id, 1);
    }

    pub(super) fn flush(&mut self, batch: Batch, mutations: Vec<Mutation>) {
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
        self.stats.count_dispatched(
            queued.len() as u64,
            fires
                .into_iter()
                .map(|fire| queued_at.duration_since(fire).as_micros().max(0) as u64),
        );
    }
}

/// Runs a tick dispatches, with counts per job and lane so guards see
/// them in O(1).
#[derive(Default)]
pub(super) struct Batch {
    runs: Vec<(NewRun, Timestamp)>,
    pub(super) by_job: HashMap<String, usize>,
    pub(super) by_flow: HashMap<String, usize>,
    /// The first few run ids per job and lane, for a skip's detail.
    first_by_job: HashMap<String, Vec<String>>,
    first_by_flow: HashMap<String, Vec<String>>,
}

impl Batch {
    pub(super) fn push(&mut self, run: NewRun, fire_at: Timestamp, flow: Option<String>) {
        *self.by_job.entry(run.job_id.clone()).or_default() += 1;
        note_first(&mut self.first_by_job, &run.job_id, &run.id);
        if let Some(flow) = flow {
            note_first(&mut self.first_by_flow, &flow, &run.id);
            *self.by_flow.entry(flow).or_default() += 1;
        }
        self.runs.push((run, fire_at));
    }

    /// This tick's first run ids for a job, and how many it queued.
    pub(super) fn job_ids(&self, job: &str) -> (&[String], usize) {
        first(&self.first_by_job, &self.by_job, job)
    }

    /// This tick's first run ids in a lane, and how many it queued.
    pub(super) fn flow_ids(&self, flow: &str) -> (&[String], usize) {
        first(&self.first_by_flow, &self.by_flow, flow)
    }

    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }
}

fn note_first(map: &mut HashMap<String, Vec<String>>, key: &str, id: &str) {
    match map.get_mut(key) {
        Some(ids) if ids.len() >= guards::MAX_IDS => {}
        Some(ids) => ids.push(id.to_string()),
        None => {
            map.insert(key.to_string(), vec![id.to_string()]);
        }
    }
}

fn first<'a>(
    ids: &'a HashMap<String, Vec<String>>,
    counts: &HashMap<String, usize>,
    key: &str,
) -> (&'a [String], usize) {
    (
        ids.get(key).map(Vec::as_slice).unwrap_or(&[]),
        counts.get(key).copied().unwrap_or(0),
    )
}

pub(super) fn skip_event(
    job: &str,
    reason: SkipReason,
    slot: &Slot,
    detail: Option<SkipDetail>,
) -> Mutation {
    let mut data = json!({"slot": format_ts(slot.nominal), "reason": reason.as_str()});
    if let (serde_json::Value::Object(d), Some(detail)) = (&mut data, detail)
        && let Ok(detail) = serde_json::to_value(detail)
    {
        d.insert("detail".into(), detail);
    }
    Mutation::Event(NewEvent::new(reason.event_type(), data).job(job.to_string()))
}

/// A slot being decided, with what its run would be.
struct Guarded<'a> {
    job_id: &'a str,
    job: &'a Job,
    slot: Slot,
    catchup: bool,
    now: Timestamp,
}

impl Guarded<'_> {
    /// The run a dispatched slot queues, keyed `job@slot`.
    fn scheduled_run(&self) -> NewRun {
        let (job_id, slot, now) = (self.job_id, self.slot, self.now);
        NewRun {
            id: new_run_id(),
            job_id: job_id.to_string(),
            trigger: Trigger::Schedule,
            inputs: serde_json::Value::Null,
            run_key: crate::schedule::backfill::run_key(job_id, slot.nominal),
            scheduled_at: Some(slot.nominal),
            chain_depth: 0,
            // Decided ahead: it waits in the queue until its
            // fire time (the queue records its lateness then).
            due_at: (slot.fire_at > now).then_some(slot.fire_at),
            extra: if self.catchup {
                json!({"catchup": true})
            } else {
                serde_json::Value::Null
            },
            requires_approval: false,
            traceparent: None,
        }
    }
}
