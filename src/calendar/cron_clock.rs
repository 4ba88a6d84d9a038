//! A cron pattern read on the wall clock of one time zone, its wall times
//! mapped to instants through the job's DST policy.
//!
//! croner walks civil (zone-less) date-times, so it never sees a gap or a
//! fold; this module decides what each matching wall time means:
//!
//! - unambiguous: its one instant;
//! - in a gap (spring forward): `shift` gives the instant the gap ends,
//!   `skip` gives nothing;
//! - in a fold (fall back): `first` the earlier instant, `last` the later,
//!   `both` both.
//!
//! With `first` or `last` the map from wall time to instant never goes
//! backwards, so "the next slot after t" is the first mapped instant past t
//! on a forward walk of wall times. `both` is the union of the two, hence the
//! smaller of two walks.
//!
//! [`CronClock::count`] counts slots without listing them, one civil day at a
//! time, so a week of downtime of a per-second job costs seven steps.

use croner::{Cron, Weekday};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};

use super::schedule::{DstGap, DstOverlap, DstPolicy};

const DAY: i64 = 86_400;

/// Wall times a walk may look at before giving up. Only a fold or a gap
/// makes a walk pass over matches, at most one per second of its length.
const MAX_WALK: usize = 200_000;

/// Which instant of a repeated wall time a walk takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    Earlier,
    Later,
}

#[derive(Debug)]
pub(crate) struct CronClock {
    cron: Cron,
    tz: TimeZone,
    dst: DstPolicy,
    /// Bit n set when the pattern matches hour / minute / second n.
    hours: u64,
    minutes: u64,
    seconds: u64,
}

/// One change of UTC offset, in seconds: at instant `at` the offset goes
/// from `before` to `after`.
#[derive(Debug, Clone, Copy)]
struct Transition {
    at: i64,
    before: i64,
    after: i64,
}

impl CronClock {
    pub(crate) fn new(cron: Cron, tz: TimeZone, dst: DstPolicy) -> CronClock {
        let mask = |values: Vec<u16>| values.into_iter().fold(0u64, |m, v| m | 1 << v);
        CronClock {
            hours: mask(cron.pattern.hours.values()),
            minutes: mask(cron.pattern.minutes.values()),
            seconds: mask(cron.pattern.seconds.values()),
            cron,
            tz,
            dst,
        }
    }

