//! Slot math: when a job's schedule fires. PURE: no clock, no IO; every
//! function takes the instants it reasons about.
//!
//! A slot has a nominal time, its identity (the run key is `job@nominal`),
//! and a fire time: the nominal time plus the job's jitter, a fixed offset
//! derived from its id. Interval schedules count from the Unix epoch, or from
//! `start_at`, and ignore time zones. Cron schedules run on the wall clock of
//! their zone; the `dst` policy says what a skipped or repeated wall time
//! means (see `cron_clock`). `start_at` and `end_at` bound both kinds.
//!
//! After downtime, [`SlotRule::missed`] sorts the slots nobody handled into
//! runs and skips by the `misfire` policy, counting rather than listing when
//! there are many: a per-second job down for a week has 604,800 of them.

use std::fmt;
use std::sync::Arc;

use croner::parser::{CronParser, Seconds};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};
use sha2::{Digest, Sha256};

use super::cron_clock::CronClock;
use super::cron_fields;
use super::schedule::{DstPolicy, Misfire, Schedule};

/// [`SlotRule::missed`] lists at most this many slots; it counts the rest.
pub const MISSED_LIST_CAP: u64 = 10_000;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A schedule that does not compile, and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    /// `cron`, `timezone`, `every`, `interval_sec`, `jitter_sec`, `start_at`,
    /// `end_at`, or `schedule` for the block as a whole.
    pub field: &'static str,
    /// One user-facing line.
    pub message: String,
}

impl ScheduleError {
    fn new(field: &'static str, message: impl Into<String>) -> ScheduleError {
        ScheduleError {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ScheduleError {}

/// One occurrence of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The slot's identity; after a DST gap under `shift`, the gap's end.
    pub nominal: Timestamp,
    /// When to start it: `nominal` plus the job's jitter.
    pub fire_at: Timestamp,
}

/// Slots missed while nobody was scheduling, sorted by the misfire policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misfired {
    /// Slots to run now, oldest first.
    pub run: Vec<Slot>,
    /// Skipped slots, oldest first: the newest ones, up to a cap.
    pub skipped: Vec<Slot>,
    /// Skipped slots older than those listed in `skipped`.
    pub skipped_more: u64,
}

impl Misfired {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.len() as u64 + self.skipped_more
    }
}

/// A compiled schedule. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SlotRule {
    kind: Kind,
    tz: TimeZone,
    start_at: Option<Timestamp>,
    end_at: Option<Timestamp>,
    jitter: SignedDuration,
    misfire: Misfire,
    catchup_window: SignedDuration,
    max_catchup_runs: u32,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Slots at `anchor + k * step`, in nanoseconds since the Unix epoch.
    Interval {
        anchor: i128,
        step: i128,
    },
    Cron(Arc<CronClock>),
}

