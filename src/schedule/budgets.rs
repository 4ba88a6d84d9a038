//! What the daily budgets of each budgeted job look like today, cached for
//! the scheduler's guard (one map lookup a slot, never a store read), the
//! API and `/metrics`.
//!
//! The board is refreshed from the store (see `store::budgets`): in full
//! when the watcher starts and every [`FULL_REFRESH`] (a new revision, a
//! count made by a process the events do not name), and for one job (with
//! its flow's other budgeted jobs, when the flow has a budget) on each of
//! its runs' terminal events, which every process sees on both stores. A
//! refresh reads only budgeted jobs, so 10,000 jobs without budgets cost
//! nothing. A slot is held back while a budget [`BudgetUse::blocks`] and its
//! day has not ended (`resets_at`), so the next day's first slot dispatches
//! even before the next refresh.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::queue::RunQueue;
use crate::spec::snapshot::Snapshot;
use crate::store::budgets::{BudgetUse, Meter};
use crate::store::{Applied, SharedEvent, Store, StoreError};

/// The full refresh's period.
pub const FULL_REFRESH: Duration = Duration::from_secs(10);

/// The run events after which a job's counts are read again.
const RUN_ENDS: [&str; 4] = [
    "run.completed",
    "run.failed",
    "run.timed_out",
    "run.cancelled",
];

/// Today's budgets of every budgeted job, by job id.
#[derive(Default)]
pub struct BudgetBoard {
    jobs: RwLock<HashMap<String, Vec<BudgetUse>>>,
}

impl BudgetBoard {
    /// The budget that holds the job's slots back at `now`, if any.
    pub fn blocking(&self, job_id: &str, now: Timestamp) -> Option<BudgetUse> {
        let jobs = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        jobs.get(job_id)?
            .iter()
            .find(|u| u.resets_at > now && u.blocks())
            .cloned()
    }

    /// The job's budgets as last read (empty: none, or not read yet).
    pub fn of(&self, job_id: &str) -> Vec<BudgetUse> {
        let jobs = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        jobs.get(job_id).cloned().unwrap_or_default()
    }

    /// Every budgeted job's budgets (for `/metrics`).
    pub fn all(&self) -> Vec<(String, Vec<BudgetUse>)> {
        let jobs = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = jobs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Reads `job_ids` (all budgeted jobs when `None`) from the store.
    pub async fn refresh(
        &self,
        store: &Store,
        snapshot: &Snapshot,
        job_ids: Option<&[String]>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut fresh = HashMap::new();
        for (id, job) in &snapshot.jobs {
            if job_ids.is_some_and(|ids| !ids.contains(id)) {
                continue;
            }
            let flow = job.spec.flow.as_ref().and_then(|f| snapshot.flows.get(f));
            if let Some(meter) = Meter::of(&job.spec, flow.map(|f| &f.spec)) {
                fresh.insert(id.clone(), meter.usage(store, now).await?);
            }
        }
        let mut jobs = self.jobs.write().unwrap_or_else(|p| p.into_inner());
        if job_ids.is_none() {
            jobs.clear();
        }
        jobs.extend(fresh);
        Ok(())
    }

    /// Keeps the board fresh until `cancel`: see the module doc. With no
    /// budget in the applied revision it listens to no event: at 24,000
    /// runs/s of 24,000 jobs, a wake-up and a job lookup per run end were
    /// 2-3 us of the leader's ~40 per scheduled run, for nothing.
    pub async fn watch(
        self: Arc<Self>,
        queue: Arc<RunQueue>,
        mut applied_rx: watch::Receiver<Arc<Applied>>,
        cancel: CancellationToken,
    ) {
        let store = queue.store().clone();
        let mut applied = applied_rx.borrow_and_update().clone();
        let mut events = any_budget(&applied.snapshot).then(|| store.subscribe());
        let mut full = tokio::time::interval(FULL_REFRESH);
        loop {
            let only = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = full.tick() => None,
                changed = applied_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    applied = applied_rx.borrow_and_update().clone();
                    // Subscribed before the full read below: no run end
                    // falls between the two.
                    events = match events.take() {
                        Some(rx) if any_budget(&applied.snapshot) => Some(rx),
                        None if any_budget(&applied.snapshot) => Some(store.subscribe()),
                        _ => None,
                    };
                    None
                }
                event = next_event(&mut events) => match event {
                    Ok(e) if RUN_ENDS.contains(&e.event_type.as_str()) => match &e.job_id {
                        Some(job) => Some(job.clone()),
                        None => continue,
                    },
                    Ok(_) => continue,
                    // Missed events: read everything.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(_) => return,
                },
            };
            if only.is_none() && events.is_none() && self.is_empty() {
                continue;
            }
            let snapshot = &applied.snapshot;
            let ids = only.map(|job| siblings(snapshot, &job));
            if ids.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let now = queue.clock().now();
            if let Err(e) = self.refresh(&store, snapshot, ids.as_deref(), now).await {
                tracing::warn!(error = %e, "budgets: reading today's counts failed; the board keeps its last view");
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.jobs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// The next event while subscribed; never, while not.
async fn next_event(
    events: &mut Option<broadcast::Receiver<SharedEvent>>,
) -> Result<SharedEvent, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A job or a flow of the revision has a daily budget.
fn any_budget(snapshot: &Snapshot) -> bool {
    snapshot.jobs.values().any(|j| !j.spec.budgets.is_empty())
        || snapshot.flows.values().any(|f| !f.spec.budgets.is_empty())
}

/// The budgeted jobs whose counts a run of `job` changes: itself, and
/// when its flow has a budget, the flow's other jobs.
fn siblings(snapshot: &Snapshot, job: &str) -> Vec<String> {
    let Some(spec) = snapshot.jobs.get(job).map(|j| &j.spec) else {
        return Vec::new();
    };
    let flow = spec.flow.as_ref().and_then(|f| snapshot.flows.get(f));
    match flow {
        Some(f) if !f.spec.budgets.is_empty() => snapshot
            .jobs
            .iter()
            .filter(|(_, j)| j.spec.flow.as_deref() == Some(f.spec.id.as_str()))
            .map(|(id, _)| id.clone())
            .collect(),
        _ if spec.budgets.is_empty() => Vec::new(),
        _ => vec![job.to_string()],
    }
}
