//! The inbound listener's one route, `POST /hooks/{trigger}`: a signed
//! request from outside becomes at most one run of the trigger's job or
//! skill. Served on its own address (`run --inbound-listen`) through
//! [`crate::listener::serve`], never on the read-only status API.
//!
//! Each request goes through, in order, stopping at the first refusal:
//! the trigger (read from the applied snapshot per request, so a reload
//! applies at once; unknown or disabled: 404) → its rate limit ([`limiter`],
//! 429 + `Retry-After`) → the body, at most [`MAX_BODY_BYTES`] (413, from
//! `Content-Length` before reading, or when the stream passes it; 408 when
//! it takes longer than the header timeout to arrive) → the
//! signature over those exact bytes ([`verify`], 401; a secret that does
//! not resolve is 503) → the payload ([`payload`], 422) → its delivery id
//! → the inputs rendered (422) → [`Intake::submit`] → `202 {"run_id",
//! "duplicate"}`; a delivery seen before answers 202 with the first run's
//! id and `"duplicate": true`. Refusals are counted and recorded
//! ([`outcome`]). A trigger with `action: sync` makes no run: after the
//! payload, [`sync`] answers it (a git fetch now).

pub mod limiter;
pub mod outcome;
pub mod payload;
pub mod sync;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::inbound::{Accepted, Delivery, Intake, SubmitError};
use crate::signature::Headers;
use crate::spec::model::{RateLimit, Trigger, skill_job_id};
use crate::status::state::Shared;
use crate::store::Applied;
use limiter::{Limiter, retry_after_secs};
use outcome::{Asked, Outcomes, Refusal};
use sync::GitSync;

/// The largest body a hook accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the route handler shares.
pub struct Hooks {
    pub shared: Arc<Shared>,
    pub intake: Intake,
    pub limiter: Limiter,
    pub outcomes: Outcomes,
    /// Take the public URL from `X-Forwarded-Proto`/`X-Forwarded-Host`.
    pub behind_proxy: bool,
    /// How long a body may take to arrive (the listener's header timeout):
    /// a request inside its body is busy, so the connection's own
    /// timeouts no longer apply to it.
    pub body_timeout: Duration,
    /// `run --git`: how a sync trigger asks for a fetch (none: 409).
    pub git: Option<GitSync>,
}

impl Hooks {
    pub fn new(
        shared: Arc<Shared>,
        intake: Intake,
        behind_proxy: bool,
        body_timeout: Duration,
    ) -> Hooks {
        let outcomes = Outcomes::new(shared.store.clone(), shared.metrics.inbound_requests());
        Hooks {
            shared,
            intake,
            limiter: Limiter::default(),
            outcomes,
            behind_proxy,
            body_timeout,
            git: None,
        }
    }

    /// Sync triggers ask `git` for a fetch.
    pub fn with_git(self, git: Option<GitSync>) -> Hooks {
        Hooks { git, ..self }
    }
}

/// The listener's app: `POST /hooks/{trigger}`; anything else is a JSON
/// 404 or 405.
pub fn router(hooks: Arc<Hooks>) -> Router {
    Router::new()
        .route("/hooks/{trigger}", post(handle))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such path: the inbound listener serves only POST /hooks/<trigger>",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only POST is accepted on /hooks/<trigger>",
            )
        })
        .with_state(hooks)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

async fn handle(
    State(hooks): State<Arc<Hooks>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let applied = hooks.shared.applied.load_full();
    let trigger = applied
        .snapshot
        .triggers
        .get(&id)
        .map(|r| &r.spec)
        .filter(|t| t.enabled);
    let Some(trigger) = trigger else {
        let asked = Asked {
            trigger: None,
            requested: &id,
            source: None,
            remote,
        };
        let message = format!(
            "no trigger {id}: none is applied under that id, or it is disabled; `multijob plan` lists the triggers"
        );
        return hooks.outcomes.refused(
            &asked,
            Refusal::new(StatusCode::NOT_FOUND, "not_found", "not_found", message),
        );
    };
    let asked = Asked {
        trigger: Some(&trigger.id),
        requested: &id,
        source: Some(trigger.source.as_str()),
        remote,
    };
    match accept(&hooks, &applied, trigger, request).await {
        Ok((accepted, response)) => {
            hooks.outcomes.count(&asked, accepted);
            response
        }
        Err(refusal) => hooks.outcomes.refused(&asked, refusal),
    }
}

