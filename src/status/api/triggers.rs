//! `/api/v1/triggers` and `/api/v1/triggers/{id}`: the applied inbound
//! triggers, each with the path it answers on the inbound listener. The
//! signing secret's reference is masked like a connector's (`***`): the
//! API never hints at where a secret lives, and never reads its value.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, all_of};
use crate::spec::model::Trigger;
use crate::spec::snapshot::Resource;
use crate::spec::suggest;

/// A trigger as the API shows it.
fn view(r: &Resource<Trigger>) -> Value {
    let t = &r.spec;
    json!({
        "id": t.id,
        "source": t.source.as_str(),
        "job": t.job,
        "skill": t.skill,
        "action": t.action.map(|a| a.as_str()),
        "requires_approval": t.requires_approval,
        "rate_limit": t.rate_limit,
        "enabled": t.enabled,
        "url_path": format!("/hooks/{}", t.id),
        "file": r.file,
        "line": r.line,
        "hash": r.hash,
        "spec": masked(t),
    })
}

fn masked(t: &Trigger) -> Value {
    let mut spec = serde_json::to_value(t).unwrap_or_default();
    if let Some(secret) = spec.get_mut("secret") {
        *secret = Value::String("***".into());
    }
    spec
}

pub(super) async fn triggers(State(shared): State<AppState>) -> ApiResult {
    let applied = shared.applied.load();
    all_of(&applied.snapshot.triggers, |_, r| view(r))
}

pub(super) async fn trigger(State(shared): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let applied = shared.applied.load();
    let triggers = &applied.snapshot.triggers;
    match triggers.get(&id) {
        Some(r) => Ok(Json(view(r))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no trigger `{id}`{} in the applied revision: GET /api/v1/triggers lists them",
                suggest::hint(&id, triggers.keys().map(String::as_str))
            ),
        )),
    }
}
