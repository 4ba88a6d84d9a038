//! Where step templates render, and until when.
//!
//! A render is first tried inline, on the async runtime, with a small
//! allowance ([`INLINE_FUEL`], [`INLINE_WORK`]): nearly every template
//! (`{{ inputs.x }}`, a message with a short loop) finishes within it and
//! costs no thread hop. One that needs more stops at once and starts over
//! on a render thread (tokio's blocking pool, at most [`RENDER_THREADS`]
//! at a time), where it gets its full fuel and budget; the step waits for
//! it until its deadline (the step's `timeout_ms`, else
//! [`DEFAULT_TIMEOUT`]) and then fails. A thread cannot be killed: on the
//! deadline (or when the run is cancelled, or its job times out) the
//! render's [`Control`] is cancelled and it stops at its next checked call;
//! it keeps its thread slot until it has.
//!
//! [`INLINE_FUEL`]: crate::spec::templates::limits::INLINE_FUEL
//! [`INLINE_WORK`]: crate::spec::templates::limits::INLINE_WORK

use std::time::Duration;

use minijinja::Environment;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::template::{RenderError, TemplateError};
use crate::jobs::RunError;
use crate::spec::templates::{Budget, Control, Stop, is_template};

/// Renders that run on threads at once; others wait for a slot (within
/// their deadline). Two: this is a two-core machine's worth, and a hostile
/// template can hold one slot at most until it notices its cancellation.
pub const RENDER_THREADS: usize = 2;

/// How long a step's templates may take when the step has no `timeout_ms`.
/// A real template renders in microseconds to milliseconds, and fuel and
/// the value budget keep even a hostile one to about a second of work on
/// this machine; 5 s leaves room for a loaded host while keeping a render
/// thread from being held for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

static SLOTS: Semaphore = Semaphore::const_new(RENDER_THREADS);

/// What renders a step value: [`super::template::render_value`] or a
/// condition.
pub type Job<T> =
    fn(&Environment<'static>, &Value, &minijinja::Value, &mut Budget) -> Result<T, RenderError>;

/// When a step's templates must be done: `timeout_ms` from `start`.
pub fn deadline(start: Instant, timeout_ms: Option<u64>) -> (Instant, Limit) {
    match timeout_ms {
        Some(ms) => (start + Duration::from_millis(ms), Limit::Step(ms)),
        None => (start + DEFAULT_TIMEOUT, Limit::Default),
    }
}

/// Where a deadline came from, for the error that names it.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Step(u64),
    Default,
}

/// Renders `input` with `job`: inline when it is small, else on a render
/// thread until `deadline`.
pub async fn render<T: Send + 'static>(
    job: Job<T>,
    env: &Environment<'static>,
    input: &Value,
    ctx: &minijinja::Value,
    (deadline, limit): (Instant, Limit),
) -> Result<T, RunError> {
    let inline = Control::default();
    match job(env, input, ctx, &mut Budget::new(&inline, true)) {
        Err(RenderError::Stopped(Stop::Escalate)) => {}
        other => return finish(other, input, limit),
    }
    let control = Control::default();
    let _cancel_on_drop = CancelOnDrop(control.clone());
    let timed_out = || Err(timeout(input, limit));
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, SLOTS.acquire()).await else {
        return timed_out();
    };
    let (env, input_owned, ctx) = (env.clone(), input.clone(), ctx.clone());
    let thread_control = control.clone();
    let handle = tokio::task::spawn_blocking(move || {
        // The slot is held until the render has stopped, even after the
        // step gave up on it.
        let _permit = permit;
        job(
            &env,
            &input_owned,
            &ctx,
            &mut Budget::new(&thread_control, false),
        )
    });
    match tokio::time::timeout_at(deadline, handle).await {
        Ok(Ok(result)) => finish(result, input, limit),
        Ok(Err(e)) => Err(RunError::Permanent(format!(
            "rendering the step's templates failed: {e}"
        ))),
        Err(_) => timed_out(),
    }
}

fn finish<T>(result: Result<T, RenderError>, input: &Value, limit: Limit) -> Result<T, RunError> {
    match result {
        Ok(v) => Ok(v),
        Err(RenderError::Template(e)) => Err(RunError::Permanent(e.to_string())),
        Err(RenderError::Stopped(Stop::Cancelled)) => Err(timeout(input, limit)),
        // An inline render cannot be asked to move twice.
        Err(RenderError::Stopped(Stop::Escalate)) => Err(RunError::Permanent(
            "rendering the step's templates stopped without a result".into(),
        )),
    }
}

/// The error of a render stopped at its deadline: it names a template of
/// the value and the limit that stopped it.
fn timeout(input: &Value, limit: Limit) -> RunError {
    let template = first_template(input).unwrap_or_default();
    let shown: String = template.chars().take(120).collect();
    let ellipsis = if shown.len() < template.len() {
        "..."
    } else {
        ""
    };
    let within = match limit {
        Limit::Step(ms) => format!("{ms} ms (the step's timeout_ms)"),
        Limit::Default => format!(
            "{} ms (the default for a step without timeout_ms)",
            DEFAULT_TIMEOUT.as_millis()
        ),
    };
    let e = TemplateError::new(
        &format!("{shown}{ellipsis}"),
        format!(
            "rendering did not finish within {within} and was stopped; \
             make the template do less work or raise timeout_ms"
        ),
    );
    RunError::Permanent(e.to_string())
}

fn first_template(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) if is_template(s) => Some(s),
        Value::Array(items) => items.iter().find_map(first_template),
        Value::Object(map) => map.values().find_map(first_template),
        _ => None,
    }
}

/// Cancels a render when the step stops waiting for it (its deadline, a
/// cancelled run, a job timeout dropping the step).
struct CancelOnDrop(Control);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