impl SlotRule {
    /// Checks and compiles a job's `schedule:` block.
    pub fn compile(schedule: &Schedule, job_id: &str) -> Result<SlotRule, ScheduleError> {
        let tz = match schedule.timezone.as_deref() {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                ScheduleError::new(
                    "timezone",
                    format!(
                        "unknown time zone '{name}': use an IANA name such as Europe/Berlin or UTC"
                    ),
                )
            })?,
        };
        let start_at = parse_instant("start_at", schedule.start_at.as_deref())?;
        let end_at = parse_instant("end_at", schedule.end_at.as_deref())?;
        if let (Some(start), Some(end)) = (start_at, end_at)
            && end <= start
        {
            return Err(ScheduleError::new(
                "end_at",
                format!("end_at {end} must be after start_at {start}"),
            ));
        }
        let kind = compile_kind(schedule, start_at, &tz)?;
        let jitter = jitter_for(job_id, schedule.jitter_sec.unwrap_or(0), &kind)?;
        let window = i64::try_from(schedule.catchup_window_sec).unwrap_or(i64::MAX);
        Ok(SlotRule {
            kind,
            tz,
            start_at,
            end_at,
            jitter,
            misfire: schedule.misfire,
            catchup_window: SignedDuration::from_secs(window),
            max_catchup_runs: schedule.max_catchup_runs,
        })
    }

    /// The first `n` slots strictly after `after`, in increasing order.
    pub fn next_slots(&self, after: Timestamp, n: usize) -> Vec<Slot> {
        let mut slots = Vec::with_capacity(n.min(1024));
        let mut at = after;
        while slots.len() < n {
            let Some(slot) = self.next_slot(at) else {
                break;
            };
            at = slot.nominal;
            slots.push(slot);
        }
        slots
    }

    /// The next slot strictly after `after`, or `None` when the window has ended.
    pub fn next_slot(&self, after: Timestamp) -> Option<Slot> {
        let after = match self.start_at {
            Some(start) => after.max(just_before(start)),
            None => after,
        };
        let nominal = match &self.kind {
            Kind::Interval { anchor, step } => {
                let k = (after.as_nanosecond() - anchor).div_euclid(*step) + 1;
                Timestamp::from_nanosecond(anchor + k * step).ok()?
            }
            Kind::Cron(clock) => clock.next_after(after)?,
        };
        if self.end_at.is_some_and(|end| nominal > end) {
            return None;
        }
        Some(Slot {
            nominal,
            fire_at: nominal.checked_add(self.jitter).unwrap_or(nominal),
        })
    }

    /// Slots with nominal time in `(last_slot, now]`, sorted by the misfire
    /// policy. `last_slot` is the nominal time of the last slot that got an
    /// outcome; `None` (never ran) misses nothing. Slots older than
    /// `now - catchup_window_sec` are always skipped. At most
    /// [`MISSED_LIST_CAP`] slots are listed; older skips are only counted.
    pub fn missed(&self, last_slot: Option<Timestamp>, now: Timestamp) -> Misfired {
        let Some(last) = last_slot else {
            return Misfired::default();
        };
        let total = self.count_between(last, now);
        if total == 0 {
            return Misfired::default();
        }
        let cutoff = now
            .checked_sub(self.catchup_window)
            .unwrap_or(Timestamp::MIN);
        let young = self.count_between(last.max(just_before(cutoff)), now);
        let runs = match self.misfire {
            Misfire::Skip => 0,
            Misfire::RunOnce => 1,
            Misfire::RunAll => u64::from(self.max_catchup_runs),
        }
        .min(young)
        .min(MISSED_LIST_CAP);
        // The runs are the newest slots; the listed skips come right before.
        let run_from = self.seek_back(last, now, runs);
        let skipped = total - runs;
        let listed = skipped.min(MISSED_LIST_CAP - runs);
        let skip_from = self.seek_back(last, run_from, listed);
        Misfired {
            run: self.slots_between(run_from, now, runs),
            skipped: self.slots_between(skip_from, run_from, listed),
            skipped_more: skipped - listed,
        }
    }

    /// The zone cron slots are read in; UTC when none is set.
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// The job's fixed offset from a slot's nominal time to its fire time.
    pub fn jitter(&self) -> SignedDuration {
        self.jitter
    }

    /// How many slots have a nominal time in `(lo, hi]`, without listing them.
    pub fn count_between(&self, lo: Timestamp, hi: Timestamp) -> u64 {
        let lo = match self.start_at {
            Some(start) => lo.max(just_before(start)),
            None => lo,
        };
        let hi = match self.end_at {
            Some(end) => hi.min(end),
            None => hi,
        };
        if hi <= lo {
            return 0;
        }
        match &self.kind {
            Kind::Interval { anchor, step } => {
                let index = |t: Timestamp| (t.as_nanosecond() - anchor).div_euclid(*step);
                u64::try_from(index(hi) - index(lo)).unwrap_or(0)
            }
            Kind::Cron(clock) => {
                // Cron slots fall on whole seconds: those in (lo, hi].
                let first = lo.as_nanosecond().div_euclid(NANOS_PER_SECOND) + 1;
                let last = hi.as_nanosecond().div_euclid(NANOS_PER_SECOND);
                clock.count(first as i64, last as i64)
            }
        }
    }

    /// The latest `p` in `[lo, hi]` with exactly `k` slots in `(p, hi]`,
    /// given that `(lo, hi]` holds at least `k`.
    fn seek_back(&self, lo: Timestamp, hi: Timestamp, k: u64) -> Timestamp {
        if k == 0 {
            return hi;
        }
        let (lo_ns, hi_ns) = (lo.as_nanosecond(), hi.as_nanosecond());
        let enough = |p: i128| self.count_between(from_nanos(p), hi) >= k;
        // Gallop back from `hi` until the range holds k slots, then bisect
        // between the last probe that fell short and the first that did not.
        let mut short = hi_ns;
        let mut step = NANOS_PER_SECOND;
        let mut enough_at = loop {
            let probe = hi_ns - step;
            if probe <= lo_ns {
                break lo_ns;
            }
            if enough(probe) {
                break probe;
            }
            short = probe;
            step *= 2;
        };
        while short - enough_at > 1 {
            let mid = enough_at + (short - enough_at) / 2;
            if enough(mid) {
                enough_at = mid;
            } else {
                short = mid;
            }
        }
        from_nanos(enough_at)
    }

    /// The first `limit` slots in `(lo, hi]`.
    fn slots_between(&self, lo: Timestamp, hi: Timestamp, limit: u64) -> Vec<Slot> {
        let mut slots = Vec::new();
        let mut at = lo;
        while (slots.len() as u64) < limit
            && let Some(slot) = self.next_slot(at).filter(|s| s.nominal <= hi)
        {
            at = slot.nominal;
            slots.push(slot);
        }
        slots
    }
}

/// Exactly one of `interval_sec`, `every` and `cron`. Intervals count from
/// `start_at` when it is set, else from the Unix epoch.
fn compile_kind(
    schedule: &Schedule,
    start_at: Option<Timestamp>,
    tz: &TimeZone,
) -> Result<Kind, ScheduleError> {
    let anchor = start_at.map_or(0, |s| s.as_nanosecond());
    match (schedule.interval_sec, &schedule.every, &schedule.cron) {
        (Some(0), None, None) => Err(ScheduleError::new(
            "interval_sec",
            "interval_sec must be at least 1",
        )),
        (Some(seconds), None, None) => Ok(Kind::Interval {
            anchor,
            step: i128::from(seconds) * NANOS_PER_SECOND,
        }),
        (None, Some(every), None) => Ok(Kind::Interval {
            anchor,
            step: parse_every(every).map_err(|m| ScheduleError::new("every", m))?,
        }),
        (None, None, Some(expr)) => Ok(Kind::Cron(Arc::new(compile_cron(
            expr,
            tz.clone(),
            schedule.dst,
        )?))),
        (None, None, None) => Err(ScheduleError::new(
            "schedule",
            "set one of interval_sec, every or cron",
        )),
        (interval, every, cron) => {
            let set: Vec<&str> = [
                interval.map(|_| "interval_sec"),
                every.as_ref().map(|_| "every"),
                cron.as_ref().map(|_| "cron"),
            ]
            .into_iter()
            .flatten()
            .collect();
            Err(ScheduleError::new(
                "schedule",
                format!(
                    "set exactly one of interval_sec, every or cron, not {}",
                    set.join(" and ")
                ),
            ))
        }
    }
}

fn compile_cron(expr: &str, tz: TimeZone, dst: DstPolicy) -> Result<CronClock, ScheduleError> {
    cron_fields::check(expr).map_err(|m| ScheduleError::new("cron", m))?;
    // 5 or 6 fields; a day matches its day of month OR its weekday (POSIX).
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .dom_and_dow(false)
        .build()
        .parse(expr.trim())
        .map_err(|e| {
            ScheduleError::new(
                "cron",
                format!("'{expr}' is not a valid cron expression: {e}"),
            )
        })?;
    // `0 0 30 2 *` parses, but no date has a February 30th.
    let reference = jiff::civil::date(2000, 1, 1).at(0, 0, 0, 0);
    if cron.find_next_occurrence(&reference, true).is_err() {
        return Err(ScheduleError::new(
            "cron",
            format!("'{expr}' never fires: no date has that day of the month in those months"),
        ));
    }
    Ok(CronClock::new(cron, tz, dst))
}

