//! How a failed connector call is classified ([`RunError`]): retryable for
//! 429, 5xx, timeouts and connection failures, with the peer's
//! `Retry-After` when it sent one; permanent for other 4xx, policy refusals
//! and configuration problems. Every message is scrubbed of the call's
//! secrets on the way out.

use std::time::Duration;

use serde_json::{Map, Value};

use super::secrets::Redactor;
use crate::run::RunError;

/// Error messages quote at most this much of a peer's reply.
pub(super) const BODY_SNIPPET: usize = 300;

/// `e` with the call's resolved secrets scrubbed from its message.
pub(super) fn redacted(e: RunError, redactor: &Redactor) -> RunError {
    e.map_message(|m| redactor.redact(&m))
}

/// The decision for a reply outside the expected statuses. `headers` are
/// the reply's (lower-case names), read for `Retry-After`.
pub(super) fn status_error(
    status: u16,
    what: &str,
    body: &str,
    headers: &Map<String, Value>,
) -> RunError {
    let snippet: String = body.chars().take(BODY_SNIPPET).collect();
    let message = format!("{what} returned HTTP {status}: {snippet}");
    if status == 429 || status >= 500 {
        RunError::Retryable {
            message,
            retry_after: headers
                .get("retry-after")
                .and_then(Value::as_str)
                .and_then(|v| retry_after(v, jiff::Timestamp::now())),
        }
    } else {
        RunError::Permanent(message)
    }
}

pub(super) fn reqwest_error(e: reqwest::Error, what: &str) -> RunError {
    // reqwest's Display includes the URL, which may carry a token (Telegram
    // puts it in the path); callers redact every error on the way out.
    let mut message = format!("{what} failed: {e}{}", causes(&e));
    if e.is_connect()
        && let Some(url) = e.url()
        && let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default())
    {
        message.push_str(&format!(" (is anything listening on {host}:{port}?)"));
    }
    if e.is_builder() {
        RunError::Permanent(message)
    } else {
        RunError::retryable(message)
    }
}

/// What reqwest's message leaves out ("error sending request for url"):
/// each cause under it, an I/O error by its kind ("connection refused"),
/// skipping what the text already says.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut seen = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() != std::io::ErrorKind::Other => io.kind().to_string(),
            _ => cause.to_string(),
        };
        if !text.is_empty() && !seen.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
            seen.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A `Retry-After` value (RFC 9110: delay-seconds or an HTTP-date) as the
/// wait from `now`; a date already past is no wait. `None` when it is
/// neither form.
pub fn retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = now.duration_until(at);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 01 Jan 2025 00:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Tue, 31 Dec 2024 23:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past is no wait"
        );
        for bad in ["", "soon", "-5", "1.5"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn only_a_retryable_status_carries_retry_after() {
        let h = headers(json!({"retry-after": "7"}));
        let busy = status_error(429, "GET /x", "slow down", &h);
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(busy.to_string(), "GET /x returned HTTP 429: slow down");
        let down = status_error(503, "GET /x", "", &h);
        assert_eq!(down.retry_after(), Some(Duration::from_secs(7)));
        let silent = status_error(502, "GET /x", "", &Map::new());
        assert!(silent.is_retryable() && silent.retry_after().is_none());
        let refused = status_error(404, "GET /x", "no", &h);
        assert_eq!(
            refused,
            RunError::Permanent("GET /x returned HTTP 404: no".into())
        );
    }

    #[tokio::test]
    async fn a_refused_connection_says_so_and_names_the_address() {
        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/v1/status"))
            .send()
            .await
            .unwrap_err();
        let error = reqwest_error(e, "GET self");
        assert!(matches!(error, RunError::Retryable { .. }), "{error:?}");
        let message = error.message();
        assert!(message.contains(": connection refused"), "{message}");
        assert!(
            message.ends_with(&format!("(is anything listening on 127.0.0.1:{port}?)")),
            "{message}"
        );
    }

    #[test]
    fn redaction_keeps_the_classification() {
        let redactor = Redactor::of(&["s3cr3t-value"]).unwrap();
        let e = RunError::Retryable {
            message: "token s3cr3t-value refused".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let out = redacted(e, &redactor);
        assert!(out.is_retryable() && out.retry_after() == Some(Duration::from_secs(3)));
        assert!(!out.message().contains("s3cr3t-value"), "{out}");
    }
}
