//! What a run of each job type does: one dispatcher ([`dispatch`]) with the
//! table of job types and their handlers, and one file per built-in type
//! (`workflow` runs the step engine for `agent.workflow` and `http.request`).
//!
//! A handler gets one [`Attempt`]: the run, its job's applied spec, its host
//! (store, applied snapshot, follow-ups), what the process shares (data dir,
//! connectors, metrics, files quota) and a cancellation token (fired on
//! timeout, `overlap: replace` and shutdown); it returns the run's output or
//! a classified error. Timeouts and panics are the worker's, not a handler's.
//! This module may use `workflow`, `queue`, `connectors`, `run`, `store`,
//! `spec` and the leaves below them; never the worker or anything above it.

pub mod backup;
pub mod command;
mod dispatch;
pub mod history;
pub mod monitor;
pub mod output;
pub mod report;
pub mod simulation;
mod workflow;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use dispatch::{BUILTIN, HANDLED_TYPES, Handler, Handlers, handles};

use crate::connectors::Connectors;
use crate::connectors::metrics::ConnectorMetrics;
use crate::run::RunHost;
use crate::spec::model::Job;
use crate::store::Applied;
use crate::store::runs::Run;
use crate::workflow::files::FilesQuota;
use crate::workflow::metrics::WorkflowGauge;

/// What a handler knows about the run it executes.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: String,
    pub job_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The run's inputs: the job's inputs overlaid with trigger inputs.
    pub inputs: Value,
    /// Where `files` steps, reports and backups write.
    pub data_dir: std::path::PathBuf,
    /// `--allow-command`: the daemon's operator allows `command` jobs.
    pub allow_command: bool,
    /// The store, for handlers that read history (`backup.export`);
    /// `None` where a handler needs none (unit tests).
    pub store: Option<crate::store::Store>,
    /// The applied snapshot the run started under.
    pub applied: Option<std::sync::Arc<crate::store::Applied>>,
}

/// One attempt of a claimed run, as the dispatcher hands it to a handler:
/// borrowed from the claim and from what every run of the process shares.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    pub run: &'a Run,
    pub job: &'a Arc<Job>,
    pub host: &'a Arc<dyn RunHost>,
    /// Where `files` steps, reports and backups write.
    pub data_dir: &'a Path,
    /// `--allow-command`: the daemon's operator allows `command` jobs.
    pub allow_command: bool,
    pub connectors: &'a ConnectorsByRevision,
    /// What connector calls count into.
    pub connector_metrics: Option<&'a ConnectorMetrics>,
    /// Where workflow `metric` steps and monitors write.
    pub workflow_metrics: Option<&'a WorkflowGauge>,
    /// What `files` steps may write, and the data dir's usage.
    pub files: &'a Arc<FilesQuota>,
    /// Fired on timeout, `overlap: replace` and shutdown.
    pub cancel: &'a CancellationToken,
    /// Set by the worker before it fires `cancel` for the job's timeout.
    pub timed_out: &'a AtomicBool,
}

impl Attempt<'_> {
    /// The run's context for the handlers that take one.
    pub fn context(&self, applied: Arc<Applied>) -> RunContext {
        RunContext {
            run_id: self.run.id.clone(),
            job_id: self.run.job_id.clone(),
            attempt: self.run.attempt,
            inputs: self.run.inputs.clone(),
            data_dir: self.data_dir.to_path_buf(),
            allow_command: self.allow_command,
            store: Some(self.host.store().clone()),
            applied: Some(applied),
        }
    }

    /// The connectors of `applied`'s revision.
    pub fn connectors_for(&self, applied: &Applied) -> Arc<Connectors> {
        self.connectors.of(applied, self.connector_metrics)
    }

    /// Whether the job's timeout, not a cancellation, ended the attempt.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }
}

/// The connectors of the applied revision, built once per revision id and
/// rebuilt when it changes (rate limits are process-wide and survive the
/// rebuild).
#[derive(Default)]
pub struct ConnectorsByRevision {
    built: std::sync::Mutex<Option<(String, Arc<Connectors>)>>,
}

impl ConnectorsByRevision {
    pub fn of(&self, applied: &Applied, metrics: Option<&ConnectorMetrics>) -> Arc<Connectors> {
        let key = applied
            .revision
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let mut cache = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, c)) = cache.as_ref()
            && *k == key
        {
            return c.clone();
        }
        let mut built = Connectors::new(&applied.snapshot.connectors);
        if let Some(m) = metrics {
            built = built.with_metrics(m.clone());
        }
        let built = Arc::new(built);
        *cache = Some((key, built.clone()));
        built
    }
}
