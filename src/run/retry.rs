//! PURE. Retry backoff and failure memory.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::spec::model::{FailureMemory, RetryPolicy};
use crate::store::format_ts;
use crate::store::runs::FailureState;

/// Backoff when the policy lists none.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff (30 days, the schema's maximum): a bigger number
/// must not overflow the due time and leave the run stuck `running`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30 * 24 * 3600);

/// The wait before the next attempt after attempt `failed` (1-based) failed,
/// or `None` when no retries are left. The last backoff entry repeats.
pub fn backoff(policy: &RetryPolicy, failed: u32) -> Option<Duration> {
    if failed > policy.max_retry {
        return None;
    }
    let index = (failed as usize).saturating_sub(1);
    let secs = policy
        .backoff_sec
        .get(index)
        .or(policy.backoff_sec.last())
        .copied();
    Some(match secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            Duration::try_from_secs_f64(s).map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF))
        }
        _ => DEFAULT_BACKOFF,
    })
}

/// Failure memory after a run's final outcome. A run counts once: call
/// this when its last attempt ends, not per attempt.
pub fn after_run(
    prev: &FailureState,
    memory: &FailureMemory,
    failed: Option<&str>,
    now: Timestamp,
) -> FailureState {
    let Some(error) = failed else {
        return FailureState::default();
    };
    let consecutive = prev.consecutive_failures.saturating_add(1);
    let cooldown_until = (memory.enabled && consecutive >= memory.threshold.max(1))
        .then(|| cooldown(memory, consecutive))
        .and_then(|d| now.checked_add(d).ok())
        .map(format_ts);
    FailureState {
        consecutive_failures: consecutive,
        cooldown_until,
        last_error: Some(error.chars().take(500).collect()),
    }
}

/// `cooldown_sec`, doubling for each failure past the threshold, capped at
/// `cooldown_max_sec`.
pub fn cooldown(memory: &FailureMemory, consecutive: u32) -> SignedDuration {
    let doublings = consecutive.saturating_sub(memory.threshold.max(1)).min(32);
    let secs = memory
        .cooldown_sec
        .saturating_mul(1u64 << doublings)
        .min(memory.cooldown_max_sec.max(memory.cooldown_sec));
    SignedDuration::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retry: u32, backoff_sec: &[f64]) -> RetryPolicy {
        RetryPolicy {
            max_retry,
            backoff_sec: backoff_sec.to_vec(),
        }
    }

    #[test]
    fn backoff_list_with_the_last_entry_repeating() {
        let p = policy(4, &[1.0, 2.0, 5.0]);
        assert_eq!(backoff(&p, 1), Some(Duration::from_secs(1)));
        assert_eq!(backoff(&p, 2), Some(Duration::from_secs(2)));
        assert_eq!(backoff(&p, 3), Some(Duration::from_secs(5)));
        assert_eq!(backoff(&p, 4), Some(Duration::from_secs(5)));
        assert_eq!(backoff(&p, 5), None);
        assert_eq!(backoff(&policy(0, &[]), 1), None);
        assert_eq!(backoff(&policy(1, &[]), 1), Some(DEFAULT_BACKOFF));
        assert_eq!(
            backoff(&policy(1, &[0.25]), 1),
            Some(Duration::from_millis(250))
        );
        // Too big for a Duration, or just very long: capped, never a panic.
        for huge in [1e300, 18446744073709551615.0, 1e9] {
            assert_eq!(backoff(&policy(1, &[huge]), 1), Some(MAX_BACKOFF));
        }
    }

    fn memory() -> FailureMemory {
        FailureMemory {
            enabled: true,
            threshold: 3,
            cooldown_sec: 120,
            cooldown_max_sec: 600,
        }
    }

    #[test]
    fn cooldown_doubles_up_to_the_max_and_resets_on_success() {
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut s = FailureState::default();
        for expected in [
            None,
            None,
            Some(120),
            Some(240),
            Some(480),
            Some(600),
            Some(600),
        ] {
            s = after_run(&s, &memory(), Some("boom"), now);
            let got = s.cooldown_until.as_ref().map(|t| {
                t.parse::<Timestamp>()
                    .unwrap()
                    .duration_since(now)
                    .as_secs()
            });
            assert_eq!(got, expected, "after {} failures", s.consecutive_failures);
        }
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        let s = after_run(&s, &memory(), None, now);
        assert_eq!(s, FailureState::default());
    }

    #[test]
    fn disabled_memory_counts_but_never_cools_down() {
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let off = FailureMemory {
            enabled: false,
            ..memory()
        };
        let mut s = FailureState::default();
        for _ in 0..10 {
            s = after_run(&s, &off, Some("x"), now);
        }
        assert_eq!(s.consecutive_failures, 10);
        assert_eq!(s.cooldown_until, None);
    }
}
