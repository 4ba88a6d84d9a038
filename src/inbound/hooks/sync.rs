//! A trigger with `action: sync` (GitHub only): a verified `push` to the
//! branch `run --git` pulls makes the daemon fetch at once, the way
//! SIGHUP does; no run is made. Requests asked for while a fetch runs
//! coalesce into one more fetch ([`FetchNow`]).
//!
//! After the signature: a daemon without `--git` answers 409; GitHub's
//! `ping` answers 200; any other event, or a push to another branch,
//! answers 202 `ignored`. A push's `X-GitHub-Delivery` is claimed in the
//! store's kv like a run's delivery id, so a redelivered push answers 202
//! `duplicate` and fetches nothing. The fetch is asked of this process's
//! puller (embedded store), or through the store's inbox of the Redis
//! leader, which is the process that pulls.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::outcome::Refusal;
use crate::inbound::intake::delivery_key;
use crate::reconcile::pull::FetchNow;
use crate::signature::Headers;
use crate::spec::model::Trigger;
use crate::store::runs::InboxCommand;
use crate::store::{KvOp, Store};

/// GitHub's header naming the event a delivery carries.
pub const EVENT_HEADER: &str = "x-github-event";

/// How a daemon started with `run --git` is asked to fetch.
#[derive(Clone)]
pub struct GitSync {
    /// The branch being pulled: only a push to `refs/heads/<branch>` counts.
    pub branch: String,
    pub route: FetchRoute,
}

/// Who fetches: this process, or the Redis leader through the inbox.
#[derive(Clone)]
pub enum FetchRoute {
    Here(FetchNow),
    Inbox,
}

/// What a verified delivery to a sync trigger comes to; the metric's
/// result and the response.
pub async fn answer(
    git: Option<&GitSync>,
    store: &Store,
    trigger: &Trigger,
    headers: &Headers,
    payload: &Value,
    delivery_id: Option<String>,
) -> Result<(&'static str, Response), Refusal> {
    let Some(git) = git else {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "error",
            "not_pulling",
            format!(
                "trigger {} asks for a git fetch, and this daemon does not pull from git: start it with run --git URL, or point the trigger at a job",
                trigger.id
            ),
        ));
    };
    let event = headers.get(EVENT_HEADER).map_or("", String::as_str);
    if event == "ping" {
        return Ok(("ping", reply(StatusCode::OK, json!({"status": "pong"}))));
    }
    if event != "push" {
        return Ok(ignored(format!(
            "event {event:?} is not a push: only pushes to branch {} fetch",
            git.branch
        )));
    }
    if let Some(delivery) = delivery_id.as_deref()
        && !claim(store, trigger, delivery).await?
    {
        let body = json!({"status": "duplicate", "duplicate": true});
        return Ok(("duplicate", reply(StatusCode::ACCEPTED, body)));
    }
    let pushed = payload.get("ref").and_then(Value::as_str).unwrap_or("");
    if pushed != format!("refs/heads/{}", git.branch) {
        return Ok(ignored(format!(
            "the push is to {pushed:?}, and this daemon pulls branch {}",
            git.branch
        )));
    }
    request(git, store, trigger, delivery_id).await?;
    let body = json!({"status": "sync_requested", "branch": git.branch});
    Ok(("sync_requested", reply(StatusCode::ACCEPTED, body)))
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn ignored(reason: String) -> (&'static str, Response) {
    let body = json!({"status": "ignored", "reason": reason});
    ("ignored", reply(StatusCode::ACCEPTED, body))
}

/// Record the delivery id; `false` when it was seen before.
async fn claim(store: &Store, trigger: &Trigger, delivery: &str) -> Result<bool, Refusal> {
    if delivery.len() > crate::inbound::intake::MAX_DELIVERY_ID_BYTES {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "invalid_delivery_id",
            format!(
                "delivery id is {} bytes, more than {}",
                delivery.len(),
                crate::inbound::intake::MAX_DELIVERY_ID_BYTES
            ),
        ));
    }
    let token = crate::run::new_run_id();
    let claim = KvOp::SetIfAbsent {
        value: Value::String(token.clone()),
        ttl_sec: crate::inbound::intake::DELIVERY_TTL_SEC,
    };
    let key = delivery_key(&format!("hook:{}", trigger.id), delivery);
    match store.kv(&key, claim).await {
        Ok(Some(Value::String(standing))) => Ok(standing == token),
        Ok(_) => Ok(true),
        Err(e) => Err(store_unavailable(trigger, &e.to_string())),
    }
}

/// Ask the puller, here or through the leader's inbox.
async fn request(
    git: &GitSync,
    store: &Store,
    trigger: &Trigger,
    delivery_id: Option<String>,
) -> Result<(), Refusal> {
    match &git.route {
        FetchRoute::Here(fetch) => {
            fetch.request();
            Ok(())
        }
        FetchRoute::Inbox => {
            let command = InboxCommand::GitSync {
                trigger: trigger.id.clone(),
                delivery_id,
            };
            store
                .post_to_inbox(&command)
                .await
                .map(|_| ())
                .map_err(|e| store_unavailable(trigger, &e.to_string()))
        }
    }
}

fn store_unavailable(trigger: &Trigger, error: &str) -> Refusal {
    tracing::error!(trigger = %trigger.id, error, "an inbound sync request could not reach the store");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "error",
        "store_unavailable",
        "the request could not be recorded; retry later".to_string(),
    )
}
