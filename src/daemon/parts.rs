//! Builds the daemon from its parts and owns startup and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::queue::{Burst, QueueConfig, RunQueue};
use crate::reconcile::Reconciler;
use crate::reconcile::watch::{self, ChangeSignal, WatchOptions};
use crate::run::{NewRun, NotQueued};
use crate::schedule::scheduler::{Scheduler, SchedulerConfig};
use crate::status::sse::SseConfig;
use crate::status::state::Shared;
use crate::status::{api, metrics};
use crate::store::feed::Feed;
use crate::store::runs::{ApprovalStatus, InboxCommand};
use crate::store::{EventQuery, Mutation, NewEvent, Store, format_ts};
use crate::worker::{WorkerContext, WorkerPool};

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The API listener's limits and allowed hosts.
    pub api: crate::listener::Config,
    /// Watch the directory for changes (off: reload on SIGHUP only).
    pub watch: bool,
    /// Poll instead of inotify, at this interval.
    pub watch_poll: Option<Duration>,
    pub api_token: Option<String>,
    pub workers: usize,
    pub allow_command: bool,
    /// Time in-flight runs get to finish on SIGTERM.
    pub grace: Duration,
    pub keep_runs: usize,
    pub keep_events_days: u64,
    pub scheduler: SchedulerConfig,
    pub pressure_high: usize,
    pub pressure_low: usize,
    /// A Redis deployment's URL (the embedded store otherwise).
    pub redis: Option<String>,
    /// What `files` steps may write, per run and in the data dir.
    pub files: crate::workflow::files::FilesLimits,
}

