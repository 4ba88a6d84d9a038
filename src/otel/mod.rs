//! Traces: one OpenTelemetry trace per run, exported over OTLP/HTTP
//! protobuf when `MULTIJOB_OTLP_ENDPOINT` is set (off by default).
//!
//! A run's trace id is kept in its record (`trace_id`, 32 hex); its root
//! span's id is derived from the run id ([`root_span_id`]), so every
//! attempt, in whichever process, hangs its span under the same root, and
//! the root span itself is emitted once when the run ends ([`end_run`]).
//! Everything inside an attempt (steps, tool calls, outbound requests)
//! starts its span from the task's current [`Context`], which the worker
//! sets with `FutureExt::with_context`. With tracing off the global tracer
//! is a no-op that keeps its parent's ids, so the `traceparent` sent on
//! outbound calls still carries the run's trace id.
//!
//! Exports are batched on a bounded queue; when the collector is slow or
//! dead, spans are dropped and counted ([`dropped_spans`]), never waited
//! for by a run.

mod export;
mod ids;

use std::time::SystemTime;

use opentelemetry::trace::{
    Span, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue, global};

pub use export::{EnvError, Guard, dropped_spans, exporting, init_from_env, register};
pub use ids::{new_trace_id, parse_traceparent, root_span_id};

/// The environment variable that turns tracing on: the collector's base
/// URL; spans are POSTed to `<endpoint>/v1/traces`.
pub const ENDPOINT_ENV: &str = "MULTIJOB_OTLP_ENDPOINT";

/// The tracer every span of multijob starts from.
pub fn tracer() -> global::BoxedTracer {
    global::tracer("multijob")
}

/// The context of a run's root span: what an attempt's span hangs under.
/// `None` when `trace_id` is not 32 hex (a record from before traces).
pub fn run_context(trace_id: &str, run_id: &str) -> Option<Context> {
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    if trace_id == TraceId::INVALID {
        return None;
    }
    let root = SpanContext::new(
        trace_id,
        root_span_id(run_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(root))
}

/// Start a child span of the task's current context (a step, a tool call,
/// a request) and return the context that carries it.
pub fn child(name: String, attributes: Vec<KeyValue>) -> Context {
    child_of(&Context::current(), name, attributes)
}

/// Start a child span of `parent`; the context that carries it.
pub fn child_of(parent: &Context, name: String, attributes: Vec<KeyValue>) -> Context {
    let span = tracer()
        .span_builder(name)
        .with_attributes(attributes)
        .start_with_context(&tracer(), parent);
    parent.with_span(span)
}

/// End the span `cx` carries, as failed with `error` when there is one.
pub fn end(cx: &Context, error: Option<&str>) {
    let span = cx.span();
    if let Some(error) = error {
        span.set_status(Status::error(error.to_string()));
    }
    span.end();
}

/// The W3C `traceparent` header value for the span `cx` carries, `None`
/// when it carries no valid one.
pub fn traceparent(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    Some(format!(
        "00-{:032x}-{:016x}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags()
    ))
}

/// A finished run, for its root span.
pub struct EndedRun<'a> {
    pub run_id: &'a str,
    pub job_id: &'a str,
    pub trace_id: &'a str,
    /// The span that started the run elsewhere (an inbound `traceparent`).
    pub parent_span_id: Option<&'a str>,
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub start: SystemTime,
    pub end: SystemTime,
}

/// Emit a run's root span, with the id its attempts' spans point at.
pub fn end_run(run: EndedRun<'_>) {
    let Ok(trace_id) = TraceId::from_hex(run.trace_id) else {
        return;
    };
    let parent = match run.parent_span_id.and_then(|s| SpanId::from_hex(s).ok()) {
        Some(span_id) if span_id != SpanId::INVALID => {
            Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ))
        }
        _ => Context::new(),
    };
    let builder = tracer()
        .span_builder(format!("run {}", run.job_id))
        .with_start_time(run.start)
        .with_attributes(vec![
            KeyValue::new("multijob.run_id", run.run_id.to_string()),
            KeyValue::new("multijob.job_id", run.job_id.to_string()),
            KeyValue::new("multijob.status", run.status.to_string()),
        ]);
    let mut span = ids::with_root_ids(trace_id, root_span_id(run.run_id), || {
        tracer().build_with_context(builder, &parent)
    });
    if let Some(error) = run.error {
        span.set_status(Status::error(error.to_string()));
    }
    span.end_with_timestamp(run.end);
}

#[cfg(test)]
mod tests;
