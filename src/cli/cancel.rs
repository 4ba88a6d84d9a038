//! `multijob cancel RUN`: end an unfinished run `cancelled`. The command
//! is posted to the store's inbox (the daemon, or a Redis deployment's
//! leader, applies it: see `daemon::cancel`), then the run's record is
//! watched until the run ends or `--wait-timeout` passes.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::store_access::{StoreAccess, StoreArgs, operator};
use super::{Outcome, OutputFormat};
use crate::store::runs::{InboxCommand, Run, RunStatus};

/// Longest `--reason` kept (the record and the event carry it).
const MAX_REASON: usize = 1000;
/// Longest `--by`.
const MAX_BY: usize = 200;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  multijob cancel 0193a5f2 --reason 'stuck on the partner API'\n  multijob cancel 0193a5f2-8c1e --redis redis://127.0.0.1:6379/ -o json\n\nEnvironment: MULTIJOB_DIR, MULTIJOB_REDIS_URL, USER (the default --by)"
)]
pub struct Args {
    /// The run: its id, or its first 8 or more characters.
    pub run: String,
    /// Why, kept in the run's record and its `run.cancelled` event.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who cancels [default: $USER@host].
    #[arg(long)]
    pub by: Option<String>,
    /// How long to wait to see the run end (the daemon reads its inbox
    /// every 100 ms; a running command gets SIGTERM, then SIGKILL).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_wait)]
    pub wait_timeout: Duration,
    /// `json`: the outcome as one object (run_id, job_id, result, status,
    /// by, reason, message).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// What came of a cancel, as `-o json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    run_id: String,
    job_id: String,
    /// `cancelled`, `already_ended`, `ended_otherwise` (it ended another
    /// way first), `stopping` (still running at the wait's end) or
    /// `posted` (no daemon has read the inbox yet).
    result: &'static str,
    status: RunStatus,
    by: Option<String>,
    reason: Option<String>,
    message: String,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let reason = checked_reason(args.reason.as_deref())?;
    let by = operator(args.by.as_deref());
    if by.chars().count() > MAX_BY || by.chars().any(char::is_control) {
        anyhow::bail!(
            "--by must be one line of at most {MAX_BY} characters, like ann@ops-1 (got {} characters)",
            by.chars().count()
        );
    }
    let store = StoreAccess::open(&args.store)?;
    let run = store.resolve_run(&args.run)?;
    let report = if run.status.is_terminal() {
        already_ended(&run)
    } else {
        let inbox_id = post_once(&store, &run, &by, reason.as_deref())?;
        let seen = watch(&store, &run.id, args.wait_timeout)?;
        match seen {
            Some(ended) => after_end(&ended, &by),
            None => not_yet(&store, &run, inbox_id, args.wait_timeout)?,
        }
    };
    print(&report, args.output)
}

/// `--reason` trimmed (empty: none), or why it is refused.
fn checked_reason(reason: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let n = reason.chars().count();
    if n > MAX_REASON {
        anyhow::bail!("--reason is {n} characters long; keep it to {MAX_REASON} or fewer");
    }
    Ok(Some(reason.to_string()))
}

/// Post the cancel, unless one for this run already waits in the inbox
/// (a second `cancel` a moment after the first): its inbox id.
fn post_once(
    store: &StoreAccess,
    run: &Run,
    by: &str,
    reason: Option<&str>,
) -> anyhow::Result<i64> {
    let waiting = store.inbox()?.into_iter().find_map(|(id, c)| match c {
        InboxCommand::Cancel { run_id, .. } if run_id == run.id => Some(id),
        _ => None,
    });
    if let Some(id) = waiting {
        return Ok(id);
    }
    store.post(&InboxCommand::Cancel {
        run_id: run.id.clone(),
        by: by.to_string(),
        reason: reason.map(str::to_string),
    })
}

