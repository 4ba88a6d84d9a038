//! `multijob run` with the embedded store: one process reconciles,
//! schedules, works and serves.

use std::sync::Arc;

use anyhow::Context;

use super::DaemonOptions;
use super::inbox::inbox_loop;
use super::loops::{retention_loop, spawn_reconcile_loop, start_watching, stop_signal};
use super::parts::{
    Started, bind_api, first_reconcile, serve_api, spawn_scheduler, start_shared, worker_context,
};
use super::presence::presence_loop;
use super::store_lock::StoreLock;
use crate::inbound::hooks::sync::FetchRoute;
use crate::store::Store;
use crate::worker::WorkerPool;

/// The embedded store and what it last applied.
async fn open_store(opts: &DaemonOptions) -> anyhow::Result<(Store, crate::store::Applied)> {
    let store = Store::open_sqlite(&opts.state)
        .with_context(|| format!("opening the store at {}", opts.state.display()))?;
    let applied = store.applied().await.context("reading the applied state")?;
    if let Some(r) = &applied.revision {
        tracing::info!(revision = %r.id, resources = applied.snapshot.len(), "resuming the last applied revision");
    }
    Ok((store, applied))
}

/// Run until SIGINT or SIGTERM: bind the API's address, lock the store,
/// then open it.
pub(super) async fn run(mut opts: DaemonOptions) -> anyhow::Result<()> {
    let listener = bind_api(&mut opts).await?;
    let inbound = super::inbound::bind(&opts).await?;
    let lock = StoreLock::acquire(&opts.state, opts.listen)?;
    if let Some(h) = &lock.stale {
        tracing::warn!(
            lock = %lock.path().display(),
            "took over a stale lock from pid {} (listening on {} since {}): that daemon ended without stopping; its unfinished runs are recovered",
            h.pid, h.listen, h.since
        );
    }
    let (store, applied) = open_store(&opts).await?;
    let Started {
        shared,
        listener,
        metrics_task,
    } = start_shared(&opts, listener, store.clone(), applied, opts.queue_config()).await?;
    let cancel = shared.shutdown.clone();

    let watching = start_watching(&opts, &cancel)?;
    let reconciler = first_reconcile(&opts, &shared).await;
    // Runs left unfinished by the last process come back first.
    let queue = shared.queue.clone();
    let recovery = queue
        .recover()
        .await
        .context("recovering unfinished runs")?;
    if recovery.orphaned + recovery.requeued + recovery.retrying + recovery.awaiting_approval > 0 {
        tracing::info!(?recovery, "recovered unfinished runs");
    }
    shared.recovery.store(Arc::new(Some(recovery)));

    let scheduler_task = spawn_scheduler(&opts, &shared, cancel.clone()).await?;
    let worker_ctx = worker_context(&opts, &shared);
    let pool = WorkerPool::spawn(
        opts.workers,
        queue.clone(),
        worker_ctx.clone(),
        shared.workers_busy.clone(),
    );
    shared
        .workers_total
        .store(pool.total(), std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(inbox_loop(
        queue.clone(),
        store.clone(),
        shared.git.fetch_now.clone(),
        cancel.clone(),
    ));
    let revisions = shared.applied_tx.subscribe();
    tokio::spawn(crate::notify::run(store.clone(), revisions, cancel.clone()));
    let intake = crate::inbound::Intake::local(store.clone(), queue.clone());
    super::bridges::spawn_bridges(shared.clone(), intake, cancel.clone());
    tokio::spawn(retention_loop(
        store.clone(),
        opts.keep_events_days,
        cancel.clone(),
    ));
    tokio::spawn(super::expectations::expectation_loop(
        shared.clone(),
        cancel.clone(),
    ));
    let presence = tokio::spawn(presence_loop(store.clone(), opts.listen, cancel.clone()));

    let loop_task = spawn_reconcile_loop(watching, reconciler, cancel.clone());
    let stopping = stop_signal();
    tracing::info!(dir = %opts.dir.display(), store = %shared.store.describe(), workers = opts.workers, "multijob is running");
    let server = serve_api(&shared, listener, &opts.api)?;
    let intake = crate::inbound::Intake::local(store.clone(), queue.clone());
    let route = FetchRoute::Here(shared.git.fetch_now.clone());
    let hooks = super::inbound::serve(&opts, &shared, inbound, intake, route)?;

    stopping.cancelled().await;
    tracing::info!(
        grace_sec = opts.grace.as_secs_f64(),
        "stopping: no new runs; draining"
    );
    // Stop dispatching first, then drain the workers, then the rest.
    scheduler_task.abort();
    pool.drain(&queue, &worker_ctx, opts.grace).await;
    cancel.cancel();
    let _ = loop_task.await;
    let _ = presence.await;
    let _ = metrics_task.await;
    let _ = server.await;
    if let Some(hooks) = hooks {
        let _ = hooks.await;
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final store flush failed");
    }
    drop(store);
    lock.release();
    tracing::info!("stopped");
    Ok(())
}
