//! In-process rate limits per connector.
//!
//! [`crate::connectors::Connectors`] is rebuilt on every applied revision, but
//! a limiter must not reset with it, or a reload would let a burst through.
//! So limiters live in a process-wide registry keyed by connector id and
//! quota: every worker of the process shares one, and a changed quota gets a
//! fresh limiter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::spec::model::RateLimit;

pub type Limiter = Arc<DefaultDirectRateLimiter>;

type Key = (String, u32, u32);

static REGISTRY: LazyLock<Mutex<HashMap<Key, Limiter>>> = LazyLock::new(Default::default);

/// The process-wide limiter for `connector` with this quota.
pub fn shared(connector: &str, limit: &RateLimit) -> Limiter {
    let key = (connector.to_string(), limit.per_minute, limit.burst);
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    // An old quota's limiter is useless once the connector changed.
    registry.retain(|k, _| k.0 != key.0 || *k == key);
    registry
        .entry(key)
        .or_insert_with(|| Arc::new(new_limiter(limit)))
        .clone()
}

/// A limiter not shared with anyone (tests, one-off tools).
pub fn new_limiter(limit: &RateLimit) -> DefaultDirectRateLimiter {
    let per_minute = NonZeroU32::new(limit.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn six_hundred_per_minute_burst_one_spreads_sixty_calls_over_six_seconds() {
        let limiter = new_limiter(&RateLimit {
            per_minute: 600,
            burst: 1,
        });
        let start = Instant::now();
        for _ in 0..60 {
            limiter.until_ready().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(5900), "{elapsed:?}");
    }

    #[test]
    fn same_connector_and_quota_share_one_limiter() {
        let q = RateLimit {
            per_minute: 60,
            burst: 2,
        };
        let a = shared("ratelimit-test-shared", &q);
        let b = shared("ratelimit-test-shared", &q);
        assert!(Arc::ptr_eq(&a, &b));
        let c = shared("ratelimit-test-other", &q);
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
