//! Trace and span ids: a run's random trace id, its root span id derived
//! from the run id, the W3C `traceparent` an inbound request may carry, and
//! the id generator that lets a root span take the ids its run already has.

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use sha2::{Digest, Sha256};

/// A new random trace id, as 32 lowercase hex digits.
pub fn new_trace_id() -> String {
    format!("{:032x}", RandomIdGenerator::default().new_trace_id())
}

/// The id of a run's root span: the first 8 bytes of SHA-256 of the run id
/// (never zero), the same in every process that handles the run.
pub fn root_span_id(run_id: &str) -> SpanId {
    let digest = Sha256::digest(run_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0u8; 8] {
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

/// The trace id and parent span id of a W3C `traceparent` header
/// (`00-<32 hex>-<16 hex>-<2 hex>`), as lowercase hex; `None` when it is
/// malformed or its ids are all zeros (the spec says to ignore it then).
pub fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let value = value.trim();
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    // Version ff is invalid; a later version may add fields after flags.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace.to_string(), span.to_string()))
}

thread_local! {
    /// Ids the next span built on this thread takes (see [`with_root_ids`]).
    static ROOT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Build a span with `build` so that it gets `trace_id` (when it has no
/// parent) and `span_id`: a run's root span, emitted when the run ends.
pub(super) fn with_root_ids<T>(trace_id: TraceId, span_id: SpanId, build: impl FnOnce() -> T) -> T {
    ROOT_IDS.with(|c| c.set(Some((trace_id, span_id))));
    let span = build();
    ROOT_IDS.with(|c| c.set(None));
    span
}

/// Random ids, except for a root span built under [`with_root_ids`].
#[derive(Debug, Default)]
pub(super) struct RunIds {
    random: RandomIdGenerator,
}

impl IdGenerator for RunIds {
    fn new_trace_id(&self) -> TraceId {
        match ROOT_IDS.with(Cell::get) {
            Some((trace_id, _)) => trace_id,
            None => self.random.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match ROOT_IDS.with(Cell::get) {
            Some((_, span_id)) => span_id,
            None => self.random.new_span_id(),
        }
    }
}
