//! The workflow engine: runs a job's (or a skill's) `steps` (SPEC section 5).
//!
//! Templates render with [`crate::spec::templates::environment`], the same
//! environment validation compiles with. Side effects go through
//! [`Actions`]; the engine itself does `set`, `files` and `uses`.

pub mod actions;
pub mod agent;
pub mod files;
pub mod follow_ups;
pub mod metrics;
pub mod render;
pub mod runtime;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, poll_fn};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use minijinja::Environment;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use actions::{ActionCall, ActionFuture, ActionResult, Actions};
pub use template::{TemplateError, eval_condition, render_value, to_template_value};

use crate::clock::Clock;
use crate::run::RunError;
use crate::run::retry::backoff;
use crate::spec::model::{Action, Limits, Skill, Step};
use crate::spec::snapshot::Resource;
use crate::spec::templates::environment;
use crate::store::format_ts;
use crate::store::runs::{StepRecord, StepStatus};

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
}

/// What an earlier execution of the run completed before it paused for an
/// approval or was interrupted by a shutdown: the run resumes after it
/// instead of from its first step, so an order created before the pause
/// or the restart is not created again (SPEC 5: `approval` pauses the
/// run).
#[derive(Debug, Default)]
pub struct Resume {
    /// Top-level steps that completed, by id: their records are reused.
    top: BTreeMap<String, StepRecord>,
    /// Outputs of what completed inside the step that paused, by path.
    inner: BTreeMap<String, Value>,
}

impl Resume {
    /// From the step records of the run's last execution. A pause (the
    /// last record waits for an approval) or an interruption (the last
    /// record was cut short by a shutdown) resumes; a run retried after a
    /// failure runs from its first step (at-least-once, with idempotency
    /// keys).
    pub fn from_records(records: &[StepRecord]) -> Resume {
        match records.split_last() {
            Some((paused, done))
                if paused.status == StepStatus::AwaitingApproval
                    || paused.status == StepStatus::Interrupted =>
            {
                Resume {
                    top: done.iter().map(|r| (r.id.clone(), r.clone())).collect(),
                    inner: paused.completed.clone(),
                }
            }
            _ => Resume::default(),
        }
    }
}

/// Shared by the frames of one execution: what to reuse, and what
/// completed inside steps (kept on the record of a step that pauses).
struct Progress {
    resume: Resume,
    /// Only when an approval is within reach: nothing else can pause.
    collect: bool,
    done: std::sync::Mutex<BTreeMap<String, Value>>,
}

impl Progress {
    fn reused(&self, path: &str) -> Option<Value> {
        let out = self.resume.inner.get(path)?.clone();
        self.completed(path, &out);
        Some(out)
    }

