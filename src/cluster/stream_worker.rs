//! The workers of one process in a Redis deployment: read started runs
//! from the `ready` stream, and from `ready:<group>` of each worker group
//! the process serves (`multijob worker --group NAME`), in one read
//! (consumer group `workers`; an entry carries up to 16 runs, each run
//! takes a slot), execute them with the same handlers
//! as the embedded pool, and append each result to the `results` stream
//! as it ends; the last run of an entry acknowledges the entry in the
//! same transaction as its result.
//!
//! While its runs execute an entry's idle time is reset every third of
//! the lease; entries idle longer than the lease belong to a dead worker
//! and are claimed here (XAUTOCLAIM). Their attempts are reported lost,
//! and the leader retries them by the job's retry policy, as the
//! embedded store does after a crash (a retry is a new attempt; the
//! leader drops results of attempts that already ended); message steps
//! find their idempotency keys. A stopping worker hands back the runs of
//! an entry it has not started (interrupted: not counted as an attempt).

mod remote_host;
mod results;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use remote_host::RemoteHost;
use results::{Done, finish_run, send_loop};

use super::wire::{RunResult, WireOutcome};
use super::{ClusterConfig, Keys, WORKERS_GROUP, connect, ensure_group, is_nogroup, now_ms};
use crate::run::{Claim, Outcome, RunError, RunHost};
use crate::store::redis::DISPATCH_PACK;
use crate::store::runs::Run;
use crate::store::{Applied, Store, format_ts};
use crate::worker::{WorkerContext, drain, execute};

/// Entries read per round trip at most.
const MAX_BATCH: usize = 256;
/// How often a worker process says it is alive (and how many slots it has).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A ready entry: the index of its stream in `Node::streams`, its id.
type EntryKey = (usize, String);

struct Node {
    cfg: ClusterConfig,
    keys: Keys,
    /// The worker groups served besides ungrouped runs.
    groups: Vec<String>,
    /// The streams read: `ready` first, then each group's.
    streams: Vec<String>,
    ctx: WorkerContext,
    host: Arc<RemoteHost>,
    slots: Arc<Semaphore>,
    total: usize,
    busy: Arc<AtomicUsize>,
    /// Entry id → its runs' ids and cancel tokens, for lease renewal,
    /// cancellations and drain. An entry stays until its last run is sent.
    in_flight: std::sync::Mutex<HashMap<EntryKey, Vec<(String, CancellationToken)>>>,
    /// Stop taking new entries.
    stop: CancellationToken,
    /// Sends results and renews leases.
    conn: ConnectionManager,
    /// Finished entries waiting for [`send_loop`].
    done: mpsc::UnboundedSender<Done>,
}

/// The running workers of this process.
pub struct StreamWorkers {
    node: Arc<Node>,
    tasks: Vec<JoinHandle<()>>,
}

impl StreamWorkers {
    /// Start `n` worker slots reading the ready stream and those of
    /// `groups` (names checked by [`crate::store::workers::check_group`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: Store,
        applied: Arc<Applied>,
        cfg: ClusterConfig,
        keys: Keys,
        ctx: WorkerContext,
        n: usize,
        busy: Arc<AtomicUsize>,
        groups: Vec<String>,
    ) -> anyhow::Result<StreamWorkers> {
        let mut conn = connect(&cfg.url, Duration::from_secs(5)).await?;
        let mut streams = vec![keys.ready.clone()];
        streams.extend(groups.iter().map(|g| keys.ready_of(Some(g))));
        for stream in &streams {
            ensure_group(&mut conn, stream, WORKERS_GROUP).await?;
        }
        let (done, done_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            host: Arc::new(RemoteHost::new(store, applied, keys.queue.clone())),
            cfg,
            keys,
            groups,
            streams,
            ctx,
            slots: Arc::new(Semaphore::new(n)),
            total: n,
            busy,
            in_flight: Default::default(),
            stop: CancellationToken::new(),
            conn,
            done,
        });
        let tasks = vec![
            tokio::spawn(send_loop(node.clone(), done_rx)),
            tokio::spawn(fetch_loop(node.clone())),
            tokio::spawn(lease_loop(node.clone())),
            tokio::spawn(heartbeat_loop(node.clone())),
            tokio::spawn(cancel_loop(node.clone())),
            tokio::spawn(applied_loop(node.clone())),
        ];
        Ok(StreamWorkers { node, tasks })
    }

    pub fn total(&self) -> usize {
        self.node.total
    }

    /// Stop taking runs, give those in flight `grace`, then interrupt them
    /// (their results say so and the leader queues them again).
    pub async fn drain(self, grace: Duration) {
        let node = self.node;
        node.stop.cancel();
        let busy = || node.busy.load(Ordering::SeqCst);
        let running = || {
            node.in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .flatten()
                .map(|(_, t)| t.clone())
                .collect()
        };
        if drain::grace_then_interrupt(busy, grace, &node.ctx.shutdown, running).await > 0 {
            // Their results say "interrupted", and the leader queues them again.
            drain::until_idle(busy, Duration::from_secs(10)).await;
        }
        for t in self.tasks {
            t.abort();
        }
        let mut conn = node.conn.clone();
        let _: redis::RedisResult<i64> = redis::cmd("HDEL")
            .arg(&node.keys.workers)
            .arg(&node.cfg.node)
            .query_async(&mut conn)
            .await;
    }
}

