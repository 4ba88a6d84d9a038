//! `monitor.channel`: health-check connectors, record each one's state as a
//! metric, and alert through a message connector when a check fails.
//!
//! Inputs: `connector` or `connectors` (ids; default: every connector of the
//! applied revision except the alert's), `check_path` (default `/`),
//! `alert_connector` (a message connector), `alert_to`. A connector is up
//! when its base_url answers with a status below 500 within `timeout_ms`
//! (default 5000). The run fails when any check fails, so failure memory
//! and retries apply; the alert is sent once per run.

use std::time::Instant;

use serde_json::{Value, json};

use super::RunContext;
use crate::connectors::{Connectors, HttpRequest, OutboundMessage};
use crate::run::{RunError, RunResult};
use crate::spec::model::Job;
use crate::workflow::metrics::WorkflowGauge;

fn ids(inputs: &Value, applied: &crate::store::Applied, alert: Option<&str>) -> Vec<String> {
    if let Some(one) = inputs.get("connector").and_then(Value::as_str) {
        return vec![one.to_string()];
    }
    if let Some(list) = inputs.get("connectors").and_then(Value::as_array) {
        return list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    applied
        .snapshot
        .connectors
        .keys()
        .filter(|id| Some(id.as_str()) != alert)
        .cloned()
        .collect()
}

/// One connector's health check.
struct Check {
    status: Option<u16>,
    latency_ms: u64,
    /// Why it is down; `None` when it is up.
    error: Option<String>,
}

/// GET `path` on the connector's base_url; up below status 500.
async fn check(connectors: &Connectors, id: &str, path: &str, timeout_ms: u64) -> Check {
    let started = Instant::now();
    let req = HttpRequest {
        method: "GET".into(),
        path: Some(path.to_string()),
        expect_status: Some(json!("100-499")),
        timeout_ms: Some(timeout_ms),
        ..HttpRequest::default()
    };
    let result = connectors.http(Some(id), req, &[]).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(r) => Check {
            status: Some(r.status),
            latency_ms,
            error: None,
        },
        Err(e) => Check {
            status: None,
            latency_ms,
            error: Some(e.to_string()),
        },
    }
}

impl Check {
    /// `connector_up` and `connector_check_ms` of `connector` for `job`.
    fn record(&self, gauge: &WorkflowGauge, job: &str, connector: &str) {
        let labels = |name: &str| {
            vec![
                ("job".to_string(), job.to_string()),
                ("name".to_string(), name.to_string()),
                ("connector".to_string(), connector.to_string()),
            ]
        };
        gauge
            .get_or_create(&labels("connector_up"))
            .set(if self.error.is_none() { 1.0 } else { 0.0 });
        gauge
            .get_or_create(&labels("connector_check_ms"))
            .set(self.latency_ms as f64);
    }
}

pub async fn run(
    job: &Job,
    ctx: &RunContext,
    connectors: &Connectors,
    metrics: Option<&WorkflowGauge>,
) -> RunResult {
    let (Some(store), Some(applied)) = (&ctx.store, &ctx.applied) else {
        return Err(RunError::Permanent(
            "monitor.channel needs the store; this run has none".into(),
        ));
    };
    let alert = ctx.inputs.get("alert_connector").and_then(Value::as_str);
    let targets = ids(&ctx.inputs, applied, alert);
    if targets.is_empty() {
        return Err(RunError::Permanent(
            "monitor.channel: no connector to check (set inputs.connector or add connectors)"
                .into(),
        ));
    }
    let path = ctx
        .inputs
        .get("check_path")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let timeout_ms = ctx
        .inputs
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .unwrap_or(5000);
    let mut checks = Vec::new();
    let mut down = Vec::new();
    for id in &targets {
        let check = check(connectors, id, &path, timeout_ms).await;
        if let Some(gauge) = metrics {
            check.record(gauge, &job.id, id);
        }
        if let Some(error) = &check.error {
            down.push(format!("{id}: {error}"));
        }
        checks.push(json!({"connector": id, "ok": check.error.is_none(), "status": check.status, "latency_ms": check.latency_ms, "error": check.error}));
    }
    if down.is_empty() {
        return Ok(json!({"checks": checks, "down": 0}));
    }
    if let Some(alert) = alert {
        let key = format!("{}:alert", ctx.run_id);
        let msg = OutboundMessage {
            text: format!("[{}] {} down:\n{}", job.id, down.len(), down.join("\n")),
            to: ctx
                .inputs
                .get("alert_to")
                .and_then(Value::as_str)
                .map(str::to_string),
            subject: Some(format!("{}: {} connector(s) down", job.id, down.len())),
            idempotency_key: key.clone(),
        };
        crate::connectors::send_once(store, connectors, alert, &format!("monitor:{key}"), msg)
            .await
            .map_err(|e| RunError::retryable(format!("alert via {alert}: {e}")))?;
    }
    Err(RunError::retryable(format!(
        "{} of {} connectors down: {}",
        down.len(),
        targets.len(),
        down.join("; ")
    )))
}
