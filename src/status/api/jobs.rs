//! `/api/v1/jobs` and `/api/v1/jobs/{id}`: the applied jobs with what is
//! live about them (next slot, active runs, failure memory, last run).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiQuery, AppState, limit};
use crate::calendar::slots::SlotRule;
use crate::spec::model::Job;
use crate::spec::snapshot::{Resource, Snapshot};
use crate::status::state::Shared;
use crate::store::format_ts;
use crate::store::paused::Pause;
use crate::store::runs::{Run, RunStatus};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    flow: Option<String>,
    enabled: Option<bool>,
}

/// What the queue knows about a job right now.
struct JobLive {
    /// From the scheduler's heap, when it holds a slot for the job.
    next_fire: Option<jiff::Timestamp>,
    active_runs: usize,
    failure: Option<crate::store::runs::FailureState>,
    last_run: Option<Arc<Run>>,
    /// An operator's pause (`multijob pause`).
    paused: Option<Pause>,
}

fn job_live(shared: &Shared, id: &str) -> JobLive {
    let view = shared.queue.view();
    JobLive {
        active_runs: view.active_runs(id),
        failure: view.failure(id).cloned(),
        last_run: view.last_finished(id),
        next_fire: shared.scheduler.next_fire(id),
        paused: view.paused(id).cloned(),
    }
}

/// What is live about `ids`. The leader (or a single process) knows it
/// from its queue; a follower's queue is empty, so it reads the store:
/// three reads per request, whatever the page size.
async fn jobs_live(shared: &Shared, ids: &[&str]) -> Result<Vec<JobLive>, ApiError> {
    let follower = shared
        .cluster
        .load()
        .as_ref()
        .as_ref()
        .is_some_and(|c| c.role == "follower");
    if !follower {
        return Ok(ids.iter().map(|id| job_live(shared, id)).collect());
    }
    let wanted: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let mut last = shared.store.last_runs(wanted).await?;
    let mut failures: std::collections::HashMap<String, crate::store::runs::FailureState> =
        shared.store.failure_states().await?.into_iter().collect();
    let mut paused = shared.store.paused().await?;
    let mut active: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (job, status, n) in shared.store.run_counts().await? {
        if RunStatus::parse(&status).is_some_and(RunStatus::is_active) {
            *active.entry(job).or_default() += n as usize;
        }
    }
    Ok(ids
        .iter()
        .map(|id| JobLive {
            active_runs: active.get(*id).copied().unwrap_or(0),
            failure: failures.remove(*id),
            // The newest run, finished or not: a follower cannot tell the
            // queue's "last finished" apart without reading more.
            last_run: last.remove(*id).map(Arc::new),
            next_fire: shared.scheduler.next_fire(id),
            paused: paused.remove(*id),
        })
        .collect())
}

/// The short form of a run, for job views and lists.
#[derive(serde::Serialize)]
pub struct RunSummary<'a> {
    id: &'a str,
    status: RunStatus,
    trigger: crate::store::runs::Trigger,
    attempt: u32,
    scheduled_at: &'a Option<String>,
    queued_at: &'a str,
    started_at: &'a Option<String>,
    finished_at: &'a Option<String>,
    duration_ms: Option<u64>,
    error: &'a Option<String>,
}

impl<'a> RunSummary<'a> {
    pub fn of(r: &'a Run) -> Self {
        RunSummary {
            id: &r.id,
            status: r.status,
            trigger: r.trigger,
            attempt: r.attempt,
            scheduled_at: &r.scheduled_at,
            queued_at: &r.queued_at,
            started_at: &r.started_at,
            finished_at: &r.finished_at,
            duration_ms: r.duration_ms,
            error: &r.error,
        }
    }
}

#[derive(serde::Serialize)]
struct FailureView {
    consecutive_failures: u32,
    cooldown_until: Option<String>,
    last_error: Option<String>,
}

/// A job as the API shows it (SPEC section 6). Serialized straight from
/// the applied spec, without an intermediate JSON tree.
#[derive(serde::Serialize)]
struct JobView<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    job_type: &'a str,
    enabled: bool,
    file: &'a str,
    line: u32,
    spec: &'a Job,
    spec_hash: &'a str,
    flow: &'a Option<String>,
    priority: crate::spec::model::Priority,
    next_fire_at: Option<String>,
    last_run: Option<RunSummary<'a>>,
    failure_memory: FailureView,
    active_runs: usize,
    /// `{since, by, note}` while an operator has the job paused, else null.
    paused: &'a Option<Pause>,
}

