//! `agent.workflow` and `http.request`: the run's steps through the step
//! engine, side effects through the connectors, the store and the run's
//! host. An `http.request` job is one `http` step built from its inputs; a
//! seed-style job with a prompt and no steps is one implicit agent step; a
//! skill's derived job (`skill:<id>`) is one `uses` step whose `with` is the
//! run's inputs.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::Attempt;
use crate::run::{BoxFuture, RunError, RunResult};
use crate::spec::model::{Job, Step};
use crate::spec::snapshot::derived::skill_of;
use crate::store::Applied;
use crate::workflow::agent_tools::AgentToolsEnv;
use crate::workflow::follow_ups::FollowUpBudget;
use crate::workflow::runtime::RuntimeActions;
use crate::workflow::{Engine, Resume, RunInfo};

/// Runs the attempt's steps. Its step records and LLM tokens go to the host;
/// a run cut short by its timeout records its tokens only (its steps are
/// not a place to go on from).
pub fn run(a: Attempt<'_>) -> BoxFuture<'_, RunResult> {
    Box::pin(run_steps(a))
}

async fn run_steps(a: Attempt<'_>) -> RunResult {
    let (run, job) = (a.run, a.job);
    let applied = a.host.applied();
    let implicit;
    let steps: &[Step] = if job.job_type == "http.request" {
        implicit = [http_request_step(job)?];
        &implicit
    } else if job.steps.is_empty() {
        implicit = [implicit_agent(job, &applied)?];
        &implicit
    } else {
        &job.steps
    };
    let actions = RuntimeActions {
        connectors: a.connectors_for(&applied),
        store: a.host.store().clone(),
        queue: a.host.clone(),
        job: job.clone(),
        chain_depth: run.chain_depth,
        follow_ups: FollowUpBudget::new(job.limits.follow_ups),
        metrics: a.workflow_metrics.cloned(),
        tokens: std::sync::atomic::AtomicU64::new(0),
        tools_env: AgentToolsEnv::new(
            applied.clone(),
            a.data_dir.to_path_buf(),
            a.cancel.clone(),
            a.host.clock(),
            a.files.clone(),
        ),
        allow_command: a.allow_command,
        data_dir: a.data_dir.to_path_buf(),
        budget: crate::store::budgets::Meter::of(
            job,
            job.flow
                .as_ref()
                .and_then(|f| applied.snapshot.flows.get(f))
                .map(|f| &f.spec),
        ),
        budget_used: Default::default(),
    };
    let mut engine = Engine::new(
        &applied.snapshot.skills,
        a.data_dir.to_path_buf(),
        a.host.clock(),
    )
    .with_limits(job.limits.clone())
    .with_files_quota(a.files.clone());
    if skill_of(&job.id).is_some() {
        // A skill's one-off run: its inputs are the skill's `with`.
        engine = engine.with_skill_call(run.inputs.clone());
    }
    let info = RunInfo {
        id: run.id.clone(),
        job_id: run.job_id.clone(),
        job_type: job.job_type.clone(),
        attempt: run.attempt,
        scheduled_at: run.scheduled_at.clone(),
        run_key: run.run_key.clone(),
    };
    // A run approved after a pause goes on after its approval step, with
    // the outputs recorded before it (the records travel with the run, to
    // a worker process too).
    let resume = Resume::from_records(&run.steps);
    let (result, records) = engine
        .resume(steps, run.inputs.clone(), info, resume, &actions, a.cancel)
        .await;
    if !a.timed_out() {
        a.host.record_steps(&run.id, records);
    }
    a.host
        .record_usage(&run.id, actions.tokens.load(Ordering::SeqCst));
    actions.record_budget_use().await;
    result
}

/// An `http.request` job is one templated `http` step built from its
/// inputs (`connector`, `method`, `url` or `path`, `query`, `headers`,
/// `json` or `body`, `expect_status`, `timeout_ms`).
fn http_request_step(job: &Job) -> Result<Step, RunError> {
    let mut http = serde_json::Map::new();
    for field in crate::spec::model::HTTP_REQUEST_FIELDS {
        if let Some(v) = job.inputs.get(field) {
            http.insert(field.to_string(), v.clone());
        }
    }
    serde_json::from_value(json!({"id": "request", "http": http}))
        .map_err(|e| RunError::Permanent(format!("http.request inputs: {e}")))
}

/// A seed-style job with `inputs.prompt` and no steps runs as one agent
/// step on `inputs.llm_connector`, or on the only openai connector.
fn implicit_agent(job: &Job, applied: &Applied) -> Result<Step, RunError> {
    let Some(prompt) = job.inputs.get("prompt").and_then(|p| p.as_str()) else {
        return Err(RunError::Permanent(
            "an agent.workflow job needs `steps`, or `inputs.prompt` to run as an implicit agent"
                .into(),
        ));
    };
    let connector = match job.inputs.get("llm_connector").and_then(|c| c.as_str()) {
        Some(c) => c.to_string(),
        None => only_openai_connector(applied)?,
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

/// The id of the one openai connector an implicit agent runs on.
fn only_openai_connector(applied: &Applied) -> Result<String, RunError> {
    let openai: Vec<&String> = applied
        .snapshot
        .connectors
        .iter()
        .filter(|(_, r)| r.spec.provider == crate::spec::model::Provider::Openai)
        .map(|(id, _)| id)
        .collect();
    match openai.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(RunError::Permanent(
            "this job runs its prompt as an implicit agent, but no openai connector is \
             configured (add a Connector with provider: openai)"
                .into(),
        )),
        _ => Err(RunError::Permanent(
            "several openai connectors: set inputs.llm_connector to choose one".into(),
        )),
    }
}
