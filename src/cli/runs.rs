//! `multijob runs [JOB]`: recent runs, newest first, as a table or as
//! their records in JSON, filtered by job, status and age.

use std::time::Duration;

use super::duration_arg::parse_duration;
use super::run_view::{duration, first_line, run_duration};
use super::store_access::{StoreAccess, StoreArgs};
use super::{Outcome, OutputFormat};
use crate::store::runs::{Run, RunQuery, RunStatus};

/// Most runs one call lists.
const MAX_LIMIT: usize = 10_000;
/// Runs read per page while looking back for `--since`.
const PAGE: usize = 500;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  multijob runs                            # the 20 newest runs\n  multijob runs nightly-backup --status failed --since 1d -o json\n\nEnvironment: MULTIJOB_DIR, MULTIJOB_REDIS_URL, COLUMNS (table width)"
)]
pub struct Args {
    /// Only runs of this job.
    pub job: Option<String>,
    /// Only runs with this status (queued, awaiting_approval, running,
    /// succeeded, failed, timed_out, cancelled, retrying).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<RunStatus>,
    /// Only runs queued within this long (30s, 5m, 2h, 1d).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub since: Option<Duration>,
    /// Most runs to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=MAX_LIMIT as i64))]
    pub limit: u32,
    /// `json`: the run records, newest first.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn parse_status(text: &str) -> Result<RunStatus, String> {
    RunStatus::parse(text.trim()).ok_or_else(|| {
        let valid: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status \"{text}\": use one of {}", valid.join(", "))
    })
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let store = StoreAccess::open(&args.store)?;
    let since = match args.since {
        Some(age) => Some(
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::try_from(age)?)
                .map_err(|e| anyhow::anyhow!("--since reaches too far back: {e}"))?,
        ),
        None => None,
    };
    let runs = list(&store, &args, since)?;
    if runs.is_empty()
        && let Some(job) = &args.job
    {
        check_job_known(&store, job)?;
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
        OutputFormat::Text => print_table(&runs),
    }
    Ok(Outcome::Success)
}

/// Pages back from the newest run until `limit` are found or a run is
/// older than `since` (runs are listed in the order they were queued).
fn list(
    store: &StoreAccess,
    args: &Args,
    since: Option<jiff::Timestamp>,
) -> anyhow::Result<Vec<Run>> {
    let limit = args.limit as usize;
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store.runs(RunQuery {
            job_id: args.job.clone(),
            status: args.status,
            limit: if since.is_some() { PAGE } else { limit },
            before,
        })?;
        let full = page.len() >= if since.is_some() { PAGE } else { limit };
        before = page.last().map(|(seq, _)| *seq);
        for (_, run) in page {
            if let Some(since) = since
                && run
                    .queued_at
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t < since)
            {
                return Ok(out);
            }
            out.push(run);
            if out.len() >= limit {
                return Ok(out);
            }
        }
        if !full || since.is_none() {
            return Ok(out);
        }
    }
}

/// A job with no runs must at least exist, or the empty list misleads.
fn check_job_known(store: &StoreAccess, job: &str) -> anyhow::Result<()> {
    let applied = store.applied()?;
    // A skill's derived job (`skill:<id>`) is known too.
    if applied.snapshot.runnable_job(job).is_some() {
        return Ok(());
    }
    let hint = crate::spec::suggest::hint(job, applied.snapshot.jobs.keys().map(String::as_str));
    anyhow::bail!(
        "no job `{job}` in the applied revision of {} and no runs of it{hint}: `multijob status` lists the jobs",
        store.describe()
    )
}

fn print_table(runs: &[Run]) {
    if runs.is_empty() {
        println!("no runs");
        return;
    }
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(160);
    let now = jiff::Timestamp::now();
    let job_w = runs
        .iter()
        .map(|r| r.job_id.chars().count())
        .max()
        .unwrap_or(3)
        .clamp(3, 32);
    println!(
        "{:<36}  {:<job_w$}  {:<8}  {:<17}  {:>3}  {:<24}  {:>8}  ERROR",
        "ID", "JOB", "TRIGGER", "STATUS", "TRY", "STARTED", "DURATION"
    );
    for run in runs {
        let trigger = serde_json::to_value(run.trigger)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let line = format!(
            "{:<36}  {:<job_w$}  {:<8}  {:<17}  {:>3}  {:<24}  {:>8}  ",
            run.id,
            first_line(&run.job_id, job_w),
            trigger,
            run.status.as_str(),
            run.attempt,
            run.started_at.as_deref().unwrap_or("-"),
            run_duration(run, now)
                .map(duration)
                .unwrap_or_else(|| "-".into()),
        );
        let room = width.saturating_sub(line.chars().count()).max(20);
        let error = run
            .error
            .as_deref()
            .map(|e| first_line(e, room))
            .unwrap_or_default();
        println!("{}", format!("{line}{error}").trim_end());
    }
}