/// Run until SIGINT or SIGTERM.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    if let Some(url) = opts.redis.clone() {
        return super::replica::run_replica(opts, url).await;
    }
    let store = Store::open_sqlite(&opts.state)
        .with_context(|| format!("opening the store at {}", opts.state.display()))?;
    let applied = store.applied().await.context("reading the applied state")?;
    if let Some(r) = &applied.revision {
        tracing::info!(revision = %r.id, resources = applied.snapshot.len(), "resuming the last applied revision");
    }
    let queue_config = QueueConfig {
        pressure_high: opts.pressure_high,
        pressure_low: opts.pressure_low,
        keep_runs: opts.keep_runs,
        ..QueueConfig::default()
    };
    let Started {
        shared,
        listener,
        metrics_task,
    } = start_shared(&opts, store.clone(), applied, queue_config).await?;
    let cancel = shared.shutdown.clone();

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
    let last_slots = last_slots(&store).await?;

    let scheduler = Scheduler::new(
        queue.clone(),
        opts.scheduler.clone(),
        shared.scheduler.clone(),
    );
    let scheduler_task =
        tokio::spawn(scheduler.run(shared.applied_tx.subscribe(), last_slots, cancel.clone()));
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
    tokio::spawn(inbox_loop(queue.clone(), store.clone(), cancel.clone()));
    tokio::spawn(retention_loop(
        store.clone(),
        opts.keep_events_days,
        cancel.clone(),
    ));

    let loop_task = spawn_reconcile_loop(&opts, reconciler, cancel.clone())?;
    let stopping = stop_signal();
    tracing::info!(dir = %opts.dir.display(), store = %shared.store.describe(), workers = opts.workers, "multijob is running");
    let server = serve_api(&shared, listener, &opts.api)?;

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
    let _ = metrics_task.await;
    let _ = server.await;
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final store flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// What both deployments start alike: the shared state, the bound API
/// listener, and the metrics following the event feed.
pub(crate) struct Started {
    pub shared: Arc<Shared>,
    pub listener: tokio::net::TcpListener,
    pub metrics_task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn start_shared(
    opts: &DaemonOptions,
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
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
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
pub(crate) async fn first_reconcile(opts: &DaemonOptions, shared: &Arc<Shared>) -> Arc<Reconciler> {
    let reconciler = Arc::new(Reconciler::new(opts.dir.clone(), shared.clone()));
    if let Err(e) = reconciler.reconcile("start").await {
        tracing::error!(error = %e, "first reconcile could not reach the store");
    }
    shared.queue.set_applied(shared.applied.load_full());
    reconciler
}

/// Serve the API and dashboard until the daemon shuts down; prints the
/// `listening on` line tests and scripts read to find the port.
pub(crate) fn serve_api(
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
pub(crate) fn worker_context(opts: &DaemonOptions, shared: &Shared) -> WorkerContext {
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

/// Fired on SIGINT or SIGTERM.
pub(crate) fn stop_signal() -> CancellationToken {
    let stopping = CancellationToken::new();
    let stop = stopping.clone();
    tokio::spawn(async move {
        wait_for_stop().await;
        stop.cancel();
    });
    stopping
}

/// Each job's last slot with an outcome, where its schedule resumes.
pub(crate) async fn last_slots(store: &Store) -> anyhow::Result<HashMap<String, jiff::Timestamp>> {
    Ok(store
        .job_slots()
        .await
        .context("reading the last slots")?
        .into_iter()
        .filter_map(|(job, slot)| slot.parse().ok().map(|t| (job, t)))
        .collect())
}

/// Watch the directory (unless `--no-watch`) and run the reconcile loop.
pub(crate) fn spawn_reconcile_loop(
    opts: &DaemonOptions,
    reconciler: Arc<Reconciler>,
    cancel: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let signals = if opts.watch {
        let wopts = WatchOptions {
            poll: opts.watch_poll,
            ..WatchOptions::default()
        };
        Some(
            watch::spawn(opts.dir.clone(), wopts, cancel.clone())
                .with_context(|| format!("watching {}", opts.dir.display()))?,
        )
    } else {
        None
    };
    Ok(tokio::spawn(reconcile_loop(reconciler, signals, cancel)))
}

/// Commands the CLI left in the store: triggers and approval decisions.
pub(crate) async fn inbox_loop(queue: Arc<RunQueue>, store: Store, cancel: CancellationToken) {
    let mut after = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let commands = match store.inbox(after).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "inbox unreadable");
                continue;
            }
        };
        for (id, command) in commands {
            after = after.max(id);
            // A burst is queued as it is worked off, which may take long
            // (or wait for workers to join): other commands go on meanwhile.
            let bulk =
                matches!(&command, InboxCommand::Trigger { count, .. } if *count > TRIGGER_SLICE);
            if bulk {
                let (queue, store, cancel) = (queue.clone(), store.clone(), cancel.clone());
                // Stops with the loop (shutdown, or leadership lost): the
                // recorded progress lets whoever handles it next resume.
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => queue.set_burst(id, None),
                        _ = handle_command(&queue, &store, id, command) => mark_done(&store, id),
                    }
                });
            } else {
                handle_command(&queue, &store, id, command).await;
                mark_done(&store, id);
            }
        }
    }
}

fn mark_done(store: &Store, inbox_id: i64) {
    if let Err(e) = store.submit(vec![Mutation::InboxDone(inbox_id)]) {
        tracing::warn!(inbox = inbox_id, error = %e, "inbox: could not mark a command done");
    }
}

/// Runs one `trigger --count` command queues at a time. Small enough that
/// a slice is mostly started in the store batch that queues it (Redis: 9%
/// fewer bytes per run than 256, +3–5% no-op rate), large enough that the
/// per-slice work (the queue's lock, the progress write) stays small.
const TRIGGER_SLICE: u32 = 64;

