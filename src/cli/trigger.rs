//! `multijob trigger`: queue one run of a job now.

use std::path::PathBuf;

use anyhow::Context;

use crate::queue::new_run_id;
use crate::store::runs::InboxCommand;
use crate::store::sqlite::{SqliteStore, post_to_inbox, read_applied};

use super::{DirArg, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id.
    pub job: String,
    /// JSON object overlaid on the job's inputs (templates only: inputs
    /// never change the job's policy).
    #[arg(long)]
    pub inputs: Option<String>,
    /// Queue this many runs at once (load and capacity tests).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    #[command(flatten)]
    pub dir: DirArg,
    /// The embedded store [default: DIR/.multijob/state.db].
    #[arg(long)]
    pub state: Option<PathBuf>,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let inputs: serde_json::Value = match &args.inputs {
        None => serde_json::json!({}),
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--inputs is not JSON: {text}"))?;
            if !v.is_object() {
                anyhow::bail!("--inputs must be a JSON object, like '{{\"sku\": \"P1\"}}'");
            }
            v
        }
    };
    let path = args
        .state
        .unwrap_or_else(|| super::default_state(&args.dir.dir));
    if !path.exists() {
        anyhow::bail!(
            "no store at {}: start `multijob run --dir {}` once to apply the config",
            path.display(),
            args.dir.dir.display()
        );
    }
    let conn = SqliteStore::open_read_only(&path)?;
    let applied = read_applied(&conn, &path)?;
    let Some(job) = applied.snapshot.jobs.get(&args.job) else {
        let known: Vec<&str> = applied
            .snapshot
            .jobs
            .keys()
            .take(10)
            .map(String::as_str)
            .collect();
        anyhow::bail!(
            "no job `{}` in the applied revision ({} jobs{}{})",
            args.job,
            applied.snapshot.jobs.len(),
            if known.is_empty() { "" } else { ": " },
            known.join(", ")
        );
    };
    let run_id = new_run_id();
    post_to_inbox(
        &path,
        &InboxCommand::Trigger {
            run_id: run_id.clone(),
            job_id: job.spec.id.clone(),
            inputs,
            count: args.count.max(1),
        },
    )?;
    if args.count > 1 {
        println!(
            "queued run {run_id} of job {} (and {} more: {run_id}-1 ...)",
            job.spec.id,
            args.count - 1
        );
    } else {
        println!("queued run {run_id} of job {}", job.spec.id);
    }
    if job.spec.requires_approval {
        println!("the job requires approval: `multijob approvals list` shows the request");
    }
    Ok(Outcome::Success)
}
