//! `GET /api/v1/events` with `Accept: text/event-stream`: the event timeline
//! as Server-Sent Events.
//!
//! Each event goes out as `id: <id>`, `event: <type>`, `data: <event JSON>`.
//! The resume point is `Last-Event-ID`, else `?after=`, else "from now".
//! [`Feed`] makes delivery exact (no gap, no repeat, also across a lag); this
//! file adds the per-client plumbing: a task pumps the feed into a bounded
//! channel the response body drains, so a slow client costs at most
//! `buffer` events of memory, and one whose buffer stays full for `stall`
//! is dropped instead of buffered forever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::api::ApiError;
use crate::listener::Connection;
use crate::status::state::Shared;
use crate::store::EventQuery;
use crate::store::feed::{Feed, Item};

/// Per-connection knobs (env overrides are for tests and odd proxies).
#[derive(Debug, Clone, Copy)]
pub struct SseConfig {
    /// A `: keep-alive` comment after this much silence
    /// (`MULTIJOB_SSE_KEEPALIVE_MS`, default 15 s).
    pub keep_alive: Duration,
    /// Events buffered per client.
    pub buffer: usize,
    /// How long a full buffer is tolerated before the client is dropped
    /// (`MULTIJOB_SSE_STALL_MS`, default 30 s).
    pub stall: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            keep_alive: Duration::from_secs(15),
            buffer: 256,
            stall: Duration::from_secs(30),
        }
    }
}

impl SseConfig {
    pub fn from_env() -> SseConfig {
        let ms = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
        };
        let d = SseConfig::default();
        SseConfig {
            keep_alive: ms("MULTIJOB_SSE_KEEPALIVE_MS").unwrap_or(d.keep_alive),
            stall: ms("MULTIJOB_SSE_STALL_MS").unwrap_or(d.stall),
            ..d
        }
    }
}

/// The client asked for a stream rather than a JSON page.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Open a stream. `after` is `?after=`; `filter` carries `type` and `job`.
/// The stream holds its `connection` for as long as it is open, within
/// the streams' share of the listener's connections.
pub async fn stream(
    shared: Arc<Shared>,
    connection: Option<Connection>,
    headers: &HeaderMap,
    after: Option<i64>,
    filter: EventQuery,
) -> Result<Response, ApiError> {
    if let Some(Err(full)) = connection.map(|c| c.begin_stream()) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event streams are open ({} at most: all but an eighth of --max-connections, so probes and API calls always get in); close one or retry later",
                full.max
            ),
        ));
    }
    let resume = match headers.get("last-event-id") {
        None => after,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID must be an event id (an integer)",
                    )
                })?,
        ),
    };
    let config = SseConfig::from_env();
    let feed = Feed::subscribe(shared.store.clone(), resume, filter).await?;
    let (tx, rx) = mpsc::channel(config.buffer);
    tokio::spawn(pump(feed, tx, config.stall, shared.shutdown.clone()));
    let keep_alive = KeepAlive::new()
        .interval(config.keep_alive)
        .text("keep-alive");
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(keep_alive)
        .into_response())
}

/// Move feed items into the client's channel until the client goes, stops
/// reading for `stall`, or the daemon stops.
async fn pump(
    mut feed: Feed,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
    stall: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
            next = feed.next() => next,
        };
        let item = match next {
            Ok(Some(item)) => item,
            Ok(None) => return,
            Err(e) => {
                // The client reconnects with Last-Event-ID and loses nothing.
                tracing::warn!(error = %e, "event stream: store unreadable; closing the stream");
                return;
            }
        };
        if let Item::Lagged { resume_after } = &item {
            tracing::info!(
                resume_after,
                "event stream: client fell behind; resuming it from the store"
            );
        }
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = tx.send_timeout(Ok(sse_event(&item)), stall) => sent,
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::info!(
                    stall_ms = stall.as_millis() as u64,
                    "event stream: client stopped reading; disconnecting it"
                );
                return;
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
        }
    }
}

fn sse_event(item: &Item) -> SseEvent {
    match item {
        Item::Event(e) => SseEvent::default()
            .id(e.id.to_string())
            .event(&e.event_type)
            .data(serde_json::to_string(&**e).unwrap_or_default()),
        Item::Lagged { resume_after } => SseEvent::default()
            .event("lagged")
            .data(json!({ "resume_after": resume_after }).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewEvent, Store};

    #[test]
    fn accept_header_selects_the_stream() {
        let mut h = HeaderMap::new();
        assert!(!wants_stream(&h));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_stream(&h));
        h.insert(
            header::ACCEPT,
            "application/json;q=0.5, Text/Event-Stream;q=1"
                .parse()
                .unwrap(),
        );
        assert!(wants_stream(&h));
    }

    #[test]
    fn events_are_framed_with_id_type_and_json() {
        let e = crate::store::Event {
            id: 7,
            event_type: "run.queued".into(),
            at: "2025-01-01T00:00:00.000Z".into(),
            job_id: Some("a".into()),
            run_id: None,
            data: json!({"trigger": "manual"}),
        };
        let bytes = axum::body::to_bytes(
            Sse::new(tokio_stream::iter([Ok::<_, Infallible>(sse_event(
                &Item::Event(std::sync::Arc::new(e.clone())),
            ))]))
            .into_response()
            .into_body(),
            1 << 16,
        );
        let text = body_text(bytes);
        assert_eq!(
            text,
            format!(
                "id: 7\nevent: run.queued\ndata: {}\n\n",
                serde_json::to_string(&e).unwrap()
            )
        );
    }

    fn body_text(
        f: impl std::future::Future<Output = Result<axum::body::Bytes, axum::Error>>,
    ) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        String::from_utf8(rt.block_on(f).expect("body").to_vec()).expect("utf8")
    }

    /// A client that never reads is dropped once its buffer stays full.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_disconnected() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open_sqlite(&dir.path().join("state.db")).expect("open");
        let events = (0..10)
            .map(|i| NewEvent::new("run.queued", json!({"i": i})))
            .collect();
        store.append_events(events).await.expect("append");
        let feed = Feed::subscribe(store.clone(), Some(0), EventQuery::default())
            .await
            .expect("feed");
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(pump(
            feed,
            tx,
            Duration::from_millis(100),
            CancellationToken::new(),
        ));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the pump gave up on the stalled client")
            .expect("pump");
        // Only the bounded buffer was ever held.
        let mut held = 0;
        while rx.try_recv().is_ok() {
            held += 1;
        }
        assert_eq!(held, 4);
    }
}
