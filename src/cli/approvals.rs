//! `multijob approvals`: list and decide pending approvals.

use std::time::{Duration, Instant};

use crate::store::runs::{ApprovalStatus, InboxCommand};

use super::store_access::{StoreAccess, StoreArgs};
use super::{Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Approvals, pending first.
    List {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: OutputFormat,
        /// Include decided ones.
        #[arg(long)]
        all: bool,
    },
    /// Let the run start (or continue).
    Approve { id: String },
    /// Fail the run.
    Reject { id: String },
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let backend = StoreAccess::open(&args.store)?;
    match args.action {
        Action::List { output, all } => {
            let items = backend.approvals(!all)?;
            match output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&items)?),
                OutputFormat::Text => {
                    if items.is_empty() {
                        println!("no pending approvals");
                    }
                    for a in &items {
                        println!(
                            "{}  {:<9} job {}  run {}  requested {}{}",
                            a.id,
                            a.status.as_str(),
                            a.job_id,
                            a.run_id,
                            a.requested_at,
                            a.reason
                                .as_deref()
                                .map(|r| format!("  — {r}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            Ok(Outcome::Success)
        }
        Action::Approve { id } => decide(&backend, &id, true),
        Action::Reject { id } => decide(&backend, &id, false),
    }
}

/// How long `approve`/`reject` waits to see its decision applied: the
/// daemon reads the inbox every 100 ms.
const APPLY_WAIT: Duration = Duration::from_secs(3);

/// Post a decision, then wait to see it applied: the daemon applies
/// decisions in order, so of two conflicting ones the second is refused
/// there, and only the wait tells its CLI so (a second `reject` right
/// after an `approve` used to print success and be dropped).
fn decide(backend: &StoreAccess, id: &str, approve: bool) -> anyhow::Result<Outcome> {
    let (verb, done) = if approve {
        ("approve", "approved")
    } else {
        ("reject", "rejected")
    };
    let all = backend.approvals(false)?;
    let Some(a) = all.iter().find(|a| a.id == id) else {
        anyhow::bail!("no approval `{id}` (see `multijob approvals list`)");
    };
    if a.status != ApprovalStatus::Pending {
        anyhow::bail!(
            "approval {id} is already {}{}; this {verb} was not applied",
            a.status.as_str(),
            a.decided_by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default()
        );
    }
    // A decision posted a moment ago that the daemon has not read yet.
    let waiting = backend.inbox()?.into_iter().find_map(|(_, c)| match c {
        InboxCommand::Decide {
            approval_id,
            approve,
            by,
        } if approval_id == id => Some((approve, by)),
        _ => None,
    });
    if let Some((earlier, by)) = waiting {
        anyhow::bail!(
            "approval {id} is already being {} (a decision by {by} waits for the daemon); this {verb} was not applied",
            if earlier { "approved" } else { "rejected" }
        );
    }
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    backend.post(&InboxCommand::Decide {
        approval_id: id.to_string(),
        approve,
        by: format!("cli:{by}"),
    })?;
    let wanted = if approve {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Rejected
    };
    let started = Instant::now();
    let decided = loop {
        let now = backend.approvals(false)?.into_iter().find(|x| x.id == id);
        match now {
            Some(x) if x.status != ApprovalStatus::Pending => break Some(x),
            _ if started.elapsed() >= APPLY_WAIT => break None,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let what = format!("{id} (run {} of job {})", a.run_id, a.job_id);
    match decided {
        Some(x) if x.status == wanted => {
            println!("{done} {what}");
            Ok(Outcome::Success)
        }
        Some(x) => anyhow::bail!(
            "approval {id} was {} first{}; this {verb} was not applied",
            x.status.as_str(),
            x.decided_by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default()
        ),
        None => {
            println!(
                "{done} {what}: posted, not applied yet (no daemon took it within {}s; it applies when one reads the inbox)",
                APPLY_WAIT.as_secs()
            );
            Ok(Outcome::Success)
        }
    }
}
