//! A Redis deployment: several processes, one leader. This module owns
//! the election, the leader's loops (dispatch, results, cancels, the
//! published queue), the stream workers and the wire format between them;
//! it may use `worker`, `queue`, `status`, `store`, `run` and the layers
//! below, never the `daemon`, which assembles these parts into a process.
//!
//! - **Leader** ([`election`]): exactly one process holds `{mj}:leader`
//!   (SET NX PX, renewed; a fencing token from `leader:epoch` guards its
//!   store writes). It reconciles, schedules and owns the run queue: guards,
//!   retries and failure memory stay in one place, as in one process.
//! - **Dispatch** ([`leader`]): a run the leader starts is handed to the
//!   `ready` stream in the same store batch as its record, and no more runs
//!   are started than the live workers can take (twice their slots), so
//!   runs wait in the queue, where pressure sees them, not in the stream.
//! - **Workers** ([`stream_worker`]): every process (leader, `run`
//!   replicas, `worker`) reads `ready` through one consumer group, executes
//!   the run, and appends its result to the `results` stream, which the
//!   leader applies (and only then acknowledges).
//! - **Worker groups**: a run of a job with `worker_group: g` goes to
//!   `ready:g`, read only by `multijob worker --group g` processes (in the
//!   same read as `ready`); the leader holds a group's runs queued while
//!   no live worker serves it (the heartbeats say which groups are).
//! - **Leases**: a worker renews its entries' idle time while it runs them;
//!   an entry idle past the lease (its worker died) is claimed by another
//!   worker with XAUTOCLAIM and runs again: at-least-once, with message
//!   steps deduplicated by their idempotency keys in Redis. A group's
//!   entries whose group has no live worker left are claimed by the
//!   leader, which ends their attempts as lost (see `orphaned.rs`).

pub mod election;
pub mod leader;
mod orphaned;
pub mod stream_worker;
pub mod wire;

use std::time::Duration;

use redis::aio::ConnectionManager;

/// Consumer group of the workers on the ready stream.
pub const WORKERS_GROUP: &str = "workers";
/// Consumer group of the leader on the results stream.
pub const LEADER_GROUP: &str = "leader";

/// The Redis keys of the runtime (named by the store, which owns the prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    /// Stream of started runs waiting for a worker.
    pub ready: String,
    /// Stream of workers' results waiting for the leader.
    pub results: String,
    /// Set: the worker groups whose streams (`ready:<group>`) the leader
    /// has dispatched to (its recovery reads them all).
    pub ready_groups: String,
    /// Hash: worker node → `"<slots> <heartbeat ms> <version> <groups>"`
    /// (groups comma-separated, `-` for none; a worker of an earlier
    /// version writes the first two only). See [`crate::store::workers`].
    pub workers: String,
    /// Hash: run id → why the leader cancelled it (overlap `replace`, a
    /// deleted job, an operator's `multijob cancel`); workers cancel those
    /// they run. A field stays until the run's result is recorded, and
    /// workers look up every run they hold every 200 ms: a worker that
    /// claims the run after the cancel, or missed a look, still sees it.
    pub cancel: String,
    /// String: the leader's queue figures (JSON, expiring), for followers.
    pub queue: String,
    pub election: election::ElectionKeys,
}

impl Keys {
    /// The ready stream of a worker group's runs (the batch script's
    /// `dispatch_to` writes it); `None`: the ungrouped `ready` stream.
    pub fn ready_of(&self, group: Option<&str>) -> String {
        match group {
            Some(g) => format!("{}:{g}", self.ready),
            None => self.ready.clone(),
        }
    }

    pub fn new(key: impl Fn(&str) -> String) -> Keys {
        Keys {
            ready: key("ready"),
            ready_groups: key("ready_groups"),
            results: key("results"),
            workers: key("workers"),
            cancel: key("cancel"),
            queue: key("queue"),
            election: election::ElectionKeys {
                // Layout 4 elected with `leader`, which a migration to
                // layout 5 retires (see `store::redis::migrate`).
                leader: key("lease"),
                epoch: key("leader:epoch"),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: String,
    /// This process's name in consumer groups and the leader key.
    pub node: String,
    /// An entry not renewed for this long belongs to a dead worker.
    pub lease: Duration,
    /// How long a leader's key lives without renewal.
    pub leader_ttl: Duration,
}

impl ClusterConfig {
    /// Defaults, tunable by `MULTIJOB_LEASE_MS` and `MULTIJOB_LEADER_TTL_MS`.
    pub fn new(url: &str) -> ClusterConfig {
        let ms = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v >= 100)
                .unwrap_or(default)
        };
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        ClusterConfig {
            url: url.to_string(),
            node: format!(
                "{}-{}-{}",
                if host.is_empty() { "node" } else { &host },
                std::process::id(),
                &uuid::Uuid::now_v7().simple().to_string()[24..]
            ),
            lease: Duration::from_millis(ms("MULTIJOB_LEASE_MS", 15_000)),
            leader_ttl: Duration::from_millis(ms("MULTIJOB_LEADER_TTL_MS", 5_000)),
        }
    }
}

/// A connection of our own (reconnecting) whose replies may take up to
/// `timeout`: blocking stream reads need more than the default 500 ms.
pub async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}

/// Create a stream's consumer group (and the stream) unless it exists.
/// Called at start and again after `NOGROUP` (Redis restarted empty).
pub async fn ensure_group(
    conn: &mut ConnectionManager,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Whether an error says the consumer group is gone.
pub fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

/// Milliseconds since the epoch (worker heartbeats).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
