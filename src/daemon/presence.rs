//! The daemon says it is there: the process that owns the run queue (the
//! embedded daemon, or the Redis leader) keeps the key-value entry
//! [`PRESENCE_KEY`] fresh, so a command that queued work can tell whether
//! anyone will read it (`trigger`: "queued; no daemon is running on this
//! store").

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::store::{KvOp, Store};

/// `{"pid": N, "listen": "ADDR", "at": RFC 3339}` while a daemon runs.
pub const PRESENCE_KEY: &str = "__multijob/daemon";
/// The entry expires this long after its last refresh: a daemon that
/// read the store within it is running.
pub const PRESENCE_TTL: Duration = Duration::from_secs(10);
/// How often the entry is refreshed.
const REFRESH: Duration = Duration::from_secs(3);

/// Refresh the entry until `stop`, then remove it.
pub(super) async fn presence_loop(store: Store, listen: SocketAddr, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let value = json!({
            "pid": std::process::id(),
            "listen": listen.to_string(),
            "at": crate::store::now_rfc3339(),
        });
        let op = KvOp::Set {
            value,
            ttl_sec: Some(PRESENCE_TTL.as_secs()),
        };
        match store.kv(PRESENCE_KEY, op).await {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, key = PRESENCE_KEY, "could not refresh the daemon's presence entry; `multijob trigger` may say no daemon is running");
            }
            Err(_) => {}
        }
    }
    let _ = store.kv(PRESENCE_KEY, KvOp::Delete).await;
}
