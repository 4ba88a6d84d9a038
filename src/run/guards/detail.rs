//! PURE. What a guard looked at when it skipped a slot, kept with the
//! skip event (`detail`) and said in words by `multijob why`: the runs
//! holding a lane, the cooldown's end, the pressure marks. One variant
//! per [`SkipReason`]; run ids are capped at [`MAX_IDS`] plus a count.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::SkipReason;
use crate::spec::model::Overlap;

/// Run ids a detail names; the rest are only counted.
pub const MAX_IDS: usize = 5;

/// Some run ids (oldest first) and how many more there were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIds {
    pub ids: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RunIds {
    /// The first [`MAX_IDS`] of `total` ids.
    pub fn capped<'a>(ids: impl Iterator<Item = &'a str>, total: usize) -> RunIds {
        let ids: Vec<String> = ids.take(MAX_IDS).map(str::to_string).collect();
        RunIds {
            more: total.saturating_sub(ids.len()),
            ids,
        }
    }

    /// `run a1, b2 and 3 more`.
    fn words(&self) -> String {
        if self.ids.is_empty() {
            return format!("{} runs", self.more);
        }
        let mut s = format!("run {}", self.ids.join(", "));
        if self.more > 0 {
            let _ = write!(s, " and {} more", self.more);
        }
        s
    }
}

/// What the guard saw, per reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipDetail {
    Overlap {
        overlap: Overlap,
        runs: RunIds,
    },
    FlowLimit {
        lane: String,
        active: usize,
        max: u32,
        runs: RunIds,
    },
    Pressure {
        waiting: usize,
        high: usize,
        low: usize,
    },
    Cooldown {
        until: Timestamp,
        failures: u32,
    },
    Approval {
        /// The run waiting on its approval, when the queue knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
    },
    Paused {
        by: String,
        since: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Budget {
        /// `job:<id>` or `flow:<id>`.
        scope: String,
        /// The field under `budgets:`, e.g. `messages_per_day`.
        kind: String,
        used: u64,
        limit: u64,
        /// What the job's last run used of it.
        last_run: u64,
        resets_at: Timestamp,
    },
    TickLimit {
        /// The newer slot that came due while this one waited.
        newer_slot: Timestamp,
    },
    Missed {
        /// The newer slot already due when this one was decided.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        newer_slot: Option<Timestamp>,
        /// The daemon was down; it came back then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restarted_at: Option<Timestamp>,
    },
}

/// Whether a slot was skipped or will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tense {
    Past,
    Future,
}

impl Tense {
    fn be(self) -> &'static str {
        match self {
            Tense::Past => "was",
            Tense::Future => "will be",
        }
    }

    /// `skipped` / `will be skipped`.
    pub fn skipped(self) -> &'static str {
        match self {
            Tense::Past => "skipped",
            Tense::Future => "will be skipped",
        }
    }
}

impl SkipDetail {
    pub fn reason(&self) -> SkipReason {
        match self {
            SkipDetail::Overlap { .. } => SkipReason::Overlap,
            SkipDetail::FlowLimit { .. } => SkipReason::FlowLimit,
            SkipDetail::Pressure { .. } => SkipReason::Pressure,
            SkipDetail::Cooldown { .. } => SkipReason::Cooldown,
            SkipDetail::Approval { .. } => SkipReason::Approval,
            SkipDetail::Paused { .. } => SkipReason::Paused,
            SkipDetail::Budget { .. } => SkipReason::Budget,
            SkipDetail::TickLimit { .. } => SkipReason::TickLimit,
            SkipDetail::Missed { .. } => SkipReason::Missed,
        }
    }

    /// In words, times in `tz`: `skipped: lane pricing_team was full
    /// (3/3: run a1, b2, c3)`, `will be skipped: cooldown until 12:14
    /// after 3 failures`.
    pub fn describe(&self, tense: Tense, tz: &TimeZone) -> String {
        format!("{}: {}", tense.skipped(), self.words(tense, tz))
    }

    fn words(&self, tense: Tense, tz: &TimeZone) -> String {
        let be = tense.be();
        match self {
            SkipDetail::Overlap { overlap, runs } => {
                let policy = serde_json::to_value(overlap)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                format!("job still running (overlap: {policy}; {})", runs.words())
            }
            SkipDetail::FlowLimit {
                lane,
                active,
                max,
                runs,
            } => format!("lane {lane} {be} full ({active}/{max}: {})", runs.words()),
            SkipDetail::Pressure { waiting, high, .. } => {
                format!("pressure mode ({waiting} runs waiting, on at {high})")
            }
            SkipDetail::Cooldown { until, failures } => format!(
                "cooldown until {} after {failures} failure{}",
                hm(*until, tz),
                if *failures == 1 { "" } else { "s" }
            ),
            SkipDetail::Approval { run: Some(run) } => {
                format!("an approval {be} pending (run {run})")
            }
            SkipDetail::Approval { run: None } => format!("an approval {be} pending"),
            SkipDetail::Paused { by, since, note } => {
                let mut s = format!("paused by {by} since {}", hms(*since, tz));
                if let Some(note) = note {
                    let _ = write!(s, " ({note})");
                }
                s
            }
            SkipDetail::Budget {
                scope,
                kind,
                used,
                limit,
                last_run,
                resets_at,
            } => format!(
                "budget {kind} of {} {be} used up ({used}/{limit} today, the last run used \
                 {last_run}); resets at {}",
                scope.replacen(':', " ", 1),
                hm(*resets_at, tz)
            ),
            SkipDetail::TickLimit { newer_slot } => format!(
                "held back by the tick limit until the newer slot {} came due",
                hms(*newer_slot, tz)
            ),
            SkipDetail::Missed {
                newer_slot,
                restarted_at,
            } => match (restarted_at, newer_slot) {
                (Some(at), _) => format!("missed: the daemon was down until {}", hms(*at, tz)),
                (None, Some(next)) => {
                    format!("missed: the newer slot {} was already due", hms(*next, tz))
                }
                (None, None) => "missed".to_string(),
            },
        }
    }
}

