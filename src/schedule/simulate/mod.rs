//! PURE. `multijob simulate`: a period of the scheduler replayed on a
//! virtual clock, in seconds instead of a day.
//!
//! It drives the scheduler's own parts: each job's [`SlotRule`] (the slot
//! and jitter math the daemon fires by), the admission guards
//! ([`guards::decide`](crate::run::guards::decide), in the scheduler's
//! order of slots, lane waits included), the queue's pressure hysteresis
//! ([`Pressure`](crate::run::guards::Pressure)) measured when the queue
//! does (after runs are queued, started and finished), and its line
//! (priority first, then oldest). What it models instead of running: a
//! worker pool of N, where each run takes its job's duration and succeeds.
//!
//! Not modelled (each is an assumption the report states): failures and
//! retries (so no new cooldowns), approvals (granted at once), the tick
//! cap (the default has none), triggered runs, the scheduler's lead for
//! huge ticks and the execution overhead of a real run. The daemon's
//! store-backed queue costs ~10 µs per slot; 10,000 jobs every 30 s for
//! a day are 28.8 million slots, hence a model here and, in the tests,
//! a comparison with a real daemon.

mod engine;
mod report;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

pub use report::{BusyHour, JobReport, LaneReport, LaneSeen, QueueReport, SimReport, TracedSlot};

use crate::calendar::slots::SlotRule;
use crate::spec::model::{Job, Overlap, Priority};
use crate::spec::snapshot::Snapshot;

/// A job as the simulation sees it.
#[derive(Debug, Clone)]
pub struct SimJob {
    pub id: String,
    pub rule: SlotRule,
    pub overlap: Overlap,
    /// The effective priority (the job's, else its lane's, else normal).
    pub priority: Priority,
    pub lane: Option<String>,
    /// How long each run takes (at least 1 ns).
    pub duration: Duration,
    pub paused: bool,
    pub cooldown_until: Option<Timestamp>,
}

/// What the period is and what runs it.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub from: Timestamp,
    pub to: Timestamp,
    /// `None`: as many workers as runs want (the recommendation's run).
    pub workers: Option<usize>,
    pub pressure_high: usize,
    pub pressure_low: usize,
    /// Record every slot of this job with what decided it (`why`).
    pub trace: Option<String>,
    /// Runs already active at `from` (a live daemon's, for `why`).
    pub active: Vec<ActiveRun>,
}

/// A run active when the period starts: running until `ends_at`, or
/// waiting for a worker (then it takes its job's duration).
#[derive(Debug, Clone)]
pub struct ActiveRun {
    pub job: String,
    pub ends_at: Option<Timestamp>,
}

/// Simulate `jobs` (lanes: id → `max_active_runs`) over the period.
pub fn simulate(
    mut jobs: Vec<SimJob>,
    lanes: &BTreeMap<String, Option<u32>>,
    config: &SimConfig,
) -> SimReport {
    // The scheduler breaks ties between slots by job id: index order is id order.
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    let mut engine = engine::Engine::new(&jobs, lanes, config);
    engine.run();
    engine.report()
}

/// The scheduled, enabled jobs of `snapshot` and its lanes, each run
/// taking `duration(job)`. A schedule that does not compile is left out
/// (validation rejects it before a daemon would run it).
pub fn from_snapshot(
    snapshot: &Snapshot,
    duration: impl Fn(&Job) -> Duration,
) -> (Vec<SimJob>, BTreeMap<String, Option<u32>>) {
    let jobs = snapshot
        .jobs
        .iter()
        .filter(|(_, r)| r.spec.enabled)
        .filter_map(|(id, r)| {
            let job = &r.spec;
            let rule = SlotRule::compile(job.schedule.as_ref()?, id).ok()?;
            Some(SimJob {
                id: id.clone(),
                rule,
                overlap: job.overlap,
                priority: snapshot.effective_priority(job),
                lane: job.flow.clone(),
                duration: duration(job),
                paused: false,
                cooldown_until: None,
            })
        })
        .collect();
    let lanes = snapshot
        .flows
        .iter()
        .map(|(id, f)| (id.clone(), f.spec.max_active_runs))
        .collect();
    (jobs, lanes)
}
