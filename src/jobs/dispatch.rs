//! The one table of job types and their handlers: every type the runtime
//! runs is here, workflows, monitors and reports included.

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Attempt, backup, command, monitor, report, simulation, workflow};
use crate::run::{BoxFuture, RunError, RunResult};

/// What runs one attempt of a job type.
pub type Handler = for<'a> fn(Attempt<'a>) -> BoxFuture<'a, RunResult>;

/// Job types and their handlers. The worker takes the table as a value, so
/// a test can run a claim through the worker's own path with handlers of
/// its own; the daemon always runs [`BUILTIN`].
#[derive(Clone, Copy)]
pub struct Handlers<'t> {
    table: &'t [(&'static str, Handler)],
}

/// The handler of every job type this build runs.
pub const BUILTIN: Handlers<'static> = Handlers {
    table: &[
        ("noop", noop),
        ("simulation.heavy", simulation_heavy),
        ("command", command),
        ("backup.export", backup_export),
        ("monitor.channel", monitor_channel),
        ("report.daily", report_daily),
        ("agent.workflow", workflow::run),
        ("http.request", workflow::run),
    ],
};

/// The job types [`BUILTIN`] runs, in its order. The runtime asks
/// [`handles`] before it dispatches, so a type missing here is reported,
/// never silently dropped.
pub const HANDLED_TYPES: [&str; 8] = [
    "noop",
    "simulation.heavy",
    "command",
    "backup.export",
    "monitor.channel",
    "report.daily",
    "agent.workflow",
    "http.request",
];

pub fn handles(job_type: &str) -> bool {
    HANDLED_TYPES.contains(&job_type)
}

impl<'t> Handlers<'t> {
    pub const fn new(table: &'t [(&'static str, Handler)]) -> Self {
        Handlers { table }
    }

    /// The handler of `job_type`, if this table has one.
    pub fn get(&self, job_type: &str) -> Option<Handler> {
        self.table
            .iter()
            .find(|(t, _)| *t == job_type)
            .map(|(_, h)| *h)
    }

    /// The job types of this table, in its order.
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.table.iter().map(|(t, _)| *t)
    }

    /// Runs one attempt with the handler of its job's type; a type without
    /// one is a permanent error.
    pub async fn run(&self, attempt: Attempt<'_>) -> RunResult {
        let job_type = attempt.job.job_type.as_str();
        match self.get(job_type) {
            Some(handler) => handler(attempt).await,
            None => Err(RunError::Permanent(format!(
                "job type {job_type} has no handler in this build of multijob"
            ))),
        }
    }
}

/// Benchmarks run this tens of thousands of times a second: an empty map
/// does not allocate, and nothing else happens here.
fn noop(_: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    Box::pin(std::future::ready(Ok(
        Value::Object(serde_json::Map::new()),
    )))
}

/// A handler that takes the job, the run's context and its token.
macro_rules! with_run_context {
    ($name:ident => $run:path) => {
        fn $name(a: Attempt<'_>) -> BoxFuture<'_, RunResult> {
            Box::pin(async move {
                let ctx = a.context(a.host.applied());
                $run(a.job, &ctx, a.cancel).await
            })
        }
    };
}

with_run_context!(simulation_heavy => simulation::run);
with_run_context!(command => command::run);
with_run_context!(backup_export => backup::run);

/// A monitor has nothing to clean up: cancelled, it stops where it is.
fn monitor_channel(a: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    Box::pin(async move {
        let applied = a.host.applied();
        let connectors = a.connectors_for(&applied);
        let ctx = a.context(applied);
        let check = monitor::run(a.job, &ctx, &connectors, a.workflow_metrics);
        until_cancelled(a.cancel, check).await
    })
}

/// A report checks its token between pages of history; past them (writing
/// files, delivering once per connector) it stops where it is.
fn report_daily(a: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    Box::pin(async move {
        let applied = a.host.applied();
        let connectors = a.connectors_for(&applied);
        let ctx = a.context(applied);
        let report = report::run(a.job, &ctx, Some(&connectors), a.cancel);
        until_cancelled(a.cancel, report).await
    })
}

async fn until_cancelled(
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = RunResult>,
) -> RunResult {
    tokio::select! {
        biased;
        result = work => result,
        _ = cancel.cancelled() => Err(RunError::Cancelled),
    }
}

#[cfg(test)]
mod tests;
