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
use crate::run::RunError;
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

/// A render that made this much gives its memory back when it ends.
const GIVE_BACK_BYTES: usize = 4 * 1024 * 1024;

/// Returns the memory this thread freed to the OS now. mimalloc (the
/// daemon's allocator) purges freed pages only when the thread that freed
/// them allocates again, and a render thread then sits idle: the daemon
/// kept ~60 MB after a render that had made and dropped 32 MB of strings.
fn give_back() {
    // SAFETY: mi_collect only releases memory mimalloc holds as free; it
    // touches no live allocation. Without mimalloc as the global
    // allocator (library tests) it has nothing to release.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

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
        let mut budget = Budget::new(&thread_control, false);
        let out = job(&env, &input_owned, &ctx, &mut budget);
        if budget.made() >= GIVE_BACK_BYTES {
            give_back();
        }
        out
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::templates::environment;
    use crate::workflow::template::{render_value, to_template_value};

    fn ctx() -> minijinja::Value {
        to_template_value(json!({"inputs": {"n": 10_000_000, "name": "ada"}}))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_heavy_render_stops_at_its_deadline_and_gives_back_its_thread() {
        // Minutes of work (a 10 MB string scanned 100,000 times).
        let heavy = json!({"out": "{% set s = 'x' * inputs.n %}{% for i in range(100000) %}{% if 'y' in s %}{% endif %}{% endfor %}"});
        let started = Instant::now();
        let e = render(
            render_value,
            &environment(),
            &heavy,
            &ctx(),
            deadline(started, Some(300)),
        )
        .await
        .unwrap_err();
        let took = started.elapsed();
        let RunError::Permanent(message) = e else {
            panic!("{e:?}")
        };
        assert!(
            message.starts_with("template `{% set s = 'x' * inputs.n %}")
                && message.contains("did not finish within 300 ms (the step's timeout_ms)"),
            "{message}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
        // Cancelled, the render stops at its next checked call and its
        // thread slot is free again.
        let freed = Instant::now();
        while SLOTS.available_permits() < RENDER_THREADS {
            assert!(
                freed.elapsed() < Duration::from_secs(5),
                "the render runs on"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_renders_stay_inline_and_bigger_ones_give_the_same_result_on_a_thread() {
        let env = environment();
        let limit = deadline(Instant::now(), None);
        let small = json!({"greeting": "hi {{ inputs.name }}", "n": "{{ inputs.n + 1 }}"});
        let out = render(render_value, &env, &small, &ctx(), limit)
            .await
            .unwrap();
        assert_eq!(out, json!({"greeting": "hi ada", "n": 10_000_001}));
        // Too much for inline (fuel and work): it starts over on a thread.
        let bigger = json!("{% for i in range(30000) %}{% endfor %}{{ ('ab' * 200000)|length }}");
        let mut inline = Budget::new(&Control::default(), true);
        assert_eq!(
            render_value(&env, &bigger, &ctx(), &mut inline),
            Err(RenderError::Stopped(Stop::Escalate))
        );
        let out = render(render_value, &env, &bigger, &ctx(), limit)
            .await
            .unwrap();
        assert_eq!(out, json!("400000"));
    }

    /// Not a check: how much a small render costs inline, against
    /// minijinja's own `render_str` (run with `-- --ignored --nocapture`).
    #[tokio::test]
    #[ignore = "timing"]
    async fn timing_of_small_renders() {
        let env = environment();
        let plain = minijinja::Environment::new();
        let template =
            "Order {{ inputs.name }} #{{ inputs.n + 1 }}{% if inputs.n > 3 %} big{% endif %}";
        let value = json!({"text": template});
        let limit = deadline(Instant::now(), None);
        let n = 20_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(plain.render_str(template, ctx()).unwrap());
        }
        let base = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                render(render_value, &env, &value, &ctx(), limit)
                    .await
                    .unwrap(),
            );
        }
        let ours = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let mut budget = Budget::new(&Control::default(), true);
            let out = crate::spec::templates::render(&env, template, ctx(), &mut budget);
            std::hint::black_box(out.unwrap());
        }
        let core = t.elapsed() / n;
        eprintln!(
            "per render: minijinja render_str {base:?}; checked render {core:?}; \
             as a step value, inline {ours:?}"
        );
    }
}
