//! `foreach`: a step run once per item of a rendered list, at most
//! `concurrency` items at a time, its outputs in item order whatever
//! finishes first.

use std::future::poll_fn;
use std::sync::Mutex;
use std::task::Poll;

use serde_json::Value;

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
        let window = step.concurrency.unwrap_or(1).max(1) as usize;
        let length = items.len();
        let item_errors = ItemErrors::default();
        let futures: Vec<BoxFuture<'_, StepResult>> = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let ctx = base.with_item(Some((item, index, length)));
                Box::pin(self.item(step, ctx, index, frame, &item_errors))
                    as BoxFuture<'_, StepResult>
            })
            .collect();
        let outs = try_join_windowed(futures, window).await?;
        let failed = item_errors.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok((Value::Array(outs), summary(failed, length)))
    }

    /// One item: reused if it completed before the run paused, else run
    /// (the caller runs at most `concurrency` at a time).
    async fn item(
        &self,
        step: &Step,
        ctx: minijinja::Value,
        index: usize,
        frame: &Frame<'_>,
        item_errors: &ItemErrors,
    ) -> StepResult {
        let path = format!("{}{}", frame.scope, item_key(step, Some(index)));
        if let Some(output) = frame.progress.reused(&path) {
            return Ok(output);
        }
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

/// Runs `futures` at most `window` at a time, the next starting as one
/// finishes; the outputs in input order, or the first error to happen
/// (the rest are dropped, which aborts them). Only the window is polled
/// on a wake-up: polling every unfinished item made a 10,000-item
/// foreach quadratic (1,100 follow-ups/s where its steps wait on Redis).
async fn try_join_windowed<T>(
    futures: Vec<BoxFuture<'_, Result<T, RunError>>>,
    window: usize,
) -> Result<Vec<T>, RunError> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut waiting = futures.into_iter().enumerate();
    let mut running: Vec<(usize, BoxFuture<'_, Result<T, RunError>>)> =
        Vec::with_capacity(window.max(1));
    poll_fn(|cx| {
        loop {
            while running.len() < window.max(1) {
                match waiting.next() {
                    Some(next) => running.push(next),
                    None => break,
                }
            }
            if running.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut finished = false;
            let mut i = 0;
            while i < running.len() {
                match running[i].1.as_mut().poll(cx) {
                    Poll::Ready(Ok(v)) => {
                        outputs[running[i].0] = Some(v);
                        drop(running.swap_remove(i));
                        finished = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => i += 1,
                }
            }
            // Every running one is waiting on its waker: so is this.
            if !finished {
                return Poll::Pending;
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Items that sleep a varying while: outputs come back in item order,
    /// never more than the window run at once, and each is polled a
    /// bounded number of times (not once per wake-up of any item).
    #[tokio::test(start_paused = true)]
    async fn a_window_runs_at_most_its_size_and_keeps_item_order() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let futures: Vec<BoxFuture<'_, Result<usize, RunError>>> = (0..200usize)
            .map(|i| {
                let (running, most) = (running.clone(), most.clone());
                Box::pin(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1 + (i as u64 * 7) % 13)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(i * 10)
                }) as BoxFuture<'_, Result<usize, RunError>>
            })
            .collect();
        let outs = try_join_windowed(futures, 8).await.expect("no item fails");
        assert_eq!(outs, (0..200).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_error_ends_the_join_and_drops_the_rest() {
        let started = Arc::new(AtomicUsize::new(0));
        let futures: Vec<BoxFuture<'_, Result<usize, RunError>>> = (0..100usize)
            .map(|i| {
                let started = started.clone();
                Box::pin(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if i == 3 {
                        return Err(RunError::Permanent("item 3 broke".into()));
                    }
                    Ok(i)
                }) as BoxFuture<'_, Result<usize, RunError>>
            })
            .collect();
        let err = try_join_windowed(futures, 4)
            .await
            .expect_err("item 3 fails");
        assert!(matches!(err, RunError::Permanent(ref m) if m == "item 3 broke"));
        // Items 0-3 ran in the first window; at most one more window
        // began before the error was seen, never all 100.
        assert!(
            started.load(Ordering::SeqCst) <= 8,
            "{}",
            started.load(Ordering::SeqCst)
        );
    }
}
