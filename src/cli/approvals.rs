//! `multijob approvals`: list and decide pending approvals.

use std::path::PathBuf;

use crate::store::redis::RedisStore;
use crate::store::runs::{Approval, ApprovalStatus, InboxCommand};
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
    #[arg(long, global = true, conflicts_with = "redis")]
    pub state: Option<PathBuf>,
    /// A Redis deployment (`redis://host:6379/`) instead of the embedded store.
    #[arg(long, global = true)]
    pub redis: Option<String>,
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

/// Where approvals are read and decisions posted.
enum Backend {
    Sqlite(PathBuf),
    // The store first: it drops before the runtime it runs on.
    Redis(RedisStore, tokio::runtime::Runtime),
}

impl Backend {
    fn open(args: &Args) -> anyhow::Result<Backend> {
        if let Some(url) = &args.redis {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let store = runtime.block_on(RedisStore::open(url))?;
            return Ok(Backend::Redis(store, runtime));
        }
        let path = args
            .state
            .clone()
            .unwrap_or_else(|| super::default_state(&args.dir));
        if !path.exists() {
            anyhow::bail!("no store at {}: nothing has run yet", path.display());
        }
        Ok(Backend::Sqlite(path))
    }

    fn approvals(&self, pending_only: bool) -> anyhow::Result<Vec<Approval>> {
        Ok(match self {
            Backend::Sqlite(path) => {
                let conn = SqliteStore::open_read_only(path)?;
                read_approvals(&conn, path, pending_only)?
            }
            Backend::Redis(store, rt) => rt.block_on(store.approvals(pending_only))?,
        })
    }

    fn post(&self, command: &InboxCommand) -> anyhow::Result<()> {
        match self {
            Backend::Sqlite(path) => post_to_inbox(path, command)?,
            Backend::Redis(store, rt) => rt.block_on(store.post_to_inbox(command))?,
        };
        Ok(())
    }
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let backend = Backend::open(&args)?;
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

fn decide(backend: &Backend, id: &str, approve: bool) -> anyhow::Result<Outcome> {
    let all = backend.approvals(false)?;
    let Some(a) = all.iter().find(|a| a.id == id) else {
        anyhow::bail!("no approval `{id}` (see `multijob approvals list`)");
    };
    if a.status != ApprovalStatus::Pending {
        anyhow::bail!("approval {id} is already {}", a.status.as_str());
    }
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    backend.post(&InboxCommand::Decide {
        approval_id: id.to_string(),
        approve,
        by: format!("cli:{by}"),
    })?;
    println!(
        "{} {id} (run {} of job {}); the daemon applies it within a second",
        if approve { "approved" } else { "rejected" },
        a.run_id,
        a.job_id
    );
    Ok(Outcome::Success)
}
