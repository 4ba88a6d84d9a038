//! `multijob run`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::{self, DaemonOptions};
use crate::listener;
use crate::schedule::scheduler::SchedulerConfig;

use super::{DirArg, Outcome};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob run -d ops                    # embedded store; dashboard on http://127.0.0.1:8080
  multijob run --redis redis://db:6379/ --listen 0.0.0.0:8080   # one replica of several
  multijob run --inbound-listen 0.0.0.0:8443   # also take signed POST /hooks/<trigger>
  multijob run -d /var/lib/multijob --git https://github.com/acme/jobs.git --branch prod \\
      --git-path ops --git-interval 60s    # fetch and reconcile each new commit
  multijob run --git https://github.com/acme/jobs.git --git-interval 1h --inbound-listen 0.0.0.0:8443
      # a GitHub push to a `kind: Trigger` with `action: sync` fetches at once
  MULTIJOB_OTLP_ENDPOINT=http://localhost:4318 multijob run -d ops   # export traces

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL, MULTIJOB_GIT_URL, MULTIJOB_GIT_KEY, MULTIJOB_INBOUND_LISTEN,
  MULTIJOB_INBOUND_BEHIND_PROXY, MULTIJOB_MAX_CONNECTIONS, MULTIJOB_HEADER_TIMEOUT,
  MULTIJOB_IDLE_TIMEOUT, MULTIJOB_ALLOW_HOSTS, WORKER_CONCURRENCY, MULTIJOB_THREADS,
  SCHEDULER_MAX_DISPATCH_PER_TICK, SCHEDULER_PRESSURE_DEPTH_HIGH, SCHEDULER_PRESSURE_DEPTH_LOW,
  MULTIJOB_FILES_MAX_WRITES, MULTIJOB_FILES_MAX_RUN_BYTES, MULTIJOB_FILES_MAX_DIR_BYTES;
  also read: MULTIJOB_API_TOKEN (bearer token the API requires), RUST_LOG (log filter,
  default info), MULTIJOB_LOG=json (JSON log lines), MULTIJOB_SSE_KEEPALIVE_MS,
  MULTIJOB_SSE_STALL_MS, MULTIJOB_LEASE_MS and MULTIJOB_LEADER_TTL_MS (with --redis),
  MULTIJOB_TZ (the zone of a Telegram bridge's /new drafts), MULTIJOB_BRIDGE_DRAFT_TTL_SEC
  (how long a /new draft waits for /apply, default 600; for tests and operators),
  MULTIJOB_OTLP_ENDPOINT (an OTLP/HTTP collector's base URL, e.g. http://localhost:4318:
  one trace per run, spans POSTed to <endpoint>/v1/traces; off when unset), the
  variables connectors' ${env:NAME} secrets name")]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub git: Box<super::git_args::GitArgs>,
    /// How often --git fetches (SIGHUP, or a GitHub push to an `action:
    /// sync` trigger on --inbound-listen, fetches at once).
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = super::duration_arg::parse_duration, requires = "url")]
    pub git_interval: Duration,
    /// The embedded store [default: DIR/.multijob/state.db]. One daemon at
    /// a time holds it (a lock on STATE.lock, taken after the API's address
    /// is bound); a second one exits 1 naming the first.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Join a Redis deployment instead (redis://host:port/db): every
    /// replica serves the API and works; one, elected, reconciles and
    /// schedules. Add worker-only processes with `multijob worker`.
    #[arg(long, value_name = "URL", env = "MULTIJOB_REDIS_URL")]
    pub redis: Option<String>,
    /// With --redis: this replica's workers also run the jobs whose
    /// `worker_group` is NAME (repeatable), as `multijob worker --group`
    /// does. Without --redis the daemon's own pool runs every group.
    #[arg(long = "group", value_name = "NAME", value_parser = super::worker::parse_group)]
    pub groups: Vec<String>,
    /// Where `files` steps, reports and backups write [default: DIR/.multijob/data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the status API and dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Also listen here for inbound hooks (`POST /hooks/<trigger>`, signed
    /// requests that start a `kind: Trigger`'s job or skill), apart from
    /// the read-only API; the API's connection cap and timeouts apply
    /// [default: off].
    #[arg(long, value_name = "ADDR", env = "MULTIJOB_INBOUND_LISTEN")]
    pub inbound_listen: Option<SocketAddr>,
    /// The inbound listener is behind a reverse proxy: the public URL a
    /// sender signed (Twilio) is built from X-Forwarded-Proto and
    /// X-Forwarded-Host. Without it, http://<Host><path>; never set it on a
    /// listener clients reach directly (they could name any URL).
    #[arg(
        long,
        env = "MULTIJOB_INBOUND_BEHIND_PROXY",
        requires = "inbound_listen"
    )]
    pub inbound_behind_proxy: bool,
    /// Connections the API keeps open at once; at the cap, a new one
    /// closes the longest-waiting connection that is not inside a request
    /// (503 if all are) [default: 3/4 of the open-files limit, keeping at
    /// least 256 descriptors for the store, the watcher and outbound calls;
    /// at most 4096; with --inbound-listen, both listeners share that room,
    /// each capped alike].
    #[arg(long, value_name = "N", env = "MULTIJOB_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(2..))]
    pub max_connections: Option<u32>,
    /// Seconds a client has to send a complete request head, from
    /// connecting or from the first byte of its next request (a real client
    /// needs milliseconds; a slow or stuck one holds a descriptor).
    #[arg(long, value_name = "SEC", env = "MULTIJOB_HEADER_TIMEOUT",
          default_value_t = crate::listener::DEFAULT_HEADER_TIMEOUT.as_secs_f64())]
    pub header_timeout: f64,
    /// Seconds a kept-alive API connection may wait for its next request
    /// (event streams are not idle: they stay open).
    #[arg(long, value_name = "SEC", env = "MULTIJOB_IDLE_TIMEOUT",
          default_value_t = crate::listener::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    pub idle_timeout: f64,
    /// Also answer API requests whose Host is NAME (repeatable; comma-separated
    /// in the variable; * for any). IP addresses and localhost are always
    /// answered; other names are refused, so a web page cannot read the API
    /// through DNS rebinding.
    #[arg(
        long = "allow-host",
        value_name = "NAME",
        env = "MULTIJOB_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    pub allow_hosts: Vec<String>,
    /// Runs executed at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 5)]
    pub workers: usize,
    /// Do not watch the directory; reload only on SIGHUP.
    #[arg(long)]
    pub no_watch: bool,
    /// Poll the directory every SEC seconds instead of using inotify (for
    /// file systems without change events).
    #[arg(long, value_name = "SEC")]
    pub watch_poll: Option<f64>,
    /// Allow `command` jobs and agents' `command` tool (argv, no shell,
    /// cleared environment).
    #[arg(long)]
    pub allow_command: bool,
    /// Seconds runs in flight get to finish on SIGTERM before they are
    /// interrupted (they run again after the restart).
    #[arg(long, value_name = "SEC", default_value_t = 30.0)]
    pub grace: f64,
    /// Threads of the async runtime: scheduling, store writes, dispatch,
    /// the status API (commands and CPU-heavy steps have threads of their
    /// own) [default: one per core; 1 with `--workers 0`]. A replica that
    /// only schedules and serves is fastest on one thread (cross-thread
    /// hand-offs cost more than they give); one that also executes runs
    /// needs more to keep its scheduler on time while runs finish.
    #[arg(long, env = "MULTIJOB_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub threads: Option<u16>,
    /// Finished runs kept per job.
    #[arg(long, default_value_t = 1000)]
    pub keep_runs: usize,
    /// Days of events kept.
    #[arg(long, default_value_t = 7)]
    pub keep_events_days: u64,
    /// Most slots dispatched per scheduler tick; the rest wait for the next
    /// tick, earliest due first (a slot whose successor is due meanwhile is
    /// skipped, `tick_limit`). No cap unless set.
    #[arg(long, env = "SCHEDULER_MAX_DISPATCH_PER_TICK")]
    pub max_dispatch_per_tick: Option<usize>,
    /// Runs waiting to start at which pressure mode turns on (only
    /// `critical` jobs dispatch).
    #[arg(long, env = "SCHEDULER_PRESSURE_DEPTH_HIGH", default_value_t = 300)]
    pub pressure_high: usize,
    /// Runs waiting to start at which pressure mode turns off again.
    #[arg(long, env = "SCHEDULER_PRESSURE_DEPTH_LOW", default_value_t = 180)]
    pub pressure_low: usize,
    #[command(flatten)]
    pub files: super::quota::FilesQuotaArgs,
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(s) {
        Ok(d) => Ok(d),
        Err(_) => anyhow::bail!("{name} must be a number of seconds >= 0, not {s}"),
    }
}

