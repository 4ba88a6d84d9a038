//! The worker pool: N tasks that claim runs, execute their handler under
//! the job's timeout, and report the outcome to the queue (which retries,
//! fails or completes the run).
//!
//! Shutdown drains: no new claims; runs in flight get a grace period, then
//! are interrupted and go back to the queue for the next start.

mod catch_panic;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::connectors::Connectors;
use crate::jobs::{self, RunContext};
use crate::queue::RunQueue;
use crate::run::{BoxFuture, Claim, FollowUpHandover, NewRun, Outcome, RunError, RunHost};
use crate::spec::model::Job;
use crate::store::runs::{Run, StepRecord};
use crate::store::{Applied, Store};
use crate::workflow::follow_ups::FollowUpBudget;
use crate::workflow::metrics::WorkflowGauge;
use crate::workflow::runtime::RuntimeActions;
use crate::workflow::{Engine, Resume, RunInfo};

impl RunHost for RunQueue {
    fn applied(&self) -> Arc<Applied> {
        RunQueue::applied(self)
    }
    fn store(&self) -> &Store {
        RunQueue::store(self)
    }
    fn clock(&self) -> Clock {
        RunQueue::clock(self)
    }
    fn cancel_reason(&self, run_id: &str) -> Option<String> {
        RunQueue::cancel_reason(self, run_id)
    }
    fn follow_up(&self, run: NewRun) -> BoxFuture<'_, FollowUpHandover> {
        let queued = self.enqueue_follow_up(run).map(|_| ());
        Box::pin(async move { Ok(queued) })
    }
    fn record_steps(&self, run_id: &str, steps: Vec<StepRecord>) {
        RunQueue::record_steps(self, run_id, steps)
    }
    fn record_usage(&self, run_id: &str, llm_tokens: u64) {
        RunQueue::record_usage(self, run_id, llm_tokens)
    }
}

/// What every run of this process shares.
#[derive(Clone)]
pub struct WorkerContext {
    pub data_dir: std::path::PathBuf,
    pub allow_command: bool,
    /// Fired when the grace period after SIGTERM ends.
    pub shutdown: CancellationToken,
    /// Where workflow `metric` steps write (the daemon's registry).
    pub workflow_metrics: Option<WorkflowGauge>,
    /// What connector calls count into.
    pub connector_metrics: Option<crate::connectors::metrics::ConnectorMetrics>,
    /// The connectors of the applied revision, rebuilt when it changes.
    pub connectors: Arc<std::sync::Mutex<Option<ConnectorsOf>>>,
    /// What `files` steps may write, and the data dir's usage.
    pub files: Arc<crate::workflow::files::FilesQuota>,
}

/// Connectors built for one revision id.
type ConnectorsOf = (String, Arc<Connectors>);

impl WorkerContext {
    pub fn new(data_dir: std::path::PathBuf, allow_command: bool) -> Self {
        WorkerContext {
            files: Arc::new(crate::workflow::files::FilesQuota::new(
                data_dir.clone(),
                Default::default(),
            )),
            data_dir,
            allow_command,
            shutdown: CancellationToken::new(),
            workflow_metrics: None,
            connector_metrics: None,
            connectors: Arc::default(),
        }
    }

    /// The connectors of `applied`, built once per revision (rate limits
    /// are process-wide and survive the rebuild).
    fn connectors_for(&self, applied: &Applied) -> Arc<Connectors> {
        let key = applied
            .revision
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let mut cache = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, c)) = cache.as_ref()
            && *k == key
        {
            return c.clone();
        }
        let mut built = Connectors::new(&applied.snapshot.connectors);
        if let Some(m) = &self.connector_metrics {
            built = built.with_metrics(m.clone());
        }
        let built = Arc::new(built);
        *cache = Some((key, built.clone()));
        built
    }
}

pub struct WorkerPool {
    handles: Vec<JoinHandle<()>>,
    busy: Arc<AtomicUsize>,
    total: usize,
}

