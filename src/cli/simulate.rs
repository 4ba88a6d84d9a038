//! `multijob simulate`: a day (or any period) of the directory's jobs on a
//! virtual clock, in seconds: slots, dispatches and skips per job, lanes,
//! the queue and pressure, and the smallest worker pool with no run
//! waiting for a worker. Each run takes its job's p95 duration from the
//! store's recent runs, else `--assume-ms`. `--jobs N` simulates a
//! synthetic set instead, as the seeds' load script did.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;
use serde_json::json;

use super::duration_arg::parse_duration;
use super::store_access::{StoreAccess, StoreArgs};
use super::{Outcome, OutputFormat};
use crate::calendar::schedule::Schedule;
use crate::calendar::slots::SlotRule;
use crate::schedule::simulate::{self, SimConfig, SimJob, SimReport};
use crate::spec::model::{Overlap, Priority};
use crate::store::paused::{PAUSED_KEY, paused_from};
use crate::store::runs::RunQuery;

use super::simulate_view as view;

/// Recent runs read for durations (newest first, all jobs).
const RECENT_RUNS: usize = 50_000;
/// A job's p95 is taken from at most this many of its recent runs.
const RUNS_PER_JOB: usize = 50;
/// The longest period one simulation covers.
const MAX_PERIOD: Duration = Duration::from_secs(31 * 86_400);
/// The most synthetic jobs.
const MAX_SYNTHETIC: usize = 1_000_000;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob simulate                          # the directory's jobs, the next 24 h, 5 workers
  multijob simulate --for 1h --workers 12 -o json
  multijob simulate --assume-ms 4000         # jobs without recent runs take 4 s
  multijob simulate --jobs 100 --interval 30s --work-ms 8000 --jitter 25s --for 90s

What it runs: the scheduler's slot math, admission guards, lane waits and
pressure hysteresis, and a pool of --workers where each run takes its
job's p95 duration (recent runs in the store) or --assume-ms. Assumed:
runs succeed (no retries, no new cooldowns), approvals are granted at
once, no triggered runs. Paused jobs (multijob pause) stay paused and
jobs cooling down after failures stay cooled down until their time.

Environment: MULTIJOB_DIR (--dir), MULTIJOB_REDIS_URL (--redis),
  WORKER_CONCURRENCY (--workers), SCHEDULER_PRESSURE_DEPTH_HIGH (--pressure-high),
  SCHEDULER_PRESSURE_DEPTH_LOW (--pressure-low)")]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// How long to simulate, from --from.
    #[arg(long = "for", value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub period: Duration,
    /// Where the period starts (RFC 3339) [default: now].
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<Timestamp>,
    #[command(flatten)]
    pub capacity: Capacity,
    /// The duration of a run of a job with no recent runs in the store.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub assume_ms: u64,
    /// Simulate N synthetic jobs instead of the directory's (with --interval, --work-ms, --jitter).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_SYNTHETIC as u64))]
    pub jobs: Option<u64>,
    /// Synthetic jobs: every this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "jobs")]
    pub interval: Duration,
    /// Synthetic jobs: each run's work.
    #[arg(long, value_name = "MS", default_value_t = 8000, requires = "jobs")]
    pub work_ms: u64,
    /// Synthetic jobs: spread over this much jitter (`jitter_sec`).
    #[arg(long, value_parser = parse_duration, requires = "jobs")]
    pub jitter: Option<Duration>,
    /// Jobs listed in the text report (most skipped first).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The daemon's settings a simulation runs with (`multijob run`'s flags
/// and variables), shared with `why`.
#[derive(Debug, Clone, clap::Args)]
pub struct Capacity {
    /// Workers, as `multijob run --workers`.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub workers: u64,
    /// Runs waiting at which pressure mode turns on, as `multijob run`.
    #[arg(long, env = "SCHEDULER_PRESSURE_DEPTH_HIGH", default_value_t = 300)]
    pub pressure_high: usize,
    /// Runs waiting at which pressure mode turns off again.
    #[arg(long, env = "SCHEDULER_PRESSURE_DEPTH_LOW", default_value_t = 180)]
    pub pressure_low: usize,
}

fn parse_instant(text: &str) -> Result<Timestamp, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not an RFC 3339 instant such as 2027-03-01T00:00:00Z"))
}

