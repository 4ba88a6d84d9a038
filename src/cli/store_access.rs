//! Where a CLI command finds the store: the embedded one beside a running
//! daemon (read-only connections, commands posted to its inbox) or a Redis
//! deployment. Commands never go through the read-only HTTP API and never
//! open the store as a writer: the daemon owns that.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::store::output::OutputChunk;
use crate::store::redis::RedisStore;
use crate::store::runs::{Approval, FailureState, InboxCommand, Run, RunQuery};
use crate::store::sqlite::{self, SqliteStore};
use crate::store::{Applied, Event, EventQuery};

/// `--dir`, `--state` and `--redis`: the store a command reads and posts to.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The config directory (holding jobs.d/ and skills.d/).
    #[arg(
        short = 'd',
        long,
        env = "MULTIJOB_DIR",
        default_value = ".",
        global = true
    )]
    pub dir: PathBuf,
    /// The embedded store [default: DIR/.multijob/state.db].
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    /// A Redis deployment (`redis://host:6379/`) instead of the embedded store.
    #[arg(long, value_name = "URL", env = "MULTIJOB_REDIS_URL", global = true)]
    pub redis: Option<String>,
}

impl StoreArgs {
    /// The embedded store's path these arguments name.
    pub fn state_path(&self) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| super::default_state(&self.dir))
    }
}

/// Shortest run id prefix accepted in place of a whole id.
pub const MIN_ID_PREFIX: usize = 8;

/// An open way into the store for one CLI command.
pub enum StoreAccess {
    Sqlite(PathBuf),
    // The store first: it drops before the runtime it runs on.
    Redis(RedisStore, tokio::runtime::Runtime),
}

impl StoreAccess {
    /// Opens what `args` name; the embedded store must exist already.
    pub fn open(args: &StoreArgs) -> anyhow::Result<StoreAccess> {
        if let Some(url) = &args.redis {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let store = runtime.block_on(RedisStore::open(url))?;
            return Ok(StoreAccess::Redis(store, runtime));
        }
        let path = args.state_path();
        if !path.exists() {
            anyhow::bail!(
                "no store at {}: start `multijob run --dir {}` once to apply the config",
                path.display(),
                args.dir.display()
            );
        }
        Ok(StoreAccess::Sqlite(path))
    }

    /// Where this is, for messages: the file's path or the Redis URL.
    pub fn describe(&self) -> String {
        match self {
            StoreAccess::Sqlite(path) => path.display().to_string(),
            StoreAccess::Redis(store, _) => store.url().to_string(),
        }
    }

    fn read<T>(
        &self,
        sqlite_read: impl FnOnce(
            &rusqlite::Connection,
            &std::path::Path,
        ) -> Result<T, crate::store::StoreError>,
        redis_read: impl AsyncFnOnce(&RedisStore) -> Result<T, crate::store::StoreError>,
    ) -> anyhow::Result<T> {
        Ok(match self {
            StoreAccess::Sqlite(path) => {
                let conn = SqliteStore::open_read_only(path)?;
                sqlite_read(&conn, path)?
            }
            StoreAccess::Redis(store, rt) => rt.block_on(redis_read(store))?,
        })
    }

    /// The applied revision and its snapshot.
    pub fn applied(&self) -> anyhow::Result<Applied> {
        self.read(sqlite::read_applied, async |s| s.applied().await)
    }

    pub fn approvals(&self, pending_only: bool) -> anyhow::Result<Vec<Approval>> {
        self.read(
            |c, p| sqlite::read_approvals(c, p, pending_only),
            async |s| s.approvals(pending_only).await,
        )
    }

    /// Runs newest first, as `query` filters them.
    pub fn runs(&self, query: RunQuery) -> anyhow::Result<Vec<(i64, Run)>> {
        let q = query.clone();
        self.read(
            |c, p| sqlite::read_runs_blocking(c, p, &q),
            async |s| s.runs(query).await,
        )
    }

    /// One run by its whole id.
    pub fn run(&self, id: &str) -> anyhow::Result<Option<Run>> {
        let found = self.read(
            |c, p| sqlite::read_run(c, p, id),
            async |s| s.run(id.to_string()).await,
        )?;
        Ok(found.map(|(_, run)| run))
    }

