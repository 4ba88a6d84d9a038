//! `multijob pause`, `resume` and `reset`: operator overrides on one job,
//! kept in the store rather than in git, applied by the daemon from its
//! inbox; each command waits to see the daemon's answer and prints it.

use serde_json::{Value, json};

use super::inbox_reply::{CommandArgs, Reply, pending_text, post_and_wait};
use super::job_ref::applied_job;
use super::store_access::{StoreAccess, operator};
use super::{Outcome, OutputFormat};
use crate::store::runs::InboxCommand;

const ENV: &str = "Environment: MULTIJOB_DIR (-d), MULTIJOB_REDIS_URL (--redis)";

#[derive(Debug, clap::Args)]
#[command(after_help = format!("Examples:\n  multijob pause nightly-report --note \"vendor API down, INC-42\"\n  multijob pause sync --redis redis://127.0.0.1:6379/ -o json\n\n{ENV}"))]
pub struct PauseArgs {
    /// The job id.
    pub job: String,
    /// Why, shown by `status`, the API, the dashboard and `plan`.
    #[arg(long)]
    pub note: Option<String>,
    #[command(flatten)]
    pub common: CommandArgs,
}

#[derive(Debug, clap::Args)]
#[command(after_help = format!("Examples:\n  multijob resume nightly-report\n\n{ENV}"))]
pub struct ResumeArgs {
    /// The job id.
    pub job: String,
    #[command(flatten)]
    pub common: CommandArgs,
}

#[derive(Debug, clap::Args)]
#[command(after_help = format!("Examples:\n  multijob reset nightly-report\n  multijob reset sync -o json\n\n{ENV}"))]
pub struct ResetArgs {
    /// The job id.
    pub job: String,
    #[command(flatten)]
    pub common: CommandArgs,
}

pub fn exec_pause(args: PauseArgs) -> anyhow::Result<Outcome> {
    let by = operator(args.common.by.as_deref());
    let note = args.note.filter(|n| !n.trim().is_empty());
    let command = |job_id| InboxCommand::Pause { job_id, note, by };
    send(&args.common, &args.job, "pause", command, |reply, job| {
        let p = &reply["pause"];
        if reply["applied"] == true {
            format!(
                "paused job {job} (by {}{}): its slots are skipped until `multijob resume {job}`; a manual trigger still runs",
                text(p, "by"),
                note_text(p)
            )
        } else {
            format!("job {job} is {}", text(reply, "unchanged"))
        }
    })
}

pub fn exec_resume(args: ResumeArgs) -> anyhow::Result<Outcome> {
    let by = operator(args.common.by.as_deref());
    let command = |job_id| InboxCommand::Resume { job_id, by };
    send(&args.common, &args.job, "resume", command, |reply, job| {
        let p = &reply["pause"];
        if reply["applied"] == true {
            format!(
                "resumed job {job} (paused since {} by {}{}): its next slot runs",
                text(p, "since"),
                text(p, "by"),
                note_text(p)
            )
        } else {
            format!(
                "job {job} is {}: nothing to resume",
                text(reply, "unchanged")
            )
        }
    })
}

pub fn exec_reset(args: ResetArgs) -> anyhow::Result<Outcome> {
    let by = operator(args.common.by.as_deref());
    let command = |job_id| InboxCommand::ResetFailures { job_id, by };
    send(&args.common, &args.job, "reset", command, |reply, job| {
        if reply["applied"] != true {
            return format!("job {job} has {}", text(reply, "unchanged"));
        }
        let f = &reply["previous"];
        let cooldown = match f["cooldown_until"].as_str() {
            Some(until) => format!(", a cooldown until {until}"),
            None => String::new(),
        };
        let error = match f["last_error"].as_str() {
            Some(e) => format!(" (last error: {})", e.lines().next().unwrap_or("")),
            None => String::new(),
        };
        format!(
            "reset the failure memory of job {job}: cleared {} consecutive failures{cooldown}{error}; its next slot runs",
            f["consecutive_failures"].as_u64().unwrap_or(0)
        )
    })
}

/// Check the job, post the command, wait for the daemon's answer and print it.
fn send(
    common: &CommandArgs,
    job: &str,
    action: &str,
    command: impl FnOnce(String) -> InboxCommand,
    describe: impl FnOnce(&Value, &str) -> String,
) -> anyhow::Result<Outcome> {
    let store = StoreAccess::open(&common.store)?;
    let applied = store.applied()?;
    let job = applied_job(&applied, job, &store.describe())?.id.clone();
    let reply = post_and_wait(&store, &command(job.clone()))?;
    if let Some(error) = reply.error() {
        anyhow::bail!("{action} of job {job} refused by the daemon: {error}");
    }
    match common.output {
        OutputFormat::Json => {
            let mut out = reply.to_json();
            out["job"] = json!(job);
            out["action"] = json!(action);
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Text => match &reply {
            Reply::Answered(v) => println!("{}", describe(v, &job)),
            Reply::Pending { .. } => println!("{}", pending_text(&format!("{action} job {job}"))),
        },
    }
    Ok(Outcome::Success)
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("?")
}

fn note_text(pause: &Value) -> String {
    pause["note"]
        .as_str()
        .map(|n| format!(": {n}"))
        .unwrap_or_default()
}
