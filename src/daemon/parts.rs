//! The parts both process shapes assemble alike: the shared state and the
//! API listener, the first reconcile, the scheduler, the workers' context,
//! the API server, and the Redis store a replica or worker opens.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::DaemonOptions;
use crate::clock::Clock;
use crate::cluster::Keys;
use crate::queue::QueueConfig;
use crate::reconcile::Reconciler;
use crate::reconcile::pull::Puller;
use crate::schedule::scheduler::Scheduler;
use crate::status::sse::SseConfig;
use crate::status::state::Shared;
use crate::status::{api, metrics};
use crate::store::feed::Feed;
use crate::store::{EventQuery, Store};
use crate::worker::WorkerContext;

/// What both deployments start alike: the shared state, the bound API
/// listener, and the metrics following the event feed.
pub(super) struct Started {
    pub shared: Arc<Shared>,
    pub listener: tokio::net::TcpListener,
    pub metrics_task: tokio::task::JoinHandle<()>,
}

/// Bind the API's address first of all: a start whose port is taken ends
/// before it locks or opens the store. `opts.listen` becomes the bound
/// address (a port 0 resolved), which the lock and presence entry show.
pub(super) async fn bind_api(opts: &mut DaemonOptions) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = crate::listener::bind(opts.listen)
        .with_context(|| format!("listening on {}", opts.listen))?;
    opts.listen = listener.local_addr().context("reading the bound address")?;
    crate::connectors::secrets::set_own_api(opts.listen);
    if !opts.listen.ip().is_loopback() && opts.api_token.is_none() {
        tracing::warn!(
            listen = %opts.listen,
            "the status API and dashboard answer anyone who can reach {} without a token: jobs, runs with their inputs, outputs and errors, events and metrics; set MULTIJOB_API_TOKEN to require `Authorization: Bearer <token>`, or listen on 127.0.0.1",
            opts.listen
        );
    }
    Ok(listener)
}

pub(super) async fn start_shared(
    opts: &DaemonOptions,
    listener: tokio::net::TcpListener,
    store: Store,
    applied: crate::store::Applied,
    queue_config: QueueConfig,
) -> anyhow::Result<Started> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating the data dir {}", opts.data_dir.display()))?;
    let shared = Shared::new(
        store.clone(),
        opts.dir.clone(),
        applied,
        opts.api_token.clone(),
        queue_config,
        Clock::Wall,
    );
    shared
        .scheduler
        .set_observer(shared.metrics.lateness_observer());
    // Metrics count every event this process commits: subscribe before the
    // first reconcile.
    let feed = Feed::subscribe(store, None, EventQuery::default())
        .await
        .context("subscribing the metrics to the event feed")?;
    let metrics_task = tokio::spawn(metrics::follow(
        shared.clone(),
        feed,
        shared.shutdown.clone(),
    ));
    Ok(Started {
        shared,
        listener,
        metrics_task,
    })
}

/// Apply the directory once and give the queue the applied specs, before
/// unfinished runs are recovered against them.
pub(super) async fn first_reconcile(opts: &DaemonOptions, shared: &Arc<Shared>) -> Arc<Reconciler> {
    let reconciler = match &opts.git {
        Some(git) => {
            let puller = Puller::new(git.clone(), &opts.data_dir, shared.git.clone());
            // The first fetch before the first load; a remote that is down
            // leaves the last checkout (or none) and is retried.
            puller.sync().await;
            Arc::new(Reconciler::with_git(Arc::new(puller), shared.clone()))
        }
        None => Arc::new(Reconciler::new(opts.dir.clone(), shared.clone())),
    };
    if let Err(e) = reconciler.reconcile("start").await {
        tracing::error!(error = %e, "first reconcile could not reach the store");
    }
    shared.queue.set_applied(shared.applied.load_full());
    reconciler
}

/// Start the scheduler where each job's schedule left off; it queues due
/// slots until `stop`.
pub(super) async fn spawn_scheduler(
    opts: &DaemonOptions,
    shared: &Shared,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let last_slots = last_slots(&shared.store).await?;
    let scheduler = Scheduler::new(
        shared.queue.clone(),
        opts.scheduler.clone(),
        shared.scheduler.clone(),
    )
    .with_budgets(shared.budgets.clone());
    // The guards' view of today's budgets: read before the first slot is
    // decided (a restarted daemon must not start a run the budget holds
    // back), then kept fresh while it schedules.
    let (applied, now) = (shared.queue.applied(), shared.queue.clock().now());
    if let Err(e) = shared
        .budgets
        .refresh(&shared.store, &applied.snapshot, None, now)
        .await
    {
        tracing::warn!(error = %e, "budgets: today's counts unreadable; slots dispatch until they are read");
    }
    tokio::spawn(shared.budgets.clone().watch(
        shared.queue.clone(),
        shared.applied_tx.subscribe(),
        stop.clone(),
    ));
    Ok(tokio::spawn(scheduler.run(
        shared.applied_tx.subscribe(),
        last_slots,
        stop,
    )))
}

/// Each job's last slot with an outcome, where its schedule resumes.
async fn last_slots(store: &Store) -> anyhow::Result<HashMap<String, jiff::Timestamp>> {
    Ok(store
        .job_slots()
        .await
        .context("reading the last slots")?
        .into_iter()
        .filter_map(|(job, slot)| slot.parse().ok().map(|t| (job, t)))
        .collect())
}

/// Serve the API and dashboard until the daemon shuts down; prints the
/// `listening on` line tests and scripts read to find the port.
pub(super) fn serve_api(
    shared: &Arc<Shared>,
    listener: tokio::net::TcpListener,
    config: &crate::listener::Config,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let local = listener.local_addr().context("reading the bound address")?;
    let config = crate::listener::Config {
        stall: SseConfig::from_env().stall,
        ..config.clone()
    };
    tracing::info!(
        listen = %local,
        max_connections = config.max_connections,
        header_timeout_sec = config.timeouts.header.as_secs_f64(),
        idle_timeout_sec = config.timeouts.idle.as_secs_f64(),
        "serving the status API and dashboard"
    );
    println!("listening on http://{local}");
    let app = api::router(shared.clone());
    Ok(tokio::spawn(crate::listener::serve(
        listener,
        app,
        config,
        shared.metrics.listener_stats(),
        shared.shutdown.clone(),
    )))
}

/// The runs of this process report into the daemon's metrics.
pub(super) fn worker_context(opts: &DaemonOptions, shared: &Shared) -> WorkerContext {
    WorkerContext {
        workflow_metrics: Some(shared.metrics.workflow_gauge()),
        connector_metrics: Some(shared.metrics.connector_metrics()),
        files: Arc::new(crate::workflow::files::FilesQuota::new(
            opts.data_dir.clone(),
            opts.files,
        )),
        ..WorkerContext::new(opts.data_dir.clone(), opts.allow_command)
    }
}

/// Open the Redis store and name the runtime's keys after it.
pub(super) async fn open_redis(url: &str) -> anyhow::Result<(Store, Keys)> {
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
