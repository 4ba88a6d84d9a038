//! Rate limits per connector: in the process, or shared by every process
//! of a Redis deployment.
//!
//! [`crate::connectors::Connectors`] is rebuilt on every applied revision, but
//! a limiter must not reset with it, or a reload would let a burst through.
//! So limiters live in a process-wide registry keyed by connector id and
//! quota: every worker of the process shares one, and a changed quota gets a
//! fresh limiter. In a Redis deployment ([`share_through_redis`]) the quota
//! is kept in Redis instead (GCRA in one script), so N worker processes
//! together stay within it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::aio::ConnectionManager;

use crate::spec::model::RateLimit;

pub type Limiter = Arc<Gate>;

/// A connector's rate limit.
pub struct Gate {
    local: DefaultDirectRateLimiter,
    shared: Option<RedisGcra>,
}

impl Gate {
    /// Wait for a turn. Returns whether the call had to wait (for metrics).
    pub async fn acquire(&self) -> bool {
        if let Some(shared) = &self.shared {
            match shared.reserve().await {
                Ok(wait) if wait.is_zero() => return false,
                Ok(wait) => {
                    tokio::time::sleep(wait).await;
                    return true;
                }
                Err(e) => {
                    // Redis away: keep this process within the quota alone
                    // rather than stop sending or send unlimited.
                    tracing::warn!(error = %e, key = %shared.key, "shared rate limit unavailable; limiting in this process");
                }
            }
        }
        if self.local.check().is_ok() {
            return false;
        }
        self.local.until_ready().await;
        true
    }
}

/// Generic cell rate algorithm over one Redis key: the theoretical arrival
/// time (TAT, µs, Redis clock). Each call reserves the next cell and gets
/// how long to wait for it, so concurrent callers never overshoot.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - (burst - 1) * interval - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return math.ceil(wait)";

struct RedisGcra {
    conn: ConnectionManager,
    key: String,
    /// µs between cells.
    interval_us: f64,
    burst: u32,
}

impl RedisGcra {
    async fn reserve(&self) -> redis::RedisResult<Duration> {
        let mut conn = self.conn.clone();
        let wait_us: i64 = redis::Script::new(GCRA)
            .key(&self.key)
            .arg(self.interval_us)
            .arg(self.burst.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(Duration::from_micros(wait_us.max(0) as u64))
    }
}

/// Where shared limits live: a connection and a key prefix.
static SHARED: OnceLock<(ConnectionManager, String)> = OnceLock::new();

/// Keep every connector's quota in Redis from now on (a Redis deployment
/// calls this once at start). `prefix` ends with `:`.
pub fn share_through_redis(conn: ConnectionManager, prefix: String) {
    let _ = SHARED.set((conn, prefix));
}

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
        .or_insert_with(|| {
            let shared = SHARED.get().map(|(conn, prefix)| {
                redis_gcra(
                    conn.clone(),
                    format!("{prefix}ratelimit:{connector}"),
                    limit,
                )
            });
            Arc::new(Gate {
                local: new_limiter(limit),
                shared,
            })
        })
        .clone()
}

fn redis_gcra(conn: ConnectionManager, key: String, limit: &RateLimit) -> RedisGcra {
    RedisGcra {
        conn,
        key,
        interval_us: 60_000_000.0 / f64::from(limit.per_minute.max(1)),
        burst: limit.burst.max(1),
    }
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

    #[tokio::test]
    async fn two_processes_share_one_quota_through_redis() {
        let redis = crate::testkit::RedisServer::start().expect("redis-server");
        let limit = RateLimit {
            per_minute: 600,
            burst: 1,
        };
        // Two gates on two connections: what two worker processes hold.
        let mut gates = Vec::new();
        for _ in 0..2 {
            let conn = crate::cluster::connect(&redis.url(), Duration::from_secs(2))
                .await
                .expect("connect");
            gates.push(Arc::new(Gate {
                local: new_limiter(&limit),
                shared: Some(redis_gcra(conn, "{t}:ratelimit:hook".into(), &limit)),
            }));
        }
        let start = Instant::now();
        let tasks: Vec<_> = gates
            .iter()
            .map(|g| {
                let g = g.clone();
                tokio::spawn(async move {
                    for _ in 0..30 {
                        g.acquire().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let elapsed = start.elapsed();
        // 60 cells at 100 ms, the first free: 5.9 s, though each process
        // alone would have needed only 2.9 s.
        assert!(elapsed >= Duration::from_millis(5850), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(7500), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_gate_limits_once_per_call() {
        let gate = Gate {
            local: new_limiter(&RateLimit {
                per_minute: 600,
                burst: 1,
            }),
            shared: None,
        };
        let start = Instant::now();
        for _ in 0..11 {
            gate.acquire().await;
        }
        let elapsed = start.elapsed();
        // Ten waits of 100 ms, not twenty.
        assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
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
