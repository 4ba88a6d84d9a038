//! One step: its `when`, then its action with the step's `retry` and
//! `timeout_ms`, and the template context it renders with.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt;
use serde_json::{Map, Value, json};

use super::{
    ActionCall, Counters, Engine, Frame, RunInfo, StepResult, eval_condition, files, render,
    render_value, to_template_value,
};
use crate::otel;
use crate::run::RunError;
use crate::run::retry::backoff;
use crate::spec::model::{Action, Step};
use crate::store::format_ts;

impl Engine<'_> {
    /// What a step's templates see, but `item` and `loop`.
    pub(super) fn context(
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
    /// In a span of its own, under the attempt's (or its skill step's).
    pub(super) async fn run_step(
        &self,
        step: &Step,
        base: &Base,
        frame: &Frame<'_>,
    ) -> Result<Option<(Value, Option<String>)>, RunError> {
        let span = otel::child(
            format!("step {}", step.id),
            vec![KeyValue::new("multijob.step_id", step.id.clone())],
        );
        let result = self
            .step_body(step, base, frame)
            .with_context(span.clone())
            .await;
        let error = result.as_ref().err().map(ToString::to_string);
        otel::end(&span, error.as_deref());
        result
    }

    async fn step_body(
        &self,
        step: &Step,
        base: &Base,
        frame: &Frame<'_>,
    ) -> Result<Option<(Value, Option<String>)>, RunError> {
        let ctx = base.with_item(None);
        // `when` and `foreach` render before any attempt: each gets the
        // step's timeout_ms (or the default) of its own.
        if let Some(when) = &step.when {
            let limit = render::deadline(tokio::time::Instant::now(), step.timeout_ms);
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
        self.foreach(step, foreach, base, &ctx, frame)
            .await
            .map(Some)
    }

    /// One action call with the step's `retry` and `timeout_ms`, aborted
    /// when the run is cancelled.
    pub(super) async fn attempts(
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
            Action::Llm(a) => {
                let args = super::variants::apply(args(a).await?, &frame.run.run_key, &step.id);
                actions.llm(&call, args).await
            }
            Action::Agent(a) => {
                let args = super::variants::apply(args(a).await?, &frame.run.run_key, &step.id);
                actions.agent(&call, args).await
            }
            Action::Message(a) => actions.message(&call, args(a).await?).await,
            Action::Kv(a) => actions.kv(&call, args(a).await?).await,
            Action::Metric(a) => actions.metric(&call, args(a).await?).await,
            Action::ScheduleJob(a) => actions.schedule_job(&call, args(a).await?).await,
            Action::Approval(a) => actions.approval(&call, args(a).await?).await,
        }
    }

    /// A `files` step: write or read under the data dir, within the quota.
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
}

/// The parts of a step's template context shared by its `foreach` items.
pub(super) struct Base {
    inputs: minijinja::Value,
    steps: minijinja::Value,
    run: minijinja::Value,
    job: minijinja::Value,
    now: minijinja::Value,
}

impl Base {
    pub(super) fn with_item(&self, item: Option<(Value, usize, usize)>) -> minijinja::Value {
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

/// `step` or `step:index`.
pub(super) fn item_key(step: &Step, item_index: Option<usize>) -> String {
    match item_index {
        Some(i) => format!("{}:{i}", step.id),
        None => step.id.clone(),
    }
}
