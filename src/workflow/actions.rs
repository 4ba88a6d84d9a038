//! The side effects the engine delegates: network, messages, the key-value
//! store, follow-up runs and metrics. The connector layer implements
//! [`Actions`]; the engine only renders arguments and interprets results.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::RunInfo;
use crate::run::RunError;

/// What an action returns: its output, or why it failed (retrying can
/// help, cannot help, or an approval step waits for a decision).
pub type ActionResult = Result<Value, RunError>;
pub type ActionFuture<'a> = Pin<Box<dyn Future<Output = ActionResult> + Send + 'a>>;

/// Where an action call comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionCall<'a> {
    pub run: &'a RunInfo,
    pub step_id: &'a str,
    /// 0-based index of the `foreach` item, if any.
    pub item_index: Option<usize>,
    /// `run:step` or `run:step:item`, with the enclosing `uses` steps as a
    /// path (`run:call:2/send`): a retried or reclaimed run calls with the
    /// same key, so a message or follow-up is not sent twice.
    pub idempotency_key: String,
}

/// Each method gets the step's action fields rendered to a JSON object (the
/// field names of the action in `spec::model`) and returns the step output
/// of SPEC section 5's table. The engine cancels a call by dropping its
/// future (timeout, run cancellation), so implementations must be
/// cancel-safe.
pub trait Actions: Send + Sync {
    /// `{status, headers, body}`.
    fn http<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
    /// The reply text, or the parsed JSON when `json` is true.
    fn llm<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
    /// `{answer, calls}`.
    fn agent<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
    /// `{delivered, provider_message_id}`; `dedupe_key`, when absent from
    /// `args`, is `call.idempotency_key`.
    fn message<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
    /// The value.
    fn kv<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
    /// `{run_id, due_at}`, keyed by `call.idempotency_key`.
    fn schedule_job<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
    /// `{decision, decided_at}`.
    fn approval<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
    /// The value.
    fn metric<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a>;
}
