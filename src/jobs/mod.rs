//! Built-in job handlers: what a run of each job type does.
//!
//! A handler gets the job's applied spec, the run's context and a
//! cancellation token (fired on timeout, `overlap: replace` and shutdown)
//! and returns the run's output or a classified error.

pub mod backup;
pub mod command;
pub mod monitor;
pub mod report;
pub mod simulation;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::run::{RunError, RunResult};
use crate::spec::model::Job;

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

/// The job types [`execute`] runs. The runtime asks [`handles`] before it
/// dispatches, so a type missing here is reported, never silently dropped.
pub const HANDLED_TYPES: [&str; 4] = ["noop", "simulation.heavy", "command", "backup.export"];

pub fn handles(job_type: &str) -> bool {
    HANDLED_TYPES.contains(&job_type)
}

/// Runs one attempt of `job` with the handler of its type.
pub async fn execute(job: &Job, ctx: &RunContext, cancel: &CancellationToken) -> RunResult {
    match job.job_type.as_str() {
        // Benchmarks run this tens of thousands of times a second: an empty
        // map does not allocate, and nothing else happens here.
        "noop" => Ok(Value::Object(serde_json::Map::new())),
        // Boxed so their state (buffers, child handles) does not make every
        // `execute` future, noop's included, as large as the largest.
        "simulation.heavy" => Box::pin(simulation::run(job, ctx, cancel)).await,
        "command" => Box::pin(command::run(job, ctx, cancel)).await,
        "backup.export" => Box::pin(backup::run(job, ctx, cancel)).await,
        other => Err(RunError::Permanent(format!(
            "no handler for job type {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(job_type: &str) -> Job {
        serde_json::from_value(json!({"id": "j", "type": job_type}))
            .expect("a minimal job deserializes")
    }

    fn ctx() -> RunContext {
        RunContext {
            run_id: "run-1".into(),
            job_id: "j".into(),
            attempt: 1,
            inputs: json!({}),
            data_dir: std::env::temp_dir(),
            allow_command: false,
            store: None,
            applied: None,
        }
    }

    #[tokio::test]
    async fn noop_returns_an_empty_object() {
        let out = execute(&job("noop"), &ctx(), &CancellationToken::new()).await;
        assert_eq!(out, Ok(json!({})));
    }

    #[test]
    fn the_execute_future_stays_small() {
        let (job, ctx, token) = (job("noop"), ctx(), CancellationToken::new());
        let future = execute(&job, &ctx, &token);
        // Measured 40 bytes: references, the match state and one boxed future; a handler's
        // buffers showing up here would cost every noop run.
        assert!(
            std::mem::size_of_val(&future) <= 64,
            "{}",
            std::mem::size_of_val(&future)
        );
    }

    #[tokio::test]
    async fn dispatches_by_type() {
        let token = CancellationToken::new();
        let out = execute(&job("simulation.heavy"), &ctx(), &token).await;
        assert_eq!(out, Ok(json!({"work_ms": 0, "cpu_ms": 0, "attempt": 1})));
        // allow_command is false in ctx(): reaching the command handler
        // shows as its refusal.
        match execute(&job("command"), &ctx(), &token).await {
            Err(RunError::Permanent(m)) => assert!(m.contains("--allow-command"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn other_types_are_a_permanent_error() {
        for job_type in ["http.request", "made.up"] {
            assert!(!handles(job_type));
            let out = execute(&job(job_type), &ctx(), &CancellationToken::new()).await;
            assert_eq!(
                out,
                Err(RunError::Permanent(format!(
                    "no handler for job type {job_type}"
                )))
            );
        }
    }

    #[test]
    fn handled_types_are_known_types() {
        for job_type in HANDLED_TYPES {
            assert!(handles(job_type));
            assert!(
                crate::spec::model::JOB_TYPES.contains(&job_type),
                "{job_type}"
            );
        }
    }
}
