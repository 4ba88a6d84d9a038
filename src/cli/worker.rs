//! `multijob worker`: a worker-only process of a Redis deployment.

use std::path::PathBuf;
use std::time::Duration;

use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob worker --redis redis://db:6379/ --workers 20
  multijob worker --redis redis://db:6379/ --group gpu --group eu   # also runs jobs with worker_group: gpu or eu
  MULTIJOB_REDIS_URL=redis://db:6379/ multijob worker --allow-command

Environment: MULTIJOB_REDIS_URL, WORKER_CONCURRENCY, MULTIJOB_THREADS, MULTIJOB_FILES_MAX_WRITES,
  MULTIJOB_FILES_MAX_RUN_BYTES, MULTIJOB_FILES_MAX_DIR_BYTES; also read: RUST_LOG (log filter,
  default info), MULTIJOB_LOG=json (JSON log lines), MULTIJOB_LEASE_MS (run lease),
  MULTIJOB_OTLP_ENDPOINT (OTLP/HTTP collector base URL: traces on), the variables
  connectors' ${env:NAME} secrets name")]
pub struct Args {
    /// The deployment's Redis (redis://host:port/db). Job specs come from
    /// the snapshot the leader applied there: no config directory needed.
    #[arg(long, value_name = "URL", env = "MULTIJOB_REDIS_URL")]
    pub redis: String,
    /// Runs executed at once by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 5)]
    pub workers: usize,
    /// Where `files` steps, reports and backups write.
    #[arg(long, default_value = ".multijob/data")]
    pub data_dir: PathBuf,
    /// Allow `command` jobs and agents' `command` tool (argv, no shell,
    /// cleared environment).
    #[arg(long)]
    pub allow_command: bool,
    /// Seconds runs in flight get to finish on SIGTERM before they are
    /// interrupted (the leader queues them again).
    #[arg(long, value_name = "SEC", default_value_t = 30.0)]
    pub grace: f64,
    /// Threads of the async runtime: fetching, sending results, leases
    /// (commands and CPU-heavy steps have threads of their own). One is
    /// the fastest measured: cross-thread hand-offs cost more than a
    /// second thread gives.
    #[arg(long, env = "MULTIJOB_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub threads: u16,
    /// Also run the jobs whose `worker_group` is NAME (repeatable); runs
    /// of jobs without one are run either way. A job naming a group is run
    /// only by that group's workers.
    #[arg(long = "group", value_name = "NAME",
          value_parser = parse_group)]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub files: super::quota::FilesQuotaArgs,
}

pub(super) fn parse_group(name: &str) -> Result<String, String> {
    crate::store::workers::check_group(name).map(|()| name.to_string())
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    if args.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    if !(args.grace.is_finite() && args.grace >= 0.0) {
        anyhow::bail!(
            "--grace must be a number of seconds >= 0, not {}",
            args.grace
        );
    }
    let _log = super::init_logging();
    let runtime = super::daemon_runtime(Some(args.threads))?;
    let grace = Duration::try_from_secs_f64(args.grace).map_err(|_| {
        anyhow::anyhow!(
            "--grace must be a number of seconds >= 0, not {}",
            args.grace
        )
    })?;
    super::run_daemon(
        runtime,
        crate::daemon::run_worker(
            args.redis,
            args.workers,
            args.data_dir,
            args.allow_command,
            grace,
            args.files.limits(),
            dedup(args.groups),
        ),
    )?;
    Ok(Outcome::Success)
}

/// The groups in the order given, each once.
pub(super) fn dedup(groups: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}