/// The jobs and lanes to simulate, and where each duration came from.
pub(crate) struct Fleet {
    pub jobs: Vec<SimJob>,
    pub lanes: BTreeMap<String, Option<u32>>,
    /// Jobs whose duration is their recent runs' p95.
    pub from_store: usize,
    pub assumed: usize,
    /// `--work-ms` of a synthetic set.
    pub synthetic_ms: Option<u64>,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    if args.period > MAX_PERIOD {
        anyhow::bail!(
            "--for {:?} is longer than 31 days: simulate a shorter period",
            args.period
        );
    }
    let fleet = match args.jobs {
        Some(n) => synthetic(&args, n as usize)?,
        None => match directory_fleet(&args)? {
            Some(f) => f,
            None => return Ok(Outcome::Failure),
        },
    };
    let from = args.from.unwrap_or_else(Timestamp::now);
    let to = from
        .checked_add(jiff::SignedDuration::try_from(args.period)?)
        .context("the period ends past the last representable time")?;
    let config = SimConfig {
        from,
        to,
        workers: Some(args.capacity.workers as usize),
        pressure_high: args.capacity.pressure_high,
        pressure_low: args.capacity.pressure_low,
        trace: None,
        active: Vec::new(),
    };
    if args.output == OutputFormat::Text && fleet.jobs.len() >= 1000 {
        eprintln!(
            "simulating {} jobs for {}...",
            fleet.jobs.len(),
            view::period(args.period)
        );
    }
    let started = Instant::now();
    let (at_n, unlimited) = run_both(&fleet, &config);
    let took = started.elapsed();
    let durations = match fleet.synthetic_ms {
        Some(ms) => format!("every run takes {ms} ms (--work-ms)"),
        None => format!(
            "{} jobs from their recent runs (p95), {} assumed {} ms (--assume-ms)",
            fleet.from_store, fleet.assumed, args.assume_ms
        ),
    };
    let result = Simulated {
        report: at_n,
        unlimited,
        took,
        from_store: fleet.from_store,
        assumed: fleet.assumed,
        assume_ms: args.assume_ms,
        durations,
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&result.json())?),
        OutputFormat::Text => print!("{}", view::text(&result, args.period, args.top)),
    }
    Ok(Outcome::Success)
}

/// The simulation at the asked worker count and with unlimited workers
/// (for the recommendation), on two threads.
fn run_both(fleet: &Fleet, config: &SimConfig) -> (SimReport, SimReport) {
    let unlimited_config = SimConfig {
        workers: None,
        ..config.clone()
    };
    std::thread::scope(|s| {
        let other =
            s.spawn(|| simulate::simulate(fleet.jobs.clone(), &fleet.lanes, &unlimited_config));
        let at_n = simulate::simulate(fleet.jobs.clone(), &fleet.lanes, config);
        let unlimited = match other.join() {
            Ok(r) => r,
            Err(_) => simulate::simulate(fleet.jobs.clone(), &fleet.lanes, &unlimited_config),
        };
        (at_n, unlimited)
    })
}

/// What `simulate` prints, from both runs.
pub(crate) struct Simulated {
    pub report: SimReport,
    pub unlimited: SimReport,
    pub took: Duration,
    pub from_store: usize,
    pub assumed: usize,
    pub assume_ms: u64,
    /// Where the durations came from, in words.
    pub durations: String,
}

impl Simulated {
    /// The smallest pool with which no run waits for a worker: the most
    /// runs running at once when workers are unlimited.
    pub fn recommended_workers(&self) -> usize {
        self.unlimited.queue.peak_running.max(1)
    }

    /// Skips the worker count caused: those beyond what unlimited workers
    /// would see, per reason.
    pub fn worker_caused(&self) -> BTreeMap<&'static str, u64> {
        self.report
            .skipped
            .iter()
            .filter_map(|(reason, n)| {
                let base = self.unlimited.skipped.get(reason).copied().unwrap_or(0);
                (*n > base).then(|| (*reason, n - base))
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "report": self.report,
            "recommended_workers": self.recommended_workers(),
            "worker_caused_skips": self.worker_caused(),
            "durations": {"from_store_p95": self.from_store, "assumed": self.assumed, "assume_ms": self.assume_ms},
            "assumptions": ASSUMPTIONS,
            "took_ms": self.took.as_secs_f64() * 1000.0,
        })
    }
}

pub(crate) const ASSUMPTIONS: [&str; 4] = [
    "runs succeed: no retries and no new cooldowns",
    "approvals are granted at once",
    "no triggered, follow-up or backfill runs",
    "no tick cap (SCHEDULER_MAX_DISPATCH_PER_TICK unset)",
];

