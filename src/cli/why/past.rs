//! The outcome of slots that have come: a run keyed to the slot, or the
//! scheduler's skip event (with what the guard saw), or nothing recorded.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::calendar::slots::{Slot, SlotRule};
use crate::cli::store_access::StoreAccess;
use crate::run::guards::{SkipDetail, Tense};
use crate::store::EventQuery;
use crate::store::runs::{Run, RunQuery, RunStatus};

/// Slots listed on each side of the nearest one.
pub const NEIGHBOURS: u64 = 2;
/// Runs read per page while looking for the slots' runs.
const RUN_PAGE: usize = 200;

/// What became of one slot.
#[derive(Debug, Clone)]
pub enum SlotOutcome {
    Ran(Box<Run>),
    Skipped {
        reason: String,
        detail: Option<SkipDetail>,
    },
    NoRecord,
}

/// The nearest slot to `at` that is not after `now`, with up to
/// [`NEIGHBOURS`] before and after it (past ones only), oldest first;
/// the nearest one's index.
pub fn window(rule: &SlotRule, at: Timestamp, now: Timestamp) -> Option<(Vec<Slot>, usize)> {
    let before = rule.prev_slots(at, 1).pop();
    let after = rule.next_slot(at).filter(|s| s.nominal <= now);
    let nearest = match (before, after) {
        (Some(b), Some(a)) if a.nominal.duration_since(at) < at.duration_since(b.nominal) => a,
        (Some(b), _) => b,
        (None, a) => a?,
    };
    let mut slots = rule.prev_slots(nearest.nominal, NEIGHBOURS + 1);
    let index = slots.len().saturating_sub(1);
    slots.extend(
        rule.next_slots(nearest.nominal, NEIGHBOURS as usize)
            .into_iter()
            .filter(|s| s.nominal <= now),
    );
    Some((slots, index))
}

/// Each slot's outcome, from the job's runs and skip events.
pub fn outcomes(
    store: &StoreAccess,
    job: &str,
    slots: &[Slot],
) -> anyhow::Result<Vec<SlotOutcome>> {
    let mut runs = runs_for(store, job, slots)?;
    let mut skips = skips_for(store, job, slots)?;
    Ok(slots
        .iter()
        .map(|s| {
            if let Some(run) = runs.remove(&s.nominal) {
                SlotOutcome::Ran(Box::new(run))
            } else if let Some((reason, detail)) = skips.remove(&s.nominal) {
                SlotOutcome::Skipped { reason, detail }
            } else {
                SlotOutcome::NoRecord
            }
        })
        .collect())
}

/// The job's runs scheduled for `slots`, read newest first until the
/// runs queued before the first slot.
fn runs_for(
    store: &StoreAccess,
    job: &str,
    slots: &[Slot],
) -> anyhow::Result<HashMap<Timestamp, Run>> {
    let mut found = HashMap::new();
    let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
        return Ok(found);
    };
    let mut before = None;
    loop {
        let page = store.runs(RunQuery {
            job_id: Some(job.to_string()),
            status: None,
            limit: RUN_PAGE,
            before,
        })?;
        let Some((seq, oldest)) = page.last() else {
            return Ok(found);
        };
        let done = oldest
            .queued_at
            .parse::<Timestamp>()
            .is_ok_and(|q| q < first.nominal - jiff::SignedDuration::from_hours(1))
            || page.len() < RUN_PAGE;
        before = Some(*seq);
        for (_, run) in page {
            let Some(at) = run
                .scheduled_at
                .as_deref()
                .and_then(|s| s.parse::<Timestamp>().ok())
            else {
                continue;
            };
            if at >= first.nominal && at <= last.nominal {
                found.entry(at).or_insert(run);
            }
        }
        if done || found.len() == slots.len() {
            return Ok(found);
        }
    }
}

/// The scheduler's skip events for `slots`: reason and detail by slot.
fn skips_for(
    store: &StoreAccess,
    job: &str,
    slots: &[Slot],
) -> anyhow::Result<HashMap<Timestamp, (String, Option<SkipDetail>)>> {
    let wanted: std::collections::HashSet<Timestamp> = slots.iter().map(|s| s.nominal).collect();
    let events = store.events(EventQuery {
        after: 0,
        limit: 1000,
        event_type: Some("scheduler.dispatch_skipped_*".into()),
        job_id: Some(job.to_string()),
    })?;
    let mut found = HashMap::new();
    for e in events {
        let Some(slot) = e
            .data
            .get("slot")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        if !wanted.contains(&slot) {
            continue;
        }
        let reason = e
            .data
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        // A detail this version cannot read is left out, not an error:
        // the reason still says why.
        let detail = e
            .data
            .get("detail")
            .cloned()
            .and_then(|d| serde_json::from_value(d).ok());
        found.insert(slot, (reason, detail));
    }
    Ok(found)
}

impl SlotOutcome {
    /// In words, times in `tz`: `ran: run 01H.. succeeded in 4.0 s`,
    /// `dispatched: run 01H.. is running`,
    /// `skipped: lane L was full (1/1: run a1)`.
    pub fn words(&self, tz: &TimeZone) -> String {
        match self {
            SlotOutcome::Ran(run) => run_words(run),
            SlotOutcome::Skipped {
                detail: Some(d), ..
            } => d.describe(Tense::Past, tz),
            // Recorded before skips carried a detail: the reason alone.
            SlotOutcome::Skipped { reason, .. } => format!("{}: {reason}", Tense::Past.skipped()),
            SlotOutcome::NoRecord => {
                "no record (the daemon was not running, or the job did not exist yet)".to_string()
            }
        }
    }

    /// As `-o json` shows it.
    pub fn json(&self) -> Value {
        match self {
            SlotOutcome::Ran(run) => json!({
                "outcome": "ran",
                "run": {
                    "id": run.id,
                    "status": run.status.as_str(),
                    "duration_ms": run.duration_ms,
                    "error": run.error,
                },
            }),
            SlotOutcome::Skipped { reason, detail } => json!({
                "outcome": "skipped",
                "reason": reason,
                "detail": detail,
            }),
            SlotOutcome::NoRecord => json!({"outcome": "no_record"}),
        }
    }
}

fn run_words(run: &Run) -> String {
    let took = run
        .duration_ms
        .map(|ms| format!(" in {:.1} s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let status = run.status.as_str().replace('_', " ");
    let mut s = match run.status {
        RunStatus::Queued
        | RunStatus::AwaitingApproval
        | RunStatus::Running
        | RunStatus::Retrying => {
            format!("dispatched: run {} is {status}", run.id)
        }
        _ => format!("ran: run {} {status}{took}", run.id),
    };
    if let Some(error) = &run.error {
        s.push_str(": ");
        s.push_str(error.lines().next().unwrap_or_default());
    }
    s
}
