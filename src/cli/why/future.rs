//! `why` for slots after now: the simulation run from now over the jobs
//! the daemon applied, with its active runs in place and each job's p95
//! duration, and the asked job's slots traced and said in words.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::calendar::slots::{Slot, SlotRule};
use crate::cli::simulate::history_of;
use crate::cli::store_access::StoreAccess;
use crate::run::guards::{SkipDetail, Tense};
use crate::schedule::simulate::{self, ActiveRun, SimConfig, TracedSlot};
use crate::store::Applied;
use crate::store::paused::{PAUSED_KEY, paused_from};
use crate::store::runs::{RunQuery, RunStatus};

/// A job's duration when it has no finished run yet.
const ASSUMED: Duration = Duration::from_secs(1);
/// Slots listed on each side of the nearest.
const AROUND: usize = 2;

/// What the simulation needs from the caller.
pub(super) struct Future<'a> {
    pub store: &'a StoreAccess,
    pub applied: &'a Applied,
    pub job: &'a str,
    pub rule: &'a SlotRule,
    pub workers: usize,
    pub pressure: (usize, usize),
}

/// The traced slots around `at` and the index of the nearest.
pub(super) fn slots(
    f: &Future<'_>,
    at: Timestamp,
    now: Timestamp,
) -> anyhow::Result<(Vec<(Slot, String)>, usize)> {
    let history = history_of(f.store)?;
    let (mut jobs, lanes) = simulate::from_snapshot(&f.applied.snapshot, |job| {
        history
            .p95
            .get(&job.id)
            .copied()
            .unwrap_or(ASSUMED)
            .min(Duration::from_millis(job.timeout_ms.max(1)))
    });
    for job in &mut jobs {
        job.paused = history.paused.contains(&job.id);
        job.cooldown_until = history.cooldowns.get(&job.id).map(|c| c.0);
    }
    let failures = history.cooldowns.get(f.job).map_or(0, |c| c.1);
    // Up to a few slots past `at`, so the nearest has neighbours.
    let after = f.rule.next_slots(at, AROUND + 1);
    let to = after.last().map_or(at, |s| s.fire_at) + SignedDuration::from_millis(1);
    let config = SimConfig {
        from: now,
        to,
        workers: Some(f.workers),
        pressure_high: f.pressure.0,
        pressure_low: f.pressure.1,
        trace: Some(f.job.to_string()),
        active: active_runs(f.store, &history.p95, now)?,
    };
    let report = simulate::simulate(jobs, &lanes, &config);
    let trace = report.trace;
    let Some(nearest) = nearest(&trace, at) else {
        anyhow::bail!("job {} has no slot between now and {at}", f.job);
    };
    let lo = nearest.saturating_sub(AROUND);
    let hi = (nearest + AROUND + 1).min(trace.len());
    let paused = paused_from(f.store.kv_get(PAUSED_KEY)?)?;
    let tz = f.rule.timezone();
    let lines = trace[lo..hi]
        .iter()
        .map(|t| {
            let slot = Slot {
                nominal: t.nominal,
                fire_at: t.fire_at,
            };
            let pause = paused
                .get(f.job)
                .map(|p| (p.by.clone(), p.since.parse().unwrap_or(now), p.note.clone()));
            (slot, words(t, f.pressure.0, pause, failures, tz))
        })
        .collect();
    Ok((lines, nearest - lo))
}

fn nearest(trace: &[TracedSlot], at: Timestamp) -> Option<usize> {
    (0..trace.len()).min_by_key(|i| trace[*i].nominal.duration_since(at).abs())
}

/// Runs the daemon has going now: running ones end at their start plus
/// their job's p95; queued ones wait for a worker.
fn active_runs(
    store: &StoreAccess,
    p95: &std::collections::HashMap<String, Duration>,
    now: Timestamp,
) -> anyhow::Result<Vec<ActiveRun>> {
    let mut active = Vec::new();
    for status in [RunStatus::Running, RunStatus::Queued, RunStatus::Retrying] {
        let runs = store.runs(RunQuery {
            job_id: None,
            status: Some(status),
            limit: 10_000,
            before: None,
        })?;
        for (_, run) in runs {
            let ends_at = match (status, &run.started_at) {
                (RunStatus::Running, Some(started)) => {
                    let started: Timestamp = started.parse().unwrap_or(now);
                    let d = p95.get(&run.job_id).copied().unwrap_or(ASSUMED);
                    Some((started + SignedDuration::try_from(d)?).max(now))
                }
                _ => None,
            };
            active.push(ActiveRun {
                job: run.job_id,
                ends_at,
            });
        }
    }
    Ok(active)
}

/// A predicted slot in words: `will run`, `will be skipped: ...`.
fn words(
    t: &TracedSlot,
    pressure_high: usize,
    pause: Option<(String, Timestamp, Option<String>)>,
    failures: u32,
    tz: &TimeZone,
) -> String {
    let skipped = Tense::Future.skipped();
    match (t.outcome, t.reason) {
        ("dispatched", _) => "will run".to_string(),
        ("buffered", _) => "will run once the active run ends (overlap: buffer_one)".to_string(),
        (_, Some("flow_limit")) => match &t.lane {
            Some(lane) => format!(
                "{skipped}: lane {} will be full ({}/{}: runs of {})",
                lane.id,
                lane.active,
                lane.max.map_or("∞".to_string(), |m| m.to_string()),
                lane.held_by.join(", ")
            ),
            None => format!("{skipped}: its lane will be full"),
        },
        (_, Some("overlap")) => format!(
            "{skipped}: job still running ({} active run{})",
            t.active_runs,
            if t.active_runs == 1 { "" } else { "s" }
        ),
        (_, Some("pressure")) => SkipDetail::Pressure {
            waiting: t.waiting,
            high: pressure_high,
            low: 0,
        }
        .describe(Tense::Future, tz),
        (_, Some("paused")) => match pause {
            Some((by, since, note)) => {
                SkipDetail::Paused { by, since, note }.describe(Tense::Future, tz)
            }
            None => format!("{skipped}: paused"),
        },
        (_, Some("cooldown")) => match t.cooldown_until {
            Some(until) => SkipDetail::Cooldown { until, failures }.describe(Tense::Future, tz),
            None => format!("{skipped}: cooldown"),
        },
        (_, Some(reason)) => format!("{skipped}: {reason}"),
        (other, None) => other.to_string(),
    }
}