/// A positive whole number of seconds, as nanoseconds: `30s`, `5m`,
/// `1h30m`, `90s`, `2h`, and `1d` or `1w` read as 24-hour days.
fn parse_every(text: &str) -> Result<i128, String> {
    let text = text.trim();
    let duration = text
        .parse::<SignedDuration>()
        .ok()
        .or_else(|| {
            let span = text.parse::<Span>().ok()?;
            span.to_duration(SpanRelativeTo::days_are_24_hours()).ok()
        })
        .ok_or_else(|| format!("'{text}' is not a duration: write e.g. 30s, 5m, 1h30m or 2h"))?;
    if duration <= SignedDuration::ZERO {
        return Err(format!("'{text}' must be a positive duration"));
    }
    if duration.subsec_nanos() != 0 {
        return Err(format!("'{text}' must be a whole number of seconds"));
    }
    Ok(duration.as_nanos())
}

fn parse_instant(
    field: &'static str,
    text: Option<&str>,
) -> Result<Option<Timestamp>, ScheduleError> {
    text.map(|t| {
        t.trim().parse::<Timestamp>().map_err(|_| {
            ScheduleError::new(
                field,
                format!("'{t}' is not an RFC 3339 instant such as 2026-11-24T00:00:00Z"),
            )
        })
    })
    .transpose()
}