    /// The first slot instant strictly after `after`.
    pub(crate) fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match self.dst.overlap {
            DstOverlap::First => self.walk(after, Fold::Earlier),
            DstOverlap::Last => self.walk(after, Fold::Later),
            DstOverlap::Both => {
                match (
                    self.walk(after, Fold::Earlier),
                    self.walk(after, Fold::Later),
                ) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    fn walk(&self, after: Timestamp, fold: Fold) -> Option<Timestamp> {
        let mut cursor = self.tz.to_datetime(after);
        if fold == Fold::Later {
            // `after` may sit in the first pass of a fold; the wall times
            // from the fold's start, behind `after`'s own, map to later
            // instants that are still ahead of it.
            if let AmbiguousOffset::Fold { before, after } =
                self.tz.to_ambiguous_timestamp(cursor).offset()
            {
                cursor = cursor.checked_sub(before.duration_since(after)).ok()?;
            }
        }
        let mut inclusive = true;
        for _ in 0..MAX_WALK {
            let wall = self.cron.find_next_occurrence(&cursor, inclusive).ok()?;
            inclusive = false;
            if let Some(at) = self.resolve(wall, fold)
                && at > after
            {
                return Some(at);
            }
            cursor = wall;
        }
        None
    }

    /// The instant a matching wall time stands for, after the DST policy.
    fn resolve(&self, wall: DateTime, fold: Fold) -> Option<Timestamp> {
        match self.tz.to_ambiguous_timestamp(wall).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok(),
            AmbiguousOffset::Gap { after, .. } => match self.dst.gap {
                DstGap::Skip => None,
                DstGap::Shift => self.gap_end(wall, after),
            },
            AmbiguousOffset::Fold { before, after } => match fold {
                Fold::Earlier => before.to_timestamp(wall).ok(),
                Fold::Later => after.to_timestamp(wall).ok(),
            },
        }
    }

    /// The first instant after the gap `wall` falls in: the transition.
    fn gap_end(&self, wall: DateTime, after: Offset) -> Option<Timestamp> {
        // Read with the later offset, a wall time in the gap lands before
        // the transition, so the next transition is the one that made it.
        let probe = after.to_timestamp(wall).ok()?;
        self.tz.following(probe).next().map(|t| t.timestamp())
    }

    /// How many slots fall on whole-second instants in `[a, b]`.
    pub(crate) fn count(&self, a: i64, b: i64) -> u64 {
        if a > b {
            return 0;
        }
        let transitions = self.transitions(a.saturating_sub(DAY), b.saturating_add(DAY));
        // Every instant whose wall time matches, one offset at a time.
        let mut total = 0u64;
        let mut from = a;
        for t in transitions.iter().filter(|t| a < t.at && t.at <= b) {
            total += self.count_instants(from, t.at - 1, t.before);
            from = t.at;
        }
        total += self.count_instants(from, b, self.offset_at(from));
        // Then what the DST policy changes at each transition.
        for t in &transitions {
            let delta = (t.before - t.after).abs();
            if t.after < t.before {
                // A fold: the same wall times again during [at, at + delta).
                let (lo, hi, offset) = match self.dst.overlap {
                    DstOverlap::Both => continue,
                    DstOverlap::First => (t.at, t.at + delta - 1, t.after),
                    DstOverlap::Last => (t.at - delta, t.at - 1, t.before),
                };
                let removed = self.count_instants(lo.max(a), hi.min(b), offset);
                total = total.saturating_sub(removed);
            } else if t.after > t.before && self.dst.gap == DstGap::Shift && (a..=b).contains(&t.at)
            {
                // A gap: its matching wall times all become one slot at the
                // transition, unless the first wall time after it matches.
                let in_gap = self.count_walls(t.at + t.before, t.at + t.after - 1);
                if in_gap > 0 && !self.matches_wall(t.at + t.after) {
                    total += 1;
                }
            }
        }
        total
    }

    fn transitions(&self, from: i64, to: i64) -> Vec<Transition> {
        let Ok(start) = Timestamp::from_second(from) else {
            return Vec::new();
        };
        self.tz
            .following(start)
            .map(|t| t.timestamp().as_second())
            .take_while(|&at| at <= to)
            .map(|at| Transition {
                at,
                before: self.offset_at(at - 1),
                after: self.offset_at(at),
            })
            .collect()
    }

    fn offset_at(&self, second: i64) -> i64 {
        Timestamp::from_second(second)
            .map(|t| i64::from(self.tz.to_offset(t).seconds()))
            .unwrap_or(0)
    }

    /// Matching wall times of the instants in `[a, b]`, all read with `offset`.
    fn count_instants(&self, a: i64, b: i64, offset: i64) -> u64 {
        self.count_walls(a + offset, b + offset)
    }

    /// Matching wall times in `[a, b]`, counted as seconds of a zone-less
    /// timeline (wall seconds since 1970-01-01T00:00:00).
    fn count_walls(&self, a: i64, b: i64) -> u64 {
        if a > b {
            return 0;
        }
        let (first_day, last_day) = (a.div_euclid(DAY), b.div_euclid(DAY));
        let Some(mut date) = date_of_day(first_day) else {
            return 0;
        };
        let mut total = 0;
        for day in first_day..=last_day {
            if self.matches_day(date) {
                let lo = if day == first_day {
                    a.rem_euclid(DAY)
                } else {
                    0
                };
                let hi = if day == last_day {
                    b.rem_euclid(DAY)
                } else {
                    DAY - 1
                };
                total += self.times_before(hi + 1) - self.times_before(lo);
            }
            if day < last_day {
                let Ok(next) = date.tomorrow() else { break };
                date = next;
            }
        }
        total
    }

    fn matches_wall(&self, wall: i64) -> bool {
        let Some(date) = date_of_day(wall.div_euclid(DAY)) else {
            return false;
        };
        let second = wall.rem_euclid(DAY);
        self.matches_day(date) && self.times_before(second + 1) > self.times_before(second)
    }

    fn matches_day(&self, date: Date) -> bool {
        let (year, month, day) = (
            i32::from(date.year()),
            date.month() as u32,
            date.day() as u32,
        );
        let weekday = Weekday::from_days_from_sunday(date.weekday().to_sunday_zero_offset() as u32);
        let pattern = &self.cron.pattern;
        pattern.month_match(month).unwrap_or(false)
            && pattern
                .day_match(year, month, day, weekday)
                .unwrap_or(false)
    }

    /// Matching times of day strictly before `second` (0..=86400).
    fn times_before(&self, second: i64) -> u64 {
        let below = |mask: u64, n: i64| u64::from((mask & ((1u64 << n) - 1)).count_ones());
        let has = |mask: u64, n: i64| n < 64 && mask & (1 << n) != 0;
        let (h, m, s) = (second / 3600, second % 3600 / 60, second % 60);
        let per_minute = u64::from(self.seconds.count_ones());
        let per_hour = u64::from(self.minutes.count_ones()) * per_minute;
        let mut total = below(self.hours, h) * per_hour;
        if has(self.hours, h) {
            total += below(self.minutes, m) * per_minute;
            if has(self.minutes, m) {
                total += below(self.seconds, s);
            }
        }
        total
    }
}

fn date_of_day(day: i64) -> Option<Date> {
    let at = Timestamp::from_second(day.checked_mul(DAY)?).ok()?;
    Some(TimeZone::UTC.to_datetime(at).date())
}

/// A civil date-time as seconds of the zone-less wall timeline.
#[cfg(test)]
pub(crate) fn wall_seconds(wall: DateTime) -> i64 {
    wall.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use croner::parser::{CronParser, Seconds};

    fn clock(expr: &str, zone: &str, gap: DstGap, overlap: DstOverlap) -> CronClock {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .unwrap();
        CronClock::new(
            cron,
            TimeZone::get(zone).unwrap(),
            DstPolicy { gap, overlap },
        )
    }

    fn enumerate(c: &CronClock, a: i64, b: i64) -> u64 {
        let mut n = 0;
        let mut at = Timestamp::from_second(a - 1).unwrap();
        while let Some(next) = c.next_after(at) {
            if next.as_second() > b {
                break;
            }
            n += 1;
            at = next;
        }
        n
    }

    #[test]
    fn times_before_counts_the_time_of_day_grid() {
        let c = clock("0 */15 9-10 * * *", "UTC", DstGap::Shift, DstOverlap::First);
        assert_eq!(c.times_before(0), 0);
        assert_eq!(c.times_before(9 * 3600), 0);
        assert_eq!(c.times_before(9 * 3600 + 1), 1);
        assert_eq!(c.times_before(9 * 3600 + 15 * 60 + 1), 2);
        assert_eq!(c.times_before(DAY), 8);
        assert!(c.matches_wall(wall_seconds("2026-01-01T10:45:00".parse().unwrap())));
        assert!(!c.matches_wall(wall_seconds("2026-01-01T10:46:00".parse().unwrap())));
    }

    #[test]
    fn count_agrees_with_enumeration_across_dst_transitions() {
        let ranges = [
            (
                "Europe/Berlin",
                "2026-03-27T00:00:00Z",
                "2026-03-31T00:00:00Z",
            ),
            (
                "Europe/Berlin",
                "2026-10-23T00:00:00Z",
                "2026-10-27T00:00:00Z",
            ),
            (
                "America/New_York",
                "2026-03-07T00:00:00Z",
                "2026-03-10T00:00:00Z",
            ),
            (
                "America/New_York",
                "2026-10-31T00:00:00Z",
                "2026-11-03T00:00:00Z",
            ),
            (
                "Australia/Sydney",
                "2026-04-03T00:00:00Z",
                "2026-04-07T00:00:00Z",
            ),
            (
                "Australia/Sydney",
                "2026-10-02T00:00:00Z",
                "2026-10-06T00:00:00Z",
            ),
            (
                "Australia/Lord_Howe",
                "2026-04-03T00:00:00Z",
                "2026-04-07T00:00:00Z",
            ),
        ];
        let exprs = [
            "30 2 * * *",
            "*/10 * * * *",
            "0 0,30 1-3 * * *",
            "15 1 * * *",
        ];
        for (zone, from, to) in ranges {
            let a = from.parse::<Timestamp>().unwrap().as_second();
            let b = to.parse::<Timestamp>().unwrap().as_second();
            for expr in exprs {
                for gap in [DstGap::Shift, DstGap::Skip] {
                    for overlap in [DstOverlap::First, DstOverlap::Last, DstOverlap::Both] {
                        let c = clock(expr, zone, gap, overlap);
                        // Every sub-range that starts or ends near a transition.
                        for (lo, hi) in [(a, b), (a + 3600 * 25, b), (a, b - 3600 * 49)] {
                            assert_eq!(
                                c.count(lo, hi),
                                enumerate(&c, lo, hi),
                                "{zone} {expr} {gap:?} {overlap:?} [{lo}, {hi}]"
                            );
                        }
                    }
                }
            }
        }
    }
}
