//! A job's `schedule:` block as written: when it fires, in which zone,
//! what happens to missed slots and to wall times a DST change skips or
//! repeats. Pure data; `spec::model` re-exports it as part of a job.

use serde::{Deserialize, Serialize};

/// When a job fires. Exactly one of `interval_sec`, `every`, `cron` is set
/// (checked by validation, which names the offending key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_sec: Option<u64>,
    /// A duration such as `30s`, `5m`, `1h30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// 5 fields, or 6 with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA zone name; `None` means UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_sec: Option<u64>,
    #[serde(default)]
    pub misfire: Misfire,
    #[serde(default = "default_catchup_window_sec")]
    pub catchup_window_sec: u64,
    #[serde(default = "default_max_catchup_runs")]
    pub max_catchup_runs: u32,
    #[serde(default)]
    pub dst: DstPolicy,
    /// RFC 3339 instant; slots before it do not fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// RFC 3339 instant; slots after it do not fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
}

impl Default for Schedule {
    /// The same defaults a YAML `schedule:` block gets.
    fn default() -> Self {
        Schedule {
            interval_sec: None,
            every: None,
            cron: None,
            timezone: None,
            jitter_sec: None,
            misfire: Misfire::default(),
            catchup_window_sec: default_catchup_window_sec(),
            max_catchup_runs: default_max_catchup_runs(),
            dst: DstPolicy::default(),
            start_at: None,
            end_at: None,
        }
    }
}

pub fn default_catchup_window_sec() -> u64 {
    86_400
}

pub fn default_max_catchup_runs() -> u32 {
    10
}

/// What to do with slots missed while the daemon was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    #[default]
    RunOnce,
    Skip,
    RunAll,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DstPolicy {
    #[serde(default)]
    pub gap: DstGap,
    #[serde(default)]
    pub overlap: DstOverlap,
}

/// A wall time that a spring-forward transition skips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DstGap {
    /// Run at the first instant after the gap.
    #[default]
    Shift,
    Skip,
}

/// A wall time that a fall-back transition repeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DstOverlap {
    #[default]
    First,
    Last,
    Both,
}
