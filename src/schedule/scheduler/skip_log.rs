//! The daemon's lines about skipped slots: one per reason per
//! [`SKIP_LOG_EVERY`] at most, never one per slot (10,000 every-second
//! jobs over a tick cap skip thousands a second). The first skip of a
//! reason after a quiet spell is logged at once; the ones after it are
//! counted and logged together when the interval has passed:
//! `skipped 4480 slots in the last 10s: tick_limit (jobs a, b, ... and 120 more)`.
//! PURE but for the log line: `now` is passed in.

use std::collections::{BTreeMap, HashSet};

use jiff::{SignedDuration, Timestamp};

/// At most one line per reason this often.
pub const SKIP_LOG_EVERY: SignedDuration = SignedDuration::from_secs(10);
/// Job ids a line names; the rest are counted.
const NAMED: usize = 5;

/// Skips of one reason since its last line.
#[derive(Debug, Default)]
struct Pending {
    /// When the last line for this reason was written.
    last_line: Option<Timestamp>,
    slots: u64,
    /// Distinct jobs, in the order they first skipped.
    jobs: Vec<String>,
    seen: HashSet<String>,
}

/// Skipped slots counted per reason, for the rate-limited lines.
#[derive(Debug, Default)]
pub struct SkipLog {
    reasons: BTreeMap<&'static str, Pending>,
}

impl SkipLog {
    /// Count `n` slots of `job` skipped for `reason`; the line to log now,
    /// if one is due.
    pub fn count(
        &mut self,
        reason: &'static str,
        job: &str,
        n: u64,
        now: Timestamp,
    ) -> Option<String> {
        if n == 0 {
            return None;
        }
        let p = self.reasons.entry(reason).or_default();
        p.slots += n;
        if !p.seen.contains(job) {
            p.seen.insert(job.to_string());
            p.jobs.push(job.to_string());
        }
        let quiet = p
            .last_line
            .is_none_or(|t| now.duration_since(t) >= SKIP_LOG_EVERY);
        quiet.then(|| take_line(reason, p, now))
    }

    /// The lines for every reason whose interval has passed with skips
    /// counted (the scheduler asks after each wake-up).
    pub fn due(&mut self, now: Timestamp) -> Vec<String> {
        self.reasons
            .iter_mut()
            .filter(|(_, p)| {
                p.slots > 0
                    && p.last_line
                        .is_none_or(|t| now.duration_since(t) >= SKIP_LOG_EVERY)
            })
            .map(|(reason, p)| take_line(reason, p, now))
            .collect()
    }
}

/// The line for `p`'s skips, which start counting again.
fn take_line(reason: &str, p: &mut Pending, now: Timestamp) -> String {
    let slots = std::mem::take(&mut p.slots);
    let jobs = std::mem::take(&mut p.jobs);
    p.seen.clear();
    let since = p.last_line.replace(now);
    let mut named = jobs
        .iter()
        .take(NAMED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if jobs.len() > NAMED {
        named.push_str(&format!(", ... and {} more", jobs.len() - NAMED));
    }
    let noun = if slots == 1 { "slot" } else { "slots" };
    let job_noun = if jobs.len() == 1 { "job" } else { "jobs" };
    match since {
        Some(t) => format!(
            "skipped {slots} {noun} in the last {}s: {reason} ({job_noun} {named})",
            now.duration_since(t).as_secs()
        ),
        None => format!("skipped {slots} {noun}: {reason} ({job_noun} {named})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sec: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + sec).expect("a time")
    }

    #[test]
    fn the_first_skip_is_logged_at_once_and_the_rest_once_per_interval() {
        let mut log = SkipLog::default();
        assert_eq!(
            log.count("tick_limit", "a", 1, at(0)).as_deref(),
            Some("skipped 1 slot: tick_limit (job a)")
        );
        for i in 0..4480u64 {
            let job = format!("j{}", i % 125);
            assert_eq!(
                log.count("tick_limit", &job, 1, at(1 + (i % 8) as i64)),
                None
            );
        }
        assert!(log.due(at(9)).is_empty());
        assert_eq!(
            log.due(at(10)),
            vec![
                "skipped 4480 slots in the last 10s: tick_limit (jobs j0, j1, j2, j3, j4, ... and 120 more)"
            ]
        );
        assert!(log.due(at(30)).is_empty(), "nothing counted since");
    }

    #[test]
    fn reasons_are_limited_each_on_their_own() {
        let mut log = SkipLog::default();
        assert!(log.count("missed", "a", 3, at(0)).is_some());
        assert!(log.count("overlap", "b", 1, at(1)).is_some());
        assert_eq!(log.count("missed", "a", 2, at(2)), None);
        assert_eq!(log.count("overlap", "b", 1, at(3)), None);
        // A skip after the interval is logged with the ones before it.
        assert_eq!(
            log.count("missed", "c", 1, at(12)).as_deref(),
            Some("skipped 3 slots in the last 12s: missed (jobs a, c)")
        );
        assert_eq!(
            log.due(at(12)),
            vec!["skipped 1 slot in the last 11s: overlap (job b)"]
        );
        assert_eq!(log.count("x", "a", 0, at(0)), None, "no slots, no line");
    }
}
