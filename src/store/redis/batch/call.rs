//! One batch's call: the script alone, or with the batch's plain writes
//! in one MULTI (see [`super::plain`]), retried across lost connections.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{EVENTS_MAXLEN, Ops, REVISION_CAP, SCRIPT, SOURCE, plain};
use crate::store::StoreError;

/// What one applied batch produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    pub revision_seq: i64,
    /// Ids of the batch's events, contiguous from `first_event`.
    pub first_event: i64,
    pub events: usize,
    /// Runs not written: their run key belongs to another run.
    pub refused: Vec<String>,
    /// The seq before the batch's new runs; -1 when written one by one.
    pub new_base: i64,
    /// The last run seq after the batch.
    pub run_seq: i64,
    /// The last event seq after the batch.
    pub event_seq: i64,
}

/// What a script call says.
pub enum Outcome {
    Applied(Applied),
    Fenced,
    /// Nothing applied: the call it follows did not apply cleanly.
    Stale,
    /// Nothing applied: events were written since the writer numbered
    /// this batch's.
    Renumber,
}

/// A call's place in its writer's sequence: the retry marker it records
/// its batch id under and, when another call of the writer is still in
/// flight ahead of it, that call's marker and batch id.
pub struct Sequence {
    pub marker: String,
    pub batch_id: String,
    pub after: Option<(String, String)>,
}

/// Everything a script call needs besides the ops.
#[derive(Clone)]
pub struct Target {
    pub conn: ConnectionManager,
    pub prefix: String,
    pub url: String,
}

/// Apply `ops` once. `marker` names where the script remembers the last
/// batch it applied for this caller (one key per writer, not per batch);
/// with `batch_id` it makes a retry of a call whose reply was lost a
/// no-op that returns the first call's result.
pub async fn apply_once(
    target: &Target,
    fence: Option<&(String, String)>,
    seq: &Sequence,
    ops: &Ops,
) -> Result<Outcome, redis::RedisError> {
    let (after_marker, after_id) = seq
        .after
        .as_ref()
        .map_or(("", ""), |(m, id)| (m.as_str(), id.as_str()));
    // The command is built once, at its final size: a batch's arguments
    // run to megabytes, and growing and copying them cost the leader more
    // than encoding them.
    let bytes = ops.args.iter().map(|a| a.len() + 16).sum::<usize>() + ops.events.len() + 512;
    let gated = ops.plain.keys(&target.prefix);
    let mut cmd = redis::Cmd::with_capacity(ops.args.len() + gated.len() + 20, bytes);
    cmd.arg("EVALSHA")
        .arg(SCRIPT.get_hash())
        .arg(1 + gated.len())
        .arg(format!("{}event_seq", target.prefix))
        .arg(&gated)
        .arg(&target.prefix)
        .arg(fence.map(|f| f.0.as_str()).unwrap_or(""))
        .arg(fence.map(|f| f.1.as_str()).unwrap_or(""))
        .arg(&seq.marker)
        .arg(&seq.batch_id)
        .arg(EVENTS_MAXLEN)
        .arg(REVISION_CAP)
        .arg(after_marker)
        .arg(after_id)
        .arg(ops.events_after.map(|n| n.to_string()).unwrap_or_default());
    for a in &ops.args {
        cmd.arg(a);
    }
    if ops.events_after.is_some() {
        cmd.arg("events_plain").arg(1).arg(ops.n_events);
    } else if ops.n_events > 0 {
        cmd.arg("events")
            .arg(3)
            .arg(ops.n_events)
            .arg(&ops.first_at)
            .arg(&ops.events);
    }
    let mut conn = target.conn.clone();
    // Built once: a NOSCRIPT sends the same again.
    let call = if gated.is_empty() {
        Call::Script(cmd)
    } else {
        Call::WithPlain(with_plain_writes(cmd, ops, &gated, &target.prefix))
    };
    let call = async |conn: &mut ConnectionManager| match &call {
        Call::Script(cmd) => cmd.query_async(conn).await,
        Call::WithPlain(pipe) => script_reply(pipe.query_async(conn).await?),
    };
    let reply: Vec<String> = match call(&mut conn).await {
        Err(e) if e.code() == Some("NOSCRIPT") => {
            // A fresh or restarted server: load the script, then call again
            // (nothing was written: the gate stayed closed).
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SOURCE.as_str())
                .query_async(&mut conn)
                .await?;
            call(&mut conn).await?
        }
        other => other?,
    };
    outcome(reply)
}

