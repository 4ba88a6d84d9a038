//! The connector layer: every outbound call a run makes (the `http`,
//! `message`, `llm` and `agent` actions, a monitor's alert, a report's
//! delivery) goes through [`Connectors`]. It owns the providers (one file
//! per family: [`http`], [`message`], [`chat`]), egress policy
//! ([`egress`]), secrets by reference and their redaction ([`secrets`],
//! [`redact`]), rate limits ([`ratelimit`]), idempotent sending
//! ([`send_once`]), how a failure is classified ([`error`]) and its own
//! metrics ([`metrics`]). It may use `run` (the error classification),
//! `store` (send-once records), `spec` and `clock`; nothing above it.
//!
//! Per call it: looks the connector up in the applied snapshot, waits on the
//! connector's rate limiter, resolves its secrets, checks egress, sends, and
//! scrubs resolved secret values from whatever it returns, errors included.
//! Errors are [`RunError`]s: retryable for 429, 5xx, timeouts and connection
//! failures (with the peer's `Retry-After`), permanent for other 4xx, policy
//! refusals and configuration problems.

pub mod chat;
pub mod client;
pub mod egress;
pub mod error;
pub mod http;
pub mod mcp;
pub mod message;
pub mod metrics;
pub mod process;
pub mod ratelimit;
pub mod redact;
pub mod secrets;
pub mod send_once;

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use serde_json::{Map, Value};

use crate::otel;
use crate::run::RunError;
use crate::spec::model::{Connector, Provider};
use crate::spec::snapshot::Resource;

pub use chat::{ChatRequest, ChatResponse, ToolCall};
pub use http::{HttpRequest, HttpResponse};
pub use message::{Delivery, OutboundMessage};
use secrets::{Redactor, Secrets};
pub use send_once::send_once;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Entry {
    spec: Connector,
    limiter: Option<ratelimit::Limiter>,
}

/// The connectors of one applied revision. Cheap to rebuild per revision: the
/// HTTP client is shared and rate limiters outlive it (see [`ratelimit`]).
#[derive(Clone)]
pub struct Connectors {
    client: Result<client::SharedClient, client::BuildError>,
    entries: BTreeMap<String, Entry>,
    metrics: Option<metrics::ConnectorMetrics>,
}

/// One call's view of a connector: its spec, its base_url and freshly
/// resolved secrets.
struct Call<'a> {
    spec: &'a Connector,
    /// `base_url` with a leading `${env:NAME}` resolved (see
    /// [`secrets::resolve_base_url`]).
    base_url: Option<String>,
    secrets: Secrets,
}

impl Call<'_> {
    fn redactor(&self) -> &Redactor {
        self.secrets.redactor()
    }

    fn config_str(&self, key: &str) -> Option<String> {
        match self.spec.config.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn base_url(&self) -> Result<&str, RunError> {
        self.base_url.as_deref().ok_or_else(|| {
            RunError::Permanent(format!(
                "connector `{}` has no base_url; set one in its YAML",
                self.spec.id
            ))
        })
    }

    fn require_secret(&self, name: &str) -> Result<&str, RunError> {
        self.secrets.get(name).ok_or_else(|| {
            RunError::Permanent(format!(
                "connector `{}` needs secret `{name}`; add `secrets: {{{name}: ${{env:NAME}}}}` \
                 to its YAML",
                self.spec.id
            ))
        })
    }
}

impl Connectors {
    /// With the process's shared client (see [`client`]).
    pub fn new(connectors: &BTreeMap<String, Resource<Connector>>) -> Self {
        let entries = connectors
            .iter()
            .map(|(id, res)| {
                let limiter = res
                    .spec
                    .rate_limit
                    .as_ref()
                    .map(|l| ratelimit::shared(id, l));
                let entry = Entry {
                    spec: res.spec.clone(),
                    limiter,
                };
                (id.clone(), entry)
            })
            .collect();
        Connectors {
            client: client::shared(),
            entries,
            metrics: None,
        }
    }

