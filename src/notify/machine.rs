//! Which notice a state change causes (pure): the job's health
//! (`failure` on the first failed run after a success or ever, `recovery`
//! on the first success after a failure), bursts of skipped slots
//! (`missed`), and cooldowns. The input is the store's committed events,
//! read in id order; the state is the job's, kept in the store between
//! events so a restart goes on where the last process stopped.
//!
//! A burst of skipped slots ends when the job's next run is queued, or
//! [`BURST_MAX_SEC`] after its first skip (a job skipped for hours gets a
//! notice every five minutes, not one per slot).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::spec::model::NoticeKind;
use crate::store::{Event, format_ts};

/// A burst of skipped slots is closed this long after its first skip.
pub const BURST_MAX_SEC: i64 = 300;

/// What the last final run of the job said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Failing,
}

/// Slots skipped since the job last dispatched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    pub first_slot: String,
    pub started_at: String,
    pub count: u64,
    pub reasons: BTreeMap<String, u64>,
}

/// A notice decided but not yet delivered to every rule that wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    /// The state change's id: with the job and kind, the send-once key.
    pub change: String,
    /// What the template sees as `run` (`{}` when no run caused it).
    #[serde(default)]
    pub run: Value,
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub reasons: BTreeMap<String, u64>,
}

/// The job's notice state, kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub burst: Option<Burst>,
    #[serde(default)]
    pub pending: Vec<Notice>,
    /// The last event applied: a replayed one changes nothing.
    #[serde(default)]
    pub seen: i64,
}

/// A committed event, as far as notices care.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Succeeded { run_id: String },
    Failed { run_id: String, error: String },
    Cooldown { until: String, failures: u64 },
    Skipped { slot: String, reason: String },
    Queued,
}

