//! The embedded store: one SQLite file in WAL mode. This module owns the
//! [`SqliteStore`] handle (opening, the read pool, handing writes to the
//! writer) and the SQLite half of every [`Store`](super::Store) call; its
//! files split the backend by concern: `migrations` (schema and upgrades),
//! `writer` (the SQL thread, savepoints, the checkpointer), `prepare` (the
//! thread that batches and serializes writes beside it), `rows` (the SQL
//! that writes), `kv` (the key-value store), `reads` (the queries), and
//! `inbox` (commands other processes leave). It may use `store`'s own
//! types and `spec` (the snapshot's resources), nothing above.
//!
//! One writer thread owns the write connection and commits every write that
//! queued up while the previous transaction ran in one transaction (group
//! commit), each inside its own savepoint so one failing write does not fail
//! its neighbours. Reads run on a small pool of read connections on
//! tokio's blocking threads, so the API never waits behind the writer.

mod inbox;
mod kv;
pub use kv::read_kv;
mod migrations;
mod output;
pub use output::read_output;
mod prepare;
mod reads;
mod rows;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::backlog::Backlog;
use super::runs::{Approval, FailureState, InboxCommand, LiveState, Run, RunQuery};
use super::{
    Applied, Event, EventQuery, Mutation, NewEvent, RevisionRecord, RevisionWrite, SharedEvent,
    StoreError,
};
pub use inbox::{post_to_inbox, read_inbox};
pub use reads::{
    events as read_events, failure_states as read_failure_states, read_applied, read_approvals,
    read_live_state, read_run, read_runs_blocking, read_runs_by_prefix,
    recorded_run_keys as read_recorded_run_keys,
};
use writer::{Reply, WriteOp};

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<SharedEvent>,
    backlog: Arc<Backlog>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer thread after its last batch.
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(what, e)
}

/// Every row `sql` returns, each mapped by `f`.
fn all_rows<T>(
    c: &Connection,
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(sql_err(path))?;
    let rows = stmt.query_map(params, f).map_err(sql_err(path))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(path))
}

