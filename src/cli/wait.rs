//! `multijob trigger JOB --wait`: after queueing, follow the run like
//! `logs --follow` and exit with its status; with `--count N`, wait for
//! all N (a bar on a terminal) and print how many succeeded and failed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Outcome;
use super::OutputFormat;
use super::follow::{Followed, Follower, Pause};
use super::progress::Progress;
use super::run_view::first_line;
use super::store_access::StoreAccess;
use crate::store::runs::{Run, RunStatus};

/// Failed runs named in a burst's summary.
const FAILED_SHOWN: usize = 10;

/// Waits for the run(s) a trigger queued: `run_id`, and with `count` > 1
/// also `run_id-1` .. `run_id-(count-1)`.
pub fn wait_for(
    store: &StoreAccess,
    run_id: &str,
    count: u32,
    timeout: Option<Duration>,
) -> anyhow::Result<Outcome> {
    if count > 1 {
        return wait_for_burst(store, run_id, count, timeout);
    }
    match Follower::new(store, run_id, OutputFormat::Text).follow(timeout)? {
        Followed::Ended(run) if run.status == RunStatus::Succeeded => Ok(Outcome::Success),
        Followed::Ended(_) => Ok(Outcome::Failure),
        Followed::StillGoing(status) => {
            eprintln!(
                "{}; keep following with `multijob logs {run_id} --follow`",
                still_going(run_id, status, timeout)
            );
            Ok(Outcome::Failure)
        }
    }
}

fn still_going(run_id: &str, status: Option<RunStatus>, timeout: Option<Duration>) -> String {
    let after = timeout
        .map(|t| format!(" after {}s", t.as_secs()))
        .unwrap_or_default();
    match status {
        Some(s) => format!(
            "timed out waiting: run {run_id} is still {}{after}",
            s.as_str()
        ),
        None => format!(
            "timed out waiting: run {run_id} is not queued yet{after} (is a daemon running on this store?)"
        ),
    }
}

fn wait_for_burst(
    store: &StoreAccess,
    run_id: &str,
    count: u32,
    timeout: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pending: Vec<String> = (0..count)
        .map(|i| match i {
            0 => run_id.to_string(),
            i => format!("{run_id}-{i}"),
        })
        .collect();
    let mut ended: Vec<Run> = Vec::new();
    let bar = Progress::bar(u64::from(count), "runs finished");
    let mut pause = Pause::new();
    loop {
        let mut done = store.runs_by_ids(&pending)?;
        done.retain(|r| r.status.is_terminal());
        pending.retain(|id| !done.iter().any(|r| &r.id == id));
        ended.extend(done);
        bar.set_position(ended.len() as u64);
        if pending.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        pause.sleep();
    }
    drop(bar);
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &ended {
        *by_status.entry(run.status.as_str()).or_default() += 1;
    }
    let succeeded = by_status.get("succeeded").copied().unwrap_or(0);
    let failed = ended.len() - succeeded;
    let detail: Vec<String> = by_status
        .iter()
        .filter(|(s, _)| **s != "succeeded")
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    println!(
        "{count} runs: {succeeded} succeeded, {failed} failed{}{}",
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", detail.join(", "))
        },
        if pending.is_empty() {
            String::new()
        } else {
            format!(", {} still going", pending.len())
        }
    );
    for run in ended
        .iter()
        .filter(|r| r.status != RunStatus::Succeeded)
        .take(FAILED_SHOWN)
    {
        println!(
            "  {} {}: {}",
            run.id,
            run.status.as_str(),
            first_line(run.error.as_deref().unwrap_or("-"), 120)
        );
    }
    if let Some(first) = pending.first() {
        eprintln!(
            "timed out waiting for {} of {count} runs; keep following one with `multijob logs {first} --follow` or list them with `multijob runs`",
            pending.len()
        );
    }
    Ok(if failed == 0 && pending.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}
