//! `multijob approvals`: list and decide pending approvals. A decision
//! carries who made it (`--by`, else `$USER@host`) and an optional note;
//! both are kept in the approval record and its event.

use std::time::{Duration, Instant};

use crate::store::runs::{Approval, ApprovalStatus, InboxCommand, MAX_APPROVAL_NOTE_BYTES};

use super::store_access::{MIN_ID_PREFIX, StoreAccess, StoreArgs, operator};
use super::{Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob approvals list -d ops
  multijob approvals approve ap-0195f3c2 --note \"checked the diff\"

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL")]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Approvals, pending first.
    #[command(after_help = "Examples:
  multijob approvals list                # pending ones
  multijob approvals list --all -o json  # with who decided, when and their note

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL")]
    List {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: OutputFormat,
        /// Include decided ones.
        #[arg(long)]
        all: bool,
    },
    /// Let the run start (or continue).
    #[command(after_help = "Examples:
  multijob approvals approve ap-0195f3c2 --note \"checked the diff\"
  multijob approvals approve 0195f3c2-7d1e --by oncall@ops --redis redis://db:6379/

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL; USER (or LOGNAME) for the default --by (USER@host)")]
    Approve(DecideArgs),
    /// Fail the run.
    #[command(after_help = "Examples:
  multijob approvals reject ap-0195f3c2 --note \"not during the freeze\"
  multijob approvals reject ap-0195f3c2 --by oncall@ops

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL; USER (or LOGNAME) for the default --by (USER@host)")]
    Reject(DecideArgs),
}

/// Which approval, and what goes on record with the decision.
#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The approval's id or its run's id, or the first 8 or more
    /// characters of either.
    pub id: String,
    /// Why: kept with the decision and shown by `approvals list`, the API
    /// and the dashboard (at most 2 KiB).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Who decides, for the record [default: $USER@host].
    #[arg(long, value_name = "WHO")]
    pub by: Option<String>,
}

/// Longest `--by`.
pub const MAX_BY_BYTES: usize = 256;

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
                        println!("{}", line(a));
                    }
                }
            }
            Ok(Outcome::Success)
        }
        Action::Approve(args) => decide(&backend, &args, true),
        Action::Reject(args) => decide(&backend, &args, false),
    }
}

/// One approval on one line; text from outside (reason, who, note) has
/// its control characters escaped, so a note cannot rewrite the terminal.
fn line(a: &Approval) -> String {
    let mut out = format!(
        "{}  {:<9} job {}  run {}  requested {}",
        a.id,
        a.status.as_str(),
        a.job_id,
        a.run_id,
        a.requested_at
    );
    if let Some(reason) = &a.reason {
        out.push_str(&format!("  — {}", printable(reason)));
    }
    if let Some(at) = &a.decided_at {
        out.push_str(&format!("  decided {at}"));
    }
    if let Some(by) = &a.decided_by {
        out.push_str(&format!(" by {}", printable(by)));
    }
    if let Some(note) = &a.note {
        out.push_str(&format!("  note: {}", printable(note)));
    }
    out
}

/// ` by WHO` when the record names who decided.
fn by_whom(a: &Approval) -> String {
    a.decided_by
        .as_deref()
        .map(|b| format!(" by {}", printable(b)))
        .unwrap_or_default()
}

