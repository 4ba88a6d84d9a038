//! How a hook request ended, as the sender, the metrics and the event log
//! see it. A refusal is an HTTP status with a JSON error, a count in
//! `multijob_inbound_requests_total{trigger,source,result}`, and an
//! `inbound.rejected` event `{trigger, source, reason, remote, count}`:
//! never the body, a signature or the secret.
//!
//! Events are throttled: at most one per trigger and reason a second, its
//! `count` the refusals it stands for (those since the last one written),
//! so a flood of bad requests cannot fill the store. Unknown trigger ids
//! share one key, so made-up ids cannot grow the table or the metric's
//! series (their label is `trigger=""`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::status::metrics::InboundRequests;
use crate::store::{NewEvent, Store};

/// At most one `inbound.rejected` event per trigger and reason this often.
pub const EVENT_EVERY: Duration = Duration::from_secs(1);

/// A request refused before a run was queued.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    /// The metric's `result` label.
    pub result: &'static str,
    /// The event's `reason`.
    pub reason: &'static str,
    /// What the sender is told.
    pub message: String,
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(
        status: StatusCode,
        result: &'static str,
        reason: &'static str,
        message: String,
    ) -> Self {
        Refusal {
            status,
            result,
            reason,
            message,
            retry_after: None,
        }
    }

    pub fn response(&self, trigger: &str) -> Response {
        let body = json!({"error": self.message, "trigger": trigger, "reason": self.reason});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Who asked, and for what, as the metric and the event name them.
#[derive(Debug, Clone)]
pub struct Asked<'a> {
    /// The trigger id; `None` when no such trigger is applied.
    pub trigger: Option<&'a str>,
    pub requested: &'a str,
    pub source: Option<&'static str>,
    pub remote: Option<SocketAddr>,
}

/// A trigger id (`""` for unknown ones) and a reason.
type ThrottleKey = (String, &'static str);

/// The metric and the throttled rejection events of one listener.
#[derive(Clone)]
pub struct Outcomes {
    store: Store,
    requests: InboundRequests,
    /// Per (trigger, reason): when an event was last written, and the
    /// refusals since.
    throttle: Arc<Mutex<HashMap<ThrottleKey, (Instant, u64)>>>,
}

impl Outcomes {
    pub fn new(store: Store, requests: InboundRequests) -> Outcomes {
        Outcomes {
            store,
            requests,
            throttle: Arc::default(),
        }
    }

    /// Count a request in the metric.
    pub fn count(&self, asked: &Asked<'_>, result: &str) {
        self.requests
            .get_or_create(&vec![
                (
                    "trigger".to_string(),
                    asked.trigger.unwrap_or("").to_string(),
                ),
                ("source".to_string(), asked.source.unwrap_or("").to_string()),
                ("result".to_string(), result.to_string()),
            ])
            .inc();
    }

    /// Count a refusal and record its event (throttled); the response.
    pub fn refused(&self, asked: &Asked<'_>, refusal: Refusal) -> Response {
        self.count(asked, refusal.result);
        // Debug only: a flood would fill the log; the events are throttled.
        tracing::debug!(
            trigger = asked.requested,
            reason = refusal.reason,
            status = refusal.status.as_u16(),
            remote = ?asked.remote,
            "inbound request refused"
        );
        if let Some(count) = self.due(asked.trigger.unwrap_or(""), refusal.reason) {
            let requested: String = asked.requested.chars().take(128).collect();
            let event = NewEvent::new(
                "inbound.rejected",
                json!({
                    "trigger": requested,
                    "source": asked.source,
                    "reason": refusal.reason,
                    "status": refusal.status.as_u16(),
                    "remote": asked.remote.map(|r| r.to_string()),
                    "count": count,
                }),
            );
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.append_events(vec![event]).await {
                    tracing::warn!(error = %e, "could not record an inbound.rejected event");
                }
            });
        }
        refusal.response(asked.requested)
    }

    /// `Some(refusals)` when an event for this key is due now.
    fn due(&self, trigger: &str, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut throttle = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
        // Old keys go, so the table holds at most a second's worth.
        if throttle.len() > 1024 {
            throttle.retain(|_, (at, _)| now.duration_since(*at) < EVENT_EVERY);
        }
        match throttle.get_mut(&(trigger.to_string(), reason)) {
            Some((at, pending)) if now.duration_since(*at) < EVENT_EVERY => {
                *pending += 1;
                None
            }
            Some((at, pending)) => {
                let count = *pending + 1;
                *at = now;
                *pending = 0;
                Some(count)
            }
            None => {
                throttle.insert((trigger.to_string(), reason), (now, 0));
                Some(1)
            }
        }
    }
}
