//! The two process shapes of a Redis deployment: `run --redis` (a replica
//! that serves the API, works, and leads when elected) and `worker`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::parts::{
    DaemonOptions, Started, first_reconcile, inbox_loop, last_slots, retention_loop, serve_api,
    spawn_reconcile_loop, start_shared, stop_signal, wait_for_stop, worker_context,
};
use crate::cluster::election::{self, Term};
use crate::cluster::leader;
use crate::cluster::stream_worker::StreamWorkers;
use crate::cluster::{ClusterConfig, Keys, connect};
use crate::queue::QueueConfig;
use crate::schedule::scheduler::Scheduler;
use crate::status::state::{ClusterRole, LeaderQueue, Shared};
use crate::store::Store;
use crate::worker::WorkerContext;

/// Open the Redis store and name the runtime's keys after it.
async fn open(url: &str) -> anyhow::Result<(Store, Keys)> {
    let store = Store::open_redis(url).await.with_context(|| {
        format!(
            "opening the Redis store at {}",
            crate::store::redis::redact(url)
        )
    })?;
    let keys = match &store {
        Store::Redis(r) => {
            // Connector quotas hold for the deployment, not per process.
            crate::connectors::ratelimit::share_through_redis(r.connection(), r.key(""));
            Keys::new(|name| r.key(name))
        }
        _ => anyhow::bail!("the Redis store did not open as Redis"),
    };
    Ok((store, keys))
}

