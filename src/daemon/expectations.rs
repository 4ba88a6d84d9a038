//! The daemon's expectation check: every few seconds, each enabled job
//! with `expect: {success_within}` is judged from its last succeeded run
//! (see `run::expectation`); `multijob_expectation_ok{job}` follows, and a
//! change of verdict is raised once as an `expectation.broken` or
//! `expectation.restored` event and handed to [`on_transition`]. The
//! verdict of the last transition is kept in the store's kv, so a restart
//! or a new Redis leader does not raise it again.
//!
//! Runs in the process that owns the run queue (the single daemon, or
//! the Redis leader).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::run::expectation::{self, ExpectState, Verdict};
use crate::spec::model::{Expect, Job, NoticeKind};
use crate::spec::snapshot::Snapshot;
use crate::status::state::Shared;
use crate::store::{KvOp, NewEvent, Store, StoreError, format_ts};

/// How often expectations are judged.
const EVERY: Duration = Duration::from_secs(2);

/// A change of a job's verdict, raised once.
#[derive(Debug, Clone)]
pub struct Transition {
    /// True: the job just broke its expectation; false: it holds again.
    pub broken: bool,
    pub verdict: Verdict,
}

/// Where a transition goes besides its event and the gauge: the log, and
/// a broken expectation becomes the job's `expect` notice (its `notify:`
/// rules that list `expect`), sent once per break.
pub async fn on_transition(store: &Store, snapshot: &Snapshot, transition: &Transition) {
    let v = &transition.verdict;
    tracing::info!(job = %v.job, broken = transition.broken, "{}", v.line());
    if !transition.broken {
        return;
    }
    let change = format!(
        "broken-since-{}",
        v.last_success.as_deref().unwrap_or(&v.since)
    );
    let run = json!({"error": v.line(), "last_success": v.last_success});
    if !crate::notify::send_notice(store, snapshot, &v.job, NoticeKind::Expect, &change, run).await
    {
        tracing::warn!(job = %v.job, "the expect notice was not delivered (a connector failed); see notice.failed");
    }
}

pub(super) async fn expectation_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let applied = shared.applied.load_full();
        let jobs: Vec<(&Job, &Expect)> = expectation::expecting(&applied.snapshot).collect();
        let now = shared.queue.clock().now();
        let mut current = HashSet::with_capacity(jobs.len());
        for (job, expect) in jobs {
            current.insert(job.id.clone());
            if let Err(e) = check_job(&shared.store, &applied.snapshot, job, expect, now).await {
                tracing::warn!(job = %job.id, error = %e, "could not check the job's expectation; trying again in {}s", EVERY.as_secs());
            }
        }
        for gone in seen.difference(&current) {
            expectation::clear_gauge(gone);
            let _ = shared
                .store
                .kv(&expectation::state_key(gone), KvOp::Delete)
                .await;
        }
        seen = current;
    }
}

/// Judges one job, sets its gauge, and raises a changed verdict.
async fn check_job(
    store: &Store,
    snapshot: &Snapshot,
    job: &Job,
    expect: &Expect,
    now: Timestamp,
) -> Result<(), StoreError> {
    let key = expectation::state_key(&job.id);
    let state = match ExpectState::from_stored(store.kv(&key, KvOp::Get).await?) {
        Some(s) => s,
        None => {
            let s = ExpectState::first_seen(now);
            store.kv(&key, set(&s)).await?;
            s
        }
    };
    let since = state.since_ts().unwrap_or(now);
    let last = expectation::last_success(store, &job.id).await?;
    let Some(verdict) = expectation::verdict(&job.id, expect, last, since, now) else {
        return Ok(());
    };
    expectation::set_gauge(&job.id, !verdict.broken);
    if verdict.broken == state.broken {
        return Ok(());
    }
    // The event first: a crash before the state is kept raises it again
    // rather than never.
    store.append_events(vec![event(&verdict, now)]).await?;
    let next = ExpectState {
        broken: verdict.broken,
        changed_at: format_ts(now),
        ..state
    };
    store.kv(&key, set(&next)).await?;
    let transition = Transition {
        broken: verdict.broken,
        verdict,
    };
    on_transition(store, snapshot, &transition).await;
    Ok(())
}

fn set(state: &ExpectState) -> KvOp {
    KvOp::Set {
        value: serde_json::to_value(state).unwrap_or_default(),
        ttl_sec: None,
    }
}

/// `expectation.broken {job, last_success, within, for_sec}` or
/// `expectation.restored {job, last_success, within}`.
fn event(v: &Verdict, now: Timestamp) -> NewEvent {
    let within = v.expectation["success_within"].clone();
    let (event_type, data) = if v.broken {
        (
            "expectation.broken",
            json!({"job": v.job, "last_success": v.last_success, "within": within, "since": v.since, "for_sec": v.for_sec}),
        )
    } else {
        (
            "expectation.restored",
            json!({"job": v.job, "last_success": v.last_success, "within": within}),
        )
    };
    NewEvent {
        event_type: event_type.to_string(),
        at: format_ts(now),
        job_id: Some(v.job.clone()),
        run_id: None,
        data,
    }
}
