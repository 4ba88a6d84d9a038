//! The export path: a bounded batch queue in front of the OTLP/HTTP
//! protobuf exporter, sent with our reqwest client on the daemon's runtime.
//! A span that finds the queue full, or whose batch the collector did not
//! take, is dropped and counted: a slow or dead collector never holds up a
//! run.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::Context;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::ids::RunIds;

/// Spans waiting for export at most; past it new spans are dropped.
pub const QUEUE: usize = 2048;
/// How long one export may take before its batch counts as dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a batch is sent when the queue is not full.
const EVERY: Duration = Duration::from_millis(500);

/// `multijob_trace_spans_dropped_total`.
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Set once tracing is on.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (`MULTIJOB_OTLP_ENDPOINT` set and taken).
pub fn exporting() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Spans dropped since start: the queue was full or the collector failed.
pub fn dropped_spans() -> u64 {
    DROPPED.get()
}

/// Add `multijob_trace_spans_dropped_total` to `/metrics` when tracing is
/// on (only what exists is registered).
pub fn register(registry: &mut Registry) {
    if ENABLED.load(Ordering::Relaxed) {
        registry.register(
            "multijob_trace_spans_dropped",
            "spans not exported: the export queue was full or the collector did not take them",
            DROPPED.clone(),
        );
    }
}

/// `MULTIJOB_OTLP_ENDPOINT` is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error(
    "{var}={value:?}: {why}; set it to the collector's base URL, e.g. http://localhost:4318 \
     (spans go to <endpoint>/v1/traces), or unset it to turn tracing off"
)]
pub struct EnvError {
    var: &'static str,
    value: String,
    why: String,
}

/// Flushes and stops the exporter when dropped (at shutdown).
pub struct Guard {
    provider: SdkTracerProvider,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
        }
    }
}

/// Turn tracing on when `MULTIJOB_OTLP_ENDPOINT` is set: `Ok(None)` when it
/// is not. Call it on the daemon's tokio runtime: exports run on it.
pub fn init_from_env() -> Result<Option<Guard>, EnvError> {
    let var = super::ENDPOINT_ENV;
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().trim().to_string();
    if value.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| EnvError {
        var,
        value: value.clone(),
        why,
    };
    let base = reqwest::Url::parse(&value).map_err(|e| bad(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https".into()));
    }
    let url = format!("{}/v1/traces", value.trim_end_matches('/'));
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| bad("tracing must start on the daemon's runtime".into()))?;
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .user_agent(concat!("multijob/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| bad(format!("no HTTP client for the exporter: {e}")))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OnRuntime { client, runtime })
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let pending = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        pending: pending.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(512)
            .with_scheduled_delay(EVERY)
            .build(),
    )
    .build();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(RunIds::default())
        .with_resource(Resource::builder().with_service_name("multijob").build())
        .with_span_processor(Bounded {
            inner: batch,
            pending,
        })
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(endpoint = %value, "traces are exported over OTLP/HTTP");
    Ok(Some(Guard { provider }))
}

/// The exporter's HTTP client: our reqwest, run on the daemon's runtime
/// (the batch processor exports from its own thread, outside it).
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let reply = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = reply.status();
            let body = reply.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = task.await??;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        Ok(response)
    }
}

/// Drops (and counts) a span when [`QUEUE`] spans already wait, so the
/// batch processor's own queue never overflows silently.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            DROPPED.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
}

/// Counts what leaves the queue, and what the collector did not take.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(n, Ordering::Relaxed);
        if let Err(e) = &result {
            let before = DROPPED.inc_by(n as u64);
            if before == 0 {
                tracing::warn!(error = %e, spans = n, "the trace collector did not take a batch; \
                    spans are dropped (counted in multijob_trace_spans_dropped_total) until it does");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
