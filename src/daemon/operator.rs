//! The operator's inbox commands on jobs: pause, resume, reset of the
//! failure memory, and backfill. Each is applied by the process that owns
//! the run queue and answered in a short-lived key-value reply the CLI
//! waits on (`__multijob/reply/<inbox id>`), so the CLI can say what
//! happened (already paused, nothing to clear, queued N of M).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::queue::{RunQueue, Unchanged};
use crate::run::{NewRun, new_run_id};
use crate::schedule::backfill::{self, run_key};
use crate::spec::model::Overlap;
use crate::store::paused::{REPLY_TTL_SEC, reply_key};
use crate::store::runs::{InboxCommand, Trigger};
use crate::store::{KvOp, Mutation, NewEvent, Store, format_ts};

/// Runs of a backfill queued at once when the job allows overlap (the
/// queue's lanes hold back what may not start yet).
const BACKFILL_SLICE: usize = 64;

/// Apply one operator command; the others are not handled here.
pub(super) async fn handle(queue: &RunQueue, store: &Store, inbox_id: i64, command: InboxCommand) {
    let reply = match command {
        InboxCommand::Pause { job_id, note, by } => {
            let result = queue.pause(&job_id, note, &by);
            log_change("paused", &job_id, &by, &result);
            answer(result.map(|p| json!({"pause": p})))
        }
        InboxCommand::Resume { job_id, by } => {
            let result = queue.resume(&job_id, &by);
            log_change("resumed", &job_id, &by, &result);
            answer(result.map(|p| json!({"pause": p})))
        }
        InboxCommand::ResetFailures { job_id, by } => {
            let result = queue.reset_failures(&job_id, &by);
            log_change("failure memory reset", &job_id, &by, &result);
            answer(result.map(|f| json!({"previous": f})))
        }
        InboxCommand::MemoryReset { key, by } => memory_reset(store, &key, &by).await,
        InboxCommand::Backfill {
            job_id,
            from,
            to,
            max,
            by,
        } => {
            let request = Backfill {
                job_id,
                from,
                to,
                max,
                by,
            };
            return request.run(queue, store, inbox_id).await;
        }
        _ => return,
    };
    write_reply(store, inbox_id, reply).await;
}

/// `memory reset`: the memory's entries before, or why nothing changed.
async fn memory_reset(store: &Store, key: &str, by: &str) -> Value {
    if let Err(e) = crate::workflow::memory::check_key(key) {
        return json!({"applied": false, "error": e});
    }
    match crate::workflow::memory_store::reset(store, key).await {
        Ok(Some(previous)) => {
            tracing::info!(memory = key, by, "agent memory reset");
            json!({"applied": true, "previous": previous})
        }
        Ok(None) => json!({"applied": false, "unchanged": "no memory stored"}),
        Err(e) => json!({"applied": false, "error": format!("the store failed: {e}")}),
    }
}

fn log_change<T>(what: &str, job_id: &str, by: &str, result: &Result<T, Unchanged>) {
    match result {
        Ok(_) => tracing::info!(job = job_id, by, "job {what}"),
        Err(why) => tracing::info!(job = job_id, by, %why, "job not {what}"),
    }
}

/// A reply: `applied` with the details, or why nothing changed.
fn answer(result: Result<Value, Unchanged>) -> Value {
    match result {
        Ok(mut details) => {
            details["applied"] = json!(true);
            details
        }
        Err(Unchanged::AlreadyPaused(p)) => {
            json!({"applied": false, "unchanged": Unchanged::AlreadyPaused(p.clone()).to_string(), "pause": p})
        }
        Err(Unchanged::NoSuchJob) => {
            json!({"applied": false, "error": Unchanged::NoSuchJob.to_string()})
        }
        Err(why) => json!({"applied": false, "unchanged": why.to_string()}),
    }
}

async fn write_reply(store: &Store, inbox_id: i64, value: Value) {
    let op = KvOp::Set {
        value,
        ttl_sec: Some(REPLY_TTL_SEC),
    };
    if let Err(e) = store.kv(&reply_key(inbox_id), op).await {
        tracing::warn!(inbox = inbox_id, error = %e, "operator command: reply not written");
    }
}

