//! `multijob approvals`: list and decide pending approvals.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::store::redis::RedisStore;
use crate::store::runs::{Approval, ApprovalStatus, InboxCommand};
use crate::store::sqlite::{SqliteStore, post_to_inbox, read_approvals, read_inbox};

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

    /// Commands the daemon has not handled yet (handled ones are deleted).
    fn inbox(&self) -> anyhow::Result<Vec<InboxCommand>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = match self {
                Backend::Sqlite(path) => {
                    let conn = SqliteStore::open_read_only(path)?;
                    read_inbox(&conn, path, after)?
                }
                Backend::Redis(store, rt) => rt.block_on(store.inbox(after))?,
            };
            let Some(last) = page.last().map(|(id, _)| *id) else {
                return Ok(out);
            };
            after = last;
            out.extend(page.into_iter().map(|(_, c)| c));
        }
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

/// How long `approve`/`reject` waits to see its decision applied: the
/// daemon reads the inbox every 100 ms.
const APPLY_WAIT: Duration = Duration::from_secs(3);

/// Post a decision, then wait to see it applied: the daemon applies
/// decisions in order, so of two conflicting ones the second is refused
/// there, and only the wait tells its CLI so (a second `reject` right
/// after an `approve` used to print success and be dropped).
fn decide(backend: &Backend, id: &str, approve: bool) -> anyhow::Result<Outcome> {
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
    let waiting = backend.inbox()?.into_iter().find_map(|c| match c {
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