async fn handle_command(queue: &RunQueue, store: &Store, inbox_id: i64, command: InboxCommand) {
    match command {
        InboxCommand::Trigger {
            run_id,
            job_id,
            inputs,
            count,
        } => {
            let new_run = |i: u32| {
                let mut run = NewRun::manual(&job_id, inputs.clone());
                run.id = if i == 0 {
                    run_id.clone()
                } else {
                    format!("{run_id}-{i}")
                };
                run.run_key = format!("manual:{}", run.id);
                run
            };
            // A large burst is queued in slices, so workers and the store
            // start on the first runs while the rest are still being made
            // (one slice of 100,000 held the queue's lock for a second).
            // A command handled again after a crash resumes after the
            // slices recorded as queued, skipping the runs of the next one
            // that were recorded without their progress.
            let total = count.max(1);
            let burst = total > TRIGGER_SLICE;
            let mut next = match store.inbox_progress(inbox_id).await {
                Ok(done) => done.min(total),
                Err(e) => {
                    tracing::warn!(inbox = inbox_id, error = %e, "trigger: progress unreadable; starting from the first run");
                    0
                }
            };
            let mut offered = 0;
            let mut queued = 0;
            let mut first_slice = true;
            // A burst is queued no faster than it starts: the next slice
            // once the last run of the one before has started (runs of one
            // job and priority start in order). Memory stays flat, and more
            // runs start in the store batch that queues them, so their
            // record is written once, running, not queued and then again
            // running (a Redis leader sent ~8% fewer bytes per run than
            // when up to 512 of the burst waited, with slices of 256).
            // Other jobs' waiting runs (a follow-up due in an hour) do not
            // hold the burst up.
            let mut last_queued: Option<String> = None;
            while next < total {
                // (A command of one slice is queued at once: it must not
                // wait behind a burst's slices.)
                if let Some(last) = last_queued.as_deref() {
                    loop {
                        let released = queue.released();
                        if !queue.view().is_waiting(last) {
                            break;
                        }
                        tokio::select! {
                            _ = released => {}
                            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                        }
                    }
                }
                let end = total.min(next.saturating_add(TRIGGER_SLICE));
                let mut runs: Vec<NewRun> = (next..end).map(new_run).collect();
                if std::mem::take(&mut first_slice) {
                    runs = without_recorded(store, runs).await;
                }
                offered += runs.len();
                let ids = queue.enqueue(runs);
                queued += ids.len();
                if burst && let Some(last) = ids.into_iter().last() {
                    last_queued = Some(last);
                }
                next = end;
                if burst {
                    // Submitted after the slice's records: it commits with
                    // them or after them, never before.
                    let progress = Mutation::InboxProgress {
                        id: inbox_id,
                        done: next,
                    };
                    if let Err(e) = store.submit(vec![progress]) {
                        tracing::warn!(inbox = inbox_id, error = %e, "trigger: progress not recorded");
                    }
                    let shown = (next < total).then(|| Burst {
                        inbox_id,
                        job_id: job_id.clone(),
                        admitted: next,
                        total,
                    });
                    queue.set_burst(inbox_id, shown);
                }
                tokio::task::yield_now().await;
            }
            if offered > 0 && queued == 0 {
                let reason = match queue.applied().snapshot.jobs.get(&job_id) {
                    Some(job) if !job.spec.enabled => {
                        format!("job {job_id} is disabled: it gets no new runs")
                    }
                    _ => format!("no job {job_id} in the applied revision"),
                };
                let event = NewEvent::new(
                    "trigger.rejected",
                    json!({"run_id": run_id, "reason": reason}),
                )
                .job(job_id);
                let _ = store.submit(vec![Mutation::Event(event)]);
            }
        }
        InboxCommand::FollowUp {
            run_id,
            job_id,
            inputs,
            run_key,
            chain_depth,
            due_at,
            extra,
        } => {
            let run = NewRun {
                id: run_id.clone(),
                job_id: job_id.clone(),
                trigger: crate::store::runs::Trigger::Workflow,
                inputs,
                run_key,
                scheduled_at: None,
                chain_depth,
                due_at: due_at.and_then(|d| d.parse().ok()),
                extra,
            };
            let runs = without_recorded(store, vec![run]).await;
            if runs.is_empty() {
                // Queued before a crash, and recovered or finished since.
                return;
            }
            for run in runs {
                follow_up_from_worker(queue, store, run);
            }
        }
        InboxCommand::Decide {
            approval_id,
            approve,
            by,
        } => {
            let approvals = store.approvals(false).await.unwrap_or_default();
            let found = approvals.iter().find(|a| a.id == approval_id);
            // The queue refuses a decision for an approval it no longer
            // waits on, even when the store has not recorded the first one
            // yet (two decisions a moment apart).
            let result = match found {
                Some(a) if a.status != ApprovalStatus::Pending => Err(format!(
                    "approval {approval_id} is already {} by {}; this decision was not applied",
                    a.status.as_str(),
                    a.decided_by.as_deref().unwrap_or("an operator")
                )),
                Some(a) => queue.decide(a, approve, &by),
                None => Err(format!("no approval {approval_id}")),
            };
            if let Err(reason) = result {
                tracing::warn!(approval = %approval_id, %reason, "approval decision not applied");
                let mut event = NewEvent::new(
                    "approval.failed",
                    json!({"approval_id": approval_id, "decision": if approve { "approve" } else { "reject" },
                           "by": by, "reason": reason}),
                );
                if let Some(a) = found {
                    event = event.job(a.job_id.clone()).run(a.run_id.clone());
                }
                let _ = store.submit(vec![Mutation::Event(event)]);
            }
        }
    }
}