/// What `event` means for its job's notices (`None`: nothing).
pub fn classify(event: &Event) -> Option<(String, Observed)> {
    let job = event.job_id.clone()?;
    let run_id = || event.run_id.clone().unwrap_or_default();
    let text = |k: &str| {
        event
            .data
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let observed = match event.event_type.as_str() {
        "run.completed" => Observed::Succeeded { run_id: run_id() },
        "run.failed" => Observed::Failed {
            run_id: run_id(),
            error: text("error"),
        },
        // A timed-out attempt that is retried is not an outcome.
        "run.timed_out" if event.data.get("retrying") == Some(&Value::Bool(false)) => {
            Observed::Failed {
                run_id: run_id(),
                error: text("error"),
            }
        }
        "job.cooldown" => Observed::Cooldown {
            until: text("cooldown_until"),
            failures: event
                .data
                .get("consecutive_failures")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        },
        "run.queued" => Observed::Queued,
        t => {
            let reason = t.strip_prefix("scheduler.dispatch_skipped_")?;
            Observed::Skipped {
                slot: text("slot"),
                reason: reason.to_string(),
            }
        }
    };
    Some((job, observed))
}

/// Apply event `id` (`observed`) at `now`: notices it causes join
/// `state.pending`. An event at or before `state.seen` changes nothing.
pub fn observe(state: &mut JobState, id: i64, observed: Observed, now: Timestamp) {
    if id <= state.seen {
        return;
    }
    state.seen = id;
    close_stale_burst(state, now);
    match observed {
        Observed::Succeeded { run_id } => {
            if state.health == Some(Health::Failing) {
                state
                    .pending
                    .push(notice(NoticeKind::Recovery, &run_id, json!({"id": run_id})));
            }
            state.health = Some(Health::Ok);
        }
        Observed::Failed { run_id, error } => {
            if state.health != Some(Health::Failing) {
                let run = json!({"id": run_id, "error": error});
                state
                    .pending
                    .push(notice(NoticeKind::Failure, &run_id, run));
            }
            state.health = Some(Health::Failing);
        }
        Observed::Cooldown { until, failures } => {
            let run = json!({"consecutive_failures": failures, "cooldown_until": until});
            state
                .pending
                .push(notice(NoticeKind::Cooldown, &until, run));
        }
        Observed::Skipped { slot, reason } => {
            let burst = state.burst.get_or_insert_with(|| Burst {
                first_slot: slot,
                started_at: format_ts(now),
                count: 0,
                reasons: BTreeMap::new(),
            });
            burst.count += 1;
            *burst.reasons.entry(reason).or_default() += 1;
        }
        Observed::Queued => close_burst(state),
    }
}

/// Close the burst if it began [`BURST_MAX_SEC`] or more before `now`.
/// True when it did.
pub fn close_stale_burst(state: &mut JobState, now: Timestamp) -> bool {
    let stale = state.burst.as_ref().is_some_and(|b| {
        b.started_at
            .parse::<Timestamp>()
            .map_or(true, |t| now.as_second() - t.as_second() >= BURST_MAX_SEC)
    });
    if stale {
        close_burst(state);
    }
    stale
}

fn close_burst(state: &mut JobState) {
    if let Some(b) = state.burst.take() {
        state.pending.push(Notice {
            kind: NoticeKind::Missed,
            change: b.first_slot,
            run: json!({}),
            count: b.count,
            reasons: b.reasons,
        });
    }
}

fn notice(kind: NoticeKind, change: &str, run: Value) -> Notice {
    Notice {
        kind,
        change: change.to_string(),
        run,
        count: 0,
        reasons: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + sec).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn ok(id: &str) -> Observed {
        Observed::Succeeded { run_id: id.into() }
    }

    fn failed(id: &str) -> Observed {
        Observed::Failed {
            run_id: id.into(),
            error: "exit code 1".into(),
        }
    }

    fn skipped(slot: &str, reason: &str) -> Observed {
        Observed::Skipped {
            slot: slot.into(),
            reason: reason.into(),
        }
    }

    fn kinds(state: &JobState) -> Vec<(NoticeKind, String)> {
        state
            .pending
            .iter()
            .map(|n| (n.kind, n.change.clone()))
            .collect()
    }

    #[test]
    fn three_failures_then_two_successes_notice_once_each() {
        let mut s = JobState::default();
        let events = [failed("r1"), failed("r2"), failed("r3"), ok("r4"), ok("r5")];
        for (i, e) in events.into_iter().enumerate() {
            observe(&mut s, i as i64 + 1, e, t(0));
        }
        assert_eq!(
            kinds(&s),
            [
                (NoticeKind::Failure, "r1".into()),
                (NoticeKind::Recovery, "r4".into())
            ]
        );
        assert_eq!(s.pending[0].run["error"], "exit code 1");
    }

    #[test]
    fn first_run_ever_succeeding_says_nothing_failing_says_failure() {
        let mut s = JobState::default();
        observe(&mut s, 1, ok("r1"), t(0));
        assert!(s.pending.is_empty());
        let mut s = JobState::default();
        observe(&mut s, 1, failed("r1"), t(0));
        assert_eq!(kinds(&s), [(NoticeKind::Failure, "r1".into())]);
    }

    #[test]
    fn a_replayed_event_changes_nothing() {
        let mut s = JobState::default();
        observe(&mut s, 5, ok("r1"), t(0));
        observe(&mut s, 6, failed("r2"), t(0));
        observe(&mut s, 6, failed("r2"), t(0));
        observe(&mut s, 4, ok("r0"), t(0));
        assert_eq!(kinds(&s), [(NoticeKind::Failure, "r2".into())]);
        assert_eq!(s.health, Some(Health::Failing));
    }

    #[test]
    fn a_burst_of_skips_is_one_missed_notice_when_the_job_dispatches() {
        let mut s = JobState::default();
        observe(&mut s, 1, skipped("a", "flow_limit"), t(0));
        observe(&mut s, 2, skipped("b", "flow_limit"), t(1));
        observe(&mut s, 3, skipped("c", "overlap"), t(2));
        assert!(s.pending.is_empty());
        observe(&mut s, 4, Observed::Queued, t(3));
        observe(&mut s, 5, Observed::Queued, t(4));
        assert_eq!(kinds(&s), [(NoticeKind::Missed, "a".into())]);
        assert_eq!(s.pending[0].count, 3);
        assert_eq!(s.pending[0].reasons["flow_limit"], 2);
    }

    #[test]
    fn a_long_burst_closes_after_its_time_and_a_new_one_begins() {
        let mut s = JobState::default();
        observe(&mut s, 1, skipped("a", "paused"), t(0));
        assert!(!close_stale_burst(&mut s, t(BURST_MAX_SEC - 1)));
        observe(&mut s, 2, skipped("b", "paused"), t(BURST_MAX_SEC));
        assert_eq!(kinds(&s), [(NoticeKind::Missed, "a".into())]);
        assert_eq!(s.burst.as_ref().map(|b| b.first_slot.as_str()), Some("b"));
        assert!(close_stale_burst(&mut s, t(2 * BURST_MAX_SEC)));
        assert_eq!(s.pending.len(), 2);
    }

    #[test]
    fn classify_reads_outcomes_skips_and_cooldowns() {
        let ev = |ty: &str, data: Value| {
            crate::store::NewEvent::new(ty, data)
                .job("j")
                .run("r")
                .stored(1)
        };
        let c = |e: Event| classify(&e).map(|(_, o)| o);
        assert_eq!(c(ev("run.completed", json!({}))), Some(ok("r")));
        assert_eq!(
            c(ev("run.timed_out", json!({"retrying": true, "error": "x"}))),
            None
        );
        assert!(matches!(
            c(ev(
                "run.timed_out",
                json!({"retrying": false, "error": "x"})
            )),
            Some(Observed::Failed { .. })
        ));
        assert_eq!(
            c(ev(
                "scheduler.dispatch_skipped_flow_limit",
                json!({"slot": "s"})
            )),
            Some(skipped("s", "flow_limit"))
        );
        assert_eq!(c(ev("run.retrying", json!({}))), None);
        assert_eq!(
            c(crate::store::NewEvent::new("run.completed", json!({})).stored(2)),
            None
        );
    }
}
