//! `multijob worker --redis URL`: a worker-only process of a Redis
//! deployment. It executes runs from the ready stream (and its worker
//! groups' streams) and needs no config directory: job specs come from
//! the revision the leader applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::Context;

use super::loops::wait_for_stop;
use super::parts::open_redis;
use crate::cluster::ClusterConfig;
use crate::cluster::stream_worker::StreamWorkers;
use crate::worker::WorkerContext;

/// `multijob worker --redis URL`: executes runs, needs no config directory.
pub async fn run_worker(
    url: String,
    workers: usize,
    data_dir: PathBuf,
    allow_command: bool,
    grace: Duration,
    files: crate::workflow::files::FilesLimits,
    groups: Vec<String>,
) -> anyhow::Result<()> {
    let (store, keys) = open_redis(&url).await?;
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
        groups.clone(),
    )
    .await
    .context("starting the workers")?;
    let serving = if groups.is_empty() {
        String::new()
    } else {
        format!(", groups {}", groups.join(", "))
    };
    tracing::info!(node = %cfg.node, workers, groups = ?groups, "worker joined");
    println!(
        "worker {} joined {} with {workers} slots{serving}",
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
