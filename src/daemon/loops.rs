//! The daemon's long-running loops besides the scheduler and the workers:
//! the one reconcile loop, event retention, and the stop signals.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::DaemonOptions;
use crate::reconcile::Reconciler;
use crate::reconcile::watch::{self, ChangeSignal, WatchOptions};
use crate::store::{Mutation, Store, format_ts};

/// Fired on SIGINT or SIGTERM.
pub(super) fn stop_signal() -> CancellationToken {
    let stopping = CancellationToken::new();
    let stop = stopping.clone();
    tokio::spawn(async move {
        wait_for_stop().await;
        stop.cancel();
    });
    stopping
}

pub(super) async fn wait_for_stop() {
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

/// Changes to the config directory, watched (unless `--no-watch`) from
/// before the first load: a file written while the daemon starts is seen
/// by the loop's first wait, not at the next resync minutes later.
pub(super) struct Watching(Option<tokio::sync::mpsc::Receiver<ChangeSignal>>);

/// Start watching the directory; call it before the first reconcile.
pub(super) fn start_watching(
    opts: &DaemonOptions,
    cancel: &CancellationToken,
) -> anyhow::Result<Watching> {
    if !opts.watch {
        return Ok(Watching(None));
    }
    let wopts = WatchOptions {
        poll: opts.watch_poll,
        ..WatchOptions::default()
    };
    let signals = watch::spawn(opts.dir.clone(), wopts, cancel.clone())
        .with_context(|| format!("watching {}", opts.dir.display()))?;
    Ok(Watching(Some(signals)))
}

/// Run the reconcile loop on what `watching` sees (and SIGHUP, resyncs,
/// new git commits).
pub(super) fn spawn_reconcile_loop(
    watching: Watching,
    reconciler: Arc<Reconciler>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let signals = watching.0;
    // `--git`: the puller says when a new commit is checked out.
    let pulled = reconciler.puller().map(|puller| {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(puller.run(tx, cancel.clone()));
        rx
    });
    tokio::spawn(reconcile_loop(reconciler, signals, pulled, cancel))
}

/// The one reconcile loop: file changes, periodic resyncs, SIGHUP and
/// new git commits all
/// funnel here, so reloads never overlap.
async fn reconcile_loop(
    reconciler: Arc<Reconciler>,
    mut signals: Option<tokio::sync::mpsc::Receiver<ChangeSignal>>,
    mut pulled: Option<tokio::sync::mpsc::Receiver<()>>,
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
            Some(()) = async {
                match pulled.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => "git",
        };
        if let Err(e) = reconciler.reconcile(cause).await {
            tracing::error!(error = %e, cause, "reconcile could not reach the store; will retry on the next change");
        }
    }
}

/// Old events go; run history is pruned per job as runs finish.
pub(super) async fn retention_loop(store: Store, keep_days: u64, cancel: CancellationToken) {
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
