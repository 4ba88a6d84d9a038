//! `multijob logs RUN [--follow]`: a run's record as a person reads it,
//! and a `command` run's output, streamed while it runs with `--follow`.

use super::follow::{Followed, Follower, show};
use super::store_access::{StoreAccess, StoreArgs};
use super::{Outcome, OutputFormat};
use crate::store::runs::{InboxCommand, RunStatus};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  multijob logs 01936f2a                # a run by its first 8+ characters\n  multijob logs 01936f2a-7c1d --follow  # stream until it ends; exit 0 if it succeeded\n\nEnvironment: MULTIJOB_DIR, MULTIJOB_REDIS_URL"
)]
pub struct Args {
    /// The run id, or its first 8 or more characters (`multijob runs`
    /// lists them).
    pub run: String,
    /// Stream new output and step changes until the run ends; the exit
    /// code is then the run's: 0 succeeded, 1 otherwise.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// `json`: the run record and its output chunks (with --follow, one
    /// JSON object per line as things happen).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let store = StoreAccess::open(&args.store)?;
    let wanted = args.run.trim();
    let run_id = match store.resolve_run(wanted) {
        Ok(run) if !args.follow => {
            show(&store, &run, args.output)?;
            return Ok(Outcome::Success);
        }
        Ok(run) => run.id,
        // Just triggered: the daemon has not taken it from the inbox yet.
        Err(_) if args.follow && triggered(&store, wanted)? => wanted.to_string(),
        Err(e) => return Err(e),
    };
    match Follower::new(&store, &run_id, args.output).follow(None)? {
        Followed::Ended(run) if run.status == RunStatus::Succeeded => Ok(Outcome::Success),
        Followed::Ended(_) | Followed::StillGoing(_) => Ok(Outcome::Failure),
    }
}

/// Whether a trigger for run `id` waits in the inbox.
fn triggered(store: &StoreAccess, id: &str) -> anyhow::Result<bool> {
    Ok(store.inbox()?.iter().any(
        |(_, command)| matches!(command, InboxCommand::Trigger { run_id, .. } if run_id == id),
    ))
}
