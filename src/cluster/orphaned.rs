//! Runs of a worker group whose every worker died. Their `ready:<group>`
//! entries stay pending under the dead consumer, and only a worker of the
//! group claims such entries, so the runs showed `running` until one
//! joined. The leader claims them once their lease is past and ends the
//! attempts as lost, as a worker would: each run is retried by its policy
//! (and waits `queued` for a worker of its group) or fails when no
//! retries are left. The ungrouped `ready` stream is left to the workers:
//! every `worker` and `run` process reads it.

use redis::aio::ConnectionManager;
use redis::streams::StreamAutoClaimReply;

use super::leader::apply_one;
use super::stream_worker::{LOST, runs_in};
use super::wire::{RunResult, WireOutcome};
use super::{ClusterConfig, Keys, WORKERS_GROUP};
use crate::queue::RunQueue;

/// Entries claimed from one group's stream per sweep.
const CLAIM_BATCH: usize = 64;

/// Claim the entries idle past the lease on the streams of the groups no
/// live worker serves, and end their runs' attempts as lost; the ids of
/// the runs they held.
pub(super) async fn reclaim_unserved(
    queue: &RunQueue,
    cfg: &ClusterConfig,
    keys: &Keys,
    conn: &mut ConnectionManager,
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
    let mut done = Vec::new();
    for group in groups {
        if queue.serves_group(&group) != Some(false) {
            continue;
        }
        let stream = keys.ready_of(Some(&group));
        let claimed: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
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
                tracing::warn!(group = %group, error = %e, "leader: claiming a worker group's expired leases failed");
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            let runs = runs_in(&entry).unwrap_or_default();
            tracing::warn!(
                group = %group, entry = %entry.id, runs = runs.len(),
                "leader: no live worker serves the group and these runs' worker stopped renewing its lease; their attempt failed as lost"
            );
            for run in runs {
                let result = RunResult {
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
                    dispatched_at: crate::queue::dispatch_mark(&run),
                };
                apply_one(queue, result, &mut done);
            }
            ids.push(entry.id);
        }
        // Acknowledged once applied: should this leader stop before its
        // store writes land, the next one's recovery finds the runs
        // `running` under no live worker and counts them lost the same way.
        let acked: redis::RedisResult<()> = redis::pipe()
            .cmd("XACK")
            .arg(&stream)
            .arg(WORKERS_GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(&ids)
            .ignore()
            .query_async(conn)
            .await;
        if let Err(e) = acked {
            tracing::warn!(group = %group, error = %e, "leader: acknowledging claimed entries failed");
        }
    }
    done
}
