//! A replica that does not lead: it shows the revision the leader applied
//! and who leads, and a leader whose term ended starts over as one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::Keys;
use crate::status::state::{ClusterRole, LeaderQueue, Shared};
use crate::store::Store;

/// This replica's place in the deployment, as `/api/v1/status` shows it.
pub(super) fn set_role(shared: &Shared, node: &str, role: &'static str, leader: Option<String>) {
    shared.cluster.store(Arc::new(Some(ClusterRole {
        node: node.to_string(),
        role,
        leader,
        leader_queue: None,
    })));
}

/// A leader whose term ended must not act on its in-memory state again:
/// the process starts over (the same binary and arguments, the same pid,
/// as a follower that may win the next election). When Redis is away
/// (the term ran out during an outage), it waits for it first: a start
/// without Redis would fail. Without this, one replica whose Redis
/// restarted for longer than the leader TTL left the deployment with none.
pub(super) async fn restart_as_follower(conn: &mut redis::aio::ConnectionManager) -> ! {
    loop {
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(conn).await;
        if pong.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    use std::os::unix::process::CommandExt;
    // exec and exit drop nothing: write out the queued log lines first.
    crate::logging::flush();
    let error = match std::env::current_exe() {
        // exec only returns on failure. Sockets are close-on-exec, so the
        // new process binds the API port again.
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec()
            .to_string(),
        Err(e) => e.to_string(),
    };
    // The log's writer thread is gone: this last line goes directly.
    eprintln!("multijob: cannot start again as a follower ({error}); exiting");
    std::process::exit(1);
}

/// Followers show the applied revision the leader wrote, and who leads.
pub(super) async fn follow_leader(
    shared: Arc<Shared>,
    keys: Keys,
    is_leader: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut conn = match &shared.store {
        Store::Redis(r) => Some(r.connection()),
        _ => None,
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if is_leader.load(Ordering::SeqCst) {
            return;
        }
        if let Some(c) = conn.as_mut() {
            show_leader(&shared, &keys, c).await;
        }
        let Ok(applied) = shared.store.applied().await else {
            continue;
        };
        let current = shared.applied.load();
        let id = |a: &crate::store::Applied| a.revision.as_ref().map(|r| r.id.clone());
        if id(&applied) != id(&current) {
            let applied = Arc::new(applied);
            shared.applied.store(applied.clone());
            shared.applied_tx.send_replace(applied);
        }
    }
}

/// Who leads, and the queue figures the leader last published.
async fn show_leader(shared: &Shared, keys: &Keys, conn: &mut redis::aio::ConnectionManager) {
    let read: redis::RedisResult<(Option<String>, Option<String>)> = redis::pipe()
        .cmd("GET")
        .arg(&keys.election.leader)
        .cmd("GET")
        .arg(&keys.queue)
        .query_async(conn)
        .await;
    if let Ok((leader, queue)) = read {
        let queue: Option<LeaderQueue> = queue.and_then(|q| serde_json::from_str(&q).ok());
        // rcu: never overwrite the leader role set meanwhile.
        shared.cluster.rcu(|current| match current.as_ref() {
            Some(role) if role.role == "follower" => Arc::new(Some(ClusterRole {
                leader: leader.clone(),
                leader_queue: queue.clone(),
                ..role.clone()
            })),
            _ => current.clone(),
        });
    }
}