    /// The runs of `ids` that have a record, on one connection (a run not
    /// recorded yet is absent).
    pub fn runs_by_ids(&self, ids: &[String]) -> anyhow::Result<Vec<Run>> {
        self.read(
            |c, p| {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.extend(sqlite::read_run(c, p, id)?.map(|(_, r)| r));
                }
                Ok(out)
            },
            async |s| {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.extend(s.run(id.clone()).await?.map(|(_, r)| r));
                }
                Ok(out)
            },
        )
    }

    /// A run's recorded output after position `after` (one page).
    pub fn output(&self, run_id: &str, after: i64) -> anyhow::Result<Vec<OutputChunk>> {
        self.read(
            |c, p| sqlite::read_output(c, p, run_id, after),
            async |s| s.output(run_id.to_string(), after).await,
        )
    }

    /// The run `id` names: a whole id, or its first 8 or more characters
    /// when they fit one run only.
    pub fn resolve_run(&self, id: &str) -> anyhow::Result<Run> {
        if let Some(run) = self.run(id)? {
            return Ok(run);
        }
        if id.chars().count() < MIN_ID_PREFIX {
            anyhow::bail!(
                "no run `{id}` in {} (a prefix needs at least {MIN_ID_PREFIX} characters; `multijob runs` lists ids)",
                self.describe()
            );
        }
        let found = self.read(
            |c, p| sqlite::read_runs_by_prefix(c, p, id, 3),
            async |s| s.runs_by_prefix(id, 3).await,
        )?;
        match found.as_slice() {
            [] => anyhow::bail!(
                "no run `{id}` in {} (`multijob runs` lists ids)",
                self.describe()
            ),
            [(_, run)] => Ok(run.clone()),
            more => anyhow::bail!(
                "run id prefix `{id}` fits more than one run ({}{}): type more of it",
                more.iter()
                    .take(2)
                    .map(|(_, r)| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if more.len() > 2 { ", ..." } else { "" }
            ),
        }
    }

    /// Each job's failure memory (consecutive failures, cooldown).
    pub fn failure_states(&self) -> anyhow::Result<Vec<(String, FailureState)>> {
        self.read(sqlite::read_failure_states, async |s| {
            s.failure_states().await
        })
    }

    /// One key of the store's key-value table (absent or expired: `None`).
    pub fn kv_get(&self, key: &str) -> anyhow::Result<Option<Value>> {
        self.read(
            |c, p| sqlite::read_kv(c, p, key),
            async |s| s.kv(key.to_string(), crate::store::KvOp::Get).await,
        )
    }

    /// Which of `keys` (run keys, `job@slot`) a run record holds.
    pub fn recorded_run_keys(
        &self,
        keys: Vec<String>,
    ) -> anyhow::Result<std::collections::HashSet<String>> {
        let k = keys.clone();
        self.read(
            |c, p| sqlite::read_recorded_run_keys(c, p, &k),
            async |s| s.recorded_run_keys(keys).await,
        )
    }

    /// Every event `query` selects, oldest first, read page by page from
    /// `query.after` (its `limit` is the page size).
    pub fn events(&self, mut query: EventQuery) -> anyhow::Result<Vec<Event>> {
        let mut out = Vec::new();
        loop {
            let q = query.clone();
            let page = self.read(
                |c, p| sqlite::read_events(c, p, &q),
                async |s| s.events(q.clone()).await,
            )?;
            let Some(last) = page.last().map(|e| e.id) else {
                return Ok(out);
            };
            query.after = last;
            out.extend(page);
        }
    }

    /// Commands the daemon has not handled yet (handled ones are deleted).
    pub fn inbox(&self) -> anyhow::Result<Vec<(i64, InboxCommand)>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.read(
                |c, p| sqlite::read_inbox(c, p, after),
                async |s| s.inbox(after).await,
            )?;
            let Some(last) = page.last().map(|(id, _)| *id) else {
                return Ok(out);
            };
            after = last;
            out.extend(page);
        }
    }

    /// Leaves a command for the daemon; returns its inbox id.
    pub fn post(&self, command: &InboxCommand) -> anyhow::Result<i64> {
        Ok(match self {
            StoreAccess::Sqlite(path) => sqlite::post_to_inbox(path, command)
                .with_context(|| format!("posting to the inbox of {}", path.display()))?,
            StoreAccess::Redis(store, rt) => rt.block_on(store.post_to_inbox(command))?,
        })
    }
}

/// Who is at the keyboard, for records of decisions: `--by`, else
/// `$USER@host`.
pub fn operator(by: Option<&str>) -> String {
    if let Some(by) = by.filter(|b| !b.trim().is_empty()) {
        return by.trim().to_string();
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}