/// Queue a follow-up a worker process handed over. The step that
/// scheduled it has ended by now, so a refusal can only be told: a
/// warning and a `follow_up.refused` event (the worker refuses itself when
/// the figures it read already showed the job at its limit).
fn follow_up_from_worker(queue: &RunQueue, store: &Store, run: NewRun) {
    let (run_id, job_id) = (run.id.clone(), run.job_id.clone());
    let from = |field: &str| run.extra[field].as_str().map(str::to_string);
    let (from_run, from_job, from_step) = (from("from_run"), from("from_job"), from("from_step"));
    match queue.enqueue_follow_up(run) {
        Ok(_) | Err(NotQueued::Duplicate) => {}
        Err(NotQueued::FollowUpsFull { waiting, limit }) => {
            tracing::warn!(run = %run_id, job = %job_id, waiting, limit,
                "follow-up not queued: the job's follow-up runs waiting to start are at limits.queued_follow_ups");
            let mut event = NewEvent::new(
                "follow_up.refused",
                json!({"reason": "per_job", "target": job_id, "step": from_step,
                       "waiting": waiting, "limit": limit, "dropped_run_id": run_id}),
            );
            event.job_id = from_job;
            event.run_id = from_run;
            if let Err(e) = store.submit(vec![Mutation::Event(event)]) {
                tracing::warn!(run = %run_id, error = %e, "follow_up.refused not recorded");
            }
        }
        Err(why) => {
            tracing::warn!(run = %run_id, job = %job_id, reason = ?why, "follow-up not queued: no such job, or disabled, in the applied revision");
        }
    }
}

/// Drop the runs the store already has a record of: a command handled
/// again after a crash must not run a finished run a second time (or
/// write a queued record over its final one).
async fn without_recorded(store: &Store, runs: Vec<NewRun>) -> Vec<NewRun> {
    let ids = runs.iter().map(|r| r.id.clone()).collect();
    match store.recorded_runs(ids).await {
        Ok(recorded) if recorded.is_empty() => runs,
        Ok(recorded) => runs
            .into_iter()
            .filter(|r| !recorded.contains(&r.id))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "inbox: cannot tell which runs exist; queueing them all");
            runs
        }
    }
}

/// Old events go; run history is pruned per job as runs finish.
pub(crate) async fn retention_loop(store: Store, keep_days: u64, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let keep = jiff::SignedDuration::from_hours(
            i64::try_from(keep_days.saturating_mul(24)).unwrap_or(i64::MAX),
        );
        if let Ok(before) = jiff::Timestamp::now().checked_sub(keep) {
            let _ = store.submit(vec![Mutation::PruneEvents {
                before: format_ts(before),
            }]);
        }
    }
}

pub(crate) async fn wait_for_stop() {
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The one reconcile loop: file changes, periodic resyncs and SIGHUP all
/// funnel here, so reloads never overlap.
pub(crate) async fn reconcile_loop(
    reconciler: Arc<Reconciler>,
    mut signals: Option<tokio::sync::mpsc::Receiver<ChangeSignal>>,
    cancel: CancellationToken,
) {
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        let cause = tokio::select! {
            _ = cancel.cancelled() => return,
            s = async {
                match signals.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match s {
                Some(ChangeSignal::Files) => "files",
                Some(ChangeSignal::Resync) => "resync",
                None => {
                    tracing::warn!("the watcher stopped; reload with SIGHUP");
                    signals = None;
                    continue;
                }
            },
            _ = async {
                match hup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => "sighup",
        };
        if let Err(e) = reconciler.reconcile(cause).await {
            tracing::error!(error = %e, cause, "reconcile could not reach the store; will retry on the next change");
        }
    }
}