/// A `backfill` command.
struct Backfill {
    job_id: String,
    from: String,
    to: String,
    max: u64,
    by: String,
}

impl Backfill {
    /// Work out the slots not recorded yet, answer, then queue them.
    async fn run(self, queue: &RunQueue, store: &Store, inbox_id: i64) {
        let runs = match self.plan(queue, store).await {
            Ok((runs, reply)) => {
                write_reply(store, inbox_id, reply).await;
                runs
            }
            Err(error) => {
                tracing::warn!(job = %self.job_id, %error, "backfill refused");
                write_reply(store, inbox_id, json!({"applied": false, "error": error})).await;
                return;
            }
        };
        let overlap = queue
            .applied()
            .snapshot
            .jobs
            .get(&self.job_id)
            .map(|r| r.spec.overlap);
        if overlap == Some(Overlap::Allow) {
            for slice in runs.chunks(BACKFILL_SLICE) {
                queue.enqueue(slice.to_vec());
                tokio::task::yield_now().await;
            }
        } else {
            // One at a time, as the job's overlap policy would have it.
            for run in runs {
                until_idle(queue, &self.job_id).await;
                queue.enqueue(vec![run]);
            }
        }
    }

    /// The runs to queue and the reply that says so.
    async fn plan(&self, queue: &RunQueue, store: &Store) -> Result<(Vec<NewRun>, Value), String> {
        let parse = |what: &str, t: &str| {
            t.parse::<Timestamp>()
                .map_err(|e| format!("{what} `{t}` is not an RFC 3339 time: {e}"))
        };
        let (from, to) = (parse("from", &self.from)?, parse("to", &self.to)?);
        let applied = queue.applied();
        let job = applied
            .snapshot
            .jobs
            .get(&self.job_id)
            .map(|r| &r.spec)
            .ok_or_else(|| format!("no job `{}` in the applied revision", self.job_id))?;
        let window = backfill::window(job, from, to, self.max, queue.clock().now())
            .map_err(|e| e.to_string())?;
        let keys: Vec<String> = window
            .slots
            .iter()
            .map(|s| run_key(&self.job_id, s.nominal))
            .collect();
        let mut recorded = store
            .recorded_run_keys(keys.clone())
            .await
            .map_err(|e| format!("cannot tell which slots already ran: {e}"))?;
        recorded.extend(queue.active_run_keys(&self.job_id));
        let runs: Vec<NewRun> = window
            .slots
            .iter()
            .zip(keys)
            .filter(|(_, key)| !recorded.contains(key))
            .map(|(slot, key)| self.new_run(slot.nominal, key))
            .collect();
        let data = json!({
            "from": format_ts(from), "to": format_ts(to), "by": self.by,
            "slots": window.slots.len(), "queued": runs.len(),
            "already_recorded": window.slots.len() - runs.len(),
            "left_to_scheduler": window.left_to_scheduler,
        });
        tracing::info!(job = %self.job_id, %data, "backfill");
        let event = NewEvent::new("job.backfill", data.clone()).job(self.job_id.clone());
        let _ = store.submit(vec![Mutation::Event(event)]);
        let mut reply = data;
        reply["applied"] = json!(true);
        Ok((runs, reply))
    }

    fn new_run(&self, nominal: Timestamp, key: String) -> NewRun {
        NewRun {
            id: new_run_id(),
            job_id: self.job_id.clone(),
            trigger: Trigger::Schedule,
            inputs: Value::Null,
            run_key: key,
            scheduled_at: Some(nominal),
            chain_depth: 0,
            due_at: None,
            extra: json!({"backfill": true, "by": self.by}),
            requires_approval: false,
            traceparent: None,
        }
    }
}

/// Wait until `job_id` has no unfinished run.
async fn until_idle(queue: &RunQueue, job_id: &str) {
    loop {
        let released = queue.released();
        if queue.view().active_runs(job_id) == 0 {
            return;
        }
        tokio::select! {
            _ = released => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
