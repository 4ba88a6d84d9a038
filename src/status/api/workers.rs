//! `GET /api/v1/workers`: the live worker processes, on every replica. In
//! a Redis deployment they are the heartbeats in the `workers` hash (see
//! `store::workers`); on the embedded store the daemon's own pool is the
//! one worker, serving every group (`groups: ["*"]`).

use axum::extract::State;
use serde_json::json;

use super::{ApiResult, AppState};
use crate::store::format_ts;
use std::sync::atomic::Ordering;

/// The name the embedded daemon's pool is listed under.
const EMBEDDED: &str = "embedded";

pub(super) async fn workers(State(shared): State<AppState>) -> ApiResult {
    let items = match shared.store.live_workers().await? {
        Some(workers) => serde_json::to_value(workers).unwrap_or_default(),
        None => json!([{
            "id": EMBEDDED,
            "groups": ["*"],
            "slots": shared.workers_total.load(Ordering::Relaxed),
            "busy": shared.workers_busy.load(Ordering::Relaxed),
            "last_heartbeat": format_ts(jiff::Timestamp::now()),
            "version": env!("CARGO_PKG_VERSION"),
        }]),
    };
    Ok(axum::Json(json!({"items": items, "next_cursor": null})))
}
