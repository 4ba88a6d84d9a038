//! PURE. Which slots a backfill queues: a job's nominal slots in a window,
//! with the same slot math and run keys as the scheduler, so a backfilled
//! slot and a scheduled one are the same run key and cannot both run.
//! The CLI lists them (`--dry-run`); the daemon queues them.

use jiff::{SignedDuration, Timestamp};

use crate::calendar::slots::{ScheduleError, Slot, SlotRule};
use crate::spec::model::Job;
use crate::store::format_ts;

/// The run key of `job_id`'s slot at `nominal`: `job@slot`.
pub fn run_key(job_id: &str, nominal: Timestamp) -> String {
    format!("{job_id}@{}", format_ts(nominal))
}

/// Slots firing within this of now are the scheduler's: it decides them
/// up to 250 ms ahead, and one it queued a moment ago may not be recorded.
pub const SCHEDULER_MARGIN: SignedDuration = SignedDuration::from_secs(2);

/// The most slots one backfill queues, whatever `--max` says: each is a
/// run the daemon holds in memory until it starts.
pub const MAX_SLOTS: u64 = 100_000;

/// Why a window cannot be backfilled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillError {
    #[error("job `{0}` has no schedule: it has no slots to backfill (trigger it instead)")]
    NoSchedule(String),
    #[error("job `{job}`: {error}")]
    Schedule { job: String, error: ScheduleError },
    #[error("--from {from} is not before --to {to}: the window [from, to) is empty")]
    EmptyWindow { from: String, to: String },
    #[error(
        "the window holds {slots} slots of job `{job}`, more than --max {max}: narrow --from/--to or raise --max (up to {MAX_SLOTS})"
    )]
    TooMany { job: String, slots: u64, max: u64 },
}

/// A window's slots: those to backfill, and how many of the window's end
/// are left to the scheduler (due now or later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub slots: Vec<Slot>,
    pub left_to_scheduler: u64,
}

/// `job`'s nominal slots in `[from, to)`, oldest first, at most `max` (and
/// [`MAX_SLOTS`]). Slots firing after `now` minus [`SCHEDULER_MARGIN`] are
/// left to the scheduler.
pub fn window(
    job: &Job,
    from: Timestamp,
    to: Timestamp,
    max: u64,
    now: Timestamp,
) -> Result<Window, BackfillError> {
    if from >= to {
        return Err(BackfillError::EmptyWindow {
            from: format_ts(from),
            to: format_ts(to),
        });
    }
    let schedule = job
        .schedule
        .as_ref()
        .ok_or_else(|| BackfillError::NoSchedule(job.id.clone()))?;
    let rule = SlotRule::compile(schedule, &job.id).map_err(|error| BackfillError::Schedule {
        job: job.id.clone(),
        error,
    })?;
    let max = max.min(MAX_SLOTS);
    let all = rule
        .slots_in(from, to, max)
        .map_err(|slots| BackfillError::TooMany {
            job: job.id.clone(),
            slots,
            max,
        })?;
    let cutoff = now.checked_sub(SCHEDULER_MARGIN).unwrap_or(now);
    let (slots, later): (Vec<Slot>, Vec<Slot>) = all.into_iter().partition(|s| s.fire_at <= cutoff);
    Ok(Window {
        slots,
        left_to_scheduler: later.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(schedule: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "sync", "type": "noop", "schedule": schedule
        }))
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn slots_due_soon_are_left_to_the_scheduler() {
        let j = job(serde_json::json!({"every": "1m"}));
        let w = window(
            &j,
            ts("2026-03-01T10:00:00Z"),
            ts("2026-03-01T10:10:00Z"),
            100,
            ts("2026-03-01T10:05:01Z"),
        )
        .unwrap();
        assert_eq!(w.slots.len(), 5);
        assert_eq!(w.left_to_scheduler, 5);
        assert_eq!(
            run_key("sync", w.slots[0].nominal),
            "sync@2026-03-01T10:00:00.000Z"
        );
    }

    #[test]
    fn a_window_is_refused_when_empty_too_large_or_unscheduled() {
        let j = job(serde_json::json!({"every": "1s"}));
        let (a, b) = (ts("2026-03-01T10:00:00Z"), ts("2026-03-01T11:00:00Z"));
        assert!(matches!(
            window(&j, b, a, 10, b),
            Err(BackfillError::EmptyWindow { .. })
        ));
        let too_many = window(&j, a, b, 1000, b).unwrap_err();
        assert_eq!(
            too_many.to_string(),
            "the window holds 3600 slots of job `sync`, more than --max 1000: narrow --from/--to or raise --max (up to 100000)"
        );
        let manual: Job =
            serde_json::from_value(serde_json::json!({"id": "m", "type": "noop"})).unwrap();
        assert!(matches!(
            window(&manual, a, b, 10, b),
            Err(BackfillError::NoSchedule(_))
        ));
    }
}
