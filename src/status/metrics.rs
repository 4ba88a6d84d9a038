//! `GET /metrics`: Prometheus metrics (OpenMetrics text), no global registry.
//!
//! Counters and histograms follow the committed event timeline: one task
//! reads an exact [`Feed`] from daemon start (caught up from the store by id
//! if it ever lags), so a count equals the number of matching events this
//! process committed. Gauges are read from [`Shared`] at scrape time, so
//! they are never stale.
//!
//! Only what exists is registered: connector requests, LLM tokens and rate
//! limits get their metrics with their features.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

use crate::connectors::metrics::ConnectorMetrics;
use crate::spec::model::Kind;
use crate::status::state::Shared;
use crate::store::Event;
use crate::store::feed::{Feed, Item};
use crate::workflow::metrics::WorkflowGauge;

/// `multijob_inbound_requests_total{trigger,source,result}`: what the
/// inbound listener counts into.
pub type InboundRequests = Family<Vec<(String, String)>, Counter>;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobReasonLabels {
    job: String,
    reason: String,
}

/// The `reason`s of a `follow_up.refused` event: the limit that refused.
const FOLLOW_UP_REFUSALS: [&str; 3] = ["chain_depth", "per_run", "per_job"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    scope: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The terminal statuses `multijob_runs_total` counts, and their events.
const RUN_OUTCOMES: [(&str, &str); 4] = [
    ("run.completed", "succeeded"),
    ("run.failed", "failed"),
    ("run.timed_out", "timed_out"),
    ("run.cancelled", "cancelled"),
];

const SKIPPED_PREFIX: &str = "scheduler.dispatch_skipped_";

/// The registry and every metric in it; one per daemon, held by [`Shared`].
pub struct Metrics {
    registry: Registry,
    runs_total: Family<RunLabels, Counter>,
    run_duration: Histogram,
    lateness: Histogram,
    dispatch_skipped: Family<ReasonLabels, Counter>,
    follow_ups_refused: Family<JobReasonLabels, Counter>,
    reconcile: Family<ResultLabels, Counter>,
    queue_depth: Gauge,
    runs_running: Gauge,
    resources: Family<KindLabels, Gauge>,
    pressure_mode: Gauge,
    workers_busy: Gauge,
    workers_total: Gauge,
    workflow: WorkflowGauge,
    budget_remaining: Family<BudgetLabels, Gauge>,
    connectors: ConnectorMetrics,
    listener: crate::listener::Stats,
    inbound_requests: InboundRequests,
    inbound_listener: crate::listener::Stats,
    /// `run --git` fetches by result (`ok`, `error`, `unchanged`).
    pub git_fetches: crate::reconcile::pull::FetchCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            runs_total: Family::default(),
            // 5 ms .. ~1 h: noop runs to long workflows.
            run_duration: Histogram::new([
                0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            // 1 ms .. 5 min: a healthy scheduler stays in the first buckets.
            lateness: Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            dispatch_skipped: Family::default(),
            follow_ups_refused: Family::default(),
            reconcile: Family::default(),
            queue_depth: Gauge::default(),
            runs_running: Gauge::default(),
            resources: Family::default(),
            pressure_mode: Gauge::default(),
            workers_busy: Gauge::default(),
            workers_total: Gauge::default(),
            workflow: Family::default(),
            budget_remaining: Family::default(),
            connectors: ConnectorMetrics::default(),
            listener: crate::listener::Stats::default(),
            inbound_requests: Family::default(),
            inbound_listener: crate::listener::Stats::default(),
            git_fetches: Family::default(),
        };
        let mut registry = Registry::default();
        m.register_own(&mut registry);
        crate::workflow::metrics::register(&mut registry, &m.workflow);
        crate::workflow::variants::register(&mut registry);
        crate::run::expectation::register(&mut registry);
        crate::otel::register(&mut registry);
        m.connectors.register(&mut registry);
        m.register_listener(&mut registry);
        Metrics { registry, ..m }
    }

    /// The metrics this module counts itself: runs, lateness, skips,
    /// refusals, reconciles and the gauges read at scrape time.
    fn register_own(&self, registry: &mut Registry) {
        // Counter names get `_total` from the encoder.
        registry.register(
            "multijob_runs",
            "Runs that reached a final status, by job and status",
            self.runs_total.clone(),
        );
        registry.register_with_unit(
            "multijob_run_duration",
            "Duration of succeeded runs",
            Unit::Seconds,
            self.run_duration.clone(),
        );
        registry.register(
            "multijob_queue_depth",
            "Runs waiting to start (queued, not yet claimed)",
            self.queue_depth.clone(),
        );
        registry.register_with_unit(
            "multijob_schedule_lateness",
            "Time from a slot's fire time to its run being queued",
            Unit::Seconds,
            self.lateness.clone(),
        );
        registry.register(
            "multijob_dispatch_skipped",
            "Schedule slots skipped, by reason",
            self.dispatch_skipped.clone(),
        );
        registry.register(
            "multijob_follow_ups_refused",
            "schedule_job follow-ups refused, by the scheduling job and the limit that refused them \
             (chain_depth, per_run: limits.follow_ups, per_job: the target's limits.queued_follow_ups)",
            self.follow_ups_refused.clone(),
        );
        registry.register(
            "multijob_git_fetch",
            "run --git fetches by result (ok: a new commit, unchanged, error)",
            self.git_fetches.clone(),
        );
        registry.register(
            "multijob_reconcile",
            "Reconciles by result (applied or rejected)",
            self.reconcile.clone(),
        );
        registry.register(
            "multijob_budget_remaining",
            "What is left today of each daily budget (budgets: on a job or flow), by scope (job:<id>, flow:<id>) and kind (messages_per_day, http_calls_per_day, llm_tokens_per_day); read from the scheduler's view",
            self.budget_remaining.clone(),
        );
        registry.register(
            "multijob_resources",
            "Resources in the applied revision, by kind",
            self.resources.clone(),
        );
        // Read from the queue and the pool at scrape time (see `render`).
        for (name, help, gauge) in [
            (
                "multijob_pressure_mode",
                "1 while pressure mode is on (only critical jobs dispatch)",
                &self.pressure_mode,
            ),
            (
                "multijob_workers_busy",
                "Workers running a run",
                &self.workers_busy,
            ),
            (
                "multijob_workers_total",
                "Workers in the pool",
                &self.workers_total,
            ),
            (
                "multijob_runs_running",
                "Runs running now",
                &self.runs_running,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
    }

    /// The listeners' connection counts and the inbound requests.
    fn register_listener(&self, registry: &mut Registry) {
        registry.register(
            "multijob_api_connections",
            "Connections open to the status API",
            self.listener.open.clone(),
        );
        registry.register(
            "multijob_api_connections_dropped",
            "API connections the server closed or refused, by reason (evicted: closed to make room at --max-connections; refused: 503, every connection busy; header_timeout; idle_timeout)",
            self.listener.dropped.clone(),
        );
        registry.register(
            "multijob_inbound_requests",
            "Requests to the inbound listener (POST /hooks/<trigger>), by trigger, source and result (accepted, duplicate, unauthorized, too_large, rate_limited, not_found, invalid, error); unknown triggers count under trigger=\"\"",
            self.inbound_requests.clone(),
        );
        registry.register(
            "multijob_inbound_connections",
            "Connections open to the inbound listener (--inbound-listen)",
            self.inbound_listener.open.clone(),
        );
        registry.register(
            "multijob_inbound_connections_dropped",
            "Inbound listener connections the server closed or refused, by reason (as multijob_api_connections_dropped)",
            self.inbound_listener.dropped.clone(),
        );
    }

    /// What the API listener counts into.
    pub fn listener_stats(&self) -> crate::listener::Stats {
        self.listener.clone()
    }

    /// What the inbound listener counts into.
    pub fn inbound_requests(&self) -> InboundRequests {
        self.inbound_requests.clone()
    }

    /// What the inbound listener's connections count into.
    pub fn inbound_listener_stats(&self) -> crate::listener::Stats {
        self.inbound_listener.clone()
    }

    /// The families the connector layer counts into.
    pub fn connector_metrics(&self) -> ConnectorMetrics {
        self.connectors.clone()
    }

    /// Where the scheduler reports slots decided ahead of their fire time,
    /// whose lateness is known only when they become ready (their
    /// `run.queued` event carries `ahead_ms`, not `late_ms`).
    pub fn lateness_observer(&self) -> Box<dyn Fn(u64) + Send + Sync> {
        let histogram = self.lateness.clone();
        Box::new(move |us| histogram.observe(us as f64 / 1_000_000.0))
    }

    /// The family workflow `metric` steps write to.
    pub fn workflow_gauge(&self) -> WorkflowGauge {
        self.workflow.clone()
    }

    /// Count one committed event.
    pub fn observe(&self, e: &Event) {
        let job = || e.job_id.clone().unwrap_or_default();
        if let Some((_, status)) = RUN_OUTCOMES.iter().find(|(t, _)| *t == e.event_type) {
            // A timed-out attempt that will be retried is not an outcome.
            if e.event_type == "run.timed_out" && e.data["retrying"] == true {
                return;
            }
            self.runs_total
                .get_or_create(&RunLabels {
                    job: job(),
                    status: status.to_string(),
                })
                .inc();
            if e.event_type == "run.completed"
                && let Some(ms) = e.data["duration_ms"].as_f64()
            {
                self.run_duration.observe(ms / 1000.0);
            }
            return;
        }
        if let Some(suffix) = e.event_type.strip_prefix(SKIPPED_PREFIX) {
            let reason = e.data["reason"].as_str().unwrap_or(suffix).to_string();
            // Older missed slots are summarised in one event with a count.
            let n = e.data["count"].as_u64().unwrap_or(1);
            self.dispatch_skipped
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
            return;
        }
        match e.event_type.as_str() {
            "run.queued" => {
                if let Some(ms) = e.data["late_ms"].as_f64() {
                    self.lateness.observe(ms.max(0.0) / 1000.0);
                }
            }
            "follow_up.refused" => {
                let reason = e.data["reason"].as_str().unwrap_or("unknown").to_string();
                self.follow_ups_refused
                    .get_or_create(&JobReasonLabels { job: job(), reason })
                    .inc();
            }
            "reconcile.applied" | "reconcile.rejected" => {
                let result = e.event_type.trim_start_matches("reconcile.").to_string();
                self.reconcile.get_or_create(&ResultLabels { result }).inc();
            }
            "job.deleted" => {
                // A deleted job's series go with it (a run still in flight
                // brings its series back when it finishes).
                for (_, status) in RUN_OUTCOMES {
                    self.runs_total.remove(&RunLabels {
                        job: job(),
                        status: status.to_string(),
                    });
                }
                for reason in FOLLOW_UP_REFUSALS {
                    self.follow_ups_refused.remove(&JobReasonLabels {
                        job: job(),
                        reason: reason.to_string(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Read the gauges from `shared`, then encode everything.
    pub fn render(&self, shared: &Shared) -> String {
        {
            let view = shared.queue.view();
            self.queue_depth.set(view.waiting() as i64);
            self.runs_running.set(view.running() as i64);
            self.pressure_mode.set(i64::from(view.pressure()));
        }
        let (busy, total) = shared.workers();
        self.workers_busy.set(busy as i64);
        self.workers_total.set(total as i64);
        let applied = shared.applied.load();
        let s = &applied.snapshot;
        for kind in Kind::ALL {
            let n = s.count(kind);
            self.resources
                .get_or_create(&KindLabels {
                    kind: kind.as_str().to_ascii_lowercase(),
                })
                .set(n as i64);
        }
        self.budget_remaining.clear();
        for (_, uses) in shared.budgets.all() {
            for u in uses {
                let labels = BudgetLabels {
                    scope: u.scope.clone(),
                    kind: u.field.to_string(),
                };
                self.budget_remaining
                    .get_or_create(&labels)
                    .set(i64::try_from(u.remaining()).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

/// Feed every committed event into `shared.metrics` until `cancel`.
/// `feed` must be subscribed before the daemon commits anything it should
/// count.
pub async fn follow(shared: Arc<Shared>, mut feed: Feed, cancel: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = feed.next() => next,
        };
        match next {
            Ok(Some(Item::Event(e))) => shared.metrics.observe(&e),
            Ok(Some(Item::Lagged { resume_after })) => {
                tracing::info!(
                    resume_after,
                    "metrics fell behind the event feed; counting from the store"
                );
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: store unreadable; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

pub async fn handler(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.metrics.render(&shared);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn event(event_type: &str, job: Option<&str>, data: Value) -> Event {
        Event {
            id: 1,
            event_type: event_type.into(),
            at: "2025-01-01T00:00:00.000Z".into(),
            job_id: job.map(str::to_string),
            run_id: None,
            data,
        }
    }

    fn encoded(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).expect("encode");
        out
    }

    #[test]
    fn events_become_counts() {
        let m = Metrics::new();
        m.observe(&event(
            "run.completed",
            Some("a"),
            json!({"duration_ms": 1500}),
        ));
        m.observe(&event("run.failed", Some("a"), json!({})));
        m.observe(&event(
            "run.timed_out",
            Some("b"),
            json!({"retrying": true}),
        ));
        m.observe(&event(
            "run.timed_out",
            Some("b"),
            json!({"retrying": false}),
        ));
        m.observe(&event(
            "scheduler.dispatch_skipped_overlap",
            Some("a"),
            json!({"reason": "overlap"}),
        ));
        m.observe(&event(
            "scheduler.dispatch_skipped_missed",
            Some("a"),
            json!({"count": 5}),
        ));
        m.observe(&event("reconcile.applied", None, json!({})));
        m.observe(&event("reconcile.rejected", None, json!({})));
        m.observe(&event("run.queued", Some("a"), json!({"late_ms": 3.5})));
        for reason in ["per_run", "per_job", "per_job"] {
            m.observe(&event(
                "follow_up.refused",
                Some("storm"),
                json!({"reason": reason, "target": "storm", "limit": 100}),
            ));
        }
        let text = encoded(&m);
        for line in [
            r#"multijob_runs_total{job="a",status="succeeded"} 1"#,
            r#"multijob_runs_total{job="a",status="failed"} 1"#,
            r#"multijob_runs_total{job="b",status="timed_out"} 1"#,
            r#"multijob_dispatch_skipped_total{reason="overlap"} 1"#,
            r#"multijob_dispatch_skipped_total{reason="missed"} 5"#,
            r#"multijob_reconcile_total{result="applied"} 1"#,
            r#"multijob_reconcile_total{result="rejected"} 1"#,
            "multijob_run_duration_seconds_sum 1.5",
            "multijob_run_duration_seconds_count 1",
            r#"multijob_schedule_lateness_seconds_bucket{le="0.005"} 1"#,
            r#"multijob_follow_ups_refused_total{job="storm",reason="per_run"} 1"#,
            r#"multijob_follow_ups_refused_total{job="storm",reason="per_job"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_deleted_job_loses_its_series() {
        let m = Metrics::new();
        m.observe(&event("run.completed", Some("gone"), json!({})));
        m.observe(&event("run.failed", Some("gone"), json!({})));
        m.observe(&event("run.completed", Some("kept"), json!({})));
        m.observe(&event(
            "follow_up.refused",
            Some("gone"),
            json!({"reason": "per_run"}),
        ));
        m.observe(&event("job.deleted", Some("gone"), json!({})));
        let text = encoded(&m);
        assert!(!text.contains(r#"job="gone""#), "{text}");
        assert!(text.contains(r#"job="kept""#), "{text}");
    }
}