/// A connection beside the writer's (a reader or the checkpointer): waits
/// up to 10 s for a lock instead of failing at once.
fn open_beside(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

impl SqliteStore {
    /// Open or create the store, migrating it to this binary's schema.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: format!("creating {}: {e}", parent.display()),
            })?;
        }
        let conn = migrations::open_migrated(path)?;
        migrations::tune_writer(&conn, path)?;
        let (tx, rx) = mpsc::channel();
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let backlog = Arc::new(Backlog::default());
        writer::start(conn, rx, path, events.clone(), backlog.clone()).map_err(|e| {
            StoreError::Open {
                path: path.display().to_string(),
                message: format!("starting the writer threads: {e}"),
            }
        })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
                events,
                backlog,
            }),
        })
    }

    /// Open an existing store for reading only (the CLI, while a daemon
    /// may be writing). Fails when the file does not exist.
    pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql_err(path))?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Hand one operation to the writer and wait for its reply.
    async fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.inner.writer.lock().map_err(|_| StoreError::Closed)?;
            let sender = guard.as_ref().ok_or(StoreError::Closed)?;
            sender.send(make(reply)).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Run `f` on a pooled read connection on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_beside(&inner.path).map_err(sql_err(&inner.path))?,
            };
            let result = f(&conn, &inner.path);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < 8
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Committed events, in id order, as they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<SharedEvent> {
        self.inner.events.subscribe()
    }

    /// Queue writes without waiting; they commit with the next batch, in
    /// order with every other write of this process.
    pub fn submit(&self, mutations: Vec<Mutation>) -> Result<(), StoreError> {
        if mutations.is_empty() {
            return Ok(());
        }
        let guard = self.inner.writer.lock().map_err(|_| StoreError::Closed)?;
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        self.inner.backlog.add(mutations.len());
        sender
            .send(WriteOp::Mutations(mutations))
            .map_err(|_| StoreError::Closed)
    }

    /// Wait while more than `limit` submitted writes are uncommitted.
    pub async fn wait_for_backlog(&self, limit: usize) {
        self.inner.backlog.wait(limit).await
    }

    /// Submitted writes not yet committed.
    pub fn backlog(&self) -> usize {
        self.inner.backlog.pending()
    }

    /// A key-value operation; see [`super::KvOp`].
    pub async fn kv(&self, key: String, op: super::KvOp) -> Result<Option<Value>, StoreError> {
        self.write(|reply| WriteOp::Kv { key, op, reply }).await
    }

    /// Wait until everything submitted before this call is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(WriteOp::Barrier).await
    }

    pub async fn run(&self, id: String) -> Result<Option<(i64, Run)>, StoreError> {
        self.read(move |c, p| reads::run(c, p, &id)).await
    }

    /// Runs newest first.
    pub async fn runs(&self, q: RunQuery) -> Result<Vec<(i64, Run)>, StoreError> {
        self.read(move |c, p| reads::runs(c, p, &q)).await
    }

    /// Events per type since `since` (RFC 3339), for reports.
    pub async fn event_counts_since(
        &self,
        since: String,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(move |c, p| reads::event_counts_since(c, p, &since))
            .await
    }

    /// The newest run of each of `jobs`.
    pub async fn last_runs(
        &self,
        jobs: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Run>, StoreError> {
        self.read(move |c, p| reads::last_runs(c, p, jobs)).await
    }

    /// Every run that is not finished (recovery on start).
    pub async fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.read(reads::active_runs).await
    }

    /// Runs per job and status (for counts and retention).
    pub async fn run_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.read(reads::run_counts).await
    }

    pub async fn failure_states(&self) -> Result<Vec<(String, FailureState)>, StoreError> {
        self.read(reads::failure_states).await
    }

    /// The last slot each job got an outcome for.
    pub async fn job_slots(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(reads::job_slots).await
    }

    /// Each job's last slot and the unfinished runs per job and flow.
    pub async fn live_state(&self) -> Result<LiveState, StoreError> {
        self.read(read_live_state).await
    }

    pub async fn approvals(&self, pending_only: bool) -> Result<Vec<Approval>, StoreError> {
        self.read(move |c, p| read_approvals(c, p, pending_only))
            .await
    }

    /// Commands from other processes with an id above `after`.
    pub async fn inbox(&self, after: i64) -> Result<Vec<(i64, InboxCommand)>, StoreError> {
        self.read(move |c, p| read_inbox(c, p, after)).await
    }

    pub async fn inbox_progress(&self, id: i64) -> Result<u32, StoreError> {
        self.read(move |c, p| inbox::progress(c, p, id)).await
    }

    /// Leave a command for the daemon; returns its inbox id.
    pub async fn post_to_inbox(&self, command: &InboxCommand) -> Result<i64, StoreError> {
        let (path, command) = (self.path().to_path_buf(), command.clone());
        tokio::task::spawn_blocking(move || post_to_inbox(&path, &command))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub async fn recorded_run_keys(
        &self,
        keys: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.read(move |c, p| reads::recorded_run_keys(c, p, &keys))
            .await
    }

    pub async fn recorded_runs(
        &self,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.read(move |c, p| reads::recorded_runs(c, p, &ids))
            .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c, p| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err(p)))
            .await
    }

    pub async fn applied(&self) -> Result<Applied, StoreError> {
        self.read(read_applied).await
    }

    /// Record `w` in one transaction.
    pub async fn record_revision(&self, w: RevisionWrite) -> Result<(i64, Vec<Event>), StoreError> {
        self.write(|reply| WriteOp::Revision {
            write: Box::new(w),
            reply,
        })
        .await
    }

    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.write(|reply| WriteOp::AppendEvents { events, reply })
            .await
    }

    pub async fn revisions(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<RevisionRecord>, StoreError> {
        self.read(move |c, p| reads::revisions(c, p, before, limit))
            .await
    }

    pub async fn events(&self, query: EventQuery) -> Result<Vec<Event>, StoreError> {
        self.read(move |c, p| reads::events(c, p, &query)).await
    }

    /// A run's output chunks after position `after`.
    pub async fn output(
        &self,
        run_id: String,
        after: i64,
    ) -> Result<Vec<super::output::OutputChunk>, StoreError> {
        self.read(move |c, p| read_output(c, p, &run_id, after))
            .await
    }

    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        self.read(|c, p| {
            c.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
                .map_err(sql_err(p))
        })
        .await
    }
}
