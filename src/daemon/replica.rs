//! `multijob run --redis URL`: a replica of a Redis deployment. Every
//! replica serves the API and works; it campaigns for the leader key, and
//! while it holds it, it reconciles, schedules and owns the run queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::DaemonOptions;
use super::follower::{follow_leader, restart_as_follower, set_role};
use super::inbox::inbox_loop;
use super::loops::{retention_loop, spawn_reconcile_loop, start_watching, stop_signal};
use super::parts::{
    Started, bind_api, first_reconcile, open_redis, serve_api, spawn_scheduler, start_shared,
    worker_context,
};
use super::presence::presence_loop;
use crate::cluster::election::{self, Term};
use crate::cluster::stream_worker::StreamWorkers;
use crate::cluster::{ClusterConfig, Keys, connect, leader};
use crate::queue::QueueConfig;
use crate::status::state::Shared;
use crate::store::Store;

/// One replica's parts, for as long as it runs.
struct Replica {
    opts: DaemonOptions,
    url: String,
    shared: Arc<Shared>,
    store: Store,
    cfg: ClusterConfig,
    keys: Keys,
}

/// `multijob run --redis URL`.
pub(super) async fn run(mut opts: DaemonOptions, url: String) -> anyhow::Result<()> {
    let listener = bind_api(&mut opts).await?;
    let inbound = super::inbound::bind(&opts).await?;
    let (store, keys) = open_redis(&url).await?;
    let cfg = ClusterConfig::new(&url);
    let applied = store.applied().await.context("reading the applied state")?;
    let queue_config = QueueConfig {
        owner: cfg.node.clone(),
        remote_dispatch: true,
        ..opts.queue_config()
    };
    let Started {
        shared,
        listener,
        metrics_task,
    } = start_shared(&opts, listener, store.clone(), applied, queue_config).await?;
    let replica = Replica {
        opts,
        url,
        shared,
        store,
        cfg,
        keys,
    };
    let workers = replica.start_workers().await?;

    let is_leader = Arc::new(AtomicBool::new(false));
    set_role(&replica.shared, &replica.cfg.node, "follower", None);
    tokio::spawn(follow_leader(
        replica.shared.clone(),
        replica.keys.clone(),
        is_leader.clone(),
        replica.shared.shutdown.clone(),
    ));

    tracing::info!(node = %replica.cfg.node, store = %replica.store.describe(), workers = replica.opts.workers, "multijob replica is running");
    let server = serve_api(&replica.shared, listener, &replica.opts.api)?;
    let intake = crate::inbound::Intake::via_inbox(replica.store.clone());
    let route = crate::inbound::hooks::sync::FetchRoute::Inbox;
    let hooks = super::inbound::serve(&replica.opts, &replica.shared, inbound, intake, route)?;
    let stopping = stop_signal();
    let leading = replica.campaign(&stopping, &is_leader).await?;
    replica.stop(leading, workers).await;
    let _ = metrics_task.await;
    let _ = server.await;
    if let Some(hooks) = hooks {
        let _ = hooks.await;
    }
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

impl Replica {
    /// Every replica works (unless `--workers 0`): it reads the ready
    /// stream like any worker process.
    async fn start_workers(&self) -> anyhow::Result<StreamWorkers> {
        let shared = &self.shared;
        let workers = StreamWorkers::start(
            self.store.clone(),
            shared.applied.load_full(),
            self.cfg.clone(),
            self.keys.clone(),
            worker_context(&self.opts, shared),
            self.opts.workers,
            shared.workers_busy.clone(),
            // Ungrouped runs, and those of the groups it was given.
            self.opts.groups.clone(),
        )
        .await
        .context("starting the workers")?;
        shared
            .workers_total
            .store(workers.total(), Ordering::Relaxed);
        Ok(workers)
    }

    /// Campaign for the leader key until elected (then lead until
    /// stopping) or stopping.
    async fn campaign(
        &self,
        stopping: &CancellationToken,
        is_leader: &AtomicBool,
    ) -> anyhow::Result<Option<Leading>> {
        let election_conn = connect(&self.url, Duration::from_secs(2))
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis at {}",
                    crate::store::redis::redact(&self.url)
                )
            })?;
        let term = election::campaign(
            election_conn.clone(),
            self.keys.election.clone(),
            self.cfg.node.clone(),
            self.cfg.leader_ttl,
            stopping.clone(),
        )
        .await;
        let Some(term) = term else {
            return Ok(None);
        };
        is_leader.store(true, Ordering::SeqCst);
        let node = self.cfg.node.clone();
        set_role(&self.shared, &node, "leader", Some(node.clone()));
        Ok(Some(self.lead(term, stopping, election_conn).await?))
    }

    /// Stopping: the leader stops starting runs first, then everyone
    /// drains; the leader applies the last results and resigns.
    async fn stop(self, leading: Option<Leading>, workers: StreamWorkers) {
        let grace = self.opts.grace;
        tracing::info!(
            grace_sec = grace.as_secs_f64(),
            "stopping: no new runs; draining"
        );
        if let Some(l) = &leading {
            l.scheduler.abort();
            l.dispatch.cancel();
        }
        workers.drain(grace).await;
        if let Some(l) = leading {
            // Give the workers' last results a moment to be applied.
            crate::worker::drain::until_idle(
                || self.shared.queue.view().running(),
                Duration::from_secs(2),
            )
            .await;
            l.stop.cancel();
            if let Err(e) = self.store.flush().await {
                tracing::error!(error = %e, "final store flush failed");
            }
            let mut conn = l.conn.clone();
            l.term
                .resign(&mut conn, &self.keys.election, &self.cfg.node)
                .await;
        }
        self.shared.shutdown.cancel();
    }

    /// Lead until stopping: fence the store's writes with this term's
    /// epoch, recover the unfinished runs, and start the leader's tasks.
    async fn lead(
        &self,
        term: Term,
        stopping: &CancellationToken,
        mut conn: redis::aio::ConnectionManager,
    ) -> anyhow::Result<Leading> {
        if let Store::Redis(r) = &self.store {
            r.set_fence(Some(("leader:epoch".to_string(), term.epoch)));
            // Before anything else writes runs: the migration is their only
            // writer while it lasts.
            if let Err(e) = migrate_layout(r).await {
                term.resign(&mut conn, &self.keys.election, &self.cfg.node)
                    .await;
                return Err(e);
            }
        }
        let stop = CancellationToken::new();
        let dispatch = CancellationToken::new();
        let shared = &self.shared;
        let watching = start_watching(&self.opts, &stop)?;
        let reconciler = first_reconcile(&self.opts, shared).await;
        let held = leader::dispatched(&mut conn, &self.keys)
            .await
            .context("reading the dispatched runs")?;
        let recovery = shared
            .queue
            .recover_holding(&held)
            .await
            .context("recovering unfinished runs")?;
        tracing::info!(
            ?recovery,
            epoch = term.epoch,
            "leading: recovered unfinished runs"
        );
        shared.recovery.store(Arc::new(Some(recovery)));
        let scheduler = spawn_scheduler(&self.opts, shared, stop.clone()).await?;
        self.spawn_leader_tasks(&conn, &stop, &dispatch);
        spawn_reconcile_loop(watching, reconciler, stop.clone());
        self.watch_term(&term, stopping, &conn, &stop, &dispatch);
        stopping.cancelled().await;
        Ok(Leading {
            term,
            scheduler,
            dispatch,
            stop,
            conn,
        })
    }

    /// The leader's tasks besides the scheduler and the reconcile loop:
    /// dispatch to the ready stream as far as the workers can take,
    /// cancels, results, the inbox, the published queue, retention.
    fn spawn_leader_tasks(
        &self,
        conn: &redis::aio::ConnectionManager,
        stop: &CancellationToken,
        dispatch: &CancellationToken,
    ) {
        let (queue, store, keys) = (&self.shared.queue, &self.store, &self.keys);
        let capacity = Arc::new(AtomicUsize::new(0));
        tokio::spawn(leader::track_capacity(
            conn.clone(),
            keys.clone(),
            capacity.clone(),
            queue.clone(),
            stop.clone(),
        ));
        let tokens = leader::Dispatched::default();
        tokio::spawn(leader::dispatch_loop(
            queue.clone(),
            capacity.clone(),
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
            self.cfg.clone(),
            keys.clone(),
            capacity,
            stop.clone(),
        ));
        tokio::spawn(inbox_loop(
            queue.clone(),
            store.clone(),
            self.shared.git.fetch_now.clone(),
            stop.clone(),
        ));
        // Only the leader sends notices: one reader of the events.
        let revisions = self.shared.applied_tx.subscribe();
        tokio::spawn(crate::notify::run(store.clone(), revisions, stop.clone()));
        // Only the leader polls chat bridges: two pollers of one bot get 409.
        let intake = crate::inbound::Intake::via_inbox(store.clone());
        super::bridges::spawn_bridges(self.shared.clone(), intake, stop.clone());
        tokio::spawn(leader::publish_queue(
            self.shared.clone(),
            conn.clone(),
            keys.clone(),
            stop.clone(),
        ));
        tokio::spawn(retention_loop(
            store.clone(),
            self.opts.keep_events_days,
            stop.clone(),
        ));
        tokio::spawn(super::expectations::expectation_loop(
            self.shared.clone(),
            stop.clone(),
        ));
        tokio::spawn(presence_loop(store.clone(), self.opts.listen, stop.clone()));
    }

    /// A leader that lost its term must not act on stale state: it stops
    /// its tasks and writes, and starts over as a follower.
    fn watch_term(
        &self,
        term: &Term,
        stopping: &CancellationToken,
        conn: &redis::aio::ConnectionManager,
        stop: &CancellationToken,
        dispatch: &CancellationToken,
    ) {
        let lost = term.lost.clone();
        let mut fenced = match &self.store {
            Store::Redis(r) => Some(r.fenced()),
            _ => None,
        };
        let watch_stop = stopping.clone();
        let mut ping_conn = conn.clone();
        // What must stop at once when the term ends: the leader's tasks, and
        // every store write (a fence no epoch matches).
        let (tasks, dispatching) = (stop.clone(), dispatch.clone());
        let writes = match &self.store {
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
    }
}

/// Migrate the keys to this version's layout (nothing when they are in
/// it), saying what it did.
async fn migrate_layout(store: &crate::store::redis::RedisStore) -> anyhow::Result<()> {
    let Some(report) = store.migrate_layout().await? else {
        return Ok(());
    };
    tracing::info!(
        read = report.read,
        rewritten = report.rewritten,
        unreadable = report.unreadable.len(),
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        ms = report.elapsed.as_millis() as u64,
        resumed = report.resumed,
        "store: keys migrated to layout {}",
        crate::store::redis::LAYOUT
    );
    Ok(())
}
