//! One file per command: its arguments and a short `exec` that calls the
//! library. Nothing here decides what a config means. The CLI is the top
//! layer: it may use every module below it (the daemon for `run` and
//! `worker`, `reconcile` for `plan` and `validate`, the store's inbox for
//! `trigger` and `approvals`).

pub mod approvals;
pub mod backfill;
pub mod cancel;
pub mod check;
pub mod completions;
pub mod cron;
pub mod duration_arg;
mod follow;
pub mod git_args;
mod group_warnings;
pub mod help;
pub mod inbox_reply;
pub mod init;
pub mod job_ref;
pub mod logs;
pub mod memory;
pub mod migrate;
pub mod new;
pub mod new_ai;
pub mod parse;
pub mod pause;
pub mod plan;
pub mod progress;
pub mod quota;
pub mod run;
mod run_view;
pub mod runs;
pub mod schema;
pub mod server;
pub mod simulate;
mod simulate_view;
pub mod status;
pub mod store_access;
pub mod trigger;
pub mod validate;
mod wait;
pub mod why;
pub mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A declarative, GitOps-style job runner.
///
/// Keep jobs, flows (lanes), connectors and skills as YAML in a git repo:
/// `validate` checks them, `plan` shows what would change, `run` runs them.
#[derive(Debug, Parser)]
#[command(
    name = "multijob",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("MULTIJOB_BUILD_COMMIT"), ")"),
    about,
    long_about = None,
    after_help = "Getting started:\n  multijob init ops && cd ops     # jobs.d/, skills.d/, schemas/ with working examples\n  multijob validate               # file:line errors; exit 1 when invalid\n  multijob plan                   # what would change (--detailed-exitcode for CI)\n  multijob run                    # the daemon; dashboard on http://127.0.0.1:8080\n  multijob status                 # jobs, next fires, last results"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and check every file of a config directory.
    ///
    /// Reports every error and warning with file:line:column, kind and id.
    /// Exit code 0 when valid (warnings allowed), 1 when invalid.
    Validate(validate::Args),
    /// Dry run: diff the directory against what runs.
    ///
    /// Prints `N to create, N to update, N to delete, N unchanged`, a line per
    /// change with the changed fields, the next fire times of new or
    /// rescheduled jobs. With --detailed-exitcode: 0 no changes, 2 changes.
    Plan(plan::Args),
    /// The daemon: reconcile, watch, schedule, run jobs, serve the API and dashboard.
    ///
    /// Applies the directory on start, on file changes and on SIGHUP; a
    /// revision with any error is rejected and the last good one keeps
    /// running. Stops on SIGINT/SIGTERM.
    Run(run::Args),
    /// A worker-only process joining a Redis deployment.
    ///
    /// Claims runs from the deployment's ready stream and executes them;
    /// a worker that dies mid-run loses nothing: its runs are claimed by
    /// another worker once their lease expires.
    Worker(worker::Args),
    /// Move a Redis deployment's keys to this version's layout (a leader
    /// does it when it starts); --dry-run shows what it would do.
    Migrate(migrate::Args),
    /// Jobs, next fire times, last results, the revision: from a running
    /// daemon's API.
    Status(status::Args),
    /// Queue one run of a job now (the daemon picks it up within a second).
    Trigger(trigger::Args),
    /// List, approve or reject pending approvals.
    Approvals(approvals::Args),
    /// Recent runs, newest first: id, job, trigger, status, attempt,
    /// started, duration, error (filter by job, --status, --since).
    Runs(runs::Args),
    /// A run's record as a person reads it: steps, a command's stdout and
    /// stderr; --follow streams it until it ends and exits with its status.
    Logs(logs::Args),
    /// Cancel an unfinished run: queued ones end at once, a running one
    /// is stopped (a command's whole process group, a workflow at its step).
    ///
    /// RUN is a run id or its first 8+ characters. Who (--by, else
    /// $USER@host) and why (--reason) are kept in the run's record and its
    /// `run.cancelled` event. Exit 0 when the run ended cancelled (or the
    /// cancel waits for a daemon to read it), 1 when it had already ended.
    Cancel(cancel::Args),
    /// Skip a job's scheduled slots until `resume` (kept in the store, not in git).
    Pause(pause::PauseArgs),
    /// Let a paused job's slots run again.
    Resume(pause::ResumeArgs),
    /// Clear a job's failure memory and cooldown.
    Reset(pause::ResetArgs),
    /// Agent memory: tool signatures' failures and the avoid list (show, reset).
    Memory(memory::Args),
    /// Do the jobs' expectations hold? Exit 2 listing each broken one, 0
    /// when all hold, 1 on error: for a cron or a Kubernetes probe.
    ///
    /// An expectation is a job's `expect: {success_within: 2h}`. Judges each job's last success in the store (or --server's API)
    /// against this machine's clock, so a stuck or stopped daemon cannot
    /// hide a job that stopped succeeding.
    Check(check::Args),
    /// Queue one run per nominal slot of a job in a past window.
    ///
    /// Runs are keyed `job@slot` like scheduled ones: a slot that already
    /// ran is not run again, so running it twice queues nothing the second time.
    Backfill(backfill::Args),
    /// Print the JSON Schemas of the four kinds, or write them to a folder.
    ///
    /// Point editors at them with `# yaml-language-server: $schema=...`.
    Schema(schema::Args),
    /// Scaffold a config directory with working examples.
    Init(init::Args),
    /// Turn a sentence into jobs: YAML files under jobs.d/ for review,
    /// validated with the directory, and the plan of the change.
    ///
    /// Rule-based, Indonesian and English: monitor/pantau, laporan/report,
    /// backup, workflow; `tiap 30 detik`, `jam 7 malam`, `senin-jumat`,
    /// channels (tg, wa, email, slack) and `akun NAME`.
    New(new::Args),
    /// Print the shell completion script for bash, zsh or fish.
    Completions(completions::Args),
    /// Preview a cron expression: in words, its next fires in a zone and in
    /// UTC, and what the DST policy does in the next 12 months.
    ///
    /// Checks the expression as `validate` does; a bad one or an unknown
    /// zone exits 1 with the same message.
    Cron(cron::Args),
    /// Predict a period of the directory's jobs on a virtual clock, in seconds.
    ///
    /// Slots, dispatches and skips per job and reason, each lane's busiest
    /// hour and time full, the queue's peak and pressure time, and the
    /// smallest worker count with which no run waits for a worker.
    Simulate(simulate::Args),
    /// Explain a job's slots: the one nearest --at and its neighbours,
    /// each with the run it dispatched or the guard that skipped it and
    /// what that guard saw (a full lane's runs, a cooldown's end).
    Why(why::Args),
}

