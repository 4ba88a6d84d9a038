//! The workflow engine: runs a job's (or a skill's) `steps` (SPEC section 5).
//!
//! Templates render with [`crate::spec::templates::environment`], the same
//! environment validation compiles with. Side effects go through
//! [`Actions`]; the engine itself does `set`, `files` and `uses`. A step list
//! runs in [`steps`], one step in [`step`], its items in [`foreach`], a skill
//! in [`skills`]; [`resume`] says what an earlier execution completed. It
//! uses the layers below it (`spec`, `store`, `run`, `connectors`, `queue`),
//! never `jobs` or the worker that runs it.

pub mod actions;
pub mod agent;
pub mod agent_tools;
pub mod budget_gate;
pub mod command_tool;
pub mod files;
pub mod follow_ups;
mod foreach;
pub mod memory;
pub mod memory_store;
pub mod metrics;
pub mod render;
mod resume;
pub mod runtime;
mod skills;
mod step;
mod steps;
pub mod template;
pub mod tool_policy;
pub mod variants;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use minijinja::Environment;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use actions::{ActionCall, ActionFuture, ActionResult, Actions};
pub use resume::Resume;
pub use template::{TemplateError, eval_condition, render_value, to_template_value};

use crate::clock::Clock;
use crate::run::RunError;
use crate::spec::model::{Limits, Skill, Step};
use crate::spec::snapshot::Resource;
use crate::spec::templates::environment;
use crate::store::runs::StepRecord;
use resume::Progress;

/// `uses` may nest this deep (a skill using a skill ...); validate rejects
/// a deeper chain with the same limit.
pub use crate::spec::uses::MAX_USES_DEPTH;

/// What templates see as `run` and `job`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub id: String,
    pub job_id: String,
    pub job_type: String,
    /// 1-based.
    pub attempt: u32,
    /// RFC 3339; `None` for a manual trigger.
    pub scheduled_at: Option<String>,
    /// `job@slot` (or `manual:<id>`): picks a step's prompt variant.
    pub run_key: String,
}

type StepResult = Result<Value, RunError>;
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub struct Engine<'a> {
    env: Environment<'static>,
    skills: &'a BTreeMap<String, Resource<Skill>>,
    data_dir: PathBuf,
    /// The data dir's quota, shared by the runs of this process.
    files_quota: std::sync::Arc<files::FilesQuota>,
    clock: Clock,
    limits: Limits,
    /// A skill's one-off run: the run's inputs, the `with` of its job's
    /// top-level `uses` step (see [`Engine::with_skill_call`]).
    skill_call: Option<Value>,
}

/// Calls a run made that its [`Limits`] bound.
#[derive(Default)]
struct Counters {
    http_calls: AtomicU64,
    messages: AtomicU64,
    files: files::RunUsage,
}

impl Counters {
    /// Counts one call, or refuses it once `limit` calls were made.
    fn take(counter: &AtomicU64, limit: Option<u64>, name: &str) -> Result<(), RunError> {
        let made = counter.fetch_add(1, Ordering::SeqCst);
        match limit {
            Some(limit) if made >= limit => Err(RunError::Permanent(format!(
                "the run reached its limit of {limit} {name} (limits.{name})"
            ))),
            _ => Ok(()),
        }
    }
}

/// One step list being run: the job's, or a skill's under `uses`.
struct Frame<'r> {
    run: &'r RunInfo,
    actions: &'r dyn Actions,
    cancel: &'r CancellationToken,
    counters: &'r Counters,
    progress: &'r Progress,
    depth: usize,
    /// The `uses` steps (and items) this list runs under, as `call/` or
    /// `call:2/`: it keeps idempotency keys of a skill used twice apart.
    scope: String,
}

impl<'a> Engine<'a> {
    pub fn new(
        skills: &'a BTreeMap<String, Resource<Skill>>,
        data_dir: impl Into<PathBuf>,
        clock: Clock,
    ) -> Self {
        let data_dir = data_dir.into();
        Engine {
            env: environment(),
            skills,
            files_quota: std::sync::Arc::new(files::FilesQuota::new(
                data_dir.clone(),
                files::FilesLimits::default(),
            )),
            data_dir,
            clock,
            limits: Limits::default(),
            skill_call: None,
        }
    }

    /// Runs a skill's one-off run (a derived job `skill:<id>`): its
    /// top-level `uses` step gets `inputs` as its `with`, as given. A
    /// caller's data (an inbound payload, a chat command) is never
    /// rendered as a template; the skill's params check it before any of
    /// its steps runs.
    pub fn with_skill_call(mut self, inputs: Value) -> Self {
        self.skill_call = Some(inputs);
        self
    }

    /// What `files` steps may write, and the data dir's usage (one per
    /// process: every run writes to the same data dir).
    pub fn with_files_quota(mut self, quota: std::sync::Arc<files::FilesQuota>) -> Self {
        self.files_quota = quota;
        self
    }

    /// The job's per-run budgets: `http_calls` and `messages` are counted
    /// here (every attempt is a call); the default is unlimited.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs `steps` in order; the result is the last step's output. Every
    /// step that started (or was skipped) has a record.
    pub async fn run(
        &self,
        steps: &[Step],
        inputs: Value,
        run: RunInfo,
        actions: &dyn Actions,
        cancel: &CancellationToken,
    ) -> (Result<Value, RunError>, Vec<StepRecord>) {
        self.resume(steps, inputs, run, Resume::default(), actions, cancel)
            .await
    }

    /// [`run`](Self::run), reusing what `resume` says completed before
    /// the run paused for an approval.
    pub async fn resume(
        &self,
        steps: &[Step],
        inputs: Value,
        run: RunInfo,
        resume: Resume,
        actions: &dyn Actions,
        cancel: &CancellationToken,
    ) -> (Result<Value, RunError>, Vec<StepRecord>) {
        let counters = Counters::default();
        let progress = Progress {
            resume,
            collect: self.reaches_approval(steps),
            done: Default::default(),
        };
        let frame = Frame {
            run: &run,
            actions,
            cancel,
            counters: &counters,
            progress: &progress,
            depth: 0,
            scope: String::new(),
        };
        let mut records = Vec::with_capacity(steps.len());
        let result = self.run_steps(steps, inputs, &frame, &mut records).await;
        variants::label(&run.job_id, &run.run_key, steps, &mut records);
        (result, records)
    }
}

#[cfg(test)]
mod tests;
