//! `multijob memory show|reset NAME`: what agents remember of their tool
//! calls (a job's memory, keyed by its id, or a shared `memory: KEY`).
//! `show` reads the store; `reset` asks the daemon through its inbox,
//! since the CLI never writes the store.

use serde_json::{Value, json};

use super::inbox_reply::{CommandArgs, Reply, pending_text, post_and_wait};
use super::store_access::{StoreAccess, StoreArgs, operator};
use super::{Outcome, OutputFormat};
use crate::store::runs::InboxCommand;
use crate::workflow::memory::{self, Memory};

const ENV: &str = "Environment: MULTIJOB_DIR (-d), MULTIJOB_REDIS_URL (--redis)";

#[derive(Debug, clap::Args)]
#[command(after_help = format!("Examples:\n  multijob memory show triage-agent\n  multijob memory reset shared-ops --by oncall@ops\n\n{ENV}"))]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Each tool signature's failures, successes and failures in a row.
    #[command(after_help = format!("Examples:\n  multijob memory show triage-agent\n  multijob memory show shared-ops -o json --redis redis://127.0.0.1:6379/\n\n{ENV}"))]
    Show {
        /// A job id (its own memory) or a shared `memory:` key.
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Forget the memory: its avoid list is empty from the next run on.
    #[command(after_help = format!("Examples:\n  multijob memory reset triage-agent\n  multijob memory reset shared-ops -o json\n\n{ENV}; USER (or LOGNAME) for the default --by (USER@host)"))]
    Reset {
        /// A job id (its own memory) or a shared `memory:` key.
        name: String,
        #[command(flatten)]
        common: CommandArgs,
    },
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    match args.action {
        Action::Show {
            name,
            output,
            store,
        } => show(&name, output, &store),
        Action::Reset { name, common } => reset(&name, &common),
    }
}

/// The memory `name` holds, after checking that it names something: a
/// job of the applied revision or a memory some run wrote.
fn read(store: &StoreAccess, name: &str) -> anyhow::Result<Option<Memory>> {
    memory::check_key(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stored = store.kv_get(&memory::store_key(name))?;
    let is_job = store.applied()?.snapshot.jobs.contains_key(name);
    match stored {
        None | Some(Value::Null) if is_job => Ok(None),
        None | Some(Value::Null) => anyhow::bail!(
            "no job and no agent memory named {name:?} in {}; a job's memory is named by its id, a shared one by the agent step's `memory:`",
            store.describe()
        ),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
            anyhow::anyhow!("memory {name:?} in {} is unreadable: {e}", store.describe())
        }),
    }
}

fn show(name: &str, output: OutputFormat, args: &StoreArgs) -> anyhow::Result<Outcome> {
    let store = StoreAccess::open(args)?;
    let m = read(&store, name)?.unwrap_or_default();
    match output {
        OutputFormat::Json => {
            let out = json!({"memory": name, "signatures": m});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Text if m.is_empty() => println!("memory {name}: nothing recorded"),
        OutputFormat::Text => {
            println!(
                "{:<40} {:>6} {:>6} {:>9}  {:<20}  LAST ERROR",
                "SIGNATURE", "FAILED", "OK", "IN A ROW", "LAST SEEN"
            );
            for (sig, e) in &m {
                let error = e.last_error.as_deref().unwrap_or("-");
                println!(
                    "{:<40} {:>6} {:>6} {:>9}  {:<20}  {}",
                    printable(sig),
                    e.failures,
                    e.successes,
                    e.consecutive_failures,
                    e.last_seen,
                    printable(&memory::excerpt(error.lines().next().unwrap_or(""), 80))
                );
            }
        }
    }
    Ok(Outcome::Success)
}

fn reset(name: &str, common: &CommandArgs) -> anyhow::Result<Outcome> {
    let store = StoreAccess::open(&common.store)?;
    read(&store, name)?;
    let by = operator(common.by.as_deref());
    let command = InboxCommand::MemoryReset {
        key: name.to_string(),
        by,
    };
    let reply = post_and_wait(&store, &command)?;
    if let Some(error) = reply.error() {
        anyhow::bail!("memory reset of {name} refused by the daemon: {error}");
    }
    match (&common.output, &reply) {
        (OutputFormat::Json, _) => {
            let mut out = reply.to_json();
            out["memory"] = json!(name);
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        (OutputFormat::Text, Reply::Answered(v)) if v["applied"] == true => {
            let n = v["previous"].as_object().map_or(0, |m| m.len());
            println!(
                "reset memory {name}: forgot {n} tool signatures; its agents start with no avoid list"
            );
        }
        (OutputFormat::Text, Reply::Answered(_)) => {
            println!("memory {name} holds nothing: nothing to reset")
        }
        (OutputFormat::Text, Reply::Pending { .. }) => {
            println!("{}", pending_text(&format!("reset memory {name}")))
        }
    }
    Ok(Outcome::Success)
}

/// Text from tools (errors, paths) with control characters escaped.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}