/// How a command's findings are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// `--dir`, shared by the commands that read a config directory.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArg {
    /// The config directory (holding jobs.d/ and skills.d/).
    #[arg(short = 'd', long, env = "MULTIJOB_DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// How a command ended, mapped to exit codes by `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the input is invalid (already reported).
    Failure,
    /// Exit 2: `plan --detailed-exitcode` found changes.
    Changes,
    /// Exit 2: `check` found broken expectations.
    Broken,
}

/// The embedded store's default place inside a config directory.
pub fn default_state(dir: &std::path::Path) -> PathBuf {
    dir.join(".multijob").join("state.db")
}

/// Start the process's log ([`crate::logging`]); a daemon command keeps
/// the returned guard until it returns, which writes out the last lines.
pub fn init_logging() -> LogFlush {
    crate::logging::init();
    LogFlush
}

/// Writes out the queued log lines when dropped.
pub struct LogFlush;

impl Drop for LogFlush {
    fn drop(&mut self) {
        crate::logging::flush();
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate(args) => validate::exec(args),
        Command::Plan(args) => plan::exec(args),
        Command::Run(args) => run::exec(args),
        Command::Worker(args) => worker::exec(args),
        Command::Migrate(args) => migrate::exec(args),
        Command::Schema(args) => schema::exec(args),
        Command::Status(args) => status::exec(args),
        Command::Trigger(args) => trigger::exec(args),
        Command::Approvals(args) => approvals::exec(args),
        Command::Runs(args) => runs::exec(args),
        Command::Logs(args) => logs::exec(args),
        Command::Cancel(args) => cancel::exec(args),
        Command::Pause(args) => pause::exec_pause(args),
        Command::Resume(args) => pause::exec_resume(args),
        Command::Reset(args) => pause::exec_reset(args),
        Command::Memory(args) => memory::exec(args),
        Command::Check(args) => check::exec(args),
        Command::Backfill(args) => backfill::exec(args),
        Command::Init(args) => init::exec(args),
        Command::New(args) => new::exec(args),
        Command::Completions(args) => completions::exec(args),
        Command::Cron(args) => cron::exec(args),
        Command::Simulate(args) => simulate::exec(args),
        Command::Why(args) => why::exec(args),
    }
}

/// The runtime of a long-running process (`run`, `worker`): `threads`
/// worker threads, or one per core. Where a process mostly hands work
/// between tasks over Redis connections, each hand-off to another thread
/// is a futex wake and a context switch: one thread measured fastest.
fn daemon_runtime(threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(usize::from(n.max(1)));
    }
    builder.enable_all().build()
}

/// How long a daemon's runtime waits, after the drain, for blocking
/// threads still at work before the process exits anyway.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a daemon's main future to its end, then shuts the runtime down
/// without waiting forever: dropping it would join every blocking thread,
/// and one stuck in IO (a hung network file system) would keep the
/// process alive past its grace. The store is flushed by then.
fn run_daemon<T>(
    runtime: tokio::runtime::Runtime,
    main: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let out = runtime.block_on(async {
        // Traces (MULTIJOB_OTLP_ENDPOINT): exported on this runtime, and
        // flushed when the daemon stops.
        let traces = crate::otel::init_from_env()?;
        let out = main.await;
        drop(traces);
        out
    });
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    out
}
