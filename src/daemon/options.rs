//! What `multijob run` parsed: everything the daemon is assembled from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::queue::QueueConfig;
use crate::schedule::scheduler::SchedulerConfig;

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The API listener's limits and allowed hosts.
    pub api: crate::listener::Config,
    /// Watch the directory for changes (off: reload on SIGHUP only).
    pub watch: bool,
    /// Poll instead of inotify, at this interval.
    pub watch_poll: Option<Duration>,
    pub api_token: Option<String>,
    pub workers: usize,
    pub allow_command: bool,
    /// Time in-flight runs get to finish on SIGTERM.
    pub grace: Duration,
    pub keep_runs: usize,
    pub keep_events_days: u64,
    pub scheduler: SchedulerConfig,
    pub pressure_high: usize,
    pub pressure_low: usize,
    /// A Redis deployment's URL (the embedded store otherwise).
    pub redis: Option<String>,
    /// The worker groups this replica's own workers serve besides
    /// ungrouped runs (`run --redis URL --group NAME`).
    pub groups: Vec<String>,
    /// The inbound listener (`--inbound-listen`), off when `None`.
    pub inbound: Option<super::inbound::InboundOptions>,
    /// What `files` steps may write, per run and in the data dir.
    pub files: crate::workflow::files::FilesLimits,
    /// `--git URL …`: fetch the config from a repository into `data_dir/git/`.
    pub git: Option<crate::reconcile::pull::GitOptions>,
}

impl DaemonOptions {
    /// The run queue's settings: pressure thresholds and history kept, as
    /// the flags say; the owner and dispatch as the process shape needs.
    pub(super) fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            pressure_high: self.pressure_high,
            pressure_low: self.pressure_low,
            keep_runs: self.keep_runs,
            ..QueueConfig::default()
        }
    }
}
