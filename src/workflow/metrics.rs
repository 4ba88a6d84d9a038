//! What workflow `metric` steps write: one gauge family, labelled by job,
//! metric name and the step's own labels.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Values set by workflow `metric` steps, labelled by job, metric name and
/// the step's own labels. Cheap to clone (shared series).
pub type WorkflowGauge = Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>;

/// Show `gauge` in `registry`.
pub fn register(registry: &mut Registry, gauge: &WorkflowGauge) {
    registry.register(
        "multijob_workflow_metric",
        "Values set by workflow metric steps, by job, metric name and the step's labels",
        gauge.clone(),
    );
}