fn hm(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%H:%M").to_string()
}

fn hms(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str], total: usize) -> RunIds {
        RunIds::capped(ids.iter().copied(), total)
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn say(d: &SkipDetail, tense: Tense) -> String {
        d.describe(tense, &TimeZone::UTC)
    }

    #[test]
    fn a_full_lane_names_its_runs() {
        let d = SkipDetail::FlowLimit {
            lane: "pricing_team".into(),
            active: 3,
            max: 3,
            runs: ids(&["a1", "b2", "c3"], 3),
        };
        assert_eq!(
            say(&d, Tense::Past),
            "skipped: lane pricing_team was full (3/3: run a1, b2, c3)"
        );
        assert_eq!(
            say(&d, Tense::Future),
            "will be skipped: lane pricing_team will be full (3/3: run a1, b2, c3)"
        );
        assert_eq!(d.reason(), SkipReason::FlowLimit);
    }

    #[test]
    fn ids_are_capped_with_a_count() {
        let many = ["a", "b", "c", "d", "e", "f", "g"];
        let r = ids(&many, 9);
        assert_eq!(r.ids, vec!["a", "b", "c", "d", "e"]);
        assert_eq!(r.more, 4);
        let d = SkipDetail::Overlap {
            overlap: Overlap::BufferOne,
            runs: r,
        };
        assert_eq!(
            say(&d, Tense::Past),
            "skipped: job still running (overlap: buffer_one; run a, b, c, d, e and 4 more)"
        );
    }

    #[test]
    fn overlap_pressure_cooldown_in_the_issue_words() {
        let overlap = SkipDetail::Overlap {
            overlap: Overlap::Forbid,
            runs: ids(&["a1"], 1),
        };
        assert_eq!(
            say(&overlap, Tense::Past),
            "skipped: job still running (overlap: forbid; run a1)"
        );
        let pressure = SkipDetail::Pressure {
            waiting: 412,
            high: 300,
            low: 180,
        };
        assert_eq!(
            say(&pressure, Tense::Past),
            "skipped: pressure mode (412 runs waiting, on at 300)"
        );
        let cooldown = SkipDetail::Cooldown {
            until: ts("2026-11-22T12:14:30Z"),
            failures: 3,
        };
        assert_eq!(
            say(&cooldown, Tense::Future),
            "will be skipped: cooldown until 12:14 after 3 failures"
        );
        let jakarta = TimeZone::get("Asia/Jakarta").unwrap();
        assert_eq!(
            cooldown.describe(Tense::Past, &jakarta),
            "skipped: cooldown until 19:14 after 3 failures"
        );
    }

    #[test]
    fn approval_paused_tick_limit_missed() {
        let tz = TimeZone::UTC;
        let cases = [
            (
                SkipDetail::Approval {
                    run: Some("r9".into()),
                },
                "skipped: an approval was pending (run r9)",
            ),
            (
                SkipDetail::Approval { run: None },
                "skipped: an approval was pending",
            ),
            (
                SkipDetail::Paused {
                    by: "alice".into(),
                    since: ts("2026-11-22T10:00:00Z"),
                    note: Some("vendor outage".into()),
                },
                "skipped: paused by alice since 10:00:00 (vendor outage)",
            ),
            (
                SkipDetail::TickLimit {
                    newer_slot: ts("2026-11-22T12:05:00Z"),
                },
                "skipped: held back by the tick limit until the newer slot 12:05:00 came due",
            ),
            (
                SkipDetail::Missed {
                    newer_slot: Some(ts("2026-11-22T12:05:00Z")),
                    restarted_at: None,
                },
                "skipped: missed: the newer slot 12:05:00 was already due",
            ),
            (
                SkipDetail::Missed {
                    newer_slot: None,
                    restarted_at: Some(ts("2026-11-22T12:07:03Z")),
                },
                "skipped: missed: the daemon was down until 12:07:03",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(d.describe(Tense::Past, &tz), want);
        }
    }

    #[test]
    fn details_round_trip_as_json_tagged_by_reason() {
        let d = SkipDetail::FlowLimit {
            lane: "l".into(),
            active: 1,
            max: 1,
            runs: ids(&["a"], 1),
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["reason"], "flow_limit");
        assert_eq!(v["runs"]["ids"][0], "a");
        assert_eq!(serde_json::from_value::<SkipDetail>(v).unwrap(), d);
        assert!(
            serde_json::from_value::<SkipDetail>(serde_json::json!({"reason": "nope"})).is_err()
        );
    }
}
