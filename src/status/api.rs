//! The read-only status API. Only GET; errors are `{"error": "..."}`;
//! lists are `{"items": [...], "next_cursor": ...}`; times RFC 3339 UTC.
//! The jobs', runs' and triggers' views live in `jobs`, `runs` and
//! `triggers`; this file has the router, the status, the snapshot and
//! plan, and the lists of the other resources.

mod expectations;
mod jobs;
mod runs;
mod triggers;
mod workers;

pub use jobs::RunSummary;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::listener::Connection;
use crate::reconcile::{self, load_dir, render};
use crate::spec::snapshot::Resource;
use crate::status::state::Shared;
use crate::status::{auth, metrics, openapi, sse};
use crate::store::format_ts;

type AppState = Arc<Shared>;

/// An API error: a status and a one-line reason.
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError(status, reason.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Query parameters; a malformed one (`limit=abc`, `after=x`) is a JSON
/// `400 {"error": ...}` naming it, like every other API error, not axum's
/// plain-text rejection.
struct ApiQuery<T>(T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// Every path the API serves. The router is built from this list and the
/// OpenAPI document is checked against it, so a route cannot be added
/// without being documented.
pub const ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/status",
    "/api/v1/jobs",
    "/api/v1/jobs/{id}",
    "/api/v1/jobs/{id}/runs",
    "/api/v1/runs",
    "/api/v1/runs/{id}",
    "/api/v1/snapshot",
    "/api/v1/revisions",
    "/api/v1/plan",
    "/api/v1/events",
    "/api/v1/approvals",
    "/api/v1/flows",
    "/api/v1/connectors",
    "/api/v1/skills",
    "/api/v1/triggers",
    "/api/v1/triggers/{id}",
    "/api/v1/expectations",
    "/api/v1/workers",
];

/// The handler of one of [`ROUTES`].
fn handler(path: &str) -> MethodRouter<AppState> {
    match path {
        "/healthz" => get(healthz),
        "/readyz" => get(readyz),
        "/metrics" => get(metrics::handler),
        "/api/v1/openapi.json" => get(openapi::handler),
        "/api/v1/status" => get(status),
        "/api/v1/jobs" => get(jobs::jobs),
        "/api/v1/jobs/{id}" => get(jobs::job),
        "/api/v1/jobs/{id}/runs" => get(runs::job_runs),
        "/api/v1/runs" => get(runs::runs),
        "/api/v1/runs/{id}" => get(runs::run),
        "/api/v1/snapshot" => get(snapshot),
        "/api/v1/revisions" => get(revisions),
        "/api/v1/plan" => get(plan),
        "/api/v1/events" => get(events),
        "/api/v1/approvals" => get(approvals),
        "/api/v1/flows" => get(flows),
        "/api/v1/connectors" => get(connectors),
        "/api/v1/skills" => get(skills),
        "/api/v1/triggers" => get(triggers::triggers),
        "/api/v1/triggers/{id}" => get(triggers::trigger),
        "/api/v1/expectations" => get(expectations::expectations),
        "/api/v1/workers" => get(workers::workers),
        other => panic!("ROUTES lists {other} but no handler is mapped to it"),
    }
}

/// Build the router; tests call this in-process.
pub fn router(shared: AppState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |r, path| r.route(path, handler(path)))
        // The page and its assets (served without a token).
        .merge(super::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), auth::auth))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such path".into())
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "the status API is read-only: only GET".into(),
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    r
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(shared): State<AppState>) -> Response {
    let store_ok = tokio::time::timeout(Duration::from_secs(2), shared.store.ping())
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let applied = shared.applied.load();
    let revision = applied.revision.as_ref().map(|r| r.id.clone());
    // Building the client is blocking work (it reads the CA bundle) when a
    // failed build is due to be tried again.
    let http_client = tokio::task::spawn_blocking(crate::connectors::client::health)
        .await
        .unwrap_or_else(|e| Err(format!("HTTP client: the check crashed: {e}")));
    let reason = if !store_ok {
        Some("store unreachable".to_string())
    } else if revision.is_none() {
        Some("no revision applied yet".to_string())
    } else {
        http_client.as_ref().err().cloned()
    };
    let ready = reason.is_none();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "store": store_ok,
        "revision": revision,
        "http_client": http_client.is_ok(),
        "reason": reason,
    });
    (code, Json(body)).into_response()
}