/// What one batch sends.
enum Call {
    Script(redis::Cmd),
    WithPlain(redis::Pipeline),
}

/// The gate's closing, the script call `script`, the batch's plain
/// writes, then the gate's reopening, as one MULTI (see [`plain`]).
fn with_plain_writes(
    script: redis::Cmd,
    ops: &Ops,
    gated: &[String],
    prefix: &str,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic().ignore_errors();
    pipe.cmd("EVAL")
        .arg(plain::CLOSE)
        .arg(gated.len())
        .arg(gated)
        .arg(plain::GATE_TOKEN);
    pipe.add_command(script);
    ops.plain.queue(&mut pipe, prefix);
    pipe.cmd("EVAL")
        .arg(plain::UNGATE)
        .arg(gated.len())
        .arg(gated)
        .arg(plain::GATE_TOKEN);
    pipe
}

/// The batch script's reply among the MULTI's (see [`with_plain_writes`]).
fn script_reply(
    replies: Vec<redis::RedisResult<redis::Value>>,
) -> Result<Vec<String>, redis::RedisError> {
    let mut replies = replies.into_iter().skip(1);
    let reply: Vec<String> = match replies.next() {
        Some(r) => redis::from_redis_value(r?)?,
        None => Vec::new(),
    };
    if reply.first().map(String::as_str) == Some("OK") {
        // Applied: the plain writes must have landed with it.
        for r in replies {
            r?;
        }
    }
    Ok(reply)
}

/// What the script's reply says.
fn outcome(reply: Vec<String>) -> Result<Outcome, redis::RedisError> {
    let mut parts = reply.into_iter();
    match parts.next().as_deref() {
        Some("FENCED") => Ok(Outcome::Fenced),
        Some("STALE") => Ok(Outcome::Stale),
        Some("RENUMBER") => Ok(Outcome::Renumber),
        Some("OK") | Some("DUP") => {
            let summary = parts.next().unwrap_or_default();
            let mut nums = summary.split(',').map(|n| n.parse::<i64>().unwrap_or(0));
            Ok(Outcome::Applied(Applied {
                revision_seq: nums.next().unwrap_or(0),
                first_event: nums.next().unwrap_or(0),
                events: nums.next().unwrap_or(0).max(0) as usize,
                new_base: nums.next().unwrap_or(-1),
                run_seq: nums.next().unwrap_or(-1),
                event_seq: nums.next().unwrap_or(-1),
                refused: parts.collect(),
            }))
        }
        other => Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "multijob batch script",
            format!("unexpected reply {other:?}"),
        ))),
    }
}

/// Whether retrying the same call may succeed (the connection, not the
/// request, was the problem).
pub fn retryable(e: &redis::RedisError) -> bool {
    !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
}

/// Apply `ops`, retrying connection failures with backoff until `give_up`
/// says stop. Never fails silently: every failed attempt is logged. A
/// writer with its own sequence of calls passes `seq`; `None` uses a
/// fresh batch id as the marker (a key per call, for concurrent callers).
pub async fn apply(
    target: &Target,
    fence: Option<&(String, String)>,
    seq: Option<Sequence>,
    ops: &Ops,
    give_up: impl Fn(u32) -> bool,
) -> Result<Outcome, StoreError> {
    let seq = seq.unwrap_or_else(|| {
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        Sequence {
            marker: batch_id.clone(),
            batch_id,
            after: None,
        }
    });
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match apply_once(target, fence, &seq, ops).await {
            Ok(outcome) => {
                if attempt > 1 {
                    tracing::warn!(attempt, "store: Redis write succeeded after retries");
                }
                return Ok(outcome);
            }
            Err(e) if retryable(&e) && !give_up(attempt) => {
                tracing::error!(
                    url = %target.url, attempt, error = %e, writes = ops.mutations,
                    "store: Redis write failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(StoreError::Redis {
                    url: target.url.clone(),
                    message: format!("writing a batch: {e}"),
                });
            }
        }
    }
}
