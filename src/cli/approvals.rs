//! `multijob approvals`: list and decide pending approvals.

use std::path::PathBuf;

use crate::store::runs::{ApprovalStatus, InboxCommand};
use crate::store::sqlite::{SqliteStore, post_to_inbox, read_approvals};

use super::{Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    /// The config directory (holding jobs.d/ and skills.d/).
    #[arg(long, env = "MULTIJOB_DIR", default_value = ".", global = true)]
    pub dir: PathBuf,
    /// The embedded store [default: DIR/.multijob/state.db].
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Approvals, pending first.
    List {
        #[arg(long, value_enum, default_value_t)]
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
    let path = args
        .state
        .unwrap_or_else(|| super::default_state(&args.dir));
    if !path.exists() {
        anyhow::bail!("no store at {}: nothing has run yet", path.display());
    }
    let conn = SqliteStore::open_read_only(&path)?;
    match args.action {
        Action::List { output, all } => {
            let items = read_approvals(&conn, &path, !all)?;
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
        Action::Approve { id } => decide(&conn, &path, &id, true),
        Action::Reject { id } => decide(&conn, &path, &id, false),
    }
}

fn decide(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: &str,
    approve: bool,
) -> anyhow::Result<Outcome> {
    let all = read_approvals(conn, path, false)?;
    let Some(a) = all.iter().find(|a| a.id == id) else {
        anyhow::bail!("no approval `{id}` (see `multijob approvals list`)");
    };
    if a.status != ApprovalStatus::Pending {
        anyhow::bail!("approval {id} is already {}", a.status.as_str());
    }
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    post_to_inbox(
        path,
        &InboxCommand::Decide {
            approval_id: id.to_string(),
            approve,
            by: format!("cli:{by}"),
        },
    )?;
    println!(
        "{} {id} (run {} of job {}); the daemon applies it within a second",
        if approve { "approved" } else { "rejected" },
        a.run_id,
        a.job_id
    );
    Ok(Outcome::Success)
}
