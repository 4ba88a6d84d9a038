//! Posting an operator command to the daemon's inbox and waiting for its
//! reply: the daemon handles the inbox every 100 ms and answers in a
//! short-lived key-value entry, so the CLI can say what actually happened
//! (applied, unchanged and why, refused and why).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::OutputFormat;
use super::store_access::{StoreAccess, StoreArgs};
use crate::store::paused::reply_key;
use crate::store::runs::InboxCommand;

/// What every operator command takes: who, how to print, which store.
#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    /// Who is asking, for the record [default: $USER@host].
    #[arg(long)]
    pub by: Option<String>,
    /// Text for people, or JSON with the daemon's whole answer.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How long a command waits to see its reply.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);

/// What became of a posted command.
pub enum Reply {
    /// The daemon answered (`applied`, or `unchanged`/`error` saying why not).
    Answered(Value),
    /// No daemon handled it within [`REPLY_WAIT`]; it stays in the inbox.
    Pending { inbox_id: i64 },
}

impl Reply {
    /// The daemon's refusal, when it refused.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Answered(v) => v["error"].as_str(),
            Reply::Pending { .. } => None,
        }
    }

    /// As `-o json` prints it.
    pub fn to_json(&self) -> Value {
        match self {
            Reply::Answered(v) => v.clone(),
            Reply::Pending { inbox_id } => serde_json::json!({
                "applied": false, "pending": true, "inbox_id": inbox_id,
            }),
        }
    }
}

/// The text of a command no daemon has taken yet.
pub fn pending_text(what: &str) -> String {
    format!(
        "{what}: posted, not applied yet (no daemon took it within {}s; it applies when one reads the inbox)",
        REPLY_WAIT.as_secs()
    )
}

/// Post `command` and wait up to [`REPLY_WAIT`] for the daemon's reply.
pub fn post_and_wait(store: &StoreAccess, command: &InboxCommand) -> anyhow::Result<Reply> {
    let inbox_id = store.post(command)?;
    let key = reply_key(inbox_id);
    let started = Instant::now();
    let _waiting = super::progress::Progress::spinner("waiting for the daemon to apply it");
    loop {
        if let Some(reply) = store.kv_get(&key)? {
            return Ok(Reply::Answered(reply));
        }
        if started.elapsed() >= REPLY_WAIT {
            return Ok(Reply::Pending { inbox_id });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
