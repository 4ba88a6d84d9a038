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

    /// The slots with a nominal time in `[from, to)`, oldest first (a
    /// backfill's window); `Err(n)` without listing them when there are
    /// `n` > `max`.
    /// The last `n` slots at or before `upto`, oldest first (fewer when
    /// the schedule starts later).
    pub fn prev_slots(&self, upto: Timestamp, n: u64) -> Vec<Slot> {
        let from = self.seek_back(Timestamp::MIN, upto, n);
        self.slots_between(from, upto, n)
    }

    pub fn slots_in(&self, from: Timestamp, to: Timestamp, max: u64) -> Result<Vec<Slot>, u64> {
        let (lo, hi) = (just_before(from), just_before(to));
        let n = self.count_between(lo, hi);
        if n > max {
            return Err(n);
        }
        Ok(self.slots_between(lo, hi, n))
    }

    /// For an interval with no end: the step between slots, in
    /// nanoseconds, so a caller stepping through millions of slots (the
    /// simulation) adds it instead of asking [`next_slot`](Self::next_slot).
    pub fn fixed_step(&self) -> Option<i64> {
        match &self.kind {
            Kind::Interval { step, .. } if self.end_at.is_none() => i64::try_from(*step).ok(),
            _ => None,
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
            step: parse_duration_nanos(every).map_err(|m| ScheduleError::new("every", m))?,
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
/// `1h30m`, `90s`, `2h`, and `1d` or `1w` read as 24-hour days (the
/// spec's durations: `every:`, `expect.success_within`).
pub fn parse_duration_nanos(text: &str) -> Result<i128, String> {
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
mod tests;
