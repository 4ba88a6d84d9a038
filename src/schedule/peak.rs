//! How many slots a config has due in one second at its densest, to
//! compare with a tick cap (`SCHEDULER_MAX_DISPATCH_PER_TICK`): the
//! scheduler dispatches what one wake-up finds due and defers the rest by
//! a tick of one second, so a second holding more due slots than the cap
//! skips some (`tick_limit`).
//!
//! Pure: it takes the jobs and the instant to count from.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

use crate::calendar::slots::SlotRule;
use crate::spec::model::Job;

/// The window counted: a minute from the next UTC midnight, where
/// interval schedules (counted from the epoch) and daily, hourly and
/// per-minute crons all line up.
const WINDOW_SECS: i64 = 60;

/// The most slots any one second of the window has due (by fire time,
/// jitter included) across the enabled scheduled `jobs`, counted from the
/// UTC midnight after `now`.
pub fn peak_slots_per_second<'a>(jobs: impl IntoIterator<Item = &'a Job>, now: Timestamp) -> u64 {
    let day = SignedDuration::from_hours(24).as_secs();
    let midnight = (now.as_second().div_euclid(day) + 1) * day;
    let (Ok(start), Ok(end)) = (
        Timestamp::from_second(midnight - 1),
        Timestamp::from_second(midnight + WINDOW_SECS),
    ) else {
        return 0;
    };
    let mut per_second: HashMap<i64, u64> = HashMap::new();
    for job in jobs.into_iter().filter(|j| j.enabled) {
        let Some(rule) = job
            .schedule
            .as_ref()
            .and_then(|s| SlotRule::compile(s, &job.id).ok())
        else {
            continue;
        };
        let mut at = start;
        while let Some(slot) = rule.next_slot(at) {
            if slot.nominal >= end {
                break;
            }
            *per_second.entry(slot.fire_at.as_second()).or_default() += 1;
            at = slot.nominal;
        }
    }
    per_second.into_values().max().unwrap_or(0)
}

/// The plan's warning when the peak exceeds a cap that is set.
pub fn cap_warning(peak: u64, cap: Option<usize>) -> Option<String> {
    let cap = cap?;
    (peak > cap as u64).then(|| {
        format!(
            "{peak} slots a second are due at peak, above SCHEDULER_MAX_DISPATCH_PER_TICK={cap} a tick: some slots will be skipped (tick_limit)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SourceFile, build};

    fn jobs(yaml: &str) -> Vec<Job> {
        let loaded = build(&[SourceFile {
            path: "jobs.d/a.yaml".into(),
            text: yaml.into(),
        }]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.snapshot.jobs.into_values().map(|r| r.spec).collect()
    }

    fn now() -> Timestamp {
        "2026-12-07T10:15:00Z".parse().unwrap()
    }

    #[test]
    fn every_second_jobs_all_count_in_each_second() {
        let mut yaml = String::new();
        for i in 0..30 {
            yaml.push_str(&format!(
                "id: j{i}\ntype: noop\nschedule: {{every: 1s}}\n---\n"
            ));
        }
        yaml.push_str("id: off\ntype: noop\nenabled: false\nschedule: {every: 1s}\n---\nid: manual\ntype: noop\n");
        assert_eq!(peak_slots_per_second(&jobs(&yaml), now()), 30);
    }

    #[test]
    fn crons_and_intervals_that_line_up_at_midnight_add_up() {
        let yaml = "id: daily\ntype: noop\nschedule: {cron: \"0 0 * * *\"}\n---\nid: five\ntype: noop\nschedule: {every: 5m}\n---\nid: other\ntype: noop\nschedule: {cron: \"30 7 * * *\"}\n";
        assert_eq!(peak_slots_per_second(&jobs(yaml), now()), 2);
    }

    #[test]
    fn the_warning_needs_a_cap_and_a_peak_above_it() {
        assert_eq!(cap_warning(5000, None), None);
        assert_eq!(cap_warning(80, Some(80)), None);
        assert_eq!(
            cap_warning(81, Some(80)).as_deref(),
            Some(
                "81 slots a second are due at peak, above SCHEDULER_MAX_DISPATCH_PER_TICK=80 a tick: some slots will be skipped (tick_limit)"
            )
        );
    }
}
