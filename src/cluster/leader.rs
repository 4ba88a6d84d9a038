//! The leader's side of dispatch: start runs while the live workers have
//! room, and apply the results they send back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio_util::sync::CancellationToken;

use super::stream_worker::HEARTBEAT;
use super::wire::RunResult;
use super::{ClusterConfig, Keys, LEADER_GROUP, connect, ensure_group, is_nogroup, now_ms};
use crate::queue::RunQueue;
use crate::run::Outcome;
use crate::store::runs::RunStatus;
use crate::store::{Mutation, Store};

/// Results applied per round trip at most.
const RESULT_BATCH: usize = 1024;
/// Runs started per worker slot: one executing, three on their way. With
/// two, a round trip through the leader's writer left workers idle: the
/// no-op rate through Redis rose ~20% with four (eight gained ~5% more
/// and shows twice as many runs `running` that still wait in the stream).
const RUNS_PER_SLOT: usize = 4;

/// Run ids handed to the ready stream and not finished: on takeover these
/// stay `running` (a worker has them) instead of counting as lost. A run
/// is held while its entry is in `ready` or a worker group's stream
/// (`ready:<group>`, listed in `ready_groups`; workers delete it when they
/// append the result, in one transaction) or its result is in `results`
/// (the leader deletes it in the batch that records the outcome).
pub async fn dispatched(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> redis::RedisResult<HashSet<String>> {
    let mut held = HashSet::new();
    let groups: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&keys.ready_groups)
        .query_async(conn)
        .await?;
    let streams = std::iter::once(None).chain(groups.iter().map(|g| Some(g.as_str())));
    for stream in streams.map(|g| keys.ready_of(g)) {
        for entry in stream_entries(conn, &stream).await? {
            held.extend(super::stream_worker::runs_of(&entry));
        }
    }
    for entry in stream_entries(conn, &keys.results).await? {
        held.extend(results_of(&entry).into_iter().flatten().map(|r| r.run_id));
    }
    Ok(held)
}

/// Every entry of a stream, a page at a time.
async fn stream_entries(
    conn: &mut ConnectionManager,
    key: &str,
) -> redis::RedisResult<Vec<StreamId>> {
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let full = page.ids.len() == PAGE;
        if let Some(last) = page.ids.last() {
            start = format!("({}", last.id);
        }
        out.extend(page.ids);
        if !full {
            return Ok(out);
        }
    }
}

