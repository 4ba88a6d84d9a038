//! Per-trigger rate limits on the inbound listener: a token bucket
//! (governor) per trigger, from its `rate_limit`, checked before the body
//! is read so a flood costs a map lookup. Buckets live for the process
//! and survive reloads; a changed quota gets a fresh bucket, and the
//! buckets of removed triggers go whenever a new bucket is made.
//!
//! Per process: with Redis each replica keeps its own buckets, so N
//! replicas behind a balancer accept up to N times the quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};

use crate::connectors::ratelimit::new_limiter;
use crate::spec::model::RateLimit;

type Key = (String, u32, u32);

/// Every trigger's bucket in this process.
#[derive(Default, Clone)]
pub struct Limiter {
    buckets: Arc<Mutex<HashMap<Key, Arc<DefaultDirectRateLimiter>>>>,
}

impl Limiter {
    /// Take a token for `trigger`; `Err(wait)` when it has none left, with
    /// how long until the next one. `exists` says which triggers are
    /// still applied.
    pub fn check(
        &self,
        trigger: &str,
        limit: &RateLimit,
        exists: impl Fn(&str) -> bool,
    ) -> Result<(), Duration> {
        let key = (trigger.to_string(), limit.per_minute, limit.burst);
        let bucket = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            if !buckets.contains_key(&key) {
                // An old quota's bucket, or a removed trigger's, is of no
                // use any more.
                buckets.retain(|k, _| k.0 != key.0 && exists(&k.0));
            }
            buckets
                .entry(key)
                .or_insert_with(|| Arc::new(new_limiter(limit)))
                .clone()
        };
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_ten_then_refusals_with_a_wait() {
        let limiter = Limiter::default();
        let limit = RateLimit {
            per_minute: 60,
            burst: 10,
        };
        let accepted = (0..50)
            .filter(|_| limiter.check("t", &limit, |_| true).is_ok())
            .count();
        assert_eq!(accepted, 10);
        let wait = limiter.check("t", &limit, |_| true).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        // Another trigger has its own bucket.
        assert!(limiter.check("u", &limit, |_| true).is_ok());
    }

    #[test]
    fn a_changed_quota_starts_a_fresh_bucket() {
        let limiter = Limiter::default();
        let one = RateLimit {
            per_minute: 1,
            burst: 1,
        };
        assert!(limiter.check("t", &one, |_| true).is_ok());
        assert!(limiter.check("t", &one, |_| true).is_err());
        let two = RateLimit {
            per_minute: 1,
            burst: 2,
        };
        assert!(limiter.check("t", &two, |_| true).is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
        // A removed trigger's bucket goes when another one is made.
        assert!(limiter.check("u", &one, |id| id != "t").is_ok());
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(
            buckets.keys().map(|k| k.0.as_str()).collect::<Vec<_>>(),
            ["u"]
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }
}