fn positive_seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => anyhow::bail!("{name} must be a number of seconds > 0, not {s}"),
    }
}

/// The API listener's settings from the flags and the open-files limit.
fn api_listener(args: &Args) -> anyhow::Result<listener::Config> {
    let hosts = listener::HostPolicy::new(&args.allow_hosts).map_err(anyhow::Error::msg)?;
    let mut config = listener::Config::with_defaults(hosts);
    config.timeouts = listener::Timeouts {
        header: positive_seconds("--header-timeout", args.header_timeout)?,
        idle: positive_seconds("--idle-timeout", args.idle_timeout)?,
    };
    if args.inbound_listen.is_some() {
        // Both listeners share the descriptors the default leaves to sockets.
        config.max_connections = listener::default_max_connections_each(2);
    }
    if let Some(n) = args.max_connections {
        let n = n as usize;
        if let Some(nofile) = listener::nofile_limit()
            && n as u64 + listener::limits::FD_RESERVE_MIN > nofile
        {
            eprintln!(
                "warning: --max-connections {n} leaves fewer than {} of the {nofile} open files for the rest of the daemon; expect \"Too many open files\" under load (raise ulimit -n or lower --max-connections)",
                listener::limits::FD_RESERVE_MIN
            );
        }
        config.max_connections = n;
    }
    Ok(config)
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let api = api_listener(&args)?;
    let dir = args.dir.dir;
    let state = args.state.unwrap_or_else(|| super::default_state(&dir));
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| dir.join(".multijob").join("data"));
    let watch_poll = match args.watch_poll {
        Some(s) if s > 0.0 && Duration::try_from_secs_f64(s).is_ok() => {
            Some(Duration::from_secs_f64(s))
        }
        Some(s) => anyhow::bail!("--watch-poll must be a positive number of seconds, not {s}"),
        None => None,
    };
    // A Redis replica may only schedule and serve, leaving the work to
    // worker processes; alone, a daemon without workers would run nothing.
    if args.workers == 0 && args.redis.is_none() {
        anyhow::bail!("--workers must be at least 1 (0 is allowed only with --redis)");
    }
    if !args.groups.is_empty() && args.redis.is_none() {
        anyhow::bail!(
            "--group needs --redis: without it the daemon's own pool runs every worker group"
        );
    }
    if args.max_dispatch_per_tick == Some(0) {
        anyhow::bail!("SCHEDULER_MAX_DISPATCH_PER_TICK must be at least 1");
    }
    let git = args.git.options(args.git_interval)?;
    // With --git the config is the live checkout (DIR only places the
    // store and the data dir): the watcher, the API's plan and the
    // reconciler all read through the `current` symlink.
    let dir = match &git {
        Some(g) => crate::reconcile::pull::Puller::config_dir_in(&data_dir, &g.subdir),
        None => dir,
    };
    let opts = DaemonOptions {
        dir,
        state,
        data_dir,
        listen: args.listen,
        api,
        watch: !args.no_watch,
        watch_poll,
        api_token: std::env::var("MULTIJOB_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        workers: args.workers,
        allow_command: args.allow_command,
        grace: seconds("--grace", args.grace)?,
        keep_runs: args.keep_runs.max(1),
        keep_events_days: args.keep_events_days,
        scheduler: SchedulerConfig {
            max_dispatch_per_tick: args.max_dispatch_per_tick,
            ..SchedulerConfig::default()
        },
        pressure_high: args.pressure_high,
        pressure_low: args.pressure_low.min(args.pressure_high),
        redis: args.redis,
        groups: super::worker::dedup(args.groups),
        git,
        files: args.files.limits(),
        inbound: args
            .inbound_listen
            .map(|listen| daemon::inbound::InboundOptions {
                listen,
                behind_proxy: args.inbound_behind_proxy,
            }),
    };
    let _log = super::init_logging();
    let threads = match (args.threads, args.workers) {
        (Some(n), _) => Some(n),
        (None, 0) => Some(1),
        (None, _) => None,
    };
    let runtime = super::daemon_runtime(threads)?;
    super::run_daemon(runtime, daemon::run(opts))?;
    Ok(Outcome::Success)
}