/// A fixed offset in `[0, jitter_sec)`, to the millisecond, from a SHA-256
/// of the job id: the same on every run and every platform.
fn jitter_for(job_id: &str, jitter_sec: u64, kind: &Kind) -> Result<SignedDuration, ScheduleError> {
    if jitter_sec == 0 {
        return Ok(SignedDuration::ZERO);
    }
    if let Kind::Interval { step, .. } = kind
        && i128::from(jitter_sec) * NANOS_PER_SECOND >= *step
    {
        return Err(ScheduleError::new(
            "jitter_sec",
            format!(
                "jitter_sec {jitter_sec} must be less than the interval ({} s)",
                step / NANOS_PER_SECOND
            ),
        ));
    }
    let digest = Sha256::digest(job_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let millis = u128::from(u64::from_be_bytes(head)) % (u128::from(jitter_sec) * 1000);
    i64::try_from(millis)
        .map(SignedDuration::from_millis)
        .map_err(|_| {
            ScheduleError::new(
                "jitter_sec",
                format!("jitter_sec {jitter_sec} is too large"),
            )
        })
}

fn just_before(t: Timestamp) -> Timestamp {
    t.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(t)
}

fn from_nanos(n: i128) -> Timestamp {
    Timestamp::from_nanosecond(n).unwrap_or(if n < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::schedule::{DstGap, DstOverlap};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A schedule with the defaults serde gives a YAML `schedule:` block
    /// (`Schedule::default()` zeroes the catchup window and run cap).
    fn base() -> Schedule {
        Schedule {
            catchup_window_sec: crate::calendar::schedule::default_catchup_window_sec(),
            max_catchup_runs: crate::calendar::schedule::default_max_catchup_runs(),
            ..Schedule::default()
        }
    }

    fn interval(seconds: u64) -> Schedule {
        Schedule {
            interval_sec: Some(seconds),
            ..base()
        }
    }

    fn cron(expr: &str, zone: &str) -> Schedule {
        Schedule {
            cron: Some(expr.to_string()),
            timezone: Some(zone.to_string()),
            ..base()
        }
    }

    fn rule(schedule: &Schedule) -> SlotRule {
        SlotRule::compile(schedule, "job-a").unwrap()
    }

    fn error(schedule: &Schedule) -> ScheduleError {
        SlotRule::compile(schedule, "job-a").unwrap_err()
    }

    /// Nominal times of the first `n` slots after `after`, as RFC 3339 UTC.
    fn nominals(rule: &SlotRule, after: &str, n: usize) -> Vec<String> {
        rule.next_slots(ts(after), n)
            .iter()
            .map(|s| s.nominal.to_string())
            .collect()
    }

    fn dst_rule(expr: &str, zone: &str, gap: DstGap, overlap: DstOverlap) -> SlotRule {
        let mut schedule = cron(expr, zone);
        schedule.dst = DstPolicy { gap, overlap };
        rule(&schedule)
    }

    // ---- DST: one table per zone, gap and overlap, every policy ----------

    use DstGap::{Shift, Skip};
    use DstOverlap::{Both, First, Last};

    /// (cron, after, gap, overlap, the expected nominal times). Times are
    /// 2026 UTC, written `MM-DDTHH:MM`, so that a row fits on a line.
    type DstRow = (&'static str, &'static str, DstGap, DstOverlap, &'static str);

    fn check_dst_table(zone: &str, rows: &[DstRow]) {
        let utc = |t: &str| format!("2026-{t}:00Z");
        for (expr, after, gap, overlap, expected) in rows {
            let expected: Vec<String> = expected.split_whitespace().map(utc).collect();
            let r = dst_rule(expr, zone, *gap, *overlap);
            assert_eq!(
                nominals(&r, &utc(after), expected.len()),
                expected,
                "{zone} '{expr}' after {after} gap={gap:?} overlap={overlap:?}"
            );
        }
    }

    #[test]
    fn dst_europe_berlin() {
        // Gap: 2026-03-29 02:00 CET -> 03:00 CEST, at 01:00Z.
        // Fold: 2026-10-25 03:00 CEST -> 02:00 CET, at 01:00Z; 02:xx happens twice.
        #[rustfmt::skip]
        let rows: &[DstRow] = &[
            ("30 2 * * *", "03-27T12:00", Shift, First, "03-28T01:30 03-29T01:00 03-30T00:30"),
            ("30 2 * * *", "03-27T12:00", Skip, First,  "03-28T01:30 03-30T00:30 03-31T00:30"),
            ("30 2 * * *", "10-23T12:00", Shift, First, "10-24T00:30 10-25T00:30 10-26T01:30"),
            ("30 2 * * *", "10-23T12:00", Shift, Last,  "10-24T00:30 10-25T01:30 10-26T01:30"),
            ("30 2 * * *", "10-24T12:00", Shift, Both,  "10-25T00:30 10-25T01:30 10-26T01:30"),
        ];
        check_dst_table("Europe/Berlin", rows);
    }

    #[test]
    fn dst_america_new_york() {
        // Gap: 2026-03-08 02:00 EST -> 03:00 EDT, at 07:00Z.
        // Fold: 2026-11-01 02:00 EDT -> 01:00 EST, at 06:00Z; 01:xx happens twice.
        #[rustfmt::skip]
        let rows: &[DstRow] = &[
            ("30 2 * * *", "03-06T12:00", Shift, First, "03-07T07:30 03-08T07:00 03-09T06:30"),
            ("30 2 * * *", "03-06T12:00", Skip, First,  "03-07T07:30 03-09T06:30 03-10T06:30"),
            ("30 1 * * *", "10-30T12:00", Shift, First, "10-31T05:30 11-01T05:30 11-02T06:30"),
            ("30 1 * * *", "10-30T12:00", Shift, Last,  "10-31T05:30 11-01T06:30 11-02T06:30"),
            ("30 1 * * *", "10-31T12:00", Shift, Both,  "11-01T05:30 11-01T06:30 11-02T06:30"),
            // Half-hourly through the fold: `both` interleaves the two passes.
            ("*/30 * * * *", "11-01T04:00", Shift, First, "11-01T04:30 11-01T05:00 11-01T05:30 11-01T07:00"),
            ("*/30 * * * *", "11-01T04:00", Shift, Last,  "11-01T04:30 11-01T06:00 11-01T06:30 11-01T07:00"),
            ("*/30 * * * *", "11-01T04:50", Shift, Both,  "11-01T05:00 11-01T05:30 11-01T06:00 11-01T06:30"),
        ];
        check_dst_table("America/New_York", rows);
    }

    #[test]
    fn dst_australia_sydney() {
        // Southern hemisphere, the other way round.
        // Fold: 2026-04-05 03:00 AEDT -> 02:00 AEST, at 04-04T16:00Z.
        // Gap: 2026-10-04 02:00 AEST -> 03:00 AEDT, at 10-03T16:00Z.
        #[rustfmt::skip]
        let rows: &[DstRow] = &[
            ("30 2 * * *", "04-03T12:00", Shift, First, "04-03T15:30 04-04T15:30 04-05T16:30"),
            ("30 2 * * *", "04-03T12:00", Shift, Last,  "04-03T15:30 04-04T16:30 04-05T16:30"),
            ("30 2 * * *", "04-04T12:00", Shift, Both,  "04-04T15:30 04-04T16:30 04-05T16:30"),
            ("30 2 * * *", "10-02T12:00", Shift, First, "10-02T16:30 10-03T16:00 10-04T15:30"),
            ("30 2 * * *", "10-02T12:00", Skip, First,  "10-02T16:30 10-04T15:30 10-05T15:30"),
        ];
        check_dst_table("Australia/Sydney", rows);
    }

    #[test]
    fn wall_times_sharing_a_gap_make_one_slot() {
        // 02:00, 02:15, 02:30, 02:45 and 03:00 all mean 01:00Z on 2026-03-29.
        let r = dst_rule("*/15 2-3 * * *", "Europe/Berlin", Shift, First);
        assert_eq!(
            nominals(&r, "2026-03-29T00:00:00Z", 4),
            [
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:15:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T01:45:00Z",
            ]
        );
        let r = dst_rule("0,30 2 * * *", "Europe/Berlin", Shift, First);
        assert_eq!(
            nominals(&r, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:00:00Z",
                "2026-03-30T00:30:00Z",
            ]
        );
    }

    #[test]
    fn next_slot_from_inside_a_fold_keeps_its_pass() {
        // NY 2026-11-01: 05:10Z is 01:10 EDT (first pass), 06:10Z is 01:10 EST (second).
        let last = dst_rule("30 1 * * *", "America/New_York", Shift, Last);
        assert_eq!(
            nominals(&last, "2026-11-01T05:10:00Z", 1),
            ["2026-11-01T06:30:00Z"]
        );
        assert_eq!(
            nominals(&last, "2026-11-01T05:40:00Z", 1),
            ["2026-11-01T06:30:00Z"]
        );
        let first = dst_rule("30 1 * * *", "America/New_York", Shift, First);
        assert_eq!(
            nominals(&first, "2026-11-01T06:10:00Z", 1),
            ["2026-11-02T06:30:00Z"]
        );
        let both = dst_rule("30 1 * * *", "America/New_York", Shift, Both);
        assert_eq!(
            nominals(&both, "2026-11-01T05:40:00Z", 2),
            ["2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    /// The `cron` crate skipped a `30 2 * * *` job on a spring-forward day
    /// and ran it twice on fall-back (DESIGN.md, section 6).
    #[test]
    fn regression_cron_crate_skipped_0230_on_spring_forward_and_ran_it_twice_on_fall_back() {
        let r = dst_rule("30 2 * * *", "Europe/Berlin", Shift, First);
        let spring = r.next_slots(ts("2026-03-28T12:00:00Z"), 2);
        assert_eq!(spring[0].nominal, ts("2026-03-29T01:00:00Z"), "not skipped");
        assert_eq!(spring[1].nominal, ts("2026-03-30T00:30:00Z"));
        let fall = r.next_slots(ts("2026-10-24T12:00:00Z"), 2);
        assert_eq!(fall[0].nominal, ts("2026-10-25T00:30:00Z"));
        assert_eq!(fall[1].nominal, ts("2026-10-26T01:30:00Z"), "not twice");
    }

    // ---- cron syntax and semantics ---------------------------------------

    #[test]
    fn five_and_six_field_cron() {
        let five = rule(&cron("*/20 * * * *", "UTC"));
        assert_eq!(
            nominals(&five, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:20:00Z",
                "2026-01-01T00:40:00Z",
                "2026-01-01T01:00:00Z",
            ]
        );
        let six = rule(&cron("*/20 * * * * *", "UTC"));
        assert_eq!(
            nominals(&six, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z",
            ]
        );
    }

    #[test]
    fn ranges_steps_lists_and_names() {
        // 2026-01-02 is a Friday.
        let r = rule(&cron("0 9-17/4 * * MON-FRI", "UTC"));
        assert_eq!(
            nominals(&r, "2026-01-02T10:00:00Z", 4),
            [
                "2026-01-02T13:00:00Z",
                "2026-01-02T17:00:00Z",
                "2026-01-05T09:00:00Z",
                "2026-01-05T13:00:00Z",
            ]
        );
        let r = rule(&cron("15,45 6 * jan,feb *", "UTC"));
        assert_eq!(
            nominals(&r, "2026-01-31T07:00:00Z", 3),
            [
                "2026-02-01T06:15:00Z",
                "2026-02-01T06:45:00Z",
                "2026-02-02T06:15:00Z",
            ]
        );
        let r = rule(&cron("@hourly", "UTC"));
        assert_eq!(
            nominals(&r, "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T01:00:00Z"]
        );
        let r = rule(&cron("0 0 L * *", "UTC"));
        assert_eq!(
            nominals(&r, "2026-02-01T00:00:00Z", 1),
            ["2026-02-28T00:00:00Z"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // POSIX: the 13th OR a Friday. January 2026: Fridays 2, 9, 16, 23, 30.
        let r = rule(&cron("0 0 13 * 5", "UTC"));
        assert_eq!(
            nominals(&r, "2026-01-01T00:00:00Z", 6),
            [
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z",
                "2026-01-16T00:00:00Z",
                "2026-01-23T00:00:00Z",
                "2026-01-30T00:00:00Z",
            ]
        );
    }

    #[test]
    fn cron_runs_on_the_wall_clock_of_its_zone() {
        let r = rule(&cron("0 7 * * *", "Asia/Jakarta"));
        assert_eq!(
            nominals(&r, "2026-01-01T00:00:00Z", 2),
            ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]
        );
        assert_eq!(r.timezone(), &TimeZone::get("Asia/Jakarta").unwrap());
        assert_eq!(rule(&interval(60)).timezone(), &TimeZone::UTC);
    }

    #[test]
    fn black_friday_cron_is_rejected_naming_the_field() {
        let e = error(&cron("0 9 * * 11-24", "Asia/Jakarta"));
        assert_eq!(e.field, "cron");
        assert_eq!(e.message, "day-of-week 11-24 is out of range (0-7)");
        assert_eq!(
            e.to_string(),
            "cron: day-of-week 11-24 is out of range (0-7)"
        );
    }

    #[test]
    fn compile_rejects_what_cannot_run() {
        let cases: Vec<(Schedule, &str, &str)> = vec![
            (
                cron("0 7 * * *", "Mars/Olympus_Mons"),
                "timezone",
                "unknown time zone 'Mars/Olympus_Mons': use an IANA name such as Europe/Berlin or UTC",
            ),
            (
                cron("0 0 30 2 *", "UTC"),
                "cron",
                "'0 0 30 2 *' never fires: no date has that day of the month in those months",
            ),
            (base(), "schedule", "set one of interval_sec, every or cron"),
            (
                Schedule {
                    cron: Some("0 7 * * *".into()),
                    interval_sec: Some(30),
                    ..base()
                },
                "schedule",
                "set exactly one of interval_sec, every or cron, not interval_sec and cron",
            ),
            (
                interval(0),
                "interval_sec",
                "interval_sec must be at least 1",
            ),
            (
                Schedule {
                    jitter_sec: Some(60),
                    ..interval(60)
                },
                "jitter_sec",
                "jitter_sec 60 must be less than the interval (60 s)",
            ),
            (
                Schedule {
                    start_at: Some("tomorrow".into()),
                    ..interval(60)
                },
                "start_at",
                "'tomorrow' is not an RFC 3339 instant such as 2026-11-24T00:00:00Z",
            ),
            (
                Schedule {
                    start_at: Some("2026-11-24T00:00:00Z".into()),
                    end_at: Some("2026-11-23T00:00:00Z".into()),
                    ..interval(60)
                },
                "end_at",
                "end_at 2026-11-23T00:00:00Z must be after start_at 2026-11-24T00:00:00Z",
            ),
        ];
        for (schedule, field, message) in cases {
            let e = error(&schedule);
            assert_eq!((e.field, e.message.as_str()), (field, message));
        }
        for (every, message) in [
            (
                "soon",
                "'soon' is not a duration: write e.g. 30s, 5m, 1h30m or 2h",
            ),
            ("0s", "'0s' must be a positive duration"),
            ("-5m", "'-5m' must be a positive duration"),
            ("1.5s", "'1.5s' must be a whole number of seconds"),
        ] {
            let e = error(&Schedule {
                every: Some(every.into()),
                ..base()
            });
            assert_eq!((e.field, e.message.as_str()), ("every", message));
        }
    }

    #[test]
    fn compile_accepts_the_whole_cron_grammar() {
        for expr in [
            "0 0 LW * *",
            "0 0 15W * *",
            "0 0 * * 5L",
            "0 0 * * 5#2",
            "0 0 * * FRI-SUN",
            "0 0 ? * 7",
            "0-30/10 0 0 * * *",
            "@weekly",
            "0 0 29 2 *",
        ] {
            assert!(SlotRule::compile(&cron(expr, "UTC"), "j").is_ok(), "{expr}");
        }
    }

    // ---- intervals -------------------------------------------------------

    #[test]
    fn intervals_align_to_the_epoch() {
        let r = rule(&interval(3600));
        assert_eq!(
            nominals(&r, "2026-01-01T00:30:00Z", 2),
            ["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]
        );
        // Strictly after: a slot at `after` itself is not returned.
        assert_eq!(
            nominals(&r, "2026-01-01T01:00:00Z", 1),
            ["2026-01-01T02:00:00Z"]
        );
        // Interval schedules ignore the zone and its DST.
        let r = rule(&Schedule {
            timezone: Some("Europe/Berlin".into()),
            ..interval(3600)
        });
        assert_eq!(
            nominals(&r, "2026-03-29T00:30:00Z", 3),
            [
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z",
                "2026-03-29T03:00:00Z",
            ]
        );
    }

    #[test]
    fn every_90s() {
        let r = rule(&Schedule {
            every: Some("90s".into()),
            ..base()
        });
        let slots = r.next_slots(ts("2026-01-01T00:00:00Z"), 3);
        let seconds: Vec<i64> = slots.iter().map(|s| s.nominal.as_second()).collect();
        assert!(seconds.iter().all(|s| s % 90 == 0), "{seconds:?}");
        assert_eq!(seconds[1] - seconds[0], 90);
        for (every, step) in [
            ("30s", 30),
            ("5m", 300),
            ("1h30m", 5400),
            ("2h", 7200),
            ("1d", 86_400),
        ] {
            let r = rule(&Schedule {
                every: Some(every.into()),
                ..base()
            });
            let s = r.next_slots(ts("2026-01-01T00:00:01Z"), 2);
            assert_eq!(
                s[1].nominal.as_second() - s[0].nominal.as_second(),
                step,
                "{every}"
            );
        }
    }

    #[test]
    fn jitter_is_bounded_stable_and_differs_by_job() {
        let schedule = Schedule {
            jitter_sec: Some(30),
            ..interval(60)
        };
        let offsets: Vec<SignedDuration> = (0..20)
            .map(|i| {
                SlotRule::compile(&schedule, &format!("job-{i}"))
                    .unwrap()
                    .jitter()
            })
            .collect();
        for offset in &offsets {
            assert!(*offset >= SignedDuration::ZERO && *offset < SignedDuration::from_secs(30));
        }
        let again = SlotRule::compile(&schedule, "job-0").unwrap();
        assert_eq!(again.jitter(), offsets[0]);
        let mut distinct = offsets.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 10, "{offsets:?}");
        // fire_at = nominal + jitter; the nominal time is untouched.
        let slot = again.next_slot(ts("2026-01-01T00:00:30Z")).unwrap();
        assert_eq!(slot.nominal, ts("2026-01-01T00:01:00Z"));
        assert_eq!(slot.fire_at, slot.nominal + offsets[0]);
        // Fixed forever: a change here reshuffles every deployment's start
        // times. SHA-256 of the id, first 8 bytes big-endian, mod 30,000 ms
        // (Python's hashlib gives the same).
        let pinned = SlotRule::compile(&schedule, "monitor-telegram-a01").unwrap();
        assert_eq!(pinned.jitter(), SignedDuration::from_millis(24_362));
        // Jitter applies to cron slots too, and is zero when unset.
        let c = rule(&Schedule {
            jitter_sec: Some(5),
            ..cron("0 7 * * *", "UTC")
        });
        let slot = c.next_slot(ts("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(slot.fire_at, slot.nominal + c.jitter());
        assert_eq!(rule(&interval(60)).jitter(), SignedDuration::ZERO);
    }

    #[test]
    fn start_and_end_bound_the_slots() {
        // An interval with start_at counts from start_at.
        let r = rule(&Schedule {
            start_at: Some("2026-01-01T00:15:00Z".into()),
            end_at: Some("2026-01-01T02:15:00Z".into()),
            ..interval(3600)
        });
        assert_eq!(
            nominals(&r, "2025-12-01T00:00:00Z", 5),
            [
                "2026-01-01T00:15:00Z",
                "2026-01-01T01:15:00Z",
                "2026-01-01T02:15:00Z",
            ]
        );
        assert_eq!(r.next_slot(ts("2026-01-01T02:15:00Z")), None);
        // The seed's Black Friday window, written as it was meant.
        let r = rule(&Schedule {
            start_at: Some("2026-11-24T00:00:00Z".into()),
            end_at: Some("2026-11-24T23:59:59Z".into()),
            ..cron("0 9 24 11 *", "UTC")
        });
        assert_eq!(
            nominals(&r, "2026-01-01T00:00:00Z", 5),
            ["2026-11-24T09:00:00Z"]
        );
        assert_eq!(r.next_slot(ts("2026-11-24T09:00:00Z")), None);
    }

    // ---- misfire ---------------------------------------------------------

    const T0: &str = "2026-01-01T00:00:00Z";

    fn misfire_rule(misfire: Misfire, window: u64, max_runs: u32) -> SlotRule {
        rule(&Schedule {
            misfire,
            catchup_window_sec: window,
            max_catchup_runs: max_runs,
            ..interval(60)
        })
    }

    /// (minutes after T0 of the runs, of the listed skips, skipped_more)
    fn minutes(m: &Misfired) -> (Vec<i64>, Vec<i64>, u64) {
        let t0 = ts(T0).as_second();
        let of = |slots: &[Slot]| -> Vec<i64> {
            slots
                .iter()
                .map(|s| (s.nominal.as_second() - t0) / 60)
                .collect()
        };
        (of(&m.run), of(&m.skipped), m.skipped_more)
    }

    #[test]
    fn misfire_policies_after_ten_missed_minutes() {
        // Last outcome at T0, back at T0 + 10m30s: slots at minutes 1..=10 were missed.
        let (last, now) = (Some(ts(T0)), ts("2026-01-01T00:10:30Z"));
        let day = 86_400;
        let cases = [
            (
                Misfire::RunOnce,
                day,
                10,
                vec![10],
                (1..=9).collect::<Vec<_>>(),
            ),
            (Misfire::Skip, day, 10, vec![], (1..=10).collect()),
            (Misfire::RunAll, day, 3, vec![8, 9, 10], (1..=7).collect()),
            (Misfire::RunAll, day, 100, (1..=10).collect(), vec![]),
            (Misfire::RunAll, day, 0, vec![], (1..=10).collect()),
            // The catchup window (now - 150 s = minute 8) skips older slots.
            (Misfire::RunAll, 150, 10, vec![8, 9, 10], (1..=7).collect()),
            (Misfire::RunOnce, 150, 10, vec![10], (1..=9).collect()),
            // Nothing young enough: everything is skipped.
            (Misfire::RunOnce, 10, 10, vec![], (1..=10).collect()),
        ];
        for (misfire, window, max_runs, run, skipped) in cases {
            let m = misfire_rule(misfire, window, max_runs).missed(last, now);
            assert_eq!(
                minutes(&m),
                (run, skipped, 0),
                "{misfire:?} window={window} max={max_runs}"
            );
        }
    }

    #[test]
    fn misfire_edges() {
        let r = misfire_rule(Misfire::RunAll, 86_400, 10);
        // Never ran: nothing was missed.
        assert_eq!(
            r.missed(None, ts("2026-01-01T00:10:30Z")),
            Misfired::default()
        );
        // Nothing due since the last slot, or a clock that went back.
        assert_eq!(
            r.missed(Some(ts(T0)), ts("2026-01-01T00:00:59Z")),
            Misfired::default()
        );
        assert_eq!(
            r.missed(Some(ts(T0)), ts("2025-12-31T00:00:00Z")),
            Misfired::default()
        );
        // A slot exactly at `now` is missed; one exactly at `last` is not.
        let m = r.missed(Some(ts(T0)), ts("2026-01-01T00:02:00Z"));
        assert_eq!(minutes(&m), (vec![1, 2], vec![], 0));
        // A slot exactly at the window's edge is young enough.
        let r = misfire_rule(Misfire::RunAll, 120, 10);
        let m = r.missed(Some(ts(T0)), ts("2026-01-01T00:03:00Z"));
        assert_eq!(minutes(&m), (vec![1, 2, 3], vec![], 0));
        // Runs keep their jitter.
        let r = rule(&Schedule {
            jitter_sec: Some(30),
            ..interval(60)
        });
        let m = r.missed(Some(ts(T0)), ts("2026-01-01T00:02:00Z"));
        assert_eq!(m.run[0].fire_at, m.run[0].nominal + r.jitter());
    }

    #[test]
    fn a_week_down_for_a_one_second_job_stays_bounded() {
        let r = rule(&interval(1));
        let last = ts(T0);
        let now = ts("2026-01-08T00:00:00Z");
        let started = std::time::Instant::now();
        let m = r.missed(Some(last), now);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(m.run.len(), 1);
        assert_eq!(m.run[0].nominal, now);
        assert_eq!(m.skipped_total(), 604_800 - 1);
        assert_eq!(m.skipped.len() as u64, MISSED_LIST_CAP - 1);
        // The listed skips are the newest, right before the run, in order.
        assert_eq!(
            m.skipped.last().unwrap().nominal,
            ts("2026-01-07T23:59:59Z")
        );
        assert!(m.skipped.windows(2).all(|w| w[0].nominal < w[1].nominal));
        // run_all caps the runs at max_catchup_runs, newest first chosen.
        let r = rule(&Schedule {
            misfire: Misfire::RunAll,
            max_catchup_runs: 3,
            ..interval(1)
        });
        let m = r.missed(Some(last), now);
        let runs: Vec<String> = m.run.iter().map(|s| s.nominal.to_string()).collect();
        assert_eq!(
            runs,
            [
                "2026-01-07T23:59:58Z",
                "2026-01-07T23:59:59Z",
                "2026-01-08T00:00:00Z",
            ]
        );
        assert_eq!(m.skipped_total(), 604_800 - 3);
    }

    #[test]
    fn a_week_down_for_a_per_second_cron_counts_instead_of_listing() {
        // Every second of the week, Berlin time, across the 2026-10-25 fold:
        // `both` has a slot at every instant, `first` skips the second pass.
        let (last, now) = (ts("2026-10-20T00:00:00Z"), ts("2026-10-27T00:00:00Z"));
        for (overlap, total) in [
            (Both, 604_800),
            (First, 604_800 - 3600),
            (Last, 604_800 - 3600),
        ] {
            let r = rule(&Schedule {
                dst: DstPolicy {
                    gap: Shift,
                    overlap,
                },
                ..cron("* * * * * *", "Europe/Berlin")
            });
            let started = std::time::Instant::now();
            let m = r.missed(Some(last), now);
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            assert_eq!(m.skipped_total() + m.run.len() as u64, total, "{overlap:?}");
            assert_eq!(m.run.len(), 1);
            assert_eq!(m.run[0].nominal, now);
            assert_eq!(m.skipped.len() as u64, MISSED_LIST_CAP - 1);
        }
        // Across the spring-forward gap every instant is a slot too.
        let r = rule(&cron("* * * * * *", "Europe/Berlin"));
        let (last, now) = (ts("2026-03-26T00:00:00Z"), ts("2026-04-02T00:00:00Z"));
        assert_eq!(r.count_between(last, now), 604_800);
    }

    #[test]
    fn misfire_for_a_daily_cron_across_a_gap() {
        // Down from 2026-03-27 to 2026-03-31 in Berlin, `30 2 * * *`, shift:
        // missed 03-28 01:30Z, 03-29 01:00Z (shifted), 03-30 00:30Z.
        let r = rule(&Schedule {
            misfire: Misfire::RunAll,
            max_catchup_runs: 2,
            catchup_window_sec: 7 * 86_400,
            ..cron("30 2 * * *", "Europe/Berlin")
        });
        let m = r.missed(Some(ts("2026-03-27T01:30:00Z")), ts("2026-03-30T12:00:00Z"));
        let of = |s: &[Slot]| s.iter().map(|s| s.nominal.to_string()).collect::<Vec<_>>();
        assert_eq!(of(&m.run), ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]);
        assert_eq!(of(&m.skipped), ["2026-03-28T01:30:00Z"]);
        assert_eq!(m.skipped_more, 0);
    }

    // ---- properties ------------------------------------------------------

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const PATTERNS: [&str; 8] = [
            "30 2 * * *",
            "*/7 * * * *",
            "0 0 13 * 5",
            "15 1-3 * * SUN",
            "0 30 2 * * *",
            "0 0 L * *",
            "*/20 0-3 * * * *",
            "0 */2 * * *",
        ];
        const ZONES: [&str; 7] = [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "Asia/Jakarta",
        ];
        const GAPS: [DstGap; 2] = [Shift, Skip];
        const OVERLAPS: [DstOverlap; 3] = [First, Last, Both];

        /// 50 slots after `after`: increasing, all after it, each the
        /// successor of the one before, and as many as `count_between` says.
        fn check_sequence(r: &SlotRule, after: Timestamp) -> Result<(), TestCaseError> {
            let slots = r.next_slots(after, 50);
            prop_assert_eq!(slots.len(), 50);
            prop_assert!(slots[0].nominal > after);
            for pair in slots.windows(2) {
                prop_assert!(pair[0].nominal < pair[1].nominal, "{:?}", pair);
                prop_assert_eq!(r.next_slot(pair[0].nominal), Some(pair[1]));
            }
            prop_assert_eq!(r.count_between(after, slots[49].nominal), 50);
            Ok(())
        }

        /// Every slot in `(last, now]` is run or skipped, once, in order.
        fn check_missed(
            r: &SlotRule,
            last: Timestamp,
            now: Timestamp,
        ) -> Result<(), TestCaseError> {
            let m = r.missed(Some(last), now);
            let total = r.count_between(last, now);
            prop_assert_eq!(m.run.len() as u64 + m.skipped_total(), total);
            prop_assert!(m.run.len() as u64 + m.skipped.len() as u64 <= MISSED_LIST_CAP);
            let listed: Vec<Slot> = m.skipped.iter().chain(&m.run).copied().collect();
            if m.skipped_more == 0 {
                prop_assert_eq!(&listed, &r.next_slots(last, total as usize));
            }
            for pair in listed.windows(2) {
                prop_assert_eq!(r.next_slot(pair[0].nominal), Some(pair[1]));
            }
            if let Some(newest) = listed.last() {
                prop_assert_eq!(
                    r.next_slot(newest.nominal).filter(|s| s.nominal <= now),
                    None
                );
            }
            let cutoff = now - r.catchup_window;
            prop_assert!(
                m.run
                    .iter()
                    .all(|s| s.nominal >= cutoff && s.nominal > last)
            );
            let young = r.count_between(last.max(just_before(cutoff)), now);
            let wanted = match r.misfire {
                Misfire::Skip => 0,
                Misfire::RunOnce => 1,
                Misfire::RunAll => u64::from(r.max_catchup_runs),
            };
            prop_assert_eq!(m.run.len() as u64, wanted.min(young));
            Ok(())
        }

        fn misfire_schedule(policy: usize, window: u64, max_runs: u32, base: Schedule) -> Schedule {
            Schedule {
                misfire: [Misfire::RunOnce, Misfire::Skip, Misfire::RunAll][policy],
                catchup_window_sec: window,
                max_catchup_runs: max_runs,
                ..base
            }
        }

        proptest! {
            #[test]
            fn missed_sorts_every_interval_slot_once(
                seconds in 1u64..7200,
                last in 1_700_000_000i64..1_800_000_000,
                down in 0i64..3 * 86_400,
                policy in 0..3usize,
                window in 0u64..2 * 86_400,
                max_runs in 0u32..20,
            ) {
                let r = rule(&misfire_schedule(policy, window, max_runs, interval(seconds)));
                let last = Timestamp::from_second(last).unwrap();
                check_missed(&r, last, last + SignedDuration::from_secs(down))?;
            }

            #[test]
            fn missed_sorts_every_cron_slot_once(
                pattern in 0..PATTERNS.len(),
                zone in 0..ZONES.len(),
                overlap in 0..3usize,
                day in 0i64..730,
                down in 0i64..5 * 86_400,
                policy in 0..3usize,
                window in 0u64..3 * 86_400,
                max_runs in 0u32..20,
            ) {
                let mut schedule = cron(PATTERNS[pattern], ZONES[zone]);
                schedule.dst.overlap = OVERLAPS[overlap];
                let r = rule(&misfire_schedule(policy, window, max_runs, schedule));
                let start = ts("2026-01-01T00:00:00Z") + SignedDuration::from_hours(24 * day);
                // Downtime that ends a day or two after a transition.
                let now = r.timezone().following(start).next().map_or(start, |t| t.timestamp())
                    + SignedDuration::from_hours(30);
                check_missed(&r, now - SignedDuration::from_secs(down), now)?;
            }

            #[test]
            fn interval_slots_increase(
                seconds in 1u64..86_400,
                after_ns in 1_600_000_000_000_000_000i128..1_900_000_000_000_000_000,
                jitter in 0u64..2,
                anchored in any::<bool>(),
            ) {
                let r = rule(&Schedule {
                    jitter_sec: Some(jitter.min(seconds - 1)),
                    start_at: anchored.then(|| "2020-02-29T12:34:56.789Z".to_string()),
                    ..interval(seconds)
                });
                let after = Timestamp::from_nanosecond(after_ns).unwrap();
                check_sequence(&r, after)?;
                for slot in r.next_slots(after, 3) {
                    prop_assert!(slot.fire_at >= slot.nominal);
                    prop_assert!(slot.fire_at < slot.nominal + SignedDuration::from_secs(seconds as i64));
                }
            }

            #[test]
            fn cron_slots_increase_across_dst(
                pattern in 0..PATTERNS.len(),
                zone in 0..ZONES.len(),
                gap in 0..2usize,
                overlap in 0..3usize,
                day in 0i64..730,
                offset in -3 * 86_400i64..86_400,
                near_transition in any::<bool>(),
            ) {
                let r = dst_rule(PATTERNS[pattern], ZONES[zone], GAPS[gap], OVERLAPS[overlap]);
                let start = ts("2026-01-01T00:00:00Z") + SignedDuration::from_hours(24 * day);
                // Half the cases start within a few days before a transition.
                let base = if near_transition {
                    r.timezone()
                        .following(start)
                        .next()
                        .map_or(start, |t| t.timestamp())
                } else {
                    start
                };
                check_sequence(&r, base + SignedDuration::from_secs(offset))?;
            }
        }
    }
}