/// The run's record once it has ended, or `None` after `timeout`.
fn watch(store: &StoreAccess, run_id: &str, timeout: Duration) -> anyhow::Result<Option<Run>> {
    let started = Instant::now();
    loop {
        if let Some(run) = store.run(run_id)?
            && run.status.is_terminal()
        {
            return Ok(Some(run));
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(run: &Run, result: &'static str, message: String) -> Report {
    Report {
        run_id: run.id.clone(),
        job_id: run.job_id.clone(),
        result,
        status: run.status,
        by: run.cancelled_by.clone(),
        reason: run.cancel_reason.clone(),
        message,
    }
}

/// The run had ended before this cancel was posted.
fn already_ended(run: &Run) -> Report {
    let how = match (run.status, run.operator_cancel(), run.error.as_deref()) {
        (RunStatus::Cancelled, Some(who_why), _) => format!("already {who_why}"),
        (RunStatus::Cancelled, None, Some(error)) => format!("already cancelled ({error})"),
        (status, _, _) => format!("already ended as {}", status.as_str()),
    };
    let message = format!(
        "run {} (job {}) is {how}; nothing to cancel",
        run.id, run.job_id
    );
    report(run, "already_ended", message)
}

/// The run ended after the cancel was posted: cancelled (by this cancel
/// or one a moment earlier), or another way first.
fn after_end(run: &Run, by: &str) -> Report {
    if run.status != RunStatus::Cancelled {
        let message = format!(
            "run {} (job {}) ended as {} before the cancel took effect",
            run.id,
            run.job_id,
            run.status.as_str()
        );
        return report(run, "ended_otherwise", message);
    }
    let who = run.cancelled_by.as_deref().unwrap_or(by);
    let why = run
        .cancel_reason
        .as_deref()
        .or(run.error.as_deref())
        .unwrap_or("no reason given");
    let message = format!("cancelled {} (job {}) by {who}: {why}", run.id, run.job_id);
    report(run, "cancelled", message)
}

/// The run has not ended within the wait: the daemon has not read the
/// cancel yet, or the run is still stopping.
fn not_yet(
    store: &StoreAccess,
    run: &Run,
    inbox_id: i64,
    waited: Duration,
) -> anyhow::Result<Report> {
    let unread = store.inbox()?.iter().any(|(id, _)| *id == inbox_id);
    let now = store.run(&run.id)?.unwrap_or_else(|| run.clone());
    let secs = waited.as_secs_f64();
    Ok(if unread {
        let message = format!(
            "cancel of run {} (job {}) posted to {}: no daemon read it within {secs}s; the run is cancelled when one reads the inbox",
            run.id,
            run.job_id,
            store.describe()
        );
        report(&now, "posted", message)
    } else {
        let message = format!(
            "run {} (job {}) is still {} {secs}s after the daemon took the cancel; `multijob cancel` again shows where it got to",
            run.id,
            run.job_id,
            now.status.as_str()
        );
        report(&now, "stopping", message)
    })
}

fn print(report: &Report, output: OutputFormat) -> anyhow::Result<Outcome> {
    let ok = matches!(report.result, "cancelled" | "posted");
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        OutputFormat::Text if ok => println!("{}", report.message),
        OutputFormat::Text => anyhow::bail!("{}", report.message),
    }
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}

/// `--wait-timeout`: `10s`, `1m`, `1m30s`.
fn parse_wait(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|_| format!("\"{text}\": use a number with s, m or h, like 10s or 1m"))?;
    Duration::try_from(d).map_err(|_| format!("\"{text}\": a wait cannot be negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_durations_and_bad_ones_are_explained() {
        assert_eq!(parse_wait("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_wait("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_wait("5x"),
            Err("\"5x\": use a number with s, m or h, like 10s or 1m".into())
        );
        assert!(parse_wait("-5s").is_err());
    }

    #[test]
    fn a_reason_is_trimmed_and_bounded() {
        assert_eq!(checked_reason(Some("  ")).ok(), Some(None));
        assert_eq!(
            checked_reason(Some(" stuck ")).ok(),
            Some(Some("stuck".into()))
        );
        let long = "x".repeat(MAX_REASON + 1);
        let err = checked_reason(Some(&long)).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("keep it to 1000"), "{err}");
    }
}