/// `multijob run --redis URL`.
pub async fn run_replica(opts: DaemonOptions, url: String) -> anyhow::Result<()> {
    let (store, keys) = open(&url).await?;
    let cfg = ClusterConfig::new(&url);
    let applied = store.applied().await.context("reading the applied state")?;
    let queue_config = QueueConfig {
        pressure_high: opts.pressure_high,
        pressure_low: opts.pressure_low,
        keep_runs: opts.keep_runs,
        owner: cfg.node.clone(),
        remote_dispatch: true,
    };
    let Started {
        shared,
        listener,
        metrics_task,
    } = start_shared(&opts, store.clone(), applied, queue_config).await?;
    let cancel = shared.shutdown.clone();
    let worker_ctx = worker_context(&opts, &shared);
    let workers = StreamWorkers::start(
        store.clone(),
        shared.applied.load_full(),
        cfg.clone(),
        keys.clone(),
        worker_ctx,
        opts.workers,
        shared.workers_busy.clone(),
    )
    .await
    .context("starting the workers")?;
    shared
        .workers_total
        .store(workers.total(), Ordering::Relaxed);

    let is_leader = Arc::new(AtomicBool::new(false));
    shared.cluster.store(Arc::new(Some(ClusterRole {
        node: cfg.node.clone(),
        role: "follower",
        leader: None,
        leader_queue: None,
    })));
    tokio::spawn(follow_leader(
        shared.clone(),
        keys.clone(),
        is_leader.clone(),
        cancel.clone(),
    ));

    tracing::info!(node = %cfg.node, store = %store.describe(), workers = opts.workers, "multijob replica is running");
    let server = serve_api(&shared, listener, &opts.api)?;
    let stopping = stop_signal();

    let election_conn = connect(&url, Duration::from_secs(2))
        .await
        .with_context(|| {
            format!(
                "connecting to Redis at {}",
                crate::store::redis::redact(&url)
            )
        })?;
    let term = election::campaign(
        election_conn.clone(),
        keys.election.clone(),
        cfg.node.clone(),
        cfg.leader_ttl,
        stopping.clone(),
    )
    .await;

    let leading = match term {
        Some(term) => {
            is_leader.store(true, Ordering::SeqCst);
            shared.cluster.store(Arc::new(Some(ClusterRole {
                node: cfg.node.clone(),
                role: "leader",
                leader: Some(cfg.node.clone()),
                leader_queue: None,
            })));
            Some(
                lead(
                    &opts,
                    &shared,
                    &store,
                    &cfg,
                    &keys,
                    term,
                    &stopping,
                    election_conn,
                )
                .await?,
            )
        }
        None => None,
    };

    // Stopping: the leader stops starting runs first, then everyone drains.
    tracing::info!(
        grace_sec = opts.grace.as_secs_f64(),
        "stopping: no new runs; draining"
    );
    if let Some(l) = &leading {
        l.scheduler.abort();
        l.dispatch.cancel();
    }
    workers.drain(opts.grace).await;
    if let Some(l) = leading {
        // Give the workers' last results a moment to be applied.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while shared.queue.view().running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        l.stop.cancel();
        if let Err(e) = store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        let mut conn = l.conn.clone();
        l.term.resign(&mut conn, &keys.election, &cfg.node).await;
    }
    cancel.cancel();
    let _ = metrics_task.await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// What runs while this process leads.
struct Leading {
    term: Term,
    scheduler: tokio::task::JoinHandle<()>,
    /// Stops starting runs.
    dispatch: CancellationToken,
    /// Stops the rest of the leader's tasks.
    stop: CancellationToken,
    conn: redis::aio::ConnectionManager,
}

/// A leader whose term ended must not act on its in-memory state again:
/// the process starts over (the same binary and arguments, the same pid,
/// as a follower that may win the next election). When Redis is away
/// (the term ran out during an outage), it waits for it first: a start
/// without Redis would fail. Without this, one replica whose Redis
/// restarted for longer than the leader TTL left the deployment with none.
async fn restart_as_follower(conn: &mut redis::aio::ConnectionManager) -> ! {
    loop {
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(conn).await;
        if pong.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    use std::os::unix::process::CommandExt;
    let error = match std::env::current_exe() {
        // exec only returns on failure. Sockets are close-on-exec, so the
        // new process binds the API port again.
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec()
            .to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(error = %error, "cannot start again as a follower; exiting");
    std::process::exit(1);
}

#[allow(clippy::too_many_arguments)]
async fn lead(
    opts: &DaemonOptions,
    shared: &Arc<Shared>,
    store: &Store,
    cfg: &ClusterConfig,
    keys: &Keys,
    term: Term,
    stopping: &CancellationToken,
    mut conn: redis::aio::ConnectionManager,
) -> anyhow::Result<Leading> {
    if let Store::Redis(r) = store {
        r.set_fence(Some(("leader:epoch".to_string(), term.epoch)));
    }
    let stop = CancellationToken::new();
    let dispatch = CancellationToken::new();
    let reconciler = first_reconcile(opts, shared).await;
    let queue = shared.queue.clone();
    let held = leader::dispatched(&mut conn, keys)
        .await
        .context("reading the dispatched runs")?;
    let recovery = queue
        .recover_holding(&held)
        .await
        .context("recovering unfinished runs")?;
    tracing::info!(
        ?recovery,
        epoch = term.epoch,
        "leading: recovered unfinished runs"
    );
    shared.recovery.store(Arc::new(Some(recovery)));
    let last_slots = last_slots(store).await?;
    let scheduler = Scheduler::new(
        queue.clone(),
        opts.scheduler.clone(),
        shared.scheduler.clone(),
    );
    let scheduler =
        tokio::spawn(scheduler.run(shared.applied_tx.subscribe(), last_slots, stop.clone()));
    let capacity = Arc::new(AtomicUsize::new(0));
    tokio::spawn(leader::track_capacity(
        conn.clone(),
        keys.clone(),
        capacity.clone(),
        stop.clone(),
    ));
    let tokens = leader::Dispatched::default();
    tokio::spawn(leader::dispatch_loop(
        queue.clone(),
        capacity,
        tokens.clone(),
        dispatch.clone(),
    ));
    tokio::spawn(leader::forward_cancels(
        queue.clone(),
        conn.clone(),
        keys.clone(),
        tokens,
        stop.clone(),
    ));
    tokio::spawn(leader::results_loop(
        queue.clone(),
        store.clone(),
        cfg.clone(),
        keys.clone(),
        stop.clone(),
    ));
    tokio::spawn(inbox_loop(queue.clone(), store.clone(), stop.clone()));
    tokio::spawn(leader::publish_queue(
        shared.clone(),
        conn.clone(),
        keys.clone(),
        stop.clone(),
    ));
    tokio::spawn(retention_loop(
        store.clone(),
        opts.keep_events_days,
        stop.clone(),
    ));
    spawn_reconcile_loop(opts, reconciler, stop.clone())?;

    // A leader that lost its term must not act on stale state: it stops
    // its tasks and writes, and starts over as a follower.
    let lost = term.lost.clone();
    let mut fenced = match store {
        Store::Redis(r) => Some(r.fenced()),
        _ => None,
    };
    let watch_stop = stopping.clone();
    let mut ping_conn = conn.clone();
    // What must stop at once when the term ends: the leader's tasks, and
    // every store write (a fence no epoch matches).
    let (tasks, dispatching) = (stop.clone(), dispatch.clone());
    let writes = match store {
        Store::Redis(r) => Some(r.clone()),
        _ => None,
    };
    let step_down = move || {
        dispatching.cancel();
        tasks.cancel();
        if let Some(r) = &writes {
            r.set_fence(Some(("leader:epoch".to_string(), u64::MAX)));
        }
    };
    tokio::spawn(async move {
        let fenced_fut = async {
            match fenced.as_mut() {
                Some(rx) => {
                    let _ = rx.wait_for(|f| *f).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = watch_stop.cancelled() => {}
            _ = lost.cancelled() => {
                tracing::error!("this process is no longer the leader; it starts again as a follower once Redis answers");
                step_down();
                restart_as_follower(&mut ping_conn).await;
            }
            _ = fenced_fut => {
                tracing::error!("another process became leader (store writes fenced); this one starts again as a follower");
                step_down();
                restart_as_follower(&mut ping_conn).await;
            }
        }
    });
    stopping.cancelled().await;
    Ok(Leading {
        term,
        scheduler,
        dispatch,
        stop,
        conn,
    })
}

/// Followers show the applied revision the leader wrote, and who leads.
async fn follow_leader(
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
            let read: redis::RedisResult<(Option<String>, Option<String>)> = redis::pipe()
                .cmd("GET")
                .arg(&keys.election.leader)
                .cmd("GET")
                .arg(&keys.queue)
                .query_async(c)
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

/// `multijob worker --redis URL`: executes runs, needs no config directory.
pub async fn run_worker(
    url: String,
    workers: usize,
    data_dir: PathBuf,
    allow_command: bool,
    grace: Duration,
    files: crate::workflow::files::FilesLimits,
) -> anyhow::Result<()> {
    let (store, keys) = open(&url).await?;
    let cfg = ClusterConfig::new(&url);
    let applied = store.applied().await.context("reading the applied state")?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let ctx = WorkerContext {
        files: Arc::new(crate::workflow::files::FilesQuota::new(
            data_dir.clone(),
            files,
        )),
        ..WorkerContext::new(data_dir, allow_command)
    };
    let pool = StreamWorkers::start(
        store.clone(),
        Arc::new(applied),
        cfg.clone(),
        keys,
        ctx,
        workers,
        Arc::new(AtomicUsize::new(0)),
    )
    .await
    .context("starting the workers")?;
    tracing::info!(node = %cfg.node, workers, "worker joined");
    println!(
        "worker {} joined {} with {workers} slots",
        cfg.node,
        crate::store::redis::redact(&url)
    );
    wait_for_stop().await;
    tracing::info!(grace_sec = grace.as_secs_f64(), "stopping: draining");
    pool.drain(grace).await;
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final store flush failed");
    }
    Ok(())
}
