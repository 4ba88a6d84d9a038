//! Runs whose worker died when no live worker is left to claim them: a
//! group's runs when the group has no live worker (only a worker of the
//! group reads `ready:<group>`), and every run on `ready` when no worker
//! is live at all (a leader with `--workers 0`). Their entries stayed
//! pending under the dead consumer and the runs showed `running` until a
//! worker joined. The leader claims entries whose lease is past and ends
//! the attempts as lost, as a worker would: each run is retried by its
//! policy (and waits `queued` for a worker) or fails when no retries are
//! left. A claim takes only expired entries, so one made while a worker
//! is in fact live (the heartbeats read late) takes what that worker
//! would have claimed the same way.

use redis::aio::ConnectionManager;
use redis::streams::StreamAutoClaimReply;

use super::leader::apply_one;
use super::stream_worker::{LOST, runs_in};
use super::wire::{RunResult, WireOutcome};
use super::{ClusterConfig, Keys, WORKERS_GROUP};
use crate::queue::RunQueue;
use crate::store::runs::Run;

/// Entries claimed from one stream per sweep.
const CLAIM_BATCH: usize = 64;

/// Claim the entries idle past the lease on the streams nobody live
/// reads (the groups no live worker serves; `ready` too when
/// `no_live_worker`), and end their runs' attempts as lost; the ids of
/// the runs they held.
pub(super) async fn reclaim_unserved(
    queue: &RunQueue,
    cfg: &ClusterConfig,
    keys: &Keys,
    conn: &mut ConnectionManager,
    no_live_worker: bool,
) -> Vec<String> {
    let groups: Vec<String> = match redis::cmd("SMEMBERS")
        .arg(&keys.ready_groups)
        .query_async(conn)
        .await
    {
        Ok(groups) => groups,
        Err(e) => {
            tracing::warn!(error = %e, "leader: reading the worker groups failed");
            return Vec::new();
        }
    };
    let mut streams: Vec<(String, String)> = groups
        .into_iter()
        .filter(|g| queue.serves_group(g) == Some(false))
        .map(|g| (keys.ready_of(Some(&g)), format!("worker group {g}")))
        .collect();
    if no_live_worker {
        streams.push((keys.ready.clone(), "the ready stream".into()));
    }
    let mut done = Vec::new();
    for (stream, what) in streams {
        claim_expired(queue, cfg, conn, &stream, &what, &mut done).await;
    }
    done
}

/// One stream's expired entries, claimed, their runs' attempts ended as
/// lost, then acknowledged.
async fn claim_expired(
    queue: &RunQueue,
    cfg: &ClusterConfig,
    conn: &mut ConnectionManager,
    stream: &str,
    what: &str,
    done: &mut Vec<String>,
) {
    let claimed: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(WORKERS_GROUP)
        .arg(&cfg.node)
        .arg(cfg.lease.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(CLAIM_BATCH)
        .query_async(conn)
        .await;
    let entries = match claimed {
        Ok(reply) => reply.claimed,
        Err(e) => {
            tracing::debug!(stream = %what, error = %e, "leader: claiming expired leases failed");
            return;
        }
    };
    if entries.is_empty() {
        return;
    }
    let mut ids = Vec::with_capacity(entries.len());
    for entry in entries {
        let runs = runs_in(&entry).unwrap_or_default();
        tracing::warn!(
            stream = %what, entry = %entry.id, runs = runs.len(),
            "leader: no live worker is left to claim these runs, whose worker stopped renewing its lease; their attempt failed as lost"
        );
        for run in runs {
            apply_one(queue, lost(&run), done);
        }
        ids.push(entry.id);
    }
    // Acknowledged once applied: should this leader stop before its store
    // writes land, the next one's recovery finds the runs `running` under
    // no live worker and counts them lost the same way.
    let acked: redis::RedisResult<()> = redis::pipe()
        .cmd("XACK")
        .arg(stream)
        .arg(WORKERS_GROUP)
        .arg(&ids)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(&ids)
        .ignore()
        .query_async(conn)
        .await;
    if let Err(e) = acked {
        tracing::warn!(stream = %what, error = %e, "leader: acknowledging claimed entries failed");
    }
}

/// A lost attempt's result, as a worker claiming the run reports it.
fn lost(run: &Run) -> RunResult {
    RunResult {
        run_id: run.id.clone(),
        attempt: run.attempt,
        outcome: WireOutcome::Failed {
            error: LOST.to_string(),
            retryable: true,
            output: None,
        },
        steps: Vec::new(),
        llm_tokens: 0,
        worker: run.lease_owner.clone().unwrap_or_default(),
        started_at: None,
        finished_at: None,
        dispatched_at: crate::queue::dispatch_mark(run),
    }
}
