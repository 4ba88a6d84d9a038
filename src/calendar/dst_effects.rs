//! What a DST change does to a cron schedule: the wall times it names that
//! a spring-forward skips (a gap) or a fall-back repeats (an overlap), and
//! when the job runs for each under its `dst` policy.
//!
//! PURE, and built on the slot math rather than beside it: the wall times
//! come from the same cron read in UTC (where every wall time exists once),
//! and the instants a wall time runs at are those [`SlotRule`] itself
//! yields for the schedule's zone, so what `multijob cron` says is what the
//! scheduler does.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::schedule::{DstGap, DstOverlap, Schedule};
use super::slots::{ScheduleError, SlotRule};

/// The kind of DST change a wall time falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstKind {
    /// Spring forward: the wall time does not exist that day.
    Gap,
    /// Fall back: the wall time happens twice.
    Overlap,
}

impl DstKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DstKind::Gap => "gap",
            DstKind::Overlap => "overlap",
        }
    }
}

/// One wall time the cron names that falls in a gap or an overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DstEffect {
    /// The wall time, in the schedule's zone.
    pub wall: DateTime,
    pub kind: DstKind,
    /// The policy that decides it: `shift`/`skip` for a gap,
    /// `first`/`last`/`both` for an overlap.
    pub action: &'static str,
    /// The instants the job runs for this wall time (none when skipped).
    pub runs_at: Vec<Timestamp>,
}

/// The effects in a window; `more` counts those past the listing cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DstEffects {
    pub effects: Vec<DstEffect>,
    pub more: u64,
    /// How many times the zone's clocks change in the window.
    pub changes: usize,
}

/// The wall times of `schedule` (a cron schedule) that fall in a DST gap or
/// overlap between `from` and `until`, at most `cap` of them listed.
pub fn dst_effects(
    schedule: &Schedule,
    from: Timestamp,
    until: Timestamp,
    cap: usize,
) -> Result<DstEffects, ScheduleError> {
    let zoned = SlotRule::compile(schedule, "cron")?;
    let walls = SlotRule::compile(
        &Schedule {
            cron: schedule.cron.clone(),
            ..Schedule::default()
        },
        "cron",
    )?;
    let tz = zoned.timezone().clone();
    let mut out = DstEffects::default();
    for transition in tz.following(from) {
        let at = transition.timestamp();
        if at > until {
            break;
        }
        let before = tz.to_offset(just_before(at)).seconds();
        let after = transition.offset().seconds();
        let (kind, lo, hi) = match after.cmp(&before) {
            std::cmp::Ordering::Greater => (DstKind::Gap, before, after),
            std::cmp::Ordering::Less => (DstKind::Overlap, after, before),
            std::cmp::Ordering::Equal => continue,
        };
        out.changes += 1;
        // The affected wall times, read as UTC instants of the wall clock.
        let shifted = |offset: i32| at.checked_add(SignedDuration::from_secs(i64::from(offset)));
        let (Ok(lo), Ok(hi)) = (shifted(lo), shifted(hi)) else {
            continue;
        };
        let room = cap.saturating_sub(out.effects.len());
        let listed = match walls.slots_in(lo, hi, room as u64) {
            Ok(slots) => slots,
            Err(total) => {
                out.more += total - room as u64;
                walls.next_slots(just_before(lo), room)
            }
        };
        for slot in listed {
            let wall = TimeZone::UTC.to_datetime(slot.nominal);
            let (action, candidates) = match kind {
                DstKind::Gap => gap_candidates(schedule, at),
                DstKind::Overlap => overlap_candidates(schedule, slot.nominal, before, after),
            };
            let runs_at = candidates
                .into_iter()
                .filter(|c| zoned.next_slot(just_before(*c)).map(|s| s.nominal) == Some(*c))
                .collect();
            out.effects.push(DstEffect {
                wall,
                kind,
                action,
                runs_at,
            });
        }
    }
    Ok(out)
}

/// Under `shift` a wall time in a gap runs when the gap ends.
fn gap_candidates(schedule: &Schedule, gap_end: Timestamp) -> (&'static str, Vec<Timestamp>) {
    match schedule.dst.gap {
        DstGap::Shift => ("shift", vec![gap_end]),
        DstGap::Skip => ("skip", Vec::new()),
    }
}

/// A repeated wall time (`wall` read as UTC) stands for two instants: read
/// with the offset before the change, then with the one after it.
fn overlap_candidates(
    schedule: &Schedule,
    wall: Timestamp,
    before: i32,
    after: i32,
) -> (&'static str, Vec<Timestamp>) {
    let read = |offset: i32| {
        wall.checked_sub(SignedDuration::from_secs(i64::from(offset)))
            .ok()
    };
    let action = match schedule.dst.overlap {
        DstOverlap::First => "first",
        DstOverlap::Last => "last",
        DstOverlap::Both => "both",
    };
    (
        action,
        [read(before), read(after)].into_iter().flatten().collect(),
    )
}

fn just_before(t: Timestamp) -> Timestamp {
    t.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(t)
}

impl DstEffect {
    /// One line, e.g. "2026-03-29 02:30 does not exist (spring forward):
    /// runs at 03:00 +02:00 (dst.gap: shift)".
    pub fn sentence(&self, tz: &TimeZone) -> String {
        let format = if self.wall.second() == 0 {
            "%H:%M %:z"
        } else {
            "%H:%M:%S %:z"
        };
        let local = |t: &Timestamp| t.to_zoned(tz.clone()).strftime(format).to_string();
        let wall = wall_text(self.wall);
        match (self.kind, self.runs_at.as_slice()) {
            (DstKind::Gap, []) => format!(
                "{wall} does not exist (spring forward): not run (dst.gap: {})",
                self.action
            ),
            (DstKind::Gap, [at, ..]) => format!(
                "{wall} does not exist (spring forward): runs at {} (dst.gap: {})",
                local(at),
                self.action
            ),
            (DstKind::Overlap, [at]) => {
                let which = if self.action == "last" {
                    "second"
                } else {
                    "first"
                };
                format!(
                    "{wall} happens twice (fall back): runs once, at the {which} ({}) (dst.overlap: {})",
                    local(at),
                    self.action
                )
            }
            (DstKind::Overlap, runs) => {
                let times: Vec<String> = runs.iter().map(local).collect();
                format!(
                    "{wall} happens twice (fall back): runs {} times ({}) (dst.overlap: {})",
                    runs.len(),
                    times.join(", "),
                    self.action
                )
            }
        }
    }
}

/// `2026-03-29 02:30`, with seconds only when the cron has them.
pub fn wall_text(wall: DateTime) -> String {
    if wall.second() == 0 {
        wall.strftime("%Y-%m-%d %H:%M").to_string()
    } else {
        wall.strftime("%Y-%m-%d %H:%M:%S").to_string()
    }
}

#[cfg(test)]
mod tests;
