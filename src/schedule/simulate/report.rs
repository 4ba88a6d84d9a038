//! What a simulation found: per job, per lane, the queue, and the traced
//! job's slots.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub from: Timestamp,
    pub to: Timestamp,
    /// `None`: unlimited.
    pub workers: Option<usize>,
    pub slots: u64,
    pub dispatched: u64,
    /// Skipped slots by reason (`overlap`, `flow_limit`, ...).
    pub skipped: BTreeMap<&'static str, u64>,
    pub jobs: Vec<JobReport>,
    pub lanes: Vec<LaneReport>,
    pub queue: QueueReport,
    /// Every slot of the traced job, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<TracedSlot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub id: String,
    pub slots: u64,
    pub dispatched: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    /// The duration each run was given.
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LaneReport {
    pub id: String,
    pub max_active_runs: Option<u32>,
    pub runs_started: u64,
    /// How long the lane was at its limit, in all.
    pub full_seconds: f64,
    /// The clock hour (UTC) the lane was full the longest, then started most.
    pub busiest_hour: Option<BusyHour>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BusyHour {
    pub start: Timestamp,
    pub runs_started: u64,
    pub full_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueReport {
    /// Most runs waiting for a worker at once, and when.
    pub peak_waiting: usize,
    pub peak_waiting_at: Option<Timestamp>,
    /// Most runs running at once.
    pub peak_running: usize,
    pub pressure_seconds: f64,
    pub pressure_turned_on: u64,
    /// How long runs waited for a worker: the longest and the mean.
    pub max_wait_ms: f64,
    pub mean_wait_ms: f64,
}

/// One slot of the traced job and what decided it.
#[derive(Debug, Clone, Serialize)]
pub struct TracedSlot {
    pub nominal: Timestamp,
    pub fire_at: Timestamp,
    /// `dispatched`, `buffered` or `skipped`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The job's runs active when it was decided.
    pub active_runs: usize,
    /// Runs waiting for a worker then (pressure's measure).
    pub waiting: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<LaneSeen>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<Timestamp>,
}

/// A lane as a traced slot saw it.
#[derive(Debug, Clone, Serialize)]
pub struct LaneSeen {
    pub id: String,
    pub active: usize,
    pub max: Option<u32>,
    /// The jobs of the runs holding it (at most 5).
    pub held_by: Vec<String>,
}
