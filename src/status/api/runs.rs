//! `/api/v1/runs`, `/api/v1/jobs/{id}/runs` and `/api/v1/runs/{id}`: run
//! history from the store, with the queue's fresher copy of unfinished
//! runs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiQuery, ApiResult, AppState, limit};
use crate::status::state::Shared;
use crate::store::runs::{Run, RunQuery, RunStatus};

#[derive(Debug, Deserialize)]
pub(super) struct RunsQuery {
    job: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<i64>,
}

async fn list_runs(shared: &Shared, q: RunsQuery) -> Result<Response, ApiError> {
    let limit = limit(q.limit)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown status `{s}`: queued, awaiting_approval, running, succeeded, failed, timed_out, cancelled, retrying"),
            )
        })?),
    };
    let mut rows = shared
        .store
        .runs(RunQuery {
            job_id: q.job,
            status,
            limit: limit + 1,
            before: q.cursor,
        })
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(seq, _)| *seq)
    } else {
        None
    };
    let items: Vec<Run> = rows.into_iter().map(|(_, r)| fresher(shared, r)).collect();
    #[derive(serde::Serialize)]
    struct Page {
        items: Vec<Run>,
        next_cursor: Option<i64>,
    }
    Ok(Json(Page { items, next_cursor }).into_response())
}

/// The queue's copy of an unfinished run is newer than the store's by the
/// group-commit delay.
fn fresher(shared: &Shared, run: Run) -> Run {
    if run.status.is_active() {
        shared.queue.get(&run.id).unwrap_or(run)
    } else {
        run
    }
}

pub(super) async fn runs(
    State(shared): State<AppState>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Response, ApiError> {
    list_runs(&shared, q).await
}

pub(super) async fn job_runs(
    State(shared): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(mut q): ApiQuery<RunsQuery>,
) -> Result<Response, ApiError> {
    if !shared.applied.load().snapshot.jobs.contains_key(&id) && q.job.is_none() {
        // History of a deleted job is kept and still listed.
        tracing::debug!(job = %id, "runs of a job not in the applied revision");
    }
    q.job = Some(id);
    list_runs(&shared, q).await
}

pub(super) async fn run(State(shared): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let run = match shared.queue.get(&id) {
        Some(r) => Some(r),
        None => shared.store.run(&id).await?.map(|(_, r)| r),
    };
    let run = run.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run `{id}`")))?;
    Ok(Json(serde_json::to_value(run).unwrap_or_default()))
}