    fn completed(&self, path: &str, output: &Value) {
        if self.collect {
            self.done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path.to_string(), output.clone());
        }
    }

    /// What completed inside the step `id` (its items and nested steps).
    fn inside(&self, id: &str) -> BTreeMap<String, Value> {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.iter()
            .filter(|(path, _)| {
                path.strip_prefix(id)
                    .is_some_and(|rest| rest.starts_with('/') || rest.starts_with(':'))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
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
        }
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

    /// Whether an `approval` step is among `steps` or the skills they
    /// use: only then can the run pause, and what completes inside a step
    /// is worth keeping for the resume.
    fn reaches_approval(&self, steps: &[Step]) -> bool {
        self.approval_within(steps, 0, &mut HashMap::new())
    }

    /// Each skill is looked into again only when reached less deep than
    /// before, so a skill used by many steps of many skills costs once
    /// per depth, not once per path to it (which is exponential).
    fn approval_within<'s>(
        &'s self,
        steps: &'s [Step],
        depth: usize,
        seen: &mut HashMap<&'s str, usize>,
    ) -> bool {
        depth <= MAX_USES_DEPTH
            && steps.iter().any(|s| match &s.action {
                Action::Approval(_) => true,
                Action::Uses(id) => {
                    if seen.get(id.as_str()).is_some_and(|&d| d <= depth + 1) {
                        return false;
                    }
                    seen.insert(id.as_str(), depth + 1);
                    self.skills
                        .get(id)
                        .is_some_and(|k| self.approval_within(&k.spec.steps, depth + 1, seen))
                }
                _ => false,
            })
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
        (result, records)
    }

    fn run_steps<'s>(
        &'s self,
        steps: &'s [Step],
        inputs: Value,
        frame: &'s Frame<'s>,
        records: &'s mut Vec<StepRecord>,
    ) -> BoxFuture<'s, StepResult> {
        Box::pin(async move {
            let inputs = to_template_value(&inputs);
            let mut outputs = Map::new();
            let mut last = Value::Null;
            for step in steps {
                if frame.cancel.is_cancelled() {
                    // Recorded, so an interrupted run knows where to go on.
                    records.push(record(step, StepStatus::Cancelled, Value::Null, None, 0));
                    return Err(RunError::Cancelled);
                }
                // Completed before the run paused: not done again.
                let path = format!("{}{}", frame.scope, step.id);
                let reused = if frame.depth == 0 {
                    frame.progress.resume.top.get(&step.id).map(|r| {
                        records.push(r.clone());
                        r.output.clone()
                    })
                } else {
                    frame.progress.reused(&path)
                };
                if let Some(output) = reused {
                    outputs.insert(step.id.clone(), json!({"output": output}));
                    last = output;
                    continue;
                }
                let started = Instant::now();
                let base = self.context(&inputs, &outputs, frame.run);
                let result = self.run_step(step, &base, frame).await;
                let duration_ms = started.elapsed().as_millis() as u64;
                let (status, output, error) = match result {
                    Ok(Some((output, item_errors))) => (StepStatus::Succeeded, output, item_errors),
                    Ok(None) => (StepStatus::Skipped, Value::Null, None),
                    Err(RunError::Cancelled) => {
                        records.push(record(
                            step,
                            StepStatus::Cancelled,
                            Value::Null,
                            None,
                            duration_ms,
                        ));
                        return Err(RunError::Cancelled);
                    }
                    // The run pauses here; it runs again once decided.
                    Err(pause @ RunError::AwaitingApproval { .. }) => {
                        let mut paused = record(
                            step,
                            StepStatus::AwaitingApproval,
                            Value::Null,
                            None,
                            duration_ms,
                        );
                        if frame.depth == 0 {
                            paused.completed = frame.progress.inside(&step.id);
                        }
                        records.push(paused);
                        return Err(pause);
                    }
                    Err(e) => {
                        let message = format!("step `{}`: {e}", step.id);
                        records.push(record(
                            step,
                            StepStatus::Failed,
                            Value::Null,
                            Some(message.clone()),
                            duration_ms,
                        ));
                        if !step.continue_on_error {
                            return Err(match e {
                                RunError::Retryable { retry_after, .. } => RunError::Retryable {
                                    message,
                                    retry_after,
                                },
                                _ => RunError::Permanent(message),
                            });
                        }
                        if frame.depth > 0 {
                            frame.progress.completed(&path, &Value::Null);
                        }
                        outputs.insert(step.id.clone(), json!({"output": null}));
                        last = Value::Null;
                        continue;
                    }
                };
                // Top-level steps are on their records already.
                if frame.depth > 0 {
                    frame.progress.completed(&path, &output);
                }
                outputs.insert(step.id.clone(), json!({"output": output}));
                records.push(record(step, status, output.clone(), error, duration_ms));
                last = output;
            }
            Ok(last)
        })
    }

    fn context(
        &self,
        inputs: &minijinja::Value,
        outputs: &Map<String, Value>,
        run: &RunInfo,
    ) -> Base {
        Base {
            inputs: inputs.clone(),
            steps: to_template_value(outputs),
            run: to_template_value(run),
            job: to_template_value(json!({"id": run.job_id, "type": run.job_type})),
            now: minijinja::Value::from(format_ts(self.clock.now())),
        }
    }

    /// `Ok(None)`: skipped by `when`. With the output comes what failed in
    /// a `foreach` whose `continue_on_error` kept the other items going.
    async fn run_step(
        &self,
        step: &Step,
        base: &Base,
        frame: &Frame<'_>,
    ) -> Result<Option<(Value, Option<String>)>, RunError> {
        let ctx = base.with_item(None);
        let now = tokio::time::Instant::now;
        // `when` and `foreach` render before any attempt: each gets the
        // step's timeout_ms (or the default) of its own.
        if let Some(when) = &step.when {
            let limit = render::deadline(now(), step.timeout_ms);
            if !render::render(eval_condition, &self.env, when, &ctx, limit).await? {
                return Ok(None);
            }
        }
        let Some(foreach) = &step.foreach else {
            return self
                .attempts(step, &ctx, None, frame)
                .await
                .map(|v| Some((v, None)));
        };
        let limit = render::deadline(now(), step.timeout_ms);
        let items = match render::render(render_value, &self.env, foreach, &ctx, limit).await? {
            Value::Array(items) => items,
            other => {
                return Err(RunError::Permanent(format!(
                    "foreach must yield a list, got {}",
                    type_name(&other)
                )));
            }
        };
        let limit = Semaphore::new(step.concurrency.unwrap_or(1).max(1) as usize);
        let length = items.len();
        let item_errors: std::sync::Mutex<Vec<(usize, String)>> = Default::default();
        let futures: Vec<BoxFuture<'_, StepResult>> = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let ctx = base.with_item(Some((item, index, length)));
                let limit = &limit;
                let item_errors = &item_errors;
                Box::pin(async move {
                    let path = format!("{}{}", frame.scope, item_key(step, Some(index)));
                    if let Some(output) = frame.progress.reused(&path) {
                        return Ok(output);
                    }
                    let _permit = limit.acquire().await.map_err(|_| RunError::Cancelled)?;
                    let result = self.attempts(step, &ctx, Some(index), frame).await;
                    if let Ok(output) = &result {
                        frame.progress.completed(&path, output);
                    }
                    match result {
                        // One failed item must not sink the others (a bad
                        // phone number in a campaign): it yields null.
                        Err(RunError::Retryable { message: e, .. } | RunError::Permanent(e))
                            if step.continue_on_error =>
                        {
                            tracing::warn!(run = %frame.run.id, step = %step.id, index, error = %e,
                                "foreach item failed; continue_on_error keeps the others");
                            item_errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((index, e));
                            Ok(Value::Null)
                        }
                        other => other,
                    }
                }) as BoxFuture<'_, StepResult>
            })
            .collect();
        let outs = try_join_ordered(futures).await?;
        let mut failed = item_errors.into_inner().unwrap_or_else(|p| p.into_inner());
        let summary = (!failed.is_empty()).then(|| {
            failed.sort_by_key(|(i, _)| *i);
            // The first few name the cause; the count says how many.
            let shown: Vec<String> = failed
                .iter()
                .take(5)
                .map(|(i, e)| format!("item {i}: {e}"))
                .collect();
            let more = failed.len().saturating_sub(shown.len());
            let tail = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            format!(
                "{} of {length} items failed (continue_on_error kept the others): {}{tail}",
                failed.len(),
                shown.join("; ")
            )
        });
        Ok(Some((Value::Array(outs), summary)))
    }

    /// One action call with the step's `retry` and `timeout_ms`, aborted
    /// when the run is cancelled.
    async fn attempts(
        &self,
        step: &Step,
        ctx: &minijinja::Value,
        item_index: Option<usize>,
        frame: &Frame<'_>,
    ) -> StepResult {
        let mut failed = 0;
        loop {
            let attempt = async {
                let started = tokio::time::Instant::now();
                let call = self.perform(step, ctx, item_index, frame, started);
                match step.timeout_ms {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(ms), call)
                        .await
                        .unwrap_or_else(|_| {
                            Err(RunError::retryable(format!("timed out after {ms} ms")))
                        }),
                    None => call.await,
                }
            };
            let result = tokio::select! {
                biased;
                _ = frame.cancel.cancelled() => Err(RunError::Cancelled),
                r = attempt => r,
            };
            failed += 1;
            let wait = match (&result, &step.retry) {
                (Err(RunError::Retryable { .. }), Some(policy)) => backoff(policy, failed),
                _ => None,
            };
            let Some(wait) = wait else { return result };
            tokio::select! {
                biased;
                _ = frame.cancel.cancelled() => return Err(RunError::Cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One action call; its templates count against the step's
    /// `timeout_ms` from `started`, as the call does.
    async fn perform(
        &self,
        step: &Step,
        ctx: &minijinja::Value,
        item_index: Option<usize>,
        frame: &Frame<'_>,
        started: tokio::time::Instant,
    ) -> StepResult {
        let limit = render::deadline(started, step.timeout_ms);
        let render =
            |v: Value| async move { render::render(render_value, &self.env, &v, ctx, limit).await };
        let args = |a: &dyn erased::Args| render(a.to_json());
        let call = ActionCall {
            run: frame.run,
            step_id: &step.id,
            item_index,
            idempotency_key: format!(
                "{}:{}{}",
                frame.run.id,
                frame.scope,
                item_key(step, item_index)
            ),
        };
        let actions = frame.actions;
        let (counters, limits) = (frame.counters, &self.limits);
        match &step.action {
            Action::Http(_) => {
                Counters::take(&counters.http_calls, limits.http_calls, "http_calls")?
            }
            Action::Message(_) => Counters::take(&counters.messages, limits.messages, "messages")?,
            _ => {}
        }
        match &step.action {
            Action::Set(map) => return render(Value::Object(map.clone())).await,
            Action::Files(f) => {
                let args = render(serde_json::to_value(f).unwrap_or_default()).await?;
                return self.files(&args, &counters.files).await;
            }
            Action::Uses(skill) => {
                return self.uses(skill, step, ctx, item_index, frame, limit).await;
            }
            Action::Http(a) => actions.http(&call, args(a).await?).await,
            Action::Llm(a) => actions.llm(&call, args(a).await?).await,
            Action::Agent(a) => actions.agent(&call, args(a).await?).await,
            Action::Message(a) => actions.message(&call, args(a).await?).await,
            Action::Kv(a) => actions.kv(&call, args(a).await?).await,
            Action::Metric(a) => actions.metric(&call, args(a).await?).await,
            Action::ScheduleJob(a) => actions.schedule_job(&call, args(a).await?).await,
            Action::Approval(a) => actions.approval(&call, args(a).await?).await,
        }
    }

    async fn files(&self, args: &Value, usage: &files::RunUsage) -> StepResult {
        let text = |key: &str| args.get(key).filter(|v| !v.is_null());
        let data_dir = self.data_dir.clone();
        let op = match (text("write"), text("read")) {
            (Some(Value::String(path)), None) => {
                let content = match text("content") {
                    None => Vec::new(),
                    Some(Value::String(s)) => s.clone().into_bytes(),
                    Some(other) => serde_json::to_vec(other).unwrap_or_default(),
                };
                usage
                    .take(self.files_quota.limits(), content.len() as u64)
                    .map_err(|m| RunError::Permanent(format!("files: `{path}`: {m}")))?;
                let path = path.clone();
                let quota = self.files_quota.clone();
                tokio::task::spawn_blocking(move || {
                    files::write(&data_dir, &path, &content, &quota)
                })
                .await
            }
            (None, Some(Value::String(path))) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || files::read(&data_dir, &path)).await
            }
            _ => {
                return Err(RunError::Permanent(
                    "files takes `write: PATH` with `content`, or `read: PATH`".into(),
                ));
            }
        };
        op.map_err(|e| RunError::retryable(format!("files: {e}")))?
            .map_err(|e| RunError::Permanent(format!("files: {e}")))
    }

    async fn uses(
        &self,
        skill_id: &str,
        step: &Step,
        ctx: &minijinja::Value,
        item_index: Option<usize>,
        frame: &Frame<'_>,
        limit: (tokio::time::Instant, render::Limit),
    ) -> StepResult {
        let skill = &self
            .skills
            .get(skill_id)
            .ok_or_else(|| RunError::Permanent(format!("no skill `{skill_id}`")))?
            .spec;
        if frame.depth + 1 > MAX_USES_DEPTH {
            return Err(RunError::Permanent(format!(
                "skill `{skill_id}`: `uses` nests deeper than {MAX_USES_DEPTH}"
            )));
        }
        let with = match &step.with {
            Some(with) => {
                let with = Value::Object(with.clone());
                render::render(render_value, &self.env, &with, ctx, limit).await?
            }
            None => Value::Object(Map::new()),
        };
        if let Some(params) = &skill.params {
            check_params(skill_id, params, &with)?;
        }
        let mut inputs = skill.default_inputs.clone();
        if let Value::Object(with) = with {
            inputs.extend(with);
        }
        let inner = Frame {
            run: frame.run,
            actions: frame.actions,
            cancel: frame.cancel,
            counters: frame.counters,
            progress: frame.progress,
            depth: frame.depth + 1,
            scope: format!("{}{}/", frame.scope, item_key(step, item_index)),
        };
        // The skill's own step records stay inside it: the caller's record
        // is the `uses` step, and an error names the inner step.
        let mut records = Vec::new();
        self.run_steps(&skill.steps, Value::Object(inputs), &inner, &mut records)
            .await
            .map_err(|e| e.map_message(|m| format!("skill `{skill_id}`: {m}")))
    }
}