/// The directory's scheduled jobs, durations from the store when there
/// is one; `None` when the directory is invalid (reported).
fn directory_fleet(args: &Args) -> anyhow::Result<Option<Fleet>> {
    let loaded = crate::reconcile::load(&args.store.dir)?.loaded;
    if loaded.has_errors() {
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            eprintln!("{d}");
        }
        eprintln!(
            "simulate: the directory is invalid ({} errors); run `multijob validate` for details",
            loaded.error_count()
        );
        return Ok(None);
    }
    let history = store_history(&args.store)?;
    let assume = Duration::from_millis(args.assume_ms);
    let (mut jobs, lanes) = simulate::from_snapshot(&loaded.snapshot, |job| {
        history
            .p95
            .get(&job.id)
            .copied()
            .unwrap_or(assume)
            .min(Duration::from_millis(job.timeout_ms.max(1)))
    });
    for job in &mut jobs {
        job.paused = history.paused.contains(&job.id);
        job.cooldown_until = history.cooldowns.get(&job.id).map(|c| c.0);
    }
    let from_store = jobs
        .iter()
        .filter(|j| history.p95.contains_key(&j.id))
        .count();
    Ok(Some(Fleet {
        assumed: jobs.len() - from_store,
        from_store,
        synthetic_ms: None,
        jobs,
        lanes,
    }))
}

/// What the store knows that the simulation uses.
#[derive(Default)]
pub(crate) struct History {
    pub p95: HashMap<String, Duration>,
    pub paused: std::collections::HashSet<String>,
    /// Jobs cooling down now: until when, after how many failures.
    pub cooldowns: HashMap<String, (Timestamp, u32)>,
}

/// Each job's p95 run duration over its recent finished runs, and the
/// paused jobs; nothing when there is no store yet.
fn store_history(args: &StoreArgs) -> anyhow::Result<History> {
    if args.redis.is_none() && !args.state_path().exists() {
        return Ok(History::default());
    }
    history_of(&StoreAccess::open(args)?)
}

/// [`store_history`] from an open store.
pub(crate) fn history_of(store: &StoreAccess) -> anyhow::Result<History> {
    let runs = store.runs(RunQuery {
        job_id: None,
        status: None,
        limit: RECENT_RUNS,
        before: None,
    })?;
    let mut by_job: HashMap<String, Vec<u64>> = HashMap::new();
    for (_, run) in runs {
        if let (Some(ms), Some(_)) = (run.duration_ms, &run.finished_at) {
            let durations = by_job.entry(run.job_id).or_default();
            if durations.len() < RUNS_PER_JOB {
                durations.push(ms);
            }
        }
    }
    let p95 = by_job
        .into_iter()
        .map(|(job, mut ms)| {
            ms.sort_unstable();
            let i = ((ms.len() as f64 * 0.95).ceil() as usize).clamp(1, ms.len()) - 1;
            (job, Duration::from_millis(ms[i].max(1)))
        })
        .collect();
    let paused = paused_from(store.kv_get(PAUSED_KEY)?)?
        .into_keys()
        .collect();
    let cooldowns = store
        .failure_states()?
        .into_iter()
        .filter_map(|(job, f)| {
            let until: Timestamp = f.cooldown_until?.parse().ok()?;
            Some((job, (until, f.consecutive_failures)))
        })
        .collect();
    Ok(History {
        p95,
        paused,
        cooldowns,
    })
}

/// `--jobs N`: `sim-00001`... every `--interval` with `--jitter`, each
/// run `--work-ms` long, overlap forbid, no lane.
fn synthetic(args: &Args, n: usize) -> anyhow::Result<Fleet> {
    let width = n.to_string().len().max(5);
    let schedule = Schedule {
        interval_sec: Some(args.interval.as_secs().max(1)),
        jitter_sec: args.jitter.map(|j| j.as_secs()),
        ..Schedule::default()
    };
    let jobs = (1..=n)
        .map(|i| {
            let id = format!("sim-{i:0width$}");
            let rule = SlotRule::compile(&schedule, &id)
                .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.message))?;
            Ok(SimJob {
                id,
                rule,
                overlap: Overlap::Forbid,
                priority: Priority::Normal,
                lane: None,
                duration: Duration::from_millis(args.work_ms.max(1)),
                paused: false,
                cooldown_until: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Fleet {
        assumed: 0,
        from_store: 0,
        synthetic_ms: Some(args.work_ms),
        jobs,
        lanes: BTreeMap::new(),
    })
}