impl WorkerPool {
    /// Start `n` workers; `busy` counts the runs they execute.
    pub fn spawn(
        n: usize,
        queue: Arc<RunQueue>,
        ctx: WorkerContext,
        busy: Arc<AtomicUsize>,
    ) -> WorkerPool {
        let handles = (0..n)
            .map(|_| tokio::spawn(worker_loop(queue.clone(), ctx.clone(), busy.clone())))
            .collect();
        WorkerPool {
            handles,
            busy,
            total: n,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Stop claiming, give in-flight runs `grace`, then interrupt them.
    pub async fn drain(self, queue: &RunQueue, ctx: &WorkerContext, grace: Duration) {
        queue.drain();
        let deadline = tokio::time::Instant::now() + grace;
        while self.busy.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.busy.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(
                runs = left,
                "grace period over: interrupting runs; they run again after the restart"
            );
            ctx.shutdown.cancel();
            for token in queue.running_tokens() {
                token.cancel();
            }
        }
        for h in self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

async fn worker_loop(queue: Arc<RunQueue>, ctx: WorkerContext, busy: Arc<AtomicUsize>) {
    let host: Arc<dyn RunHost> = queue.clone();
    while let Some(claim) = queue.claim().await {
        busy.fetch_add(1, Ordering::SeqCst);
        let run_id = claim.run.id.clone();
        let outcome = execute(&host, &ctx, claim).await;
        queue.finish(&run_id, outcome);
        busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run one attempt of a claimed run under its job's timeout. A handler
/// that panics fails its run (retryable, by the job's retry policy); the
/// worker goes on.
pub async fn execute(queue: &Arc<dyn RunHost>, ctx: &WorkerContext, claim: Claim) -> Outcome {
    // noop does nothing: no task, no timer, nothing to catch.
    if claim.job.job_type == "noop" {
        return Outcome::Succeeded(json!({}));
    }
    let job_type = claim.job.job_type.clone();
    let run_id = claim.run.id.clone();
    match catch_panic::CatchPanic::new(execute_handler(queue, ctx, claim)).await {
        Ok(outcome) => outcome,
        Err(panic) => {
            tracing::error!(
                run_id,
                job_type,
                panic,
                "a run's handler panicked; the run fails"
            );
            Outcome::Failed(RunError::retryable(format!(
                "the {job_type} handler crashed: {panic}"
            )))
        }
    }
}

async fn execute_handler(queue: &Arc<dyn RunHost>, ctx: &WorkerContext, claim: Claim) -> Outcome {
    let Claim { run, job, cancel } = claim;
    if job.job_type == "agent.workflow" || job.job_type == "http.request" {
        return run_workflow(queue, ctx, run, job, cancel).await;
    }
    if job.job_type == "monitor.channel" {
        let applied = queue.applied();
        let connectors = ctx.connectors_for(&applied);
        let rc = run_context(queue.as_ref(), ctx, &run, applied);
        let timeout = Duration::from_millis(job.timeout_ms.max(1));
        let check = jobs::monitor::run(&job, &rc, &connectors, ctx.workflow_metrics.as_ref());
        return match tokio::time::timeout(timeout, check).await {
            Ok(Ok(output)) => Outcome::Succeeded(output),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => {
                cancel.cancel();
                Outcome::TimedOut
            }
        };
    }
    if job.job_type == "report.daily" {
        let applied = queue.applied();
        let connectors = ctx.connectors_for(&applied);
        let rc = run_context(queue.as_ref(), ctx, &run, applied);
        let timeout = Duration::from_millis(job.timeout_ms.max(1));
        let report = jobs::report::run(&job, &rc, Some(&connectors), &cancel);
        return match tokio::time::timeout(timeout, report).await {
            Ok(Ok(output)) => Outcome::Succeeded(output),
            Ok(Err(RunError::Cancelled)) => cancelled(queue.as_ref(), ctx, &run.id),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => {
                cancel.cancel();
                Outcome::TimedOut
            }
        };
    }
    if !jobs::handles(&job.job_type) {
        return Outcome::Failed(RunError::Permanent(format!(
            "job type {} has no handler in this build of multijob",
            job.job_type
        )));
    }
    let rc = RunContext {
        run_id: run.id.clone(),
        job_id: run.job_id.clone(),
        attempt: run.attempt,
        inputs: run.inputs.clone(),
        data_dir: ctx.data_dir.clone(),
        allow_command: ctx.allow_command,
        store: Some(queue.store().clone()),
        applied: Some(queue.applied()),
    };
    let timeout = Duration::from_millis(job.timeout_ms.max(1));
    let handler_cancel = cancel.clone();
    let job_for_task = job.clone();
    // A task of its own, so a panicking handler fails its run, not the
    // worker. Boxed: the handlers' future is kilobytes, and a task's
    // future is moved several times on its way into the runtime.
    let mut task = tokio::spawn(Box::pin(async move {
        jobs::execute(&job_for_task, &rc, &handler_cancel).await
    }));
    let result = tokio::select! {
        r = &mut task => Some(r),
        _ = tokio::time::sleep(timeout) => None,
    };
    match result {
        Some(Ok(Ok(output))) => Outcome::Succeeded(output),
        Some(Ok(Err(RunError::Cancelled))) => cancelled(queue.as_ref(), ctx, &run.id),
        Some(Ok(Err(e))) => Outcome::Failed(e),
        Some(Err(join)) => {
            Outcome::Failed(RunError::retryable(format!("the handler crashed: {join}")))
        }
        None => {
            // Timed out: cancel the handler (a command's process group is
            // killed) and give it a moment to clean up.
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            Outcome::TimedOut
        }
    }
}

fn run_context(
    queue: &dyn RunHost,
    ctx: &WorkerContext,
    run: &Run,
    applied: Arc<Applied>,
) -> RunContext {
    RunContext {
        run_id: run.id.clone(),
        job_id: run.job_id.clone(),
        attempt: run.attempt,
        inputs: run.inputs.clone(),
        data_dir: ctx.data_dir.clone(),
        allow_command: ctx.allow_command,
        store: Some(queue.store().clone()),
        applied: Some(applied),
    }
}

/// An `http.request` job is one templated `http` step built from its
/// inputs (`connector`, `method`, `url` or `path`, `query`, `headers`,
/// `json` or `body`, `expect_status`, `timeout_ms`).
fn http_request_step(job: &Job) -> Result<crate::spec::model::Step, RunError> {
    let mut http = serde_json::Map::new();
    for field in crate::spec::model::HTTP_REQUEST_FIELDS {
        if let Some(v) = job.inputs.get(field) {
            http.insert(field.to_string(), v.clone());
        }
    }
    serde_json::from_value(json!({"id": "request", "http": http}))
        .map_err(|e| RunError::Permanent(format!("http.request inputs: {e}")))
}

/// An `agent.workflow` run: its steps through the engine, side effects
/// through the connectors, the store and the queue.
async fn run_workflow(
    queue: &Arc<dyn RunHost>,
    ctx: &WorkerContext,
    run: Run,
    job: Arc<Job>,
    cancel: CancellationToken,
) -> Outcome {
    let applied = queue.applied();
    let implicit;
    let steps: &[crate::spec::model::Step] = if job.job_type == "http.request" {
        match http_request_step(&job) {
            Ok(step) => {
                implicit = [step];
                &implicit
            }
            Err(e) => return Outcome::Failed(e),
        }
    } else if job.steps.is_empty() {
        match implicit_agent(&job, &applied) {
            Ok(step) => {
                implicit = [step];
                &implicit
            }
            Err(e) => return Outcome::Failed(e),
        }
    } else {
        &job.steps
    };
    let actions = RuntimeActions {
        connectors: ctx.connectors_for(&applied),
        store: queue.store().clone(),
        queue: queue.clone(),
        job: job.clone(),
        chain_depth: run.chain_depth,
        follow_ups: FollowUpBudget::new(job.limits.follow_ups),
        metrics: ctx.workflow_metrics.clone(),
        tokens: std::sync::atomic::AtomicU64::new(0),
    };
    let engine = Engine::new(
        &applied.snapshot.skills,
        ctx.data_dir.clone(),
        queue.clock(),
    )
    .with_limits(job.limits.clone())
    .with_files_quota(ctx.files.clone());
    let info = RunInfo {
        id: run.id.clone(),
        job_id: run.job_id.clone(),
        job_type: job.job_type.clone(),
        attempt: run.attempt,
        scheduled_at: run.scheduled_at.clone(),
    };
    let timeout = Duration::from_millis(job.timeout_ms.max(1));
    // A run approved after a pause goes on after its approval step, with
    // the outputs recorded before it (the records travel with the run, to
    // a worker process too).
    let resume = Resume::from_records(&run.steps);
    let running = engine.resume(steps, run.inputs.clone(), info, resume, &actions, &cancel);
    let finished = tokio::time::timeout(timeout, running).await;
    let tokens = actions.tokens.load(Ordering::SeqCst);
    let (result, records) = match finished {
        Ok(done) => done,
        Err(_) => {
            cancel.cancel();
            queue.record_usage(&run.id, tokens);
            return Outcome::TimedOut;
        }
    };
    queue.record_steps(&run.id, records);
    queue.record_usage(&run.id, tokens);
    match result {
        Ok(output) => Outcome::Succeeded(output),
        Err(RunError::AwaitingApproval {
            approval_id,
            key,
            reason,
        }) => Outcome::AwaitingApproval {
            approval_id,
            step_id: key,
            reason,
        },
        Err(RunError::Cancelled) => cancelled(queue.as_ref(), ctx, &run.id),
        Err(e) => Outcome::Failed(e),
    }
}

/// A seed-style job with `inputs.prompt` and no steps runs as one agent
/// step on `inputs.llm_connector`, or on the only openai connector.
fn implicit_agent(job: &Job, applied: &Applied) -> Result<crate::spec::model::Step, RunError> {
    let Some(prompt) = job.inputs.get("prompt").and_then(|p| p.as_str()) else {
        return Err(RunError::Permanent(
            "an agent.workflow job needs `steps`, or `inputs.prompt` to run as an implicit agent"
                .into(),
        ));
    };
    let connector = match job.inputs.get("llm_connector").and_then(|c| c.as_str()) {
        Some(c) => c.to_string(),
        None => {
            let openai: Vec<&String> = applied
                .snapshot
                .connectors
                .iter()
                .filter(|(_, r)| r.spec.provider == crate::spec::model::Provider::Openai)
                .map(|(id, _)| id)
                .collect();
            match openai.as_slice() {
                [one] => one.to_string(),
                [] => {
                    return Err(RunError::Permanent(
                        "this job runs its prompt as an implicit agent, but no openai connector is \
                         configured (add a Connector with provider: openai)"
                            .into(),
                    ));
                }
                _ => {
                    return Err(RunError::Permanent(
                        "several openai connectors: set inputs.llm_connector to choose one".into(),
                    ));
                }
            }
        }
    };
    let max_steps = job
        .inputs
        .get("max_steps")
        .and_then(|m| m.as_u64())
        .unwrap_or(5);
    serde_json::from_value(json!({
        "id": "agent",
        "agent": {"connector": connector, "goal": prompt, "tools": [], "max_steps": max_steps},
    }))
    .map_err(|e| RunError::Permanent(format!("implicit agent: {e}")))
}

fn cancelled(queue: &dyn RunHost, ctx: &WorkerContext, run_id: &str) -> Outcome {
    if ctx.shutdown.is_cancelled() {
        Outcome::Interrupted
    } else {
        Outcome::Cancelled(
            queue
                .cancel_reason(run_id)
                .unwrap_or_else(|| "cancelled".to_string()),
        )
    }
}