    /// Count calls, tokens and rate-limit waits into the daemon's metrics.
    pub fn with_metrics(mut self, metrics: metrics::ConnectorMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The client to build a request with; an error when none could be
    /// built on this host (the cause is in the message).
    fn http_client(&self) -> Result<&reqwest::Client, RunError> {
        match &self.client {
            Ok(shared) => Ok(&shared.client),
            Err(why) => Err(RunError::retryable(why.to_string())),
        }
    }

    /// The client that sends `request`: an HTTPS request needs the system's
    /// CA certificates, which the client of this revision may lack; the
    /// process's client may have them by now.
    fn sender_for(&self, request: &reqwest::Request) -> Result<reqwest::Client, RunError> {
        let shared = self
            .client
            .as_ref()
            .map_err(|why| RunError::retryable(why.to_string()))?;
        if request.url().scheme() != "https" || shared.tls_unavailable.is_none() {
            return Ok(shared.client.clone());
        }
        match client::shared() {
            Ok(now) if now.tls_unavailable.is_none() => Ok(now.client),
            Ok(now) => Err(RunError::retryable(
                now.tls_unavailable
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            )),
            Err(why) => Err(RunError::retryable(why.to_string())),
        }
    }

    fn count(&self, connector: &str, status: &str) {
        if let Some(m) = &self.metrics {
            m.request(connector, status);
        }
    }

    fn count_tokens(&self, connector: &str, n: u64) {
        if let Some(m) = &self.metrics {
            m.tokens(connector, n);
        }
    }

    /// Looks the connector up, checks that its provider is one of
    /// `providers` (`None`: any provider will do), waits for its rate
    /// limit, resolves its secrets.
    async fn begin(&self, id: &str, providers: Option<&[Provider]>) -> Result<Call<'_>, RunError> {
        let entry = self.entries.get(id).ok_or_else(|| {
            RunError::Permanent(format!(
                "no connector `{id}` in the applied config; add it under connectors or fix the \
                 step's `connector`"
            ))
        })?;
        if let Some(providers) = providers
            && !providers.contains(&entry.spec.provider)
        {
            return Err(RunError::Permanent(format!(
                "connector `{id}` has provider {}, which cannot do this; use a connector with \
                 provider {}",
                provider_name(entry.spec.provider),
                providers
                    .iter()
                    .map(|p| provider_name(*p))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        if let Some(limiter) = &entry.limiter
            && limiter.acquire().await
            && let Some(m) = &self.metrics
        {
            m.limited(id);
        }
        let secrets =
            Secrets::resolve_all(&entry.spec).map_err(|e| RunError::Permanent(e.to_string()))?;
        let base_url = match &entry.spec.base_url {
            Some(url) => Some(
                secrets::resolve_base_url(id, url)
                    .map_err(|e| RunError::Permanent(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Call {
            spec: &entry.spec,
            base_url,
            secrets,
        })
    }

    /// Opens a session with MCP connector `id` of this revision (its rate
    /// limit is waited on once, here); see [`mcp::McpSession::open`].
    pub async fn open_mcp(
        &self,
        id: &str,
        revision: &str,
        data_dir: &std::path::Path,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<mcp::McpSession, mcp::McpError> {
        let call = self.begin(id, Some(&[Provider::Mcp])).await?;
        let session = mcp::McpSession::open(call.spec, revision, data_dir, cancel).await;
        self.count(id, if session.is_ok() { "ok" } else { "error" });
        session
    }

    /// Waits for MCP connector `id`'s rate limit before one `tools/call`
    /// of an agent; [`Connectors::mcp_called`] counts how it went.
    pub async fn mcp_permit(&self, id: &str) -> Result<(), RunError> {
        self.begin(id, Some(&[Provider::Mcp])).await.map(|_| ())
    }

    /// Counts one `tools/call` (a tool-level error is the server working).
    pub fn mcp_called(&self, id: &str, ok: bool) {
        self.count(id, if ok { "ok" } else { "error" });
    }

    /// Sends a prepared request and returns status, headers and the redacted
    /// body text. `what` names the call in errors.
    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
        timeout: Option<Duration>,
        what: &str,
        redactor: &Redactor,
    ) -> Result<(u16, Map<String, Value>, String), RunError> {
        let span = otel::child(
            what.to_string(),
            vec![KeyValue::new("multijob.request", what.to_string())],
        );
        let result = async {
            let mut builder = builder.timeout(timeout.unwrap_or(DEFAULT_TIMEOUT));
            // The run's trace goes on with the peer (W3C trace context).
            if let Some(traceparent) = otel::traceparent(&span) {
                builder = builder.header("traceparent", traceparent);
            }
            let (_, request) = builder.build_split();
            let request = request.map_err(|e| error::reqwest_error(e, what))?;
            let sender = self
                .sender_for(&request)
                .map_err(|e| RunError::retryable(format!("{what} failed: {e}")))?;
            let resp = sender
                .execute(request)
                .await
                .map_err(|e| error::reqwest_error(e, what))?;
            let status = resp.status().as_u16();
            let headers = header_map(resp.headers(), redactor);
            let text = resp
                .text()
                .await
                .map_err(|e| error::reqwest_error(e, what))?;
            Ok((status, headers, redactor.redact(&text)))
        }
        .await;
        let result = result.map_err(|e: RunError| error::redacted(e, redactor));
        let failed = match &result {
            Ok((status, ..)) if *status >= 500 => Some(format!("HTTP {status}")),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        otel::end(&span, failed.as_deref());
        result
    }

    /// POST a JSON body to a provider endpoint; any non-2xx reply is an error.
    async fn post_provider(
        &self,
        call: &Call<'_>,
        url: &str,
        builder: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, RunError> {
        let redactor = call.redactor();
        egress::check_resolved(url)
            .await
            .map_err(|e| error::redacted(e, redactor))?;
        let (status, headers, text) = self.send(builder, None, what, redactor).await?;
        if !(200..300).contains(&status) {
            return Err(error::status_error(status, what, &text, &headers));
        }
        Ok(parse_body(text, redactor))
    }
}

/// A redacted body as JSON when it parses, else as text. The parsed value
/// is redacted again: JSON may spell a secret with `\u` escapes its text
/// did not show.
fn parse_body(text: String, redactor: &Redactor) -> Value {
    match serde_json::from_str(&text) {
        Ok(mut value) => {
            redactor.redact_value(&mut value);
            value
        }
        Err(_) => Value::String(text),
    }
}

fn header_map(headers: &reqwest::header::HeaderMap, redactor: &Redactor) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        // A peer chooses header names too, so they may echo a secret.
        let name = redactor.redact(name.as_str());
        let value = redactor.redact(&String::from_utf8_lossy(value.as_bytes()));
        match out.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                out.insert(name, Value::String(value));
            }
        }
    }
    out
}

/// The provider as written in YAML (`openai`, `telegram`, ...).
fn provider_name(p: Provider) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}"))
}

/// A scalar JSON value as text (strings unquoted).
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