fn job_view<'a>(
    snapshot: &Snapshot,
    r: &'a Resource<Job>,
    now: jiff::Timestamp,
    live: &'a JobLive,
) -> JobView<'a> {
    let job = &r.spec;
    // The scheduler's own next slot; computed here only for a job it does
    // not hold yet (a revision applied a moment ago).
    let next_fire_at = job
        .schedule
        .as_ref()
        .filter(|_| job.enabled)
        .and_then(|s| {
            live.next_fire.or_else(|| {
                SlotRule::compile(s, &job.id)
                    .ok()
                    .and_then(|rule| rule.next_slot(now))
                    .map(|slot| slot.fire_at)
            })
        })
        .map(format_ts);
    let f = live.failure.as_ref();
    JobView {
        id: &job.id,
        job_type: &job.job_type,
        enabled: job.enabled,
        file: &r.file,
        line: r.line,
        spec: job,
        spec_hash: &r.hash,
        flow: &job.flow,
        priority: snapshot.effective_priority(job),
        next_fire_at,
        last_run: live.last_run.as_deref().map(RunSummary::of),
        failure_memory: FailureView {
            consecutive_failures: f.map_or(0, |f| f.consecutive_failures),
            cooldown_until: f.and_then(|f| f.cooldown_until.clone()),
            last_error: f.and_then(|f| f.last_error.clone()),
        },
        active_runs: live.active_runs,
        paused: &live.paused,
    }
}

pub(super) async fn jobs(
    State(shared): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = limit(q.limit)?;
    let applied = shared.applied.load();
    let s = &applied.snapshot;
    let now = jiff::Timestamp::now();
    let start = q.cursor.clone().unwrap_or_default();
    let mut next_cursor = None;
    let matching = s
        .jobs
        .range::<String, _>((
            std::ops::Bound::Excluded(&start),
            std::ops::Bound::Unbounded,
        ))
        .filter(|(_, r)| {
            q.flow
                .as_ref()
                .is_none_or(|f| r.spec.flow.as_ref() == Some(f))
        })
        .filter(|(_, r)| q.enabled.is_none_or(|e| r.spec.enabled == e));
    let mut page = Vec::new();
    for (id, r) in matching {
        if page.len() == limit {
            next_cursor = page.last().map(|(id, _): &(&String, _)| id.to_string());
            break;
        }
        page.push((id, r));
    }
    let ids: Vec<&str> = page.iter().map(|(id, _)| id.as_str()).collect();
    let live = jobs_live(&shared, &ids).await?;
    let page: Vec<_> = page
        .into_iter()
        .zip(live)
        .map(|((id, r), live)| (id, r, live))
        .collect();
    #[derive(serde::Serialize)]
    struct Page<'a> {
        items: Vec<JobView<'a>>,
        next_cursor: Option<String>,
    }
    let items = page
        .iter()
        .map(|(_, r, live)| job_view(s, r, now, live))
        .collect();
    Ok(Json(Page { items, next_cursor }).into_response())
}

pub(super) async fn job(
    State(shared): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let applied = shared.applied.load();
    let s = &applied.snapshot;
    let r = s
        .jobs
        .get(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job `{id}`")))?;
    let mut live = jobs_live(&shared, &[id.as_str()]).await?;
    let live = live.pop().unwrap_or_else(|| job_live(&shared, &id));
    let memory = crate::workflow::memory_store::load(&shared.store, &id)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut view = serde_json::to_value(job_view(s, r, jiff::Timestamp::now(), &live))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    view["memory"] = serde_json::to_value(memory).unwrap_or_default();
    view["budgets"] = budgets_today(&shared, s, &r.spec).await?;
    Ok(Json(view).into_response())
}

/// The job's daily budgets today (its own and its flow's), read from the
/// store: `[{scope, kind, field, used, limit, last_run, resets_at}]`.
async fn budgets_today(
    shared: &AppState,
    s: &crate::spec::snapshot::Snapshot,
    job: &crate::spec::model::Job,
) -> Result<serde_json::Value, ApiError> {
    let flow = job
        .flow
        .as_ref()
        .and_then(|f| s.flows.get(f))
        .map(|f| &f.spec);
    let Some(meter) = crate::store::budgets::Meter::of(job, flow) else {
        return Ok(serde_json::json!([]));
    };
    let uses = meter
        .usage(&shared.store, shared.queue.clock().now())
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(serde_json::to_value(uses).unwrap_or_default())
}