/// Worker slots of the live worker processes (fresh heartbeats), and the
/// worker groups they serve (told to the queue: runs of a group no live
/// worker serves wait there, queued), refreshed twice a second; stale
/// entries are removed after a minute.
pub async fn track_capacity(
    mut conn: ConnectionManager,
    keys: Keys,
    capacity: Arc<AtomicUsize>,
    queue: Arc<RunQueue>,
    cancel: CancellationToken,
) {
    loop {
        let entries: redis::RedisResult<Vec<(String, String)>> = redis::cmd("HGETALL")
            .arg(&keys.workers)
            .query_async(&mut conn)
            .await;
        if let Ok(entries) = entries {
            let now = now_ms();
            let fresh_within = 5 * HEARTBEAT.as_millis() as u64;
            let mut slots = 0usize;
            // A group's window: its workers' slots, times the runs a slot
            // may hold (as the whole dispatch window is sized).
            let mut windows: HashMap<String, usize> = HashMap::new();
            for (node, value) in entries {
                // An unreadable entry counts as long gone.
                let w = crate::store::workers::decode(&node, &value);
                let age = now.saturating_sub(w.as_ref().map_or(0, |w| w.beat_ms));
                if let Some(w) = w.filter(|_| age <= fresh_within) {
                    slots += w.slots;
                    for group in w.groups {
                        *windows.entry(group).or_default() += w.slots * RUNS_PER_SLOT;
                    }
                } else if age > 60_000 {
                    let _: redis::RedisResult<i64> = redis::cmd("HDEL")
                        .arg(&keys.workers)
                        .arg(&node)
                        .query_async(&mut conn)
                        .await;
                }
            }
            windows.retain(|_, window| *window > 0);
            queue.set_served_groups(windows);
            capacity.store(slots, Ordering::Relaxed);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Follow-up runs waiting to start, by job, as the leader last published
/// them (`None` when nothing readable is published: no leader for 5 s).
pub async fn follow_ups_waiting(
    mut conn: ConnectionManager,
    queue_key: &str,
) -> Option<std::collections::BTreeMap<String, usize>> {
    let text: Option<String> = redis::cmd("GET")
        .arg(queue_key)
        .query_async(&mut conn)
        .await
        .ok()?;
    let figures: crate::status::state::LeaderQueue = serde_json::from_str(&text?).ok()?;
    Some(figures.follow_ups_waiting)
}

/// Publish the queue's figures and the last reconcile twice a second for
/// followers' status (expiring after 5 s, so a dead leader's go away).
pub async fn publish_queue(
    shared: Arc<crate::status::state::Shared>,
    mut conn: ConnectionManager,
    keys: Keys,
    cancel: CancellationToken,
) {
    loop {
        let last_reconcile = shared
            .last_reconcile
            .load()
            .as_ref()
            .as_ref()
            .and_then(|r| serde_json::to_value(r).ok());
        let figures = {
            let view = shared.queue.view();
            crate::status::state::LeaderQueue {
                queue_depth: view.waiting(),
                running: view.running(),
                pressure_mode: view.pressure(),
                bursts: view.bursts(),
                follow_ups_waiting: view.follow_ups_waiting(),
                at: crate::store::now_rfc3339(),
                last_reconcile,
            }
        };
        if let Ok(text) = serde_json::to_string(&figures) {
            let set: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&keys.queue)
                .arg(text)
                .arg("PX")
                .arg(5000)
                .query_async(&mut conn)
                .await;
            if let Err(e) = set {
                tracing::debug!(error = %e, "leader: could not publish the queue figures");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Cancel tokens of dispatched runs, watched by [`forward_cancels`].
pub type Dispatched = Arc<std::sync::Mutex<HashMap<String, CancellationToken>>>;

/// Start runs (the queue hands each to the ready stream with its record)
/// while fewer than four times the live slots are running. With no live worker
/// nothing starts: runs wait in the queue, where pressure mode sees them.
pub async fn dispatch_loop(
    queue: Arc<RunQueue>,
    capacity: Arc<AtomicUsize>,
    tokens: Dispatched,
    cancel: CancellationToken,
) {
    // A claim waiting for a ready run was allowed by the window when it
    // began; should the last worker die meanwhile, the window is looked
    // at again (a claim is cancel-safe: it takes a run and returns at
    // once). Waiting on, it started a retried run with no worker alive.
    let mut recheck = tokio::time::interval(Duration::from_millis(250));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let released = queue.released();
        let window = capacity.load(Ordering::Relaxed) * RUNS_PER_SLOT;
        if queue.view().running() >= window {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = released => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = recheck.tick() => {}
            claim = queue.claim() => match claim {
                None => return,
                Some(c) => {
                    tokens
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(c.run.id, c.cancel);
                }
            },
        }
    }
}

/// The queue cancels a running run through its token (overlap `replace`,
/// a deleted job, an operator's cancel); in a Redis deployment the run
/// executes elsewhere, so the cancellation is written to the `cancel` hash
/// the workers watch. A write that fails is tried again on the next round.
pub async fn forward_cancels(
    queue: Arc<RunQueue>,
    mut conn: ConnectionManager,
    keys: Keys,
    tokens: Dispatched,
    cancel: CancellationToken,
) {
    // Runs recovered as held by live workers are watched too: one
    // cancelled before this leader took over has its token fired already.
    tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(queue.running_runs_tokens());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let mut fired = Vec::new();
        {
            let mut map = tokens.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|run_id, token| {
                if !matches!(queue.run_status(run_id), Some((RunStatus::Running, _))) {
                    return false;
                }
                if token.is_cancelled() {
                    fired.push((run_id.clone(), token.clone()));
                    return false;
                }
                true
            });
        }
        for (run_id, token) in fired {
            let reason = queue
                .cancel_reason(&run_id)
                .unwrap_or_else(|| "cancelled".to_string());
            let sent: redis::RedisResult<i64> = redis::cmd("HSET")
                .arg(&keys.cancel)
                .arg(&run_id)
                .arg(&reason)
                .query_async(&mut conn)
                .await;
            if let Err(e) = sent {
                tracing::warn!(run = %run_id, error = %e, "leader: could not forward a cancellation; trying again");
                tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(run_id, token);
            }
        }
    }
}

/// Apply the workers' results, then acknowledge each (in the same store
/// batch order, so an acknowledged result is a recorded one). First takes
/// over what earlier leaders left pending.
pub async fn results_loop(
    queue: Arc<RunQueue>,
    store: Store,
    cfg: ClusterConfig,
    keys: Keys,
    capacity: Arc<AtomicUsize>,
    cancel: CancellationToken,
) {
    let mut conn = loop {
        match connect(&cfg.url, Duration::from_secs(5)).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "leader: cannot connect to Redis for results; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    let _ = ensure_group(&mut conn, &keys.results, LEADER_GROUP).await;
    // Results delivered to an earlier leader that never acknowledged them.
    take_over_pending(&queue, &store, &cfg, &keys, &mut conn, 0).await;
    let mut swept = tokio::time::Instant::now();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // An earlier leader may still read for a moment after this one
        // took over (its renewal hung while Redis was away): what it took
        // stays pending under its name. Swept now and then, or those runs
        // would stay `running` for good.
        if swept.elapsed() >= PENDING_SWEEP {
            take_over_pending(&queue, &store, &cfg, &keys, &mut conn, PENDING_IDLE_MS).await;
            let idle = capacity.load(Ordering::Relaxed) == 0;
            let done =
                super::orphaned::reclaim_unserved(&queue, &cfg, &keys, &mut conn, idle).await;
            clear_cancels(&mut conn, &keys, done).await;
            swept = tokio::time::Instant::now();
        }
        let read: redis::RedisResult<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(LEADER_GROUP)
            .arg(&cfg.node)
            .arg("COUNT")
            .arg(RESULT_BATCH)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&keys.results)
            .arg(">")
            .query_async(&mut conn)
            .await;
        match read {
            Ok(reply) => {
                let entries = reply.keys.into_iter().flat_map(|k| k.ids).collect();
                let done = apply(&queue, &store, entries);
                clear_cancels(&mut conn, &keys, done).await;
            }
            Err(e) if is_nogroup(&e) => {
                tracing::warn!(
                    "leader: the results group is gone (Redis restarted?); recreating it"
                );
                let _ = ensure_group(&mut conn, &keys.results, LEADER_GROUP).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader: reading results failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// How often the results loop takes over results pending too long.
const PENDING_SWEEP: Duration = Duration::from_secs(5);
/// A result pending this long was read by a process that is gone (this
/// leader acknowledges what it reads within its store's group commit).
const PENDING_IDLE_MS: u64 = 10_000;

/// Apply results pending (read, not acknowledged) for at least `min_idle_ms`
/// under any consumer: an earlier leader's, or one read twice, which
/// `apply` drops as stale.
async fn take_over_pending(
    queue: &RunQueue,
    store: &Store,
    cfg: &ClusterConfig,
    keys: &Keys,
    conn: &mut ConnectionManager,
    min_idle_ms: u64,
) {
    let mut start = "0-0".to_string();
    loop {
        let claimed: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&keys.results)
            .arg(LEADER_GROUP)
            .arg(&cfg.node)
            .arg(min_idle_ms)
            .arg(&start)
            .arg("COUNT")
            .arg(RESULT_BATCH)
            .query_async(conn)
            .await;
        match claimed {
            Ok(reply) => {
                if !reply.claimed.is_empty() && min_idle_ms > 0 {
                    tracing::warn!(
                        results = reply.claimed.len(),
                        "leader: took over results left pending by a process that is gone"
                    );
                }
                let done = apply(queue, store, reply.claimed);
                clear_cancels(conn, keys, done).await;
                if reply.next_stream_id == "0-0" {
                    return;
                }
                start = reply.next_stream_id;
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader: taking over pending results failed");
                return;
            }
        }
    }
}

/// The results in a `results` entry: a worker sends the results that
/// finished together as one entry (`rs`, a JSON array); `r` holds one.
/// `None` when the entry cannot be read.
pub fn results_of(entry: &StreamId) -> Option<Vec<RunResult>> {
    if let Some(text) = entry.get::<String>("rs") {
        return serde_json::from_str(&text).ok();
    }
    let text = entry.get::<String>("r")?;
    serde_json::from_str(&text).ok().map(|r| vec![r])
}

fn apply(queue: &RunQueue, store: &Store, entries: Vec<StreamId>) -> Vec<String> {
    let mut done = Vec::with_capacity(entries.len());
    let mut acks = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(results) = results_of(&entry) else {
            tracing::error!(entry = %entry.id, "leader: unreadable result; dropping it");
            acks.push(Mutation::AckResult {
                entry_id: entry.id,
                run_id: String::new(),
            });
            continue;
        };
        for result in results {
            apply_one(queue, result, &mut done);
        }
        // The whole entry is applied: acknowledged in a later store
        // batch than (or the same one as) its records. One entry may hold
        // several runs' results, so no run id.
        acks.push(Mutation::AckResult {
            entry_id: entry.id,
            run_id: String::new(),
        });
    }
    if let Err(e) = store.submit(acks) {
        tracing::error!(error = %e, "leader: acknowledging results failed");
    }
    done
}

pub(super) fn apply_one(queue: &RunQueue, result: RunResult, done: &mut Vec<String>) {
    let current = queue.run_status(&result.run_id);
    // A result names the start it ends (older workers do not: attempt only).
    let same_start = || {
        result.dispatched_at.is_none()
            || result.dispatched_at == queue.run_dispatch_mark(&result.run_id)
    };
    match current {
        Some((RunStatus::Running, attempt)) if attempt == result.attempt && same_start() => {
            if let Some(at) = result.started_at {
                queue.record_start(&result.run_id, at, &result.worker);
            }
            if !result.steps.is_empty() {
                queue.record_steps(&result.run_id, result.steps);
            }
            if result.llm_tokens > 0 {
                queue.record_usage(&result.run_id, result.llm_tokens);
            }
            queue.finish_at(
                &result.run_id,
                Outcome::from(result.outcome),
                result.finished_at.as_deref(),
            );
        }
        _ => {
            // A second execution of a reclaimed run, or a run the
            // leader already ended (cancelled, replaced): nothing to do.
            tracing::debug!(run = %result.run_id, worker = %result.worker, "leader: stale result dropped");
        }
    }
    done.push(result.run_id);
}

/// Cancellations of runs that ended are no longer needed.
async fn clear_cancels(conn: &mut ConnectionManager, keys: &Keys, done: Vec<String>) {
    if done.is_empty() {
        return;
    }
    let _: redis::RedisResult<i64> = redis::cmd("HDEL")
        .arg(&keys.cancel)
        .arg(&done)
        .query_async(conn)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::WireOutcome;
    use crate::queue::QueueConfig;
    use crate::run::NewRun;
    use crate::store::Applied;

    fn queue(dir: &std::path::Path) -> Arc<RunQueue> {
        let store = Store::open_sqlite(&dir.join("s.db")).unwrap();
        let loaded = crate::spec::build(&[crate::spec::SourceFile {
            path: "jobs.d/n.yaml".into(),
            text: "id: n\ntype: noop\n".into(),
        }]);
        let applied = Arc::new(Applied {
            revision: None,
            snapshot: loaded.snapshot,
        });
        let clock = crate::clock::Clock::virtual_at("2026-11-22T10:00:00Z".parse().unwrap());
        let config = QueueConfig {
            remote_dispatch: true,
            ..Default::default()
        };
        RunQueue::new(store, applied, config, clock)
    }

    fn result(run_id: &str, dispatched_at: Option<String>, outcome: WireOutcome) -> RunResult {
        RunResult {
            run_id: run_id.into(),
            attempt: 1,
            outcome,
            steps: vec![],
            llm_tokens: 0,
            worker: "w".into(),
            started_at: None,
            finished_at: None,
            dispatched_at,
        }
    }

    /// A run handed back by a stopping worker is started again under the
    /// same attempt number; a late result of the first start (its entry
    /// claimed as lost after all) must not end the second.
    #[tokio::test(start_paused = true)]
    async fn a_result_of_an_earlier_start_of_the_same_attempt_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let q = queue(tmp.path());
        let id = q
            .enqueue(vec![NewRun::manual("n", serde_json::json!({}))])
            .remove(0);
        let first = q.claim().await.unwrap().run;
        let first_mark = crate::queue::dispatch_mark(&first);
        let mut done = Vec::new();
        apply_one(
            &q,
            result(&id, first_mark.clone(), WireOutcome::Interrupted),
            &mut done,
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = q.claim().await.unwrap().run;
        assert_eq!(second.attempt, first.attempt, "handed back: same attempt");
        let lost = WireOutcome::Failed {
            error: "worker lost".into(),
            retryable: true,
            output: None,
        };
        apply_one(&q, result(&id, first_mark, lost), &mut done);
        assert_eq!(q.run_status(&id), Some((RunStatus::Running, 1)), "stale");
        let ok = WireOutcome::Succeeded {
            output: serde_json::json!({}),
        };
        let second_mark = crate::queue::dispatch_mark(&second);
        apply_one(&q, result(&id, second_mark, ok), &mut done);
        assert_eq!(q.run_status(&id), None, "the second start's result ends it");
    }
}