/// The parts of a step's template context shared by its `foreach` items.
struct Base {
    inputs: minijinja::Value,
    steps: minijinja::Value,
    run: minijinja::Value,
    job: minijinja::Value,
    now: minijinja::Value,
}

impl Base {
    fn with_item(&self, item: Option<(Value, usize, usize)>) -> minijinja::Value {
        let (item, looping) = match item {
            Some((item, index0, length)) => (
                to_template_value(item),
                to_template_value(json!({
                    "index": index0 + 1,
                    "index0": index0,
                    "first": index0 == 0,
                    "last": index0 + 1 == length,
                    "length": length,
                })),
            ),
            None => (minijinja::Value::UNDEFINED, minijinja::Value::UNDEFINED),
        };
        minijinja::context! {
            inputs => self.inputs.clone(),
            steps => self.steps.clone(),
            run => self.run.clone(),
            job => self.job.clone(),
            now => self.now.clone(),
            item => item,
            loop => looping,
        }
    }
}

/// Action structs rendered as their JSON form.
mod erased {
    pub trait Args {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Args for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}

/// Polls all `futures` together; the outputs in input order, or the first
/// error to happen (the rest are dropped, which aborts them).
async fn try_join_ordered<T>(
    mut futures: Vec<BoxFuture<'_, Result<T, RunError>>>,
) -> Result<Vec<T>, RunError> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(outputs.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(Ok(v)) => *slot = Some(v),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(outputs.into_iter().flatten().collect())
}

fn record(
    step: &Step,
    status: StepStatus,
    output: Value,
    error: Option<String>,
    duration_ms: u64,
) -> StepRecord {
    StepRecord {
        id: step.id.clone(),
        status,
        output,
        error,
        duration_ms,
        completed: BTreeMap::new(),
    }
}

/// The rendered `with` against the skill's `params` (validation checked
/// only its literal values).
fn check_params(skill_id: &str, params: &Value, with: &Value) -> Result<(), RunError> {
    let validator = jsonschema::validator_for(params)
        .map_err(|e| RunError::Permanent(format!("skill `{skill_id}`: bad params schema: {e}")))?;
    let problems: Vec<String> = validator
        .iter_errors(with)
        .map(|e| {
            let path = e.instance_path().as_str().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Permanent(format!(
            "`with` does not match skill `{skill_id}` params: {}",
            problems.join("; ")
        )))
    }
}

/// `step` or `step:index`.
fn item_key(step: &Step, item_index: Option<usize>) -> String {
    match item_index {
        Some(i) => format!("{}:{i}", step.id),
        None => step.id.clone(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// In-process side effects: only `kv` does anything, which is all these
    /// tests need (no HTTP peer is involved).
    #[derive(Default)]
    struct Stub {
        finished: Mutex<Vec<i64>>,
        in_flight: AtomicU32,
        max_in_flight: AtomicU32,
        flaky_calls: AtomicU32,
    }

    fn refuse<'a>(what: &'static str) -> ActionFuture<'a> {
        Box::pin(async move { Err(RunError::Permanent(format!("{what} is not stubbed"))) })
    }

    impl Actions for Stub {
        fn http<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("http")
        }
        fn llm<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("llm")
        }
        fn agent<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("agent")
        }
        /// Delivery is recorded in process; no peer is involved.
        fn message<'a>(&'a self, call: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            Box::pin(async move {
                Ok(json!({"delivered": true, "provider_message_id": call.idempotency_key}))
            })
        }
        fn schedule_job<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("schedule_job")
        }
        fn approval<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("approval")
        }
        fn metric<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("metric")
        }

        /// `get: N` sleeps (10 - N) * 10 ms and returns N * 10; `incr:
        /// flaky` fails twice, retryably; `get: slow` sleeps an hour;
        /// `get: key` returns the idempotency key.
        fn kv<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
            Box::pin(async move {
                if args["incr"] == "flaky" {
                    let n = self.flaky_calls.fetch_add(1, Ordering::SeqCst) + 1;
                    return if n < 3 {
                        Err(RunError::retryable(format!("flaky call {n}")))
                    } else {
                        Ok(json!(n))
                    };
                }
                match &args["get"] {
                    Value::Number(n) => {
                        let n = n.as_i64().unwrap();
                        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis((10 - n as u64) * 10)).await;
                        self.in_flight.fetch_sub(1, Ordering::SeqCst);
                        self.finished.lock().unwrap().push(n);
                        Ok(json!(n * 10))
                    }
                    Value::String(s) if s == "slow" => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(json!("late"))
                    }
                    Value::String(s) if s == "key" => Ok(json!(call.idempotency_key)),
                    other => Err(RunError::Permanent(format!("unknown key {other}"))),
                }
            })
        }
    }

    fn steps(v: Value) -> Vec<Step> {
        serde_json::from_value(v).expect("steps deserialize")
    }

    fn run_info() -> RunInfo {
        RunInfo {
            id: "run-1".into(),
            job_id: "job-a".into(),
            job_type: "agent.workflow".into(),
            attempt: 2,
            scheduled_at: Some("2026-11-24T07:00:00Z".into()),
        }
    }

    fn skills(list: Value) -> BTreeMap<String, Resource<Skill>> {
        let list: Vec<Skill> = serde_json::from_value(list).expect("skills deserialize");
        list.into_iter()
            .map(|s| {
                (
                    s.id.clone(),
                    Resource::new(s, "skills.d/s.yaml".into(), 1, 1),
                )
            })
            .collect()
    }

    async fn run_with(
        skills: &BTreeMap<String, Resource<Skill>>,
        data_dir: &std::path::Path,
        list: Value,
        inputs: Value,
        stub: &Stub,
    ) -> (Result<Value, RunError>, Vec<StepRecord>) {
        let engine = Engine::new(skills, data_dir, Clock::Wall);
        let token = CancellationToken::new();
        engine
            .run(&steps(list), inputs, run_info(), stub, &token)
            .await
    }

    async fn run(
        list: Value,
        inputs: Value,
        stub: &Stub,
    ) -> (Result<Value, RunError>, Vec<StepRecord>) {
        run_with(&BTreeMap::new(), &std::env::temp_dir(), list, inputs, stub).await
    }

    fn statuses(records: &[StepRecord]) -> Vec<(&str, &str)> {
        records
            .iter()
            .map(|r| (r.id.as_str(), r.status.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn set_and_templates_across_steps() {
        let (result, records) = run(
            json!([
                {"id": "a", "set": {"n": "{{ inputs.n }}", "label": "n is {{ inputs.n }}"}},
                {"id": "b", "set": {
                    "double": "{{ steps.a.output.n * 2 }}",
                    "who": "{{ run.id }}/{{ run.job_id }}/{{ job.type }}/{{ run.attempt }}",
                    "at": "{{ run.scheduled_at }}",
                    "has_now": "{{ now | length > 10 }}",
                }},
            ]),
            json!({"n": 21}),
            &Stub::default(),
        )
        .await;
        assert_eq!(
            result.unwrap(),
            json!({"double": 42, "who": "run-1/job-a/agent.workflow/2",
                   "at": "2026-11-24T07:00:00Z", "has_now": true})
        );
        assert_eq!(statuses(&records), [("a", "succeeded"), ("b", "succeeded")]);
        assert_eq!(records[0].output, json!({"n": 21, "label": "n is 21"}));
    }

    #[tokio::test]
    async fn a_false_condition_skips_the_step() {
        let (result, records) = run(
            json!([
                {"id": "a", "when": "inputs.n > 5", "set": {"x": 1}},
                {"id": "b", "when": "{{ inputs.n < 5 }}", "set": {"skipped_a": "{{ steps.a.output is none }}"}},
                {"id": "c", "when": false, "set": {"x": 3}},
            ]),
            json!({"n": 2}),
            &Stub::default(),
        )
        .await;
        // The last step was skipped: its output, null, is the run's.
        assert_eq!(result.unwrap(), Value::Null);
        assert_eq!(
            statuses(&records),
            [("a", "skipped"), ("b", "succeeded"), ("c", "skipped")]
        );
        assert_eq!(records[0].output, Value::Null);
        assert_eq!(records[1].output, json!({"skipped_a": true}));
    }

    #[tokio::test(start_paused = true)]
    async fn foreach_outputs_follow_item_order_whatever_finishes_first() {
        let stub = Stub::default();
        let (result, records) = run(
            json!([
                {"id": "list", "set": {"items": [1, 2, 3, 4, 5, 6, 7, 8]}},
                {"id": "each", "foreach": "{{ steps.list.output.items }}", "concurrency": 4,
                 "kv": {"get": "{{ item }}"}},
                {"id": "loops", "foreach": ["a", "b", "c"],
                 "set": {"v": "{{ item }}{{ loop.index }}/{{ loop.length }}", "first": "{{ loop.first }}",
                         "last": "{{ loop.last }}", "i0": "{{ loop.index0 }}"}},
                {"id": "keys", "foreach": [1, 2], "kv": {"get": "key"}},
            ]),
            json!({}),
            &stub,
        )
        .await;
        result.unwrap();
        assert_eq!(records[1].output, json!([10, 20, 30, 40, 50, 60, 70, 80]));
        // Later items sleep less, so completion order is not item order.
        let finished = stub.finished.lock().unwrap().clone();
        assert_ne!(finished, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(stub.max_in_flight.load(Ordering::SeqCst), 4);
        assert_eq!(
            records[2].output,
            json!([
                {"v": "a1/3", "first": true, "last": false, "i0": 0},
                {"v": "b2/3", "first": false, "last": false, "i0": 1},
                {"v": "c3/3", "first": false, "last": true, "i0": 2},
            ])
        );
        assert_eq!(records[3].output, json!(["run-1:keys:0", "run-1:keys:1"]));
    }

    #[tokio::test]
    async fn foreach_needs_a_list() {
        let (result, _) = run(
            json!([{"id": "each", "foreach": "{{ inputs.n }}", "set": {}}]),
            json!({"n": 3}),
            &Stub::default(),
        )
        .await;
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("step `each`: foreach must yield a list, got a number"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn continue_on_error_records_the_error_and_goes_on() {
        let (result, records) = run(
            json!([
                {"id": "bad", "continue_on_error": true, "kv": {"get": "nothing"}},
                {"id": "after", "set": {"bad_output": "{{ steps.bad.output }}"}},
            ]),
            json!({}),
            &Stub::default(),
        )
        .await;
        assert_eq!(result.unwrap(), json!({"bad_output": null}));
        assert_eq!(
            statuses(&records),
            [("bad", "failed"), ("after", "succeeded")]
        );
        let error = records[0].error.as_deref().unwrap();
        assert!(
            error.contains("step `bad`") && error.contains("unknown key"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn continue_on_error_in_a_foreach_keeps_the_other_items() {
        let (result, records) = run(
            json!([
                {"id": "each", "foreach": [1, "missing", 2], "continue_on_error": true,
                 "kv": {"get": "{{ item }}"}},
            ]),
            json!({}),
            &Stub::default(),
        )
        .await;
        assert_eq!(result.unwrap(), json!([10, null, 20]));
        assert_eq!(statuses(&records), [("each", "succeeded")]);
        // The failed item is on the step's record, not only in the log.
        let error = records[0].error.as_deref().unwrap_or("");
        assert!(error.starts_with("1 of 3 items failed"), "{error}");
        assert!(error.contains("item 1:"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_retries_retryable_errors() {
        let stub = Stub::default();
        let (result, records) = run(
            json!([{"id": "flaky", "retry": {"max_retry": 2, "backoff_sec": [1]}, "kv": {"incr": "flaky"}}]),
            json!({}),
            &stub,
        )
        .await;
        assert_eq!(result.unwrap(), json!(3));
        assert_eq!(statuses(&records), [("flaky", "succeeded")]);

        // One retry is not enough: the retryable error fails the run as retryable.
        let stub = Stub::default();
        let (result, _) = run(
            json!([{"id": "flaky", "retry": {"max_retry": 1}, "kv": {"incr": "flaky"}}]),
            json!({}),
            &stub,
        )
        .await;
        assert_eq!(
            result,
            Err(RunError::retryable("step `flaky`: flaky call 2"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_times_out() {
        let (result, records) = run(
            json!([
                {"id": "slow", "timeout_ms": 50, "kv": {"get": "slow"}},
                {"id": "never", "set": {}},
            ]),
            json!({}),
            &Stub::default(),
        )
        .await;
        assert_eq!(
            result,
            Err(RunError::retryable("step `slow`: timed out after 50 ms"))
        );
        assert_eq!(statuses(&records), [("slow", "failed")]);
    }

    #[tokio::test]
    async fn cancellation_aborts_the_current_action() {
        let engine_skills = BTreeMap::new();
        let engine = Engine::new(&engine_skills, std::env::temp_dir(), Clock::Wall);
        let token = CancellationToken::new();
        let list =
            steps(json!([{"id": "slow", "kv": {"get": "slow"}}, {"id": "never", "set": {}}]));
        let stub = Stub::default();
        let canceller = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                token.cancel();
            })
        };
        let (result, records) = engine
            .run(&list, json!({}), run_info(), &stub, &token)
            .await;
        canceller.await.unwrap();
        assert_eq!(result, Err(RunError::Cancelled));
        assert_eq!(statuses(&records), [("slow", "cancelled")]);

        // A cancelled token stops before the first step, which is
        // recorded as cancelled (an interrupted run goes on from there).
        let (result, records) = engine
            .run(&list, json!({}), run_info(), &stub, &token)
            .await;
        assert_eq!(result, Err(RunError::Cancelled));
        assert_eq!(statuses(&records), [("slow", "cancelled")]);
        assert_eq!(records[0].duration_ms, 0);
    }

    #[tokio::test]
    async fn files_write_and_read_inside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (result, records) = run_with(
            &BTreeMap::new(),
            dir.path(),
            json!([
                {"id": "w", "files": {"write": "out/{{ inputs.name }}.txt", "content": "hi {{ inputs.name }}"}},
                {"id": "j", "files": {"write": "data.json", "content": {"n": "{{ inputs.n }}"}}},
                {"id": "r", "files": {"read": "{{ steps.w.output.path }}"}},
            ]),
            json!({"name": "ada", "n": 1}),
            &Stub::default(),
        )
        .await;
        assert_eq!(result.unwrap(), json!("hi ada"));
        assert_eq!(
            records[0].output,
            json!({"path": "out/ada.txt", "bytes": 6})
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data.json")).unwrap(),
            r#"{"n":1}"#
        );

        let (result, _) = run_with(
            &BTreeMap::new(),
            dir.path(),
            json!([{"id": "escape", "files": {"write": "../{{ inputs.name }}", "content": "x"}}]),
            json!({"name": "evil"}),
            &Stub::default(),
        )
        .await;
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("step `escape`") && message.contains("../evil"),
            "{message}"
        );
        assert!(!dir.path().parent().unwrap().join("evil").exists());
    }

    /// `c00` uses `c01` ... uses the last, whose one step is `last`.
    fn uses_chain(
        n: usize,
        uses_per_skill: usize,
        last: Value,
    ) -> BTreeMap<String, Resource<Skill>> {
        skills(Value::Array(
            (0..n)
                .map(|i| {
                    let steps: Vec<Value> = if i + 1 < n {
                        (0..uses_per_skill)
                            .map(|k| json!({"id": format!("u{k}"), "uses": format!("c{:02}", i + 1)}))
                            .collect()
                    } else {
                        vec![last.clone()]
                    };
                    json!({"id": format!("c{i:02}"), "steps": steps})
                })
                .collect(),
        ))
    }

    #[tokio::test]
    async fn validate_rejects_exactly_the_uses_chains_a_run_cannot_nest() {
        let dir = std::env::temp_dir();
        let call = json!([{"id": "call", "uses": "c00"}]);
        let end = json!({"id": "end", "set": {"end": true}});
        let ok = uses_chain(MAX_USES_DEPTH, 1, end.clone());
        assert!(crate::spec::uses::check(&ok).is_empty());
        let (result, _) = run_with(&ok, &dir, call.clone(), json!({}), &Stub::default()).await;
        assert_eq!(result.unwrap(), json!({"end": true}));

        let deep = uses_chain(MAX_USES_DEPTH + 1, 1, end);
        assert_eq!(crate::spec::uses::check(&deep)[0].code, "uses-depth");
        let (result, _) = run_with(&deep, &dir, call, json!({}), &Stub::default()).await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains("nests deeper than 10"), "{message}");
    }

    #[test]
    fn a_skill_used_by_many_steps_is_looked_into_once_before_a_run() {
        // 10 levels of 12 `uses` steps each: 12^9 paths to the last skill.
        // Looking for an approval step walked each path before the run
        // started, on the runtime's thread. The last skill fails, so the
        // run itself ends at the first path.
        let fail = json!({"id": "fail", "kv": {"get": "nope"}});
        let skills = uses_chain(MAX_USES_DEPTH, 12, fail);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let call = json!([{"id": "call", "uses": "c00"}]);
            let (result, _) = runtime.block_on(run_with(
                &skills,
                &std::env::temp_dir(),
                call,
                json!({}),
                &Stub::default(),
            ));
            let _ = tx.send(result.map_err(|e| e.to_string()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the run did not end within 60 s");
        assert!(result.unwrap_err().contains("unknown key"));
    }

    #[tokio::test]
    async fn uses_overlays_default_inputs_and_nests() {
        let skills = skills(json!([
            {"id": "greet", "default_inputs": {"tone": "friendly", "name": "you"},
             "steps": [
                {"id": "inner", "uses": "shout", "with": {"text": "{{ inputs.tone }} hello {{ inputs.name }}"}},
                {"id": "done", "set": {"said": "{{ steps.inner.output }}", "tone": "{{ inputs.tone }}"}},
             ]},
            {"id": "shout", "steps": [{"id": "up", "set": {"v": "{{ inputs.text | upper }}"}},
                                      {"id": "last", "set": {"text": "{{ steps.up.output.v }}!"}}]},
            {"id": "loop", "steps": [{"id": "again", "uses": "loop"}]},
            {"id": "broken", "steps": [{"id": "oops", "set": {"x": "{{ inputs.nothing }}"}}]},
            {"id": "typed", "params": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
             "steps": [{"id": "n", "set": {"n": "{{ inputs.n }}"}}]},
        ]));
        let dir = std::env::temp_dir();
        let (result, records) = run_with(
            &skills,
            &dir,
            json!([{"id": "call", "uses": "greet", "with": {"name": "{{ inputs.who }}"}}]),
            json!({"who": "ada"}),
            &Stub::default(),
        )
        .await;
        assert_eq!(
            result.unwrap(),
            json!({"said": {"text": "FRIENDLY HELLO ADA!"}, "tone": "friendly"})
        );
        assert_eq!(statuses(&records), [("call", "succeeded")]);

        let (result, _) = run_with(
            &skills,
            &dir,
            json!([{"id": "call", "uses": "loop"}]),
            json!({}),
            &Stub::default(),
        )
        .await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains("nests deeper than 10"), "{message}");

        let (result, _) = run_with(
            &skills,
            &dir,
            json!([{"id": "call", "uses": "broken"}]),
            json!({}),
            &Stub::default(),
        )
        .await;
        let message = result.unwrap_err().to_string();
        assert!(
            message.starts_with("step `call`: skill `broken`: step `oops`:")
                && message.contains("inputs.nothing"),
            "{message}"
        );

        let (result, _) = run_with(
            &skills,
            &dir,
            json!([{"id": "call", "uses": "absent"}]),
            json!({}),
            &Stub::default(),
        )
        .await;
        assert_eq!(
            result,
            Err(RunError::Permanent("step `call`: no skill `absent`".into()))
        );

        // A templated `with` is checked against params once rendered.
        let call = |n: &str| json!([{"id": "call", "uses": "typed", "with": {"n": n}}]);
        let (result, _) = run_with(
            &skills,
            &dir,
            call("{{ inputs.n }}"),
            json!({"n": 4}),
            &Stub::default(),
        )
        .await;
        assert_eq!(result.unwrap(), json!({"n": 4}));
        let (result, _) = run_with(
            &skills,
            &dir,
            call("{{ inputs.n }}"),
            json!({"n": "four"}),
            &Stub::default(),
        )
        .await;
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("does not match skill `typed` params: /n:"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn limits_bound_messages_per_run() {
        let no_skills = BTreeMap::new();
        let engine =
            Engine::new(&no_skills, std::env::temp_dir(), Clock::Wall).with_limits(Limits {
                messages: Some(2),
                ..Limits::default()
            });
        let list = steps(json!([
            {"id": "send", "foreach": [1, 2], "message": {"connector": "c", "text": "{{ item }}"}},
            {"id": "more", "message": {"connector": "c", "text": "three"}},
        ]));
        let token = CancellationToken::new();
        let (result, records) = engine
            .run(&list, json!({}), run_info(), &Stub::default(), &token)
            .await;
        assert_eq!(records[0].output[1]["provider_message_id"], "run-1:send:1");
        assert_eq!(
            result,
            Err(RunError::Permanent(
                "step `more`: the run reached its limit of 2 messages (limits.messages)".into()
            ))
        );
    }

    #[tokio::test]
    async fn idempotency_keys_keep_skill_calls_apart() {
        let skills = skills(json!([
            {"id": "notify", "steps": [{"id": "send", "message": {"connector": "c", "text": "x"}}]},
        ]));
        let (result, records) = run_with(
            &skills,
            &std::env::temp_dir(),
            json!([
                {"id": "a", "uses": "notify"},
                {"id": "b", "foreach": [1, 2], "uses": "notify"},
            ]),
            json!({}),
            &Stub::default(),
        )
        .await;
        result.unwrap();
        assert_eq!(records[0].output["provider_message_id"], "run-1:a/send");
        assert_eq!(
            records[1].output[1]["provider_message_id"],
            "run-1:b:1/send"
        );
    }

    #[tokio::test]
    async fn an_undefined_name_fails_the_step_by_id() {
        let (result, records) = run(
            json!([
                {"id": "ok", "set": {"a": 1}},
                {"id": "typo", "set": {"b": "{{ steps.ok.output.nope }}"}},
                {"id": "never", "set": {}},
            ]),
            json!({}),
            &Stub::default(),
        )
        .await;
        let Err(RunError::Permanent(message)) = result else {
            panic!("{result:?}")
        };
        assert!(
            message.starts_with("step `typo`: template `{{ steps.ok.output.nope }}`"),
            "{message}"
        );
        assert_eq!(
            statuses(&records),
            [("ok", "succeeded"), ("typo", "failed")]
        );
    }

    /// Side effects of a workflow with approvals: `kv incr` counts calls,
    /// `approval` pauses until its key is in `approved`.
    #[derive(Default)]
    struct Gates {
        bumps: AtomicU32,
        approved: Mutex<Vec<String>>,
    }

    impl Actions for Gates {
        fn http<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("http")
        }
        fn llm<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("llm")
        }
        fn agent<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("agent")
        }
        fn message<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("message")
        }
        fn schedule_job<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("schedule_job")
        }
        fn metric<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse("metric")
        }
        fn kv<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            let n = self.bumps.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move { Ok(json!(n)) })
        }
        fn approval<'a>(&'a self, call: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            let key = call.idempotency_key.clone();
            let approved = self.approved.lock().unwrap().contains(&key);
            Box::pin(async move {
                if approved {
                    Ok(json!({"decision": "approved"}))
                } else {
                    Err(RunError::AwaitingApproval {
                        approval_id: format!("ap-{key}"),
                        key,
                        reason: "why".into(),
                    })
                }
            })
        }
    }

    #[tokio::test]
    async fn an_approved_run_resumes_after_what_completed_before_its_pause() {
        let skills = skills(json!([
            {"id": "ask", "steps": [{"id": "bump", "kv": {"incr": "n"}},
                                    {"id": "gate", "approval": {"reason": "x"}},
                                    {"id": "said", "set": {"bump": "{{ steps.bump.output }}"}}]},
        ]));
        let list = steps(json!([
            {"id": "count", "kv": {"incr": "n"}},
            {"id": "gate", "approval": {"reason": "x"}},
            {"id": "after", "set": {"count": "{{ steps.count.output }}"}},
            {"id": "nested", "uses": "ask"},
            {"id": "each", "foreach": [0, 1], "uses": "ask"},
        ]));
        let engine = Engine::new(&skills, std::env::temp_dir(), Clock::Wall);
        let gates = Gates::default();
        let token = CancellationToken::new();
        let mut records = Vec::new();
        // Each pause is approved in turn; the last execution finishes.
        let mut pauses = Vec::new();
        let result = loop {
            let resume = Resume::from_records(&records);
            let (result, recs) = engine
                .resume(&list, json!({}), run_info(), resume, &gates, &token)
                .await;
            records = recs;
            match result {
                Err(RunError::AwaitingApproval { key, .. }) => {
                    assert!(pauses.len() < 10, "{pauses:?}");
                    pauses.push(key.clone());
                    gates.approved.lock().unwrap().push(key);
                }
                other => break other,
            }
        };
        assert_eq!(
            pauses,
            [
                "run-1:gate",
                "run-1:nested/gate",
                "run-1:each:0/gate",
                "run-1:each:1/gate"
            ]
        );
        // Each `kv incr` ran once: top level, in a skill, in foreach items.
        assert_eq!(gates.bumps.load(Ordering::SeqCst), 4);
        assert_eq!(result.unwrap(), json!([{"bump": 3}, {"bump": 4}]));
        assert_eq!(records[0].output, json!(1));
        assert_eq!(records[2].output, json!({"count": 1}));
        assert_eq!(records[3].output, json!({"bump": 2}));
        assert!(
            records.iter().all(|r| r.status.as_str() == "succeeded"),
            "{records:?}"
        );
        assert!(
            records.iter().all(|r| r.completed.is_empty()),
            "{records:?}"
        );
    }

    #[test]
    fn a_pause_or_an_interruption_resumes() {
        let rec = |id: &str, status: &str| StepRecord {
            id: id.into(),
            status: serde_json::from_value(json!(status)).expect("a step status"),
            output: json!(id),
            error: None,
            duration_ms: 0,
            completed: BTreeMap::from([(format!("{id}/x"), json!(1))]),
        };
        let paused = Resume::from_records(&[rec("a", "succeeded"), rec("b", "awaiting_approval")]);
        assert_eq!(paused.top.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            paused.inner,
            BTreeMap::from([("b/x".to_string(), json!(1))])
        );
        let interrupted = Resume::from_records(&[rec("a", "succeeded"), rec("b", "interrupted")]);
        assert_eq!(interrupted.top.keys().collect::<Vec<_>>(), ["a"]);
        // A failed or cancelled execution runs again from its first step.
        for last in ["failed", "cancelled", "succeeded"] {
            let r = Resume::from_records(&[rec("a", "succeeded"), rec("b", last)]);
            assert!(r.top.is_empty() && r.inner.is_empty(), "{last}");
        }
        assert!(Resume::from_records(&[]).top.is_empty());
    }
}