/// `text` with control characters (newlines, escapes) written as `\n`,
/// `\u{1b}` and so on.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The approval `id` names among `all`: its whole id, or a prefix of 8 or
/// more characters of its id or its run's id that fits one approval only
/// (or one pending approval: a run's decided ones are not in question).
fn find<'a>(all: &'a [Approval], id: &str) -> anyhow::Result<&'a Approval> {
    if let Some(a) = all.iter().find(|a| a.id == id) {
        return Ok(a);
    }
    let hint = "see `multijob approvals list --all`";
    if id.chars().count() < MIN_ID_PREFIX {
        anyhow::bail!(
            "no approval `{}` (a prefix needs at least {MIN_ID_PREFIX} characters; {hint})",
            printable(id)
        );
    }
    let mut fits: Vec<&Approval> = all
        .iter()
        .filter(|a| a.id.starts_with(id) || a.run_id.starts_with(id))
        .collect();
    if fits.len() > 1 {
        let pending = fits.iter().filter(|a| a.status == ApprovalStatus::Pending);
        if pending.clone().count() == 1 {
            fits.retain(|a| a.status == ApprovalStatus::Pending);
        }
    }
    match fits.as_slice() {
        [] => anyhow::bail!("no approval `{}` ({hint})", printable(id)),
        [one] => Ok(one),
        more => anyhow::bail!(
            "approval id prefix `{id}` fits {} approvals ({}, {}{}): type more of it",
            more.len(),
            more[0].id,
            more[1].id,
            if more.len() > 2 { ", ..." } else { "" }
        ),
    }
}

/// The note and the operator of a decision, within their limits.
fn on_record(args: &DecideArgs) -> anyhow::Result<(Option<String>, String)> {
    let note = args
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if let Some(note) = note
        && note.len() > MAX_APPROVAL_NOTE_BYTES
    {
        anyhow::bail!(
            "--note is {} bytes; a note holds at most {MAX_APPROVAL_NOTE_BYTES} (2 KiB): keep the details elsewhere and put a link in the note",
            note.len()
        );
    }
    let by = operator(args.by.as_deref());
    if by.len() > MAX_BY_BYTES {
        anyhow::bail!(
            "--by is {} bytes; a name holds at most {MAX_BY_BYTES}",
            by.len()
        );
    }
    Ok((note.map(str::to_string), by))
}

/// How long `approve`/`reject` waits to see its decision applied: the
/// daemon reads the inbox every 100 ms.
const APPLY_WAIT: Duration = Duration::from_secs(3);

/// Post a decision, then wait to see it applied: the daemon applies
/// decisions in order, so of two conflicting ones the second is refused
/// there, and only the wait tells its CLI so (a second `reject` right
/// after an `approve` used to print success and be dropped).
fn decide(backend: &StoreAccess, args: &DecideArgs, approve: bool) -> anyhow::Result<Outcome> {
    let (verb, done) = if approve {
        ("approve", "approved")
    } else {
        ("reject", "rejected")
    };
    let (note, by) = on_record(args)?;
    let all = backend.approvals(false)?;
    let a = find(&all, &args.id)?;
    let id = a.id.as_str();
    if a.status != ApprovalStatus::Pending {
        anyhow::bail!(
            "approval {id} is already {}{}; this {verb} was not applied",
            a.status.as_str(),
            by_whom(a)
        );
    }
    // A decision posted a moment ago that the daemon has not read yet.
    let waiting = backend.inbox()?.into_iter().find_map(|(_, c)| match c {
        InboxCommand::Decide {
            approval_id,
            approve,
            by,
            ..
        } if approval_id == id => Some((approve, by)),
        _ => None,
    });
    if let Some((earlier, by)) = waiting {
        anyhow::bail!(
            "approval {id} is already being {} (a decision by {} waits for the daemon); this {verb} was not applied",
            if earlier { "approved" } else { "rejected" },
            printable(&by)
        );
    }
    backend.post(&InboxCommand::Decide {
        approval_id: id.to_string(),
        approve,
        by: by.clone(),
        note,
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
    let what = format!(
        "{id} (run {} of job {}) as {}",
        a.run_id,
        a.job_id,
        printable(&by)
    );
    match decided {
        Some(x) if x.status == wanted => {
            println!("{done} {what}");
            Ok(Outcome::Success)
        }
        Some(x) => anyhow::bail!(
            "approval {id} was {} first{}; this {verb} was not applied",
            x.status.as_str(),
            by_whom(&x)
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
