//! Leader election: `SET leader <node> NX PX ttl`, renewed at a third of
//! the TTL by a script that only extends the key while we still own it.
//! Each new term increments `leader:epoch`: the fencing token the store
//! checks before every write batch of the leader, so a leader that lost
//! its key (a long pause, a partition) cannot write.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

/// Extend the key only while it holds our name.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Delete the key only while it holds our name.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

#[derive(Debug, Clone)]
pub struct ElectionKeys {
    pub leader: String,
    pub epoch: String,
}

/// A term of leadership.
#[derive(Debug)]
pub struct Term {
    /// The fencing token of this term.
    pub epoch: u64,
    /// Fired when the term ends (the key was lost or could not be renewed
    /// within its TTL).
    pub lost: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
}

impl Term {
    /// Give the key up (on a clean shutdown) so another process takes over
    /// at once instead of after the TTL.
    pub async fn resign(self, conn: &mut ConnectionManager, keys: &ElectionKeys, node: &str) {
        self.renewer.abort();
        let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(&keys.leader)
            .arg(node)
            .invoke_async(conn)
            .await;
    }
}

/// Try once to become leader.
pub async fn try_acquire(
    conn: &mut ConnectionManager,
    keys: &ElectionKeys,
    node: &str,
    ttl: Duration,
) -> redis::RedisResult<Option<u64>> {
    let set: Option<String> = redis::cmd("SET")
        .arg(&keys.leader)
        .arg(node)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(conn)
        .await?;
    if set.is_none() {
        return Ok(None);
    }
    let epoch: u64 = redis::cmd("INCR")
        .arg(&keys.epoch)
        .query_async(conn)
        .await?;
    Ok(Some(epoch))
}

/// Wait until this process is leader (or `cancel` fires), then keep the
/// key renewed in the background.
pub async fn campaign(
    conn: ConnectionManager,
    keys: ElectionKeys,
    node: String,
    ttl: Duration,
    cancel: CancellationToken,
) -> Option<Term> {
    let period = ttl / 3;
    loop {
        match acquire(conn.clone(), &keys, &node, ttl).await {
            Ok(Some(term)) => {
                tracing::info!(node = %node, epoch = term.epoch, "became leader");
                return Some(term);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: Redis unreachable"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Try once to take the key; if taken, keep it renewed in the background
/// for as long as the term lasts.
pub async fn acquire(
    mut conn: ConnectionManager,
    keys: &ElectionKeys,
    node: &str,
    ttl: Duration,
) -> redis::RedisResult<Option<Term>> {
    let Some(epoch) = try_acquire(&mut conn, keys, node, ttl).await? else {
        return Ok(None);
    };
    let lost = CancellationToken::new();
    let renewer = tokio::spawn(renew(
        conn,
        keys.clone(),
        node.to_string(),
        ttl,
        lost.clone(),
    ));
    Ok(Some(Term {
        epoch,
        lost,
        renewer,
    }))
}

async fn renew(
    mut conn: ConnectionManager,
    keys: ElectionKeys,
    node: String,
    ttl: Duration,
    lost: CancellationToken,
) {
    let period = ttl / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let renewed: redis::RedisResult<i64> = redis::Script::new(RENEW)
            .key(&keys.leader)
            .arg(&node)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(1) => last_ok = tokio::time::Instant::now(),
            Ok(_) => {
                tracing::error!(node = %node, "lost the leader key to another process");
                lost.cancel();
                return;
            }
            Err(e) => {
                // The key may still be ours; once its TTL has passed since
                // the last renewal, someone else may hold it.
                if last_ok.elapsed() >= ttl {
                    tracing::error!(node = %node, error = %e, "could not renew the leader key within its TTL");
                    lost.cancel();
                    return;
                }
                tracing::warn!(error = %e, "leader renewal failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::RedisServer;

    #[tokio::test]
    async fn one_leader_at_a_time_and_a_new_epoch_per_term() {
        let redis = RedisServer::start().expect("redis-server");
        let mut a = crate::cluster::connect(&redis.url(), Duration::from_secs(2))
            .await
            .expect("connect");
        let mut b = a.clone();
        let keys = ElectionKeys {
            leader: "{t}:leader".into(),
            epoch: "{t}:leader:epoch".into(),
        };
        let ttl = Duration::from_millis(300);
        let first = try_acquire(&mut a, &keys, "a", ttl).await.expect("redis");
        assert_eq!(first, Some(1));
        assert_eq!(
            try_acquire(&mut b, &keys, "b", ttl).await.expect("redis"),
            None
        );
        // `a` stops renewing: after the TTL `b` gets the next epoch.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            try_acquire(&mut b, &keys, "b", ttl).await.expect("redis"),
            Some(2)
        );
    }

    #[tokio::test]
    async fn a_renewed_term_holds_and_a_stolen_key_ends_it() {
        let redis = RedisServer::start().expect("redis-server");
        let conn = crate::cluster::connect(&redis.url(), Duration::from_secs(2))
            .await
            .expect("connect");
        let keys = ElectionKeys {
            leader: "{t}:leader".into(),
            epoch: "{t}:leader:epoch".into(),
        };
        let ttl = Duration::from_millis(300);
        let term = campaign(
            conn.clone(),
            keys.clone(),
            "a".into(),
            ttl,
            CancellationToken::new(),
        )
        .await
        .expect("term");
        let mut other = conn.clone();
        // Three TTLs later the key is still ours.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(!term.lost.is_cancelled());
        assert_eq!(
            try_acquire(&mut other, &keys, "b", ttl)
                .await
                .expect("redis"),
            None
        );
        // Someone overwrites it (an operator, a split brain): the term ends.
        let _: () = redis::cmd("SET")
            .arg(&keys.leader)
            .arg("b")
            .query_async(&mut other)
            .await
            .expect("set");
        tokio::time::timeout(Duration::from_secs(2), term.lost.cancelled())
            .await
            .expect("term lost");
    }
}
