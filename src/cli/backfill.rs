//! `multijob backfill`: queue one run per nominal slot of a job in a past
//! window, keyed `job@slot` like the scheduler's runs, so a slot that ran
//! (or was backfilled before) is not run again.

use jiff::{Span, Timestamp};
use serde_json::json;

use super::inbox_reply::{CommandArgs, Reply, pending_text, post_and_wait};
use super::job_ref::{applied_job, paused_note};
use super::store_access::{StoreAccess, operator};
use super::{Outcome, OutputFormat};
use crate::schedule::backfill::{self, run_key};
use crate::spec::model::Overlap;
use crate::store::format_ts;
use crate::store::runs::InboxCommand;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Times are RFC 3339 (2026-12-01T00:00:00Z) or a duration meaning that long \
ago (`2h`, `-2h`, `2h ago`, `3d`, `1 day ago`).\n\nExamples:\n  multijob backfill nightly-report --from 3d --to 0s --dry-run\n  multijob backfill sync --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z --max 5000\n\nEnvironment: MULTIJOB_DIR (-d), MULTIJOB_REDIS_URL (--redis)"
)]
pub struct Args {
    /// The job id (a job with a schedule).
    pub job: String,
    /// Start of the window, included.
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End of the window, excluded.
    #[arg(long, allow_hyphen_values = true)]
    pub to: String,
    /// Refuse a window with more slots than this (at most 100000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=backfill::MAX_SLOTS))]
    pub max: u64,
    /// List the slots and queue nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub common: CommandArgs,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let now = Timestamp::now();
    let from = parse_time("--from", &args.from, now)?;
    let to = parse_time("--to", &args.to, now)?;
    let store = StoreAccess::open(&args.common.store)?;
    let applied = store.applied()?;
    let job = applied_job(&applied, &args.job, &store.describe())?;
    let window = backfill::window(job, from, to, args.max, now)?;
    let span = format!("[{}, {})", format_ts(from), format_ts(to));
    if args.dry_run {
        return dry_run(&store, &job.id, &span, &window, args.common.output);
    }
    let command = InboxCommand::Backfill {
        job_id: job.id.clone(),
        from: format_ts(from),
        to: format_ts(to),
        max: args.max,
        by: operator(args.common.by.as_deref()),
    };
    let reply = post_and_wait(&store, &command)?;
    if let Some(error) = reply.error() {
        anyhow::bail!("backfill of job {} refused by the daemon: {error}", job.id);
    }
    match (args.common.output, &reply) {
        (OutputFormat::Json, _) => {
            let mut out = reply.to_json();
            out["job"] = json!(job.id);
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        (OutputFormat::Text, Reply::Answered(v)) => {
            println!(
                "backfill of job {} {span}: {} slots, queued {}, already recorded {}{}",
                job.id,
                v["slots"],
                v["queued"],
                v["already_recorded"],
                left_text(v["left_to_scheduler"].as_u64().unwrap_or(0))
            );
        }
        (OutputFormat::Text, Reply::Pending { .. }) => {
            println!(
                "{}",
                pending_text(&format!("backfill of job {} {span}", job.id))
            );
        }
    }
    if args.common.output == OutputFormat::Text
        && let Some(note) = paused_note(&store, &job.id, "this backfill")?
    {
        println!("{note}");
    }
    if args.common.output == OutputFormat::Text && job.overlap != Overlap::Allow {
        let policy = serde_json::to_value(job.overlap).unwrap_or_default();
        println!(
            "the runs go one at a time (overlap: {}), after any active run of the job",
            policy.as_str().unwrap_or("forbid")
        );
    }
    Ok(Outcome::Success)
}

/// `--dry-run`: the slots, with those already recorded marked.
fn dry_run(
    store: &StoreAccess,
    job_id: &str,
    span: &str,
    window: &backfill::Window,
    output: OutputFormat,
) -> anyhow::Result<Outcome> {
    let keys: Vec<String> = window
        .slots
        .iter()
        .map(|s| run_key(job_id, s.nominal))
        .collect();
    let recorded = store.recorded_run_keys(keys.clone())?;
    let slots: Vec<_> = window
        .slots
        .iter()
        .zip(&keys)
        .map(|(s, key)| {
            json!({"slot": format_ts(s.nominal), "fire_at": format_ts(s.fire_at),
                   "run_key": key, "recorded": recorded.contains(key)})
        })
        .collect();
    let new = slots.iter().filter(|s| s["recorded"] == false).count();
    match output {
        OutputFormat::Json => {
            let out = json!({"job": job_id, "dry_run": true, "slots": slots, "would_queue": new,
                             "already_recorded": slots.len() - new,
                             "left_to_scheduler": window.left_to_scheduler});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Text => {
            for s in &slots {
                let mark = if s["recorded"] == true {
                    "  (already recorded)"
                } else {
                    ""
                };
                println!("{}{mark}", text_of(&s["slot"]));
            }
            println!(
                "dry run: job {job_id} {span} has {} slots; would queue {new}, already recorded {}{}",
                slots.len(),
                slots.len() - new,
                left_text(window.left_to_scheduler)
            );
        }
    }
    Ok(Outcome::Success)
}

fn text_of(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn left_text(left: u64) -> String {
    if left == 0 {
        String::new()
    } else {
        format!("; {left} slots due now or later are left to the scheduler")
    }
}

/// An RFC 3339 time, or a duration meaning that long before `now`
/// (`2h`, `-2h` and `2h ago` alike).
pub fn parse_time(flag: &str, text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let trimmed = text.trim().trim_start_matches('-');
    let span: Span = trimmed.parse().map_err(|_| {
        anyhow::anyhow!(
            "{flag} `{text}` is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration meaning that long ago (2h, 90m, 3d, `2h ago`)"
        )
    })?;
    let ago = if span.is_negative() {
        span.negate()
    } else {
        span
    };
    now.to_zoned(jiff::tz::TimeZone::UTC)
        .checked_sub(ago)
        .map(|z| z.timestamp())
        .map_err(|e| anyhow::anyhow!("{flag} `{text}` reaches too far back: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_that_long_ago() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let t = |s| parse_time("--from", s, now).map(|t| t.to_string());
        assert_eq!(t("2026-12-01T00:00:00Z").unwrap(), "2026-12-01T00:00:00Z");
        for two_hours in ["2h", "-2h", "2h ago", "2 hours ago", "120m"] {
            assert_eq!(t(two_hours).unwrap(), "2026-12-07T10:00:00Z", "{two_hours}");
        }
        assert_eq!(t("3d").unwrap(), "2026-12-04T12:00:00Z");
        assert_eq!(t("0s").unwrap(), "2026-12-07T12:00:00Z");
        let err = t("yesterday").unwrap_err().to_string();
        assert!(
            err.starts_with("--from `yesterday` is neither an RFC 3339 time"),
            "{err}"
        );
        assert!(t("2026-13-01T00:00:00Z").is_err());
    }
}
