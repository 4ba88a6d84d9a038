//! `multijob why JOB [--at T]`: what became of the job's slot nearest T
//! and of its neighbours, in words: the run it dispatched and how that
//! ended, or the guard that skipped it and what the guard saw (the skip
//! event's detail). Past slots come from the store; slots after now from
//! the simulation (`simulate`'s engine, run from now with the daemon's
//! active runs).

mod at;
mod future;
mod past;

use anyhow::Context;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;

use super::store_access::{StoreAccess, StoreArgs};
use super::{Outcome, OutputFormat};
use crate::calendar::slots::{Slot, SlotRule};
use crate::spec::model::Job;
pub use at::parse_at;
use past::SlotOutcome;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob why pricing_sync                        # the latest slot and the two before it
  multijob why pricing_sync --at 12:00             # 12:00 today in the job's zone
  multijob why pricing_sync --at -10m -o json
  multijob why pricing_sync --at +15m              # predicted by the simulation
  multijob why pricing_sync --at 2026-11-22T05:00:00Z --redis redis://127.0.0.1:6379/

Slots after now are predicted by the simulation (`multijob simulate`) from
now, with the daemon's active runs and each job's p95 duration.

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL, WORKER_CONCURRENCY (--workers),
  SCHEDULER_PRESSURE_DEPTH_HIGH (--pressure-high), SCHEDULER_PRESSURE_DEPTH_LOW (--pressure-low)")]
pub struct Args {
    /// The job id.
    pub job: String,
    /// The time to explain: RFC 3339, HH:MM[:SS] today in the job's zone,
    /// relative (-10m), or now.
    #[arg(long, allow_hyphen_values = true, default_value = "now")]
    pub at: String,
    /// The daemon's workers and pressure marks: slots after now are
    /// simulated with them.
    #[command(flatten)]
    pub capacity: super::simulate::Capacity,
    /// `json`: the slots with their outcome, reason and detail.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let store = StoreAccess::open(&args.store)?;
    let applied = store.applied()?;
    let job = super::job_ref::applied_job(&applied, &args.job, &store.describe())?;
    let rule = slot_rule(&args.job, job)?;
    let tz = rule.timezone().clone();
    let now = Timestamp::now();
    let at = parse_at(&args.at, now, &tz).map_err(anyhow::Error::msg)?;
    if at > now {
        let future = future::Future {
            store: &store,
            applied: &applied,
            job: &args.job,
            rule: &rule,
            workers: args.capacity.workers as usize,
            pressure: (args.capacity.pressure_high, args.capacity.pressure_low),
        };
        let (lines, nearest) = future::slots(&future, at, now)?;
        return print(&args, &tz, at, &lines, Some(nearest));
    }
    let Some((slots, nearest)) = past::window(&rule, at, now) else {
        anyhow::bail!(
            "job {} has no slot at or before {} (its schedule starts later)",
            args.job,
            local(at, &tz)
        );
    };
    let outcomes = past::outcomes(&store, &args.job, &slots).with_context(|| {
        format!(
            "reading the outcomes of job {} from {}",
            args.job,
            store.describe()
        )
    })?;
    let lines: Vec<(Slot, SlotOutcome)> = slots.into_iter().zip(outcomes).collect();
    print(&args, &tz, at, &lines, Some(nearest))
}

/// A line `why` prints: a slot and what became (or will become) of it.
trait SlotLine {
    fn words(&self, tz: &TimeZone) -> String;
    fn json(&self) -> serde_json::Value;
}

impl SlotLine for SlotOutcome {
    fn words(&self, tz: &TimeZone) -> String {
        SlotOutcome::words(self, tz)
    }
    fn json(&self) -> serde_json::Value {
        SlotOutcome::json(self)
    }
}

impl SlotLine for String {
    fn words(&self, _: &TimeZone) -> String {
        self.clone()
    }
    fn json(&self) -> serde_json::Value {
        json!({"outcome": "predicted", "text": self})
    }
}

fn slot_rule(id: &str, job: &Job) -> anyhow::Result<SlotRule> {
    let Some(schedule) = &job.schedule else {
        anyhow::bail!(
            "job {id} has no schedule, so it has no slots: its runs are triggered \
             (`multijob runs --job {id}` lists them)"
        );
    };
    SlotRule::compile(schedule, id).map_err(|e| anyhow::anyhow!("job {id}: {e}"))
}

fn print(
    args: &Args,
    tz: &TimeZone,
    at: Timestamp,
    lines: &[(Slot, impl SlotLine)],
    nearest: Option<usize>,
) -> anyhow::Result<Outcome> {
    if args.output == OutputFormat::Json {
        let slots: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, (slot, line))| {
                let mut v = line.json();
                v["slot"] = json!(crate::store::format_ts(slot.nominal));
                v["local"] = json!(local(slot.nominal, tz));
                v["nearest"] = json!(nearest == Some(i));
                v["text"] = json!(line.words(tz));
                v
            })
            .collect();
        let out = json!({
            "job": args.job,
            "at": crate::store::format_ts(at),
            "timezone": tz.iana_name().unwrap_or("UTC"),
            "slots": slots,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(Outcome::Success);
    }
    for (i, (slot, line)) in lines.iter().enumerate() {
        let mark = if nearest == Some(i) { "→" } else { " " };
        println!("{mark} {}  {}", local(slot.nominal, tz), line.words(tz));
    }
    Ok(Outcome::Success)
}

/// A time in the job's zone: `HH:MM:SS` today, else with its date.
fn local(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.date() == Timestamp::now().to_zoned(tz.clone()).date() {
        z.strftime("%H:%M:%S").to_string()
    } else {
        z.strftime("%Y-%m-%d %H:%M:%S").to_string()
    }
}