/// `git`: the applied revision's commit (`commit`, `dirty`) and, with
/// `run --git`, the puller's `remote` (no credentials), `branch`,
/// `fetched` (the commit checked out last), `last_fetch_at` and
/// `last_error`. `null` when neither exists.
fn git_block(
    revision: Option<&crate::store::RevisionRecord>,
    fetch: Option<crate::reconcile::pull::FetchStatus>,
) -> Value {
    let mut block = match revision.and_then(|r| r.git_commit.as_ref().map(|c| (c, r.git_dirty))) {
        Some((commit, dirty)) => json!({"commit": commit, "dirty": dirty}),
        None if fetch.is_some() => json!({"commit": null, "dirty": false}),
        None => return Value::Null,
    };
    if let (Some(fetch), Some(obj)) = (fetch, block.as_object_mut()) {
        obj.insert("remote".into(), json!(fetch.remote));
        obj.insert("branch".into(), json!(fetch.branch));
        obj.insert("fetched".into(), json!(fetch.fetched));
        obj.insert("last_fetch_at".into(), json!(fetch.last_fetch_at));
        obj.insert("last_error".into(), json!(fetch.last_error));
    }
    block
}

async fn status(State(shared): State<AppState>) -> ApiResult {
    let applied = shared.applied.load();
    let s = &applied.snapshot;
    let revision = applied.revision.as_ref();
    let last = shared.last_reconcile.load();
    let (mut queue_depth, mut running, mut pressure, (started, finished), mut bursts) = {
        let view = shared.queue.view();
        (
            view.waiting(),
            view.running(),
            view.pressure(),
            view.totals(),
            view.bursts(),
        )
    };
    // A follower's own queue is empty: show the leader's, as published.
    let cluster = shared.cluster.load();
    let leader_queue = cluster
        .as_ref()
        .as_ref()
        .and_then(|c| c.leader_queue.as_ref());
    if let Some(q) = leader_queue {
        queue_depth = q.queue_depth;
        running = q.running;
        pressure = q.pressure_mode;
        bursts = q.bursts.clone();
    }
    let (busy, total) = shared.workers();
    Ok(Json(json!({
        "revision": revision.map(|r| &r.id),
        "applied_at": revision.map(|r| &r.at),
        "git": git_block(revision, shared.git.status()),
        "content_hash": revision.map(|r| &r.content_hash),
        // A follower does not reconcile: the leader's last, as published.
        "last_reconcile": match (last.as_ref(), leader_queue) {
            (Some(own), _) => json!(own),
            (None, Some(q)) => json!(q.last_reconcile),
            (None, None) => Value::Null,
        },
        "counts": {
            "jobs": s.jobs.len(),
            "enabled_jobs": s.jobs.values().filter(|j| j.spec.enabled).count(),
            "flows": s.flows.len(),
            "connectors": s.connectors.len(),
            "skills": s.skills.len(),
            "triggers": s.triggers.len(),
            "defaults": s.defaults.len(),
        },
        "queue_depth": queue_depth,
        "running": running,
        "runs_since_start": {"started": started, "finished": finished},
        // `trigger --count` bursts whose runs are still being admitted.
        "bursts": bursts,
        "pressure_mode": pressure,
        "workers": {"busy": busy, "total": total},
        "scheduler": shared.scheduler.snapshot(),
        "recovery": shared.recovery.load().as_ref().as_ref(),
        "dir": shared.dir.display().to_string(),
        "store": shared.store.describe(),
        // Writes this process submitted that are not committed yet.
        "store_backlog": shared.store.backlog(),
        "cluster": cluster.as_ref().as_ref().map(|c| {
            let mut v = json!(c);
            // When the queue figures above are the leader's.
            v["queue_from_leader_at"] = json!(leader_queue.map(|q| &q.at));
            v
        }),
        "uptime_sec": shared.started_at.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

fn limit(q: Option<usize>) -> Result<usize, ApiError> {
    match q {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "limit must be at least 1".into(),
        )),
        Some(n) => Ok(n.min(MAX_LIMIT)),
    }
}

async fn snapshot(State(shared): State<AppState>) -> ApiResult {
    let applied = shared.applied.load();
    let mut out = applied
        .snapshot
        .to_json(applied.revision.as_ref().map(|r| r.id.as_str()));
    let ctx = plan_context(&shared).await?;
    if let Value::Object(m) = &mut out {
        // What `plan --server` needs to say what applying would do.
        m.insert(
            "runtime".into(),
            json!({
                "last_slots": ctx.last_slots.iter().map(|(k, v)| (k.clone(), json!(format_ts(*v)))).collect::<serde_json::Map<_, _>>(),
                "active_runs_by_job": ctx.active_runs_by_job,
                "active_runs_by_flow": ctx.active_runs_by_flow,
            }),
        );
    }
    Ok(Json(out))
}

/// The live state a plan reports against.
async fn plan_context(shared: &Shared) -> Result<render::PlanContext, ApiError> {
    let mut ctx = render::PlanContext::empty(jiff::Timestamp::now());
    for (job, slot) in shared.store.job_slots().await? {
        if let Ok(t) = slot.parse() {
            ctx.last_slots.insert(job, t);
        }
    }
    let view = shared.queue.view();
    ctx.active_runs_by_job = view.active_by_job();
    ctx.active_runs_by_flow = view.active_by_flow();
    Ok(ctx)
}

/// The live state `/api/v1/snapshot` carries, for `plan --server`.
pub fn plan_context_from_json(v: &Value, now: jiff::Timestamp) -> render::PlanContext {
    let mut ctx = render::PlanContext::empty(now);
    let rt = &v["runtime"];
    if let Some(m) = rt["last_slots"].as_object() {
        for (k, t) in m {
            if let Some(t) = t.as_str().and_then(|t| t.parse().ok()) {
                ctx.last_slots.insert(k.clone(), t);
            }
        }
    }
    for (field, map) in [
        ("active_runs_by_job", &mut ctx.active_runs_by_job),
        ("active_runs_by_flow", &mut ctx.active_runs_by_flow),
    ] {
        if let Some(m) = rt[field].as_object() {
            for (k, n) in m {
                map.insert(k.clone(), n.as_u64().unwrap_or(0) as usize);
            }
        }
    }
    ctx
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<i64>,
}

async fn revisions(State(shared): State<AppState>, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult {
    let limit = limit(q.limit)?;
    let mut items = shared
        .store
        .revisions(q.cursor.unwrap_or(0), limit + 1)
        .await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    limit: Option<usize>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    job: Option<String>,
}

/// A page of events, or with `Accept: text/event-stream` the live stream.
async fn events(
    State(shared): State<AppState>,
    connection: Option<Extension<Connection>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    if sse::wants_stream(&headers) {
        let filter = crate::store::EventQuery {
            event_type: q.event_type,
            job_id: q.job,
            ..Default::default()
        };
        let connection = connection.map(|Extension(c)| c);
        return sse::stream(shared, connection, &headers, q.after, filter).await;
    }
    let limit = limit(q.limit)?;
    let items = shared
        .store
        .events(crate::store::EventQuery {
            after: q.after.unwrap_or(0),
            limit,
            event_type: q.event_type,
            job_id: q.job,
        })
        .await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})).into_response())
}