/// Take free slots (at least one, waiting for it) and fill them: first
/// with entries whose worker died (every third of the lease), then with
/// new entries. One task holds the free slots, so the two never compete.
async fn fetch_loop(node: Arc<Node>) {
    let mut conn = match connect(&node.cfg.url, Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "worker: cannot connect to Redis");
            return;
        }
    };
    let period = (node.cfg.lease / 3).max(Duration::from_millis(50));
    let block_ms = period.as_millis().min(1000) as u64;
    let mut last_reclaim = tokio::time::Instant::now();
    loop {
        let first = tokio::select! {
            _ = node.stop.cancelled() => return,
            p = node.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match node.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        if last_reclaim.elapsed() >= period {
            last_reclaim = tokio::time::Instant::now();
            reclaim(&node, &mut conn, permits.len()).await;
        }
        // An entry carries up to DISPATCH_PACK runs: read about as many
        // runs as there are free slots.
        let entries = permits.len().div_ceil(DISPATCH_PACK);
        let read: redis::RedisResult<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(WORKERS_GROUP)
            .arg(&node.cfg.node)
            .arg("COUNT")
            .arg(entries)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&node.streams)
            .arg(vec![">"; node.streams.len()])
            .query_async(&mut conn)
            .await;
        match read {
            Ok(reply) => {
                for key in reply.keys {
                    let at = node.stream_index(&key.key);
                    for entry in key.ids {
                        start_entry(&node, at, entry, &mut permits).await;
                    }
                }
            }
            Err(e) if is_nogroup(&e) => {
                tracing::warn!(
                    "worker: the consumer group is gone (Redis restarted?); recreating it"
                );
                for stream in &node.streams {
                    let _ = ensure_group(&mut conn, stream, WORKERS_GROUP).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "worker: reading the ready stream failed; retrying");
                drop(permits);
                tokio::select! {
                    _ = node.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

impl Node {
    /// Which of the streams read `key` is (the ungrouped one if none).
    fn stream_index(&self, key: &str) -> usize {
        self.streams.iter().position(|s| s == key).unwrap_or(0)
    }
}

/// The run ids of a `ready` entry (field `runs`, space-separated).
pub fn runs_of(entry: &StreamId) -> Vec<String> {
    entry
        .get::<String>("runs")
        .map(|ids| ids.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The records of a `ready` entry's runs: fields `0`, `1`, ... (one
/// each), or `ps`, a JSON array of `{"run": <record>}` (an entry an
/// earlier version left in the stream when it was stopped for an
/// upgrade). `None` when one is unreadable.
pub(super) fn runs_in(entry: &StreamId) -> Option<Vec<Run>> {
    #[derive(serde::Deserialize)]
    struct Payload {
        run: Run,
    }
    if let Some(packed) = entry.get::<String>("ps") {
        let payloads: Vec<Payload> = serde_json::from_str(&packed).ok()?;
        return Some(payloads.into_iter().map(|p| p.run).collect());
    }
    let mut runs = Vec::new();
    while let Some(record) = entry.get::<String>(&runs.len().to_string()) {
        runs.push(crate::store::redis::record::decode(&record).ok()?);
    }
    Some(runs)
}

/// Start the runs of `entry`, each in a slot: the free ones in `permits`
/// first, then waiting for runs to finish.
async fn start_entry(
    node: &Arc<Node>,
    stream: usize,
    entry: StreamId,
    permits: &mut Vec<OwnedSemaphorePermit>,
) {
    let key: EntryKey = (stream, entry.id.clone());
    let Some(runs) = runs_in(&entry).filter(|r| !r.is_empty()) else {
        tracing::error!(entry = %entry.id, "worker: unreadable ready entry; dropping it");
        let node = node.clone();
        tokio::spawn(async move { finish_run(&node, Some(key), "", None).await });
        return;
    };
    let tokens: Vec<CancellationToken> = runs.iter().map(|_| CancellationToken::new()).collect();
    {
        let mut in_flight = node.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if in_flight.contains_key(&key) {
            // Already running here (our own renewal lagged and we reclaimed
            // it): one execution is enough.
            return;
        }
        let held = runs
            .iter()
            .zip(&tokens)
            .map(|(run, t)| (run.id.clone(), t.clone()))
            .collect();
        in_flight.insert(key.clone(), held);
    }
    let remaining = Arc::new(AtomicUsize::new(runs.len()));
    let mut pending = runs.into_iter().zip(tokens);
    while let Some((run, token)) = pending.next() {
        let permit = match permits.pop() {
            Some(p) => p,
            None => {
                let acquired = tokio::select! {
                    p = node.slots.clone().acquire_owned() => p.ok(),
                    _ = node.stop.cancelled() => None,
                };
                match acquired {
                    Some(p) => p,
                    None => {
                        // Stopping: the runs not started go back to the
                        // leader's queue now (not counted as an attempt),
                        // instead of waiting in the entry for a lease to
                        // expire and being reported as lost.
                        let rest = std::iter::once(run).chain(pending.map(|(r, _)| r));
                        for run in rest {
                            report(node, &key, &remaining, &run, Outcome::Interrupted);
                        }
                        return;
                    }
                }
            }
        };
        node.busy.fetch_add(1, Ordering::SeqCst);
        let node = node.clone();
        let entry_id = key.clone();
        let remaining = remaining.clone();
        tokio::spawn(async move {
            // Boxed: a run's future is kilobytes (every job type's state),
            // and the task's own future is copied on its way into the
            // runtime; a pointer is cheaper to copy.
            let result = Box::pin(run_one(&node, run, token)).await;
            settle(&node, &entry_id, &remaining, &result.0, result.1).await;
            drop(permit);
        });
    }
}

/// Send an outcome for a run of `entry_id` that this process does not
/// execute (handed back, or lost elsewhere), as [`settle`] does.
fn report(
    node: &Arc<Node>,
    entry_id: &EntryKey,
    remaining: &Arc<AtomicUsize>,
    run: &Run,
    outcome: Outcome,
) {
    let result = encode_result(node, run, outcome, None);
    node.busy.fetch_add(1, Ordering::SeqCst);
    let (node, entry_id, remaining) = (node.clone(), entry_id.clone(), remaining.clone());
    let run_id = run.id.clone();
    tokio::spawn(async move { settle(&node, &entry_id, &remaining, &run_id, result).await });
}

/// Send a run's result; the entry's last run acknowledges the entry with
/// it and releases the entry's lease renewal. Ends a `busy` count.
async fn settle(
    node: &Node,
    entry_id: &EntryKey,
    remaining: &AtomicUsize,
    run_id: &str,
    result: Option<String>,
) {
    let last = remaining.fetch_sub(1, Ordering::SeqCst) == 1;
    let ack = last.then(|| entry_id.clone());
    finish_run(node, ack, run_id, result).await;
    if last {
        node.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(entry_id);
    }
    node.busy.fetch_sub(1, Ordering::SeqCst);
}

/// Execute one run; its id and result (as JSON, none if it cannot be
/// encoded).
async fn run_one(
    node: &Arc<Node>,
    run: Run,
    cancel: CancellationToken,
) -> (String, Option<String>) {
    let started_at = format_ts(jiff::Timestamp::now());
    let outcome = match node.host.job_for(&run).await {
        None => Outcome::Failed(RunError::Permanent(format!(
            "job {} is not in the applied snapshot",
            run.job_id
        ))),
        Some(job) => {
            let host: Arc<dyn RunHost> = node.host.clone();
            let claim = Claim {
                run: run.clone(),
                job,
                cancel,
            };
            execute(&host, &node.ctx, claim).await
        }
    };
    let finished_at = format_ts(jiff::Timestamp::now());
    let result = encode_result(node, &run, outcome, Some((started_at, finished_at)));
    (run.id, result)
}

/// A run's result as the results stream carries it (none if it cannot
/// be encoded, which is logged).
fn encode_result(
    node: &Node,
    run: &Run,
    outcome: Outcome,
    executed: Option<(String, String)>,
) -> Option<String> {
    let (started_at, finished_at) = executed.unzip();
    let (steps, llm_tokens) = node.host.take_stash(&run.id);
    let result = RunResult {
        run_id: run.id.clone(),
        attempt: run.attempt,
        outcome: WireOutcome::from(outcome),
        steps,
        llm_tokens,
        worker: node.cfg.node.clone(),
        started_at,
        finished_at,
        dispatched_at: crate::queue::dispatch_mark(run),
    };
    match serde_json::to_string(&result) {
        Ok(text) => Some(text),
        Err(e) => {
            tracing::error!(run = %run.id, error = %e, "worker: cannot encode a result");
            None
        }
    }
}

/// Renew the entries this process is running, draining included (a run
/// finishing within the grace period is not someone else's meanwhile);
/// the drain ends this task.
async fn lease_loop(node: Arc<Node>) {
    let mut conn = node.conn.clone();
    let period = (node.cfg.lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(period).await;
        let mut ids: Vec<Vec<String>> = vec![Vec::new(); node.streams.len()];
        for (stream, id) in node
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
        {
            ids[*stream].push(id.clone());
        }
        for (stream, ids) in node.streams.iter().zip(ids) {
            if ids.is_empty() {
                continue;
            }
            let renewed: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
                .arg(stream)
                .arg(WORKERS_GROUP)
                .arg(&node.cfg.node)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID")
                .query_async(&mut conn)
                .await;
            if let Err(e) = renewed {
                tracing::warn!(error = %e, stream, "worker: renewing leases failed");
            }
        }
    }
}

/// Claim entries idle past the lease (their worker died) and report
/// their runs' attempts as lost. Up to one entry per free slot.
/// Each stream served is looked at in turn.
async fn reclaim(node: &Arc<Node>, conn: &mut ConnectionManager, slots: usize) {
    for at in 0..node.streams.len() {
        reclaim_stream(node, conn, at, slots).await;
    }
}

async fn reclaim_stream(node: &Arc<Node>, conn: &mut ConnectionManager, at: usize, slots: usize) {
    let stream = &node.streams[at];
    let claimed: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(WORKERS_GROUP)
        .arg(&node.cfg.node)
        .arg(node.cfg.lease.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(slots.div_ceil(DISPATCH_PACK))
        .query_async(conn)
        .await;
    match claimed {
        Ok(reply) => {
            for entry in reply.claimed {
                report_lost(node, at, entry);
            }
        }
        Err(e) if is_nogroup(&e) => {
            let _ = ensure_group(conn, stream, WORKERS_GROUP).await;
        }
        Err(e) => tracing::warn!(error = %e, "worker: claiming expired leases failed"),
    }
}

/// The runs of an entry whose worker stopped renewing its lease (it died,
/// or hung past the lease): their attempt failed as "worker lost", and
/// the leader retries them by their retry policy or fails them when no
/// retries are left, as the embedded store does after a crash. So a run
/// that kills its worker every time is not run again forever. A run
/// that had finished before the worker died already has its result:
/// the leader drops this one as stale.
fn report_lost(node: &Arc<Node>, stream: usize, entry: StreamId) {
    let key: EntryKey = (stream, entry.id.clone());
    if node
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&key)
    {
        // Our own renewal lagged: the runs are still executing here.
        return;
    }
    let node = node.clone();
    let Some(runs) = runs_in(&entry).filter(|r| !r.is_empty()) else {
        tracing::error!(entry = %entry.id, "worker: unreadable ready entry; dropping it");
        tokio::spawn(async move { finish_run(&node, Some(key), "", None).await });
        return;
    };
    tracing::warn!(
        entry = %entry.id,
        runs = runs.len(),
        "worker: claimed runs whose worker stopped renewing its lease; their attempt failed as lost"
    );
    let remaining = Arc::new(AtomicUsize::new(runs.len()));
    for run in &runs {
        let lost = Outcome::Failed(RunError::retryable(LOST.to_string()));
        report(&node, &key, &remaining, run, lost);
    }
}

/// The error of an attempt whose worker was lost.
pub(super) const LOST: &str = "worker lost: its worker stopped renewing the lease while running it";

/// Cancel runs the leader cancelled (overlap `replace`, a deleted job,
/// an operator's `multijob cancel`).
async fn cancel_loop(node: Arc<Node>) {
    let mut conn = node.conn.clone();
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let running: Vec<(String, CancellationToken)> = node
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .filter(|(id, t)| !id.is_empty() && !t.is_cancelled())
            .cloned()
            .collect();
        if running.is_empty() {
            continue;
        }
        let ids: Vec<&str> = running.iter().map(|(id, _)| id.as_str()).collect();
        let reasons: redis::RedisResult<Vec<Option<String>>> = redis::cmd("HMGET")
            .arg(&node.keys.cancel)
            .arg(&ids)
            .query_async(&mut conn)
            .await;
        let Ok(reasons) = reasons else { continue };
        for ((run_id, token), reason) in running.into_iter().zip(reasons) {
            if let Some(reason) = reason {
                node.host.cancelled_by_leader(run_id, reason);
                token.cancel();
            }
        }
    }
}

/// How often a worker looks for a newly applied revision.
const APPLIED_POLL: Duration = Duration::from_millis(250);

/// Load each newly applied revision as the leader applies it (see
/// [`RemoteHost::follow_applied`]).
async fn applied_loop(node: Arc<Node>) {
    loop {
        node.host.follow_applied().await;
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(APPLIED_POLL) => {}
        }
    }
}

async fn heartbeat_loop(node: Arc<Node>) {
    let mut conn = node.conn.clone();
    loop {
        let beat: redis::RedisResult<i64> = redis::cmd("HSET")
            .arg(&node.keys.workers)
            .arg(&node.cfg.node)
            .arg(crate::store::workers::encode(
                node.total,
                node.busy.load(Ordering::Relaxed),
                &node.groups,
                now_ms(),
            ))
            .query_async(&mut conn)
            .await;
        if let Err(e) = beat {
            tracing::warn!(error = %e, "worker: heartbeat failed");
        }
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, String)]) -> StreamId {
        StreamId {
            id: "1-1".into(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
            map: fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        redis::Value::BulkString(v.clone().into_bytes()),
                    )
                })
                .collect(),
        }
    }

    fn record(id: &str) -> serde_json::Value {
        let run =
            crate::testkit::sample_run(id, "job", "k", crate::store::runs::RunStatus::Running);
        serde_json::to_value(run).expect("a run serializes")
    }

    #[test]
    fn a_ready_entry_is_read_in_either_form() {
        let numbered = entry(&[
            ("runs", "a b".into()),
            ("0", record("a").to_string()),
            ("1", record("b").to_string()),
        ]);
        let ids =
            |runs: Option<Vec<Run>>| runs.map(|r| r.into_iter().map(|r| r.id).collect::<Vec<_>>());
        assert_eq!(
            ids(runs_in(&numbered)),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        // As an earlier version left it in the stream.
        let packed = serde_json::json!([{"run": record("a")}, {"run": record("b")}]);
        let older = entry(&[("runs", "a b".into()), ("ps", packed.to_string())]);
        assert_eq!(
            ids(runs_in(&older)),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        let broken = entry(&[("runs", "a".into()), ("0", "{".into())]);
        assert_eq!(ids(runs_in(&broken)), None);
    }
}
