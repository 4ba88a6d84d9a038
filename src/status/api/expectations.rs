//! `/api/v1/expectations`: for each enabled job with `expect:`, what its
//! verdict is judged from (its last success in the run records, what a
//! job that never succeeded counts from). Not judged here: `multijob check
//! --server` judges with its own clock, so a daemon whose clock or loop
//! is stuck cannot report a broken job as holding.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::run::expectation;

pub(super) async fn expectations(State(shared): State<AppState>) -> ApiResult {
    let applied = shared.applied.load_full();
    let items = expectation::observe_all(&shared.store, &applied)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading the expectations: {e}"),
            )
        })?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}
