//! `foreach`: a step run once per item of a rendered list, at most
//! `concurrency` items at a time, its outputs in item order whatever
//! finishes first.

use std::future::poll_fn;
use std::sync::Mutex;
use std::task::Poll;

use serde_json::Value;
use tokio::sync::Semaphore;

use super::step::{Base, item_key};
use super::{BoxFuture, Engine, Frame, StepResult, render, render_value};
use crate::run::RunError;
use crate::spec::model::Step;

/// What failed in items whose `continue_on_error` kept the others going.
type ItemErrors = Mutex<Vec<(usize, String)>>;

impl Engine<'_> {
    /// The outputs of every item in order, with what failed in items that
    /// `continue_on_error` kept going. The list renders before any item:
    /// it gets the step's timeout_ms (or the default) of its own.
    pub(super) async fn foreach(
        &self,
        step: &Step,
        foreach: &Value,
        base: &Base,
        ctx: &minijinja::Value,
        frame: &Frame<'_>,
    ) -> Result<(Value, Option<String>), RunError> {
        let limit = render::deadline(tokio::time::Instant::now(), step.timeout_ms);
        let items = match render::render(render_value, &self.env, foreach, ctx, limit).await? {
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
        let item_errors = ItemErrors::default();
        let futures: Vec<BoxFuture<'_, StepResult>> = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let ctx = base.with_item(Some((item, index, length)));
                Box::pin(self.item(step, ctx, index, frame, &limit, &item_errors))
                    as BoxFuture<'_, StepResult>
            })
            .collect();
        let outs = try_join_ordered(futures).await?;
        let failed = item_errors.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok((Value::Array(outs), summary(failed, length)))
    }

    /// One item: reused if it completed before the run paused, else run
    /// once a permit of `limit` is free.
    async fn item(
        &self,
        step: &Step,
        ctx: minijinja::Value,
        index: usize,
        frame: &Frame<'_>,
        limit: &Semaphore,
        item_errors: &ItemErrors,
    ) -> StepResult {
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
    }
}

/// What failed among `length` items, or `None` when nothing did.
fn summary(mut failed: Vec<(usize, String)>, length: usize) -> Option<String> {
    (!failed.is_empty()).then(|| {
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
    })
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