async fn approvals(State(shared): State<AppState>) -> ApiResult {
    let items = shared.store.approvals(false).await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

/// A resource list: every applied resource of one kind on one page.
fn all_of<T>(
    resources: &std::collections::BTreeMap<String, Resource<T>>,
    item: impl Fn(&String, &Resource<T>) -> Value,
) -> ApiResult {
    let items: Vec<Value> = resources.iter().map(|(id, r)| item(id, r)).collect();
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

async fn flows(State(shared): State<AppState>) -> ApiResult {
    let applied = shared.applied.load();
    let view = shared.queue.view();
    all_of(&applied.snapshot.flows, |id, r| {
        let lane = view.lane(id);
        json!({"id": id, "spec": r.spec, "file": r.file, "line": r.line, "hash": r.hash,
               "active_runs": lane.active})
    })
}

async fn connectors(State(shared): State<AppState>) -> ApiResult {
    let applied = shared.applied.load();
    all_of(&applied.snapshot.connectors, |id, r| {
        let mut spec = serde_json::to_value(&r.spec).unwrap_or_default();
        // Secret references are masked too: the API never hints at them.
        // So are an MCP server's env, headers and token (references too).
        for key in ["secrets", "env", "headers"] {
            if let Some(Value::Object(secrets)) = spec.get_mut(key) {
                for v in secrets.values_mut() {
                    *v = Value::String("***".into());
                }
            }
        }
        if let Some(token) = spec.get_mut("token") {
            *token = Value::String("***".into());
        }
        json!({"id": id, "spec": spec, "file": r.file, "line": r.line, "hash": r.hash})
    })
}

async fn skills(State(shared): State<AppState>) -> ApiResult {
    let applied = shared.applied.load();
    all_of(
        &applied.snapshot.skills,
        |id, r| json!({"id": id, "spec": r.spec, "file": r.file, "line": r.line, "hash": r.hash}),
    )
}

async fn plan(State(shared): State<AppState>) -> ApiResult {
    let loaded = load_dir(shared.dir.clone()).await;
    if loaded.has_errors() {
        let errors: Vec<_> = loaded
            .diagnostics
            .into_iter()
            .filter(|d| d.is_error())
            .collect();
        return Ok(Json(json!({"valid": false, "errors": errors})));
    }
    let applied = shared.applied.load();
    let ctx = plan_context(&shared).await?;
    let report =
        reconcile::plan_report(&shared.dir, &applied.snapshot, &loaded.snapshot, &ctx).await;
    let mut out = render::render_json(&report);
    if let Value::Object(m) = &mut out {
        m.insert("valid".into(), Value::Bool(true));
    }
    Ok(Json(out))
}