/// Everything after the lookup; the metric's result and the response.
async fn accept(
    hooks: &Hooks,
    applied: &Applied,
    trigger: &Trigger,
    request: Request,
) -> Result<(&'static str, Response), Refusal> {
    if let Some(limit) = &trigger.rate_limit
        && let Err(wait) = hooks.limiter.check(&trigger.id, limit, |id| {
            applied.snapshot.triggers.contains_key(id)
        })
    {
        return Err(rate_limited(trigger, limit, wait));
    }
    let (parts, body) = request.into_parts();
    let body = tokio::time::timeout(hooks.body_timeout, read_body(&parts.headers, body))
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid",
                "body_timeout",
                format!(
                    "the body did not arrive within {} s",
                    hooks.body_timeout.as_secs_f64()
                ),
            )
        })??;
    let headers = lower_cased(&parts.headers);
    let secret = secret_of(trigger)?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = verify::public_url(&headers, path, hooks.behind_proxy);
    let now = jiff::Timestamp::now().as_second();
    let scheme = verify::scheme(trigger.source);
    crate::signature::verify(scheme, &headers, &body, &url, &secret, now).map_err(|rejection| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            rejection.reason(),
            format!("signature check failed: {rejection}"),
        )
    })?;
    let content_type = headers.get("content-type").map(String::as_str);
    let payload =
        payload::parse(trigger.source, content_type, &body).map_err(invalid("invalid_payload"))?;
    if let Some(challenge) = payload::slack_challenge(trigger.source, &payload) {
        let answer = axum::Json(json!({"challenge": challenge}));
        return Ok(("accepted", (StatusCode::OK, answer).into_response()));
    }
    let delivery_id = verify::delivery_id(trigger.source, &headers, &payload);
    if trigger.action.is_some() {
        let store = hooks.intake.store();
        return sync::answer(
            hooks.git.as_ref(),
            store,
            trigger,
            &headers,
            &payload,
            delivery_id,
        )
        .await;
    }
    let visible = payload::visible_headers(&headers, &secret);
    drop(secret);
    let inputs = payload::inputs(trigger, payload, visible)
        .await
        .map_err(invalid("render_failed"))?;
    // A W3C `traceparent` makes the run continue the sender's trace; a
    // malformed one is ignored, as the W3C spec says.
    let traceparent = headers
        .get("traceparent")
        .filter(|v| crate::otel::parse_traceparent(v).is_some())
        .cloned();
    submit(hooks, trigger, inputs, delivery_id, traceparent).await
}

fn rate_limited(trigger: &Trigger, limit: &RateLimit, wait: Duration) -> Refusal {
    let secs = retry_after_secs(wait);
    let message = format!(
        "trigger {} takes {} requests a minute (burst {}); retry in {secs} s",
        trigger.id, limit.per_minute, limit.burst
    );
    let mut refusal = Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "rate_limited",
        message,
    );
    refusal.retry_after = Some(secs);
    refusal
}

/// The trigger's signing secret. Unresolvable, the request gets a 503
/// that names neither the reference nor a value; the log names the
/// reference for the operator.
fn secret_of(trigger: &Trigger) -> Result<String, Refusal> {
    let owner = format!("trigger:{}", trigger.id);
    crate::connectors::secrets::resolve(&owner, "secret", &trigger.secret).map_err(|e| {
        tracing::error!(trigger = %trigger.id, error = %e, "an inbound trigger's secret is not available: its requests are refused with 503");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "error",
            "secret_unavailable",
            format!(
                "trigger {}'s secret is not available to the daemon; its operator must fix it (see the daemon's log)",
                trigger.id
            ),
        )
    })
}

/// Queue the run (once per delivery id): `202 {"run_id", "duplicate"}`.
async fn submit(
    hooks: &Hooks,
    trigger: &Trigger,
    inputs: serde_json::Value,
    delivery_id: Option<String>,
    traceparent: Option<String>,
) -> Result<(&'static str, Response), Refusal> {
    let job_id = match (&trigger.job, &trigger.skill) {
        (Some(job), _) => job.clone(),
        (None, Some(skill)) => skill_job_id(skill),
        (None, None) => String::new(),
    };
    let delivery = Delivery {
        job_id,
        trigger: verify::run_trigger(trigger.source),
        inputs,
        origin: format!("hook:{}", trigger.id),
        delivery_id,
        requires_approval: trigger.requires_approval,
        traceparent,
    };
    let accepted = hooks
        .intake
        .submit(delivery)
        .await
        .map_err(|e| submit_failed(trigger, e))?;
    let (result, duplicate) = match &accepted {
        Accepted::Queued(_) => ("accepted", false),
        Accepted::Duplicate(_) => ("duplicate", true),
    };
    let body = json!({"run_id": accepted.run_id(), "duplicate": duplicate});
    Ok((
        result,
        (StatusCode::ACCEPTED, axum::Json(body)).into_response(),
    ))
}

fn invalid(reason: &'static str) -> impl Fn(String) -> Refusal {
    move |message| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", reason, message)
}

fn submit_failed(trigger: &Trigger, e: SubmitError) -> Refusal {
    match e {
        SubmitError::DeliveryIdTooLong(_) => Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "invalid_delivery_id",
            e.to_string(),
        ),
        SubmitError::NoSuchJob(_) | SubmitError::Disabled(_) => Refusal::new(
            StatusCode::CONFLICT,
            "error",
            "job_unavailable",
            format!("trigger {}: {e}; fix the trigger's job in git", trigger.id),
        ),
        SubmitError::Store(store) => {
            tracing::error!(trigger = %trigger.id, error = %store, "an inbound run could not be stored");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "error",
                "store_unavailable",
                "the run could not be stored; retry later".to_string(),
            )
        }
    }
}

/// The body, refused past [`MAX_BODY_BYTES`] without reading the rest:
/// a declared length over it is refused before any byte is read, a
/// longer stream once it passes it.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // Chunks are kept as they came and joined once: no doubling buffer.
    let mut stream = body.into_data_stream();
    let mut chunks = Vec::new();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "body_unreadable",
                format!("the body could not be read: {e}"),
            )
        })?;
        total += chunk.len();
        if total > MAX_BODY_BYTES {
            return Err(too_large());
        }
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Header values by lower-cased name (values that are not text are left
/// out; none of the signed headers is binary).
fn lower_cased(headers: &HeaderMap) -> Headers {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_ascii_lowercase(),
                value.to_str().ok()?.to_string(),
            ))
        })
        .collect()
}
