//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer thread owns the write connection and commits every write that
//! queued up while the previous transaction ran in one transaction (group
//! commit), each inside its own savepoint so one failing write does not fail
//! its neighbours. Reads run on a small pool of read connections on
//! tokio's blocking threads, so the API never waits behind the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::runs::{Approval, FailureState, InboxCommand, Run, RunQuery};
use super::{
    Applied, Coalesced, Event, EventQuery, Mutation, NewEvent, ResourceWrites, RevisionRecord,
    RevisionStatus, StoreError,
};
use crate::spec::model::{Connector, Flow, Job, Kind, Skill};
use crate::spec::snapshot::{Resource, Snapshot};

/// Schema migrations, applied in order; `PRAGMA user_version` is the index
/// of the last one applied.
const MIGRATIONS: &[&str] = &[
    // 1: applied resources, revision history, events.
    "CREATE TABLE resources (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        spec TEXT NOT NULL,
        hash TEXT NOT NULL,
        file TEXT NOT NULL,
        line INTEGER NOT NULL,
        col INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    CREATE TABLE revisions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        status TEXT NOT NULL,
        at TEXT NOT NULL,
        git_commit TEXT,
        git_dirty INTEGER NOT NULL DEFAULT 0,
        content_hash TEXT NOT NULL,
        summary TEXT NOT NULL,
        changes TEXT NOT NULL,
        errors TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        at TEXT NOT NULL,
        job_id TEXT,
        run_id TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX events_job ON events (job_id, id);",
    // 2: runs (the record as JSON plus the columns queries need), per-job
    // scheduler state, approvals, and the inbox other processes write to.
    "CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        run_key TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL,
        status TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX runs_job ON runs (job_id, seq);
    CREATE INDEX runs_active ON runs (status)
        WHERE status IN ('queued', 'awaiting_approval', 'running', 'retrying');
    CREATE TABLE failure_memory (
        job_id TEXT PRIMARY KEY,
        state TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE job_slots (
        job_id TEXT PRIMARY KEY,
        last_slot TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        status TEXT NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        command TEXT NOT NULL
    );",
    // 3: the workflow key-value store (and idempotency records).
    "CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_at TEXT
    ) WITHOUT ROWID;",
    // 4: how far a large `trigger --count` command got, so a restart
    // resumes it instead of running it again from the start.
    "ALTER TABLE inbox ADD COLUMN progress INTEGER NOT NULL DEFAULT 0;",
];

/// Most runtime writes one transaction takes (the rest wait for the
/// next): big enough that a run queued, started and finished within it is
/// written once.
const MAX_BATCH: usize = 65_536;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Tells a write's caller its result once the transaction's fate is known.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

enum WriteOp {
    ApplyRevision {
        revision: RevisionRecord,
        writes: ResourceWrites,
        events: Vec<NewEvent>,
        reply: Reply<(i64, Vec<Event>)>,
    },
    RejectRevision {
        revision: RevisionRecord,
        events: Vec<NewEvent>,
        reply: Reply<(i64, Vec<Event>)>,
    },
    AppendEvents {
        events: Vec<NewEvent>,
        reply: Reply<Vec<Event>>,
    },
    /// Fire-and-forget writes, coalesced with the rest of the batch.
    Mutations(Vec<Mutation>),
    /// Replies once everything sent before it is committed.
    Barrier(Reply<()>),
    /// A key-value operation, on the writer so it sees every earlier write.
    Kv {
        key: String,
        op: super::KvOp,
        reply: Reply<Option<Value>>,
    },
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<Event>,
    backlog: Arc<Backlog>,
}

/// Writes submitted and not yet committed, so producers can wait for the
/// writer instead of growing its queue without bound.
#[derive(Default)]
struct Backlog {
    pending: std::sync::atomic::AtomicUsize,
    drained: tokio::sync::Notify,
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

fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql_err(path))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(sql_err(path))
}

/// The writer's connection: a page cache that holds the hot index and
/// table pages (the 2 MB default spilled dirty pages to the WAL mid
/// transaction and re-read pages from the OS), and room for every
/// statement it caches.
fn tune_writer(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.set_prepared_statement_cache_capacity(64);
    // Checkpoints run on their own thread (see `checkpointer`): copying
    // WAL pages to the database file and fsyncing both was a fifth of
    // the writer's time at high run rates.
    // A burst can grow the WAL to hundreds of MB; once it starts over,
    // the file is cut back to 64 MB.
    conn.execute_batch(
        "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(sql_err(path))
}

/// WAL pages (256 MB) after which a checkpoint waits for the writer to
/// pause, so a writer that never pauses cannot grow the WAL without bound.
/// Forcing it at 64 MB stalled the writer often enough to cost a third of
/// the run rate in a burst.
const CHECKPOINT_FORCE_PAGES: i64 = 65_536;

/// Copies the WAL into the database beside the writer (a passive
/// checkpoint does not block it), woken after commits. Ends when the
/// writer drops its sender.
fn checkpointer(path: PathBuf, commits: mpsc::Receiver<()>) {
    let conn = match Connection::open(&path).and_then(|c| {
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "store: no checkpointer; the WAL grows until restart");
            return;
        }
    };
    let mut wal_pages = 0i64;
    while commits.recv().is_ok() {
        // Commits that came in meanwhile need one checkpoint, not one each.
        while commits.try_recv().is_ok() {}
        let mode = if wal_pages >= CHECKPOINT_FORCE_PAGES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            // A busy writer keeps appending: the WAL only starts over
            // after a checkpoint that waited for a pause in writing.
            Ok((log, _done)) => wal_pages = log,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "store: checkpoint failed; retried after the next commit")
            }
        }
        // Frequent small checkpoints cost more than they save.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(path = %path.display(), error = %e, "store: final checkpoint failed");
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err(path))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err(path))?;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(sql_err(path))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(sql_err(path))?;
    }
    tx.commit().map_err(sql_err(path))
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
        let mut conn = Connection::open(path).map_err(sql_err(path))?;
        configure(&conn, path)?;
        migrate(&mut conn, path)?;
        tune_writer(&conn, path)?;
        let (tx, rx) = mpsc::channel();
        let thread_path = path.to_path_buf();
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let publisher = events.clone();
        let backlog = Arc::new(Backlog::default());
        let writer_backlog = backlog.clone();
        start_writer(conn, rx, &thread_path, publisher, writer_backlog).map_err(|e| {
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
                None => {
                    let c = Connection::open(&inner.path).map_err(sql_err(&inner.path))?;
                    c.busy_timeout(std::time::Duration::from_secs(10))
                        .map_err(sql_err(&inner.path))?;
                    c
                }
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
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
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
        let n = mutations.len();
        self.inner
            .backlog
            .pending
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        sender
            .send(WriteOp::Mutations(mutations))
            .map_err(|_| StoreError::Closed)
    }

    /// Wait while more than `limit` submitted writes are uncommitted.
    pub async fn wait_for_backlog(&self, limit: usize) {
        let b = &self.inner.backlog;
        loop {
            let drained = b.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if b.pending.load(std::sync::atomic::Ordering::Relaxed) <= limit {
                return;
            }
            drained.await;
        }
    }

    /// Submitted writes not yet committed.
    pub fn backlog(&self) -> usize {
        self.inner
            .backlog
            .pending
            .load(std::sync::atomic::Ordering::Relaxed)
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
        self.read(move |c, p| {
            c.query_row("SELECT seq, record FROM runs WHERE id = ?1", [&id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(sql_err(p))?
            .map(|(seq, rec)| Ok((seq, parse_run(&rec, seq)?)))
            .transpose()
        })
        .await
    }

    /// Runs newest first.
    pub async fn runs(&self, q: RunQuery) -> Result<Vec<(i64, Run)>, StoreError> {
        self.read(move |c, p| read_runs(c, p, &q)).await
    }

    /// Events per type since `since` (RFC 3339), for reports.
    pub async fn event_counts_since(
        &self,
        since: String,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(move |c, p| {
            let mut stmt = c
                .prepare(
                    "SELECT type, count(*) FROM events WHERE at >= ?1 GROUP BY type ORDER BY type",
                )
                .map_err(sql_err(p))?;
            let rows = stmt
                .query_map([since], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(sql_err(p))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(p))
        })
        .await
    }

    /// The newest run of each of `jobs`.
    pub async fn last_runs(
        &self,
        jobs: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Run>, StoreError> {
        self.read(move |c, p| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, record FROM runs WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1",
                )
                .map_err(sql_err(p))?;
            let mut out = std::collections::HashMap::new();
            for job in jobs {
                let row = stmt
                    .query_row([&job], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()
                    .map_err(sql_err(p))?;
                if let Some((seq, rec)) = row {
                    out.insert(job, parse_run(&rec, seq)?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Every run that is not finished (recovery on start).
    pub async fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.read(|c, p| {
            let mut stmt = c
                .prepare(
                    "SELECT seq, record FROM runs
                     WHERE status IN ('queued', 'awaiting_approval', 'running', 'retrying')
                     ORDER BY seq",
                )
                .map_err(sql_err(p))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(sql_err(p))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, rec) = row.map_err(sql_err(p))?;
                out.push(parse_run(&rec, seq)?);
            }
            Ok(out)
        })
        .await
    }

    /// Runs per job and status (for counts and retention).
    pub async fn run_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.read(|c, p| {
            let mut stmt = c
                .prepare("SELECT job_id, status, count(*) FROM runs GROUP BY job_id, status")
                .map_err(sql_err(p))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })
                .map_err(sql_err(p))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(p))
        })
        .await
    }

    pub async fn failure_states(&self) -> Result<Vec<(String, FailureState)>, StoreError> {
        self.read(|c, p| {
            let mut stmt = c
                .prepare("SELECT job_id, state FROM failure_memory")
                .map_err(sql_err(p))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(sql_err(p))?;
            let mut out = Vec::new();
            for row in rows {
                let (job, state) = row.map_err(sql_err(p))?;
                let state = serde_json::from_str(&state)
                    .map_err(|e| corrupt(&format!("failure memory of {job}"), e))?;
                out.push((job, state));
            }
            Ok(out)
        })
        .await
    }

    /// The last slot each job got an outcome for.
    pub async fn job_slots(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c, p| {
            let mut stmt = c
                .prepare("SELECT job_id, last_slot FROM job_slots")
                .map_err(sql_err(p))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err(p))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_err(p))
        })
        .await
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
        self.read(move |c, p| {
            c.query_row("SELECT progress FROM inbox WHERE id = ?1", [id], |r| {
                r.get::<_, u32>(0)
            })
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(sql_err(p))
        })
        .await
    }

    pub async fn recorded_runs(
        &self,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.read(move |c, p| {
            let mut found = std::collections::HashSet::new();
            for chunk in ids.chunks(256) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let mut stmt = c
                    .prepare(&format!("SELECT id FROM runs WHERE id IN ({marks})"))
                    .map_err(sql_err(p))?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(chunk), |r| r.get::<_, String>(0))
                    .map_err(sql_err(p))?;
                for id in rows {
                    found.insert(id.map_err(sql_err(p))?);
                }
            }
            Ok(found)
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c, p| c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_err(p)))
            .await
    }

    pub async fn applied(&self) -> Result<Applied, StoreError> {
        self.read(read_applied).await
    }

    pub async fn apply_revision(
        &self,
        revision: RevisionRecord,
        writes: ResourceWrites,
        events: Vec<NewEvent>,
    ) -> Result<(i64, Vec<Event>), StoreError> {
        self.write(|reply| WriteOp::ApplyRevision {
            revision,
            writes,
            events,
            reply,
        })
        .await
    }

    pub async fn reject_revision(
        &self,
        revision: RevisionRecord,
        events: Vec<NewEvent>,
    ) -> Result<(i64, Vec<Event>), StoreError> {
        self.write(|reply| WriteOp::RejectRevision {
            revision,
            events,
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
        self.read(move |c, p| read_revisions(c, p, before, limit))
            .await
    }

    pub async fn events(&self, query: EventQuery) -> Result<Vec<Event>, StoreError> {
        self.read(move |c, p| read_events(c, p, &query)).await
    }

    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        self.read(|c, p| {
            c.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
                .map_err(sql_err(p))
        })
        .await
    }
}

/// A batch as the preparing thread hands it to the SQL thread: the
/// operations in submission order, runtime writes coalesced and serialized.
struct Prepared {
    items: Vec<Item>,
    /// Only runtime writes and barriers: no savepoints needed.
    alone: bool,
    /// Runtime writes in the batch, for the backlog.
    mutation_count: usize,
}

enum Item {
    Rows(Rows),
    Op(WriteOp),
}

/// Coalesced runtime writes with their text already made, ready to bind.
struct Rows {
    runs: Vec<RunRow>,
    /// Every run record, back to back; `RunRow::end` closes each.
    records: String,
    events: EventRows,
    /// Everything else of the batch (few rows, serialized as written).
    rest: Coalesced,
}

struct RunRow {
    id: String,
    run_key: String,
    job_id: String,
    status: &'static str,
    end: usize,
}

/// A written batch's buffers, handed back to the preparing thread to fill
/// again: fresh multi-megabyte buffers per batch cost page faults and
/// purges (madvise) worth ~4 µs a run. Emptying them there also frees the
/// rows' strings off the SQL thread.
#[derive(Default)]
struct Spare {
    runs: Vec<RunRow>,
    records: String,
    data: String,
    ends: Vec<usize>,
}

/// Events with their data as JSON text, back to back.
struct EventRows {
    events: Vec<NewEvent>,
    data: String,
    ends: Vec<usize>,
}

/// Two threads: one gathers what producers submitted into batches,
/// coalesces and serializes them (and frees the records); the other only
/// runs SQL. At high run rates the writer is the bottleneck, and a third
/// of its time went to the work now done beside it.
fn start_writer(
    conn: Connection,
    rx: mpsc::Receiver<WriteOp>,
    path: &Path,
    publisher: broadcast::Sender<Event>,
    backlog: Arc<Backlog>,
) -> std::io::Result<()> {
    // One batch prepared ahead: the SQL thread never waits for the next,
    // and memory stays bounded (the rest waits in `rx`, counted as backlog).
    let (prepared_tx, prepared_rx) = mpsc::sync_channel(1);
    let (spare_tx, spare_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("multijob-prep".into())
        .spawn(move || prepare_loop(rx, prepared_tx, spare_rx))?;
    let sql_path = path.to_path_buf();
    std::thread::Builder::new()
        .name("multijob-store-writer".into())
        .spawn(move || writer_loop(conn, prepared_rx, &sql_path, &publisher, &backlog, spare_tx))?;
    Ok(())
}

/// How much of a batch an operation takes: its runtime writes, or one.
fn op_size(op: &WriteOp) -> usize {
    match op {
        WriteOp::Mutations(ms) => ms.len().max(1),
        _ => 1,
    }
}

/// A batch smaller than this does not need the previous batches' buffers.
const QUIET_BATCH: usize = 1024;

fn prepare_loop(
    rx: mpsc::Receiver<WriteOp>,
    out: mpsc::SyncSender<Prepared>,
    spares: mpsc::Receiver<Spare>,
) {
    let mut spare = Spare::default();
    while let Ok(first) = rx.recv() {
        // The biggest buffers come back; keep the roomiest.
        while let Ok(back) = spares.try_recv() {
            if back.records.capacity() > spare.records.capacity() {
                spare = back;
            }
        }
        let mut size = op_size(&first);
        let mut batch = vec![first];
        while size < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    size += op_size(&op);
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        if size < QUIET_BATCH {
            // Quiet again: an idle store holds no burst-sized buffers.
            spare = Spare::default();
        }
        let alone = batch
            .iter()
            .all(|op| matches!(op, WriteOp::Mutations(_) | WriteOp::Barrier(_)));
        let mut mutation_count = 0;
        let mut items = Vec::new();
        let mut coalesced = Coalesced::default();
        for op in batch {
            match op {
                WriteOp::Mutations(ms) => {
                    mutation_count += ms.len();
                    ms.into_iter().for_each(|m| coalesced.add(m));
                }
                // Writes submitted before this operation land before it
                // (a kv read sees the PutKv sent just before it).
                other => {
                    if !coalesced.is_empty() {
                        let w = std::mem::take(&mut coalesced);
                        items.push(Item::Rows(prepare_rows(w, std::mem::take(&mut spare))));
                    }
                    items.push(Item::Op(other));
                }
            }
        }
        if !coalesced.is_empty() {
            items.push(Item::Rows(prepare_rows(
                coalesced,
                std::mem::take(&mut spare),
            )));
        }
        let prepared = Prepared {
            items,
            alone,
            mutation_count,
        };
        if out.send(prepared).is_err() {
            return;
        }
    }
}

fn prepare_rows(mut w: Coalesced, spare: Spare) -> Rows {
    let Spare {
        mut runs,
        records,
        data,
        ends,
    } = spare;
    let records_in = w.take_runs();
    let mut buf = records.into_bytes();
    buf.clear();
    runs.clear();
    for run in records_in {
        let start = buf.len();
        if let Err(e) = serde_json::to_writer(&mut buf, &run) {
            buf.truncate(start);
            tracing::error!(run = %run.id, error = %e, "store: run record not serializable; not written");
            continue;
        }
        let Run {
            id,
            run_key,
            job_id,
            status,
            ..
        } = *run;
        runs.push(RunRow {
            id,
            run_key,
            job_id,
            status: status.as_str(),
            end: buf.len(),
        });
    }
    // serde_json writes UTF-8 only; checked once for the whole batch.
    let records = String::from_utf8(buf).unwrap_or_else(|e| {
        tracing::error!(error = %e, "store: run records are not UTF-8; none written");
        runs.clear();
        String::new()
    });
    let events = prepare_events_into(std::mem::take(&mut w.events), data, ends);
    Rows {
        runs,
        records,
        events,
        rest: w,
    }
}

fn prepare_events(events: Vec<NewEvent>) -> EventRows {
    prepare_events_into(events, String::new(), Vec::new())
}

fn prepare_events_into(events: Vec<NewEvent>, data: String, mut ends: Vec<usize>) -> EventRows {
    let mut data = data.into_bytes();
    data.clear();
    ends.clear();
    for e in &events {
        let start = data.len();
        if let Err(err) = serde_json::to_writer(&mut data, &e.data) {
            data.truncate(start);
            tracing::error!(event = %e.event_type, error = %err, "store: event data not serializable; stored as null");
            data.extend_from_slice(b"null");
        }
        ends.push(data.len());
    }
    match String::from_utf8(data) {
        Ok(data) => EventRows { events, data, ends },
        Err(e) => {
            tracing::error!(error = %e, "store: event data is not UTF-8; stored as null");
            let ends = (1..=events.len()).map(|i| i * 4).collect();
            let data = "null".repeat(events.len());
            EventRows { events, data, ends }
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Prepared>,
    path: &Path,
    publisher: &broadcast::Sender<Event>,
    backlog: &Backlog,
    spares: mpsc::Sender<Spare>,
) {
    let (commits, wake) = mpsc::channel();
    let checkpoint_path = path.to_path_buf();
    if let Err(e) = std::thread::Builder::new()
        .name("multijob-ckpt".into())
        .spawn(move || checkpointer(checkpoint_path, wake))
    {
        // Without it the WAL is only checkpointed when the store closes.
        tracing::error!(error = %e, "store: cannot start the checkpointer thread");
    }
    while let Ok(Prepared {
        items,
        alone,
        mutation_count,
    }) = rx.recv()
    {
        let mut tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, "store: cannot begin a transaction");
                for item in items {
                    if let Item::Op(op) = item {
                        fail(op, path, &message);
                    }
                }
                backlog
                    .pending
                    .fetch_sub(mutation_count, std::sync::atomic::Ordering::Relaxed);
                backlog.drained.notify_waiters();
                continue;
            }
        };
        // Alone in the transaction (the usual case), the runtime writes
        // need no savepoint of their own: a failure rolls the transaction
        // back, which loses nothing else. A savepoint copies every page it
        // touches to its journal first, most of the writer's work.
        let mut barriers = Vec::new();
        let mut done: Vec<Finish> = Vec::new();
        let mut published: Vec<Event> = Vec::new();
        let mut roll_back = false;
        for item in items {
            match item {
                Item::Rows(rows) => {
                    let written = if alone {
                        write_rows(&tx, path, rows)
                    } else {
                        in_savepoint(&mut tx, path, |sp| write_rows(sp, path, rows))
                    };
                    match written {
                        Ok((events, spare)) => {
                            published.extend(events);
                            let _ = spares.send(spare);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "store: a batch of runtime writes failed");
                            roll_back = alone;
                        }
                    }
                }
                Item::Op(WriteOp::Barrier(reply)) => barriers.push(reply),
                Item::Op(other) => done.push(run_op(&mut tx, other, path, &mut published)),
            }
        }
        let committed = if roll_back {
            tx.rollback().map_err(|e| e.to_string())
        } else {
            tx.commit().map_err(|e| e.to_string())
        };
        if let Err(e) = &committed {
            tracing::error!(error = %e, "store: commit failed");
        } else {
            let _ = commits.send(());
            for e in published {
                let _ = publisher.send(e);
            }
        }
        for finish in done {
            finish(committed.clone());
        }
        for b in barriers {
            let _ = b.send(committed.clone().map_err(|message| StoreError::Open {
                path: path.display().to_string(),
                message,
            }));
        }
        backlog
            .pending
            .fetch_sub(mutation_count, std::sync::atomic::Ordering::Relaxed);
        backlog.drained.notify_waiters();
    }
}

fn write_rows(c: &Connection, path: &Path, rows: Rows) -> Result<(Vec<Event>, Spare), StoreError> {
    if !rows.runs.is_empty() {
        let mut put = c
            .prepare_cached(
                "INSERT INTO runs (id, run_key, job_id, status, record) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record",
            )
            .map_err(sql_err(path))?;
        let mut start = 0;
        for run in &rows.runs {
            let record = rows.records.get(start..run.end).unwrap_or("null");
            start = run.end;
            if let Err(e) =
                put.execute(params![run.id, run.run_key, run.job_id, run.status, record])
            {
                // A second run for the same slot: the first one stands.
                tracing::warn!(run = %run.id, key = %run.run_key, error = %e, "store: run not written");
            }
        }
    }
    write_rest(c, path, &rows.rest)?;
    let (events, data, ends) = insert_event_rows(c, path, rows.events)?;
    let spare = Spare {
        runs: rows.runs,
        records: rows.records,
        data,
        ends,
    };
    Ok((events, spare))
}

/// The batch's writes other than runs and events.
fn write_rest(c: &Connection, path: &Path, w: &Coalesced) -> Result<(), StoreError> {
    if !w.failure.is_empty() {
        let mut put = c
            .prepare_cached(
                "INSERT INTO failure_memory (job_id, state) VALUES (?1, ?2)
                 ON CONFLICT (job_id) DO UPDATE SET state = excluded.state",
            )
            .map_err(sql_err(path))?;
        for (job, state) in &w.failure {
            let state = serde_json::to_string(state).map_err(|e| corrupt(job, e))?;
            put.execute(params![job, state]).map_err(sql_err(path))?;
        }
    }
    if !w.slots.is_empty() {
        let mut put = c
            .prepare_cached(
                "INSERT INTO job_slots (job_id, last_slot) VALUES (?1, ?2)
                 ON CONFLICT (job_id) DO UPDATE SET last_slot = max(last_slot, excluded.last_slot)",
            )
            .map_err(sql_err(path))?;
        for (job, slot) in &w.slots {
            put.execute(params![job, slot]).map_err(sql_err(path))?;
        }
    }
    if !w.approvals.is_empty() {
        let mut put = c
            .prepare_cached(
                "INSERT INTO approvals (id, run_id, status, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record",
            )
            .map_err(sql_err(path))?;
        for a in &w.approvals {
            let record = serde_json::to_string(a).map_err(|e| corrupt(&a.id, e))?;
            put.execute(params![a.id, a.run_id, a.status.as_str(), record])
                .map_err(sql_err(path))?;
        }
    }
    if !w.inbox_progress.is_empty() {
        let mut put = c
            .prepare_cached("UPDATE inbox SET progress = max(progress, ?2) WHERE id = ?1")
            .map_err(sql_err(path))?;
        for (id, done) in &w.inbox_progress {
            put.execute(params![id, done]).map_err(sql_err(path))?;
        }
    }
    if !w.inbox_done.is_empty() {
        let mut del = c
            .prepare_cached("DELETE FROM inbox WHERE id = ?1")
            .map_err(sql_err(path))?;
        for id in &w.inbox_done {
            del.execute([id]).map_err(sql_err(path))?;
        }
    }
    for (job, keep) in &w.prune_runs {
        c.prepare_cached(
            // The newest `keep` finished runs stay; active ones never go
            // and do not count (eight long runs must not empty history).
            "DELETE FROM runs WHERE job_id = ?1
               AND status NOT IN ('queued', 'awaiting_approval', 'running', 'retrying')
               AND seq < (SELECT seq FROM runs WHERE job_id = ?1
                            AND status NOT IN ('queued', 'awaiting_approval', 'running', 'retrying')
                            ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )
        .and_then(|mut st| st.execute(params![job, (*keep as i64).saturating_sub(1)]))
        .map_err(sql_err(path))?;
    }
    if let Some(before) = &w.prune_events_before {
        // Events are appended in time order, so ids order them by time too.
        c.prepare_cached(
            "DELETE FROM events WHERE id < (SELECT coalesce(min(id), 0) FROM events WHERE at >= ?1)",
        )
        .and_then(|mut st| st.execute([before]))
        .map_err(sql_err(path))?;
    }
    for (key, value) in &w.kv {
        c.prepare_cached(
            "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, NULL)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL",
        )
        .and_then(|mut st| st.execute(params![key, value.to_string()]))
        .map_err(sql_err(path))?;
    }
    Ok(())
}

/// Execute one write in a savepoint; return what to tell its caller once
/// the transaction's outcome is known.
fn run_op(
    tx: &mut Transaction<'_>,
    op: WriteOp,
    path: &Path,
    published: &mut Vec<Event>,
) -> Finish {
    fn finish<T: Send + 'static>(
        reply: Reply<T>,
        result: Result<T, StoreError>,
        path: PathBuf,
    ) -> Finish {
        Box::new(move |committed| {
            let outcome = match (result, committed) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) => Err(e),
                (Ok(_), Err(message)) => Err(StoreError::Open {
                    path: path.display().to_string(),
                    message: format!("commit failed: {message}"),
                }),
            };
            let _ = reply.send(outcome);
        })
    }
    let owned = path.to_path_buf();
    match op {
        WriteOp::ApplyRevision {
            revision,
            writes,
            events,
            reply,
        } => {
            let r = in_savepoint(tx, path, |sp| {
                write_resources(sp, path, &writes)?;
                let seq = insert_revision(sp, path, &revision)?;
                let events = insert_events(sp, path, events)?;
                Ok((seq, events))
            });
            if let Ok((_, events)) = &r {
                published.extend(events.iter().cloned());
            }
            finish(reply, r, owned)
        }
        WriteOp::RejectRevision {
            revision,
            events,
            reply,
        } => {
            let r = in_savepoint(tx, path, |sp| {
                let seq = insert_revision(sp, path, &revision)?;
                let events = insert_events(sp, path, events)?;
                Ok((seq, events))
            });
            if let Ok((_, events)) = &r {
                published.extend(events.iter().cloned());
            }
            finish(reply, r, owned)
        }
        WriteOp::AppendEvents { events, reply } => {
            let r = in_savepoint(tx, path, |sp| insert_events(sp, path, events));
            if let Ok(events) = &r {
                published.extend(events.iter().cloned());
            }
            finish(reply, r, owned)
        }
        WriteOp::Kv { key, op, reply } => {
            let r = in_savepoint(tx, path, |sp| kv_op(sp, path, &key, op));
            finish(reply, r, owned)
        }
        WriteOp::Mutations(_) | WriteOp::Barrier(_) => Box::new(|_| {}),
    }
}

fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    path: &Path,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let sp = tx.savepoint().map_err(sql_err(path))?;
    match f(&sp) {
        Ok(v) => {
            sp.commit().map_err(sql_err(path))?;
            Ok(v)
        }
        Err(e) => Err(e), // dropping the savepoint rolls it back
    }
}

fn fail(op: WriteOp, path: &Path, message: &str) {
    let err = || StoreError::Open {
        path: path.display().to_string(),
        message: message.to_string(),
    };
    match op {
        WriteOp::ApplyRevision { reply, .. } | WriteOp::RejectRevision { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::AppendEvents { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::Barrier(reply) => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::Kv { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::Mutations(ms) => {
            tracing::error!(count = ms.len(), error = message, "store: writes lost");
        }
    }
}

fn write_resources(c: &Connection, path: &Path, w: &ResourceWrites) -> Result<(), StoreError> {
    let mut upsert = c
        .prepare_cached(
            "INSERT INTO resources (kind, id, spec, hash, file, line, col)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (kind, id) DO UPDATE SET spec = excluded.spec, hash = excluded.hash,
               file = excluded.file, line = excluded.line, col = excluded.col",
        )
        .map_err(sql_err(path))?;
    for row in &w.upserts {
        upsert
            .execute(params![
                row.kind.as_str(),
                row.id,
                row.spec.to_string(),
                row.hash,
                row.file,
                row.line,
                row.column
            ])
            .map_err(sql_err(path))?;
    }
    let mut delete = c
        .prepare_cached("DELETE FROM resources WHERE kind = ?1 AND id = ?2")
        .map_err(sql_err(path))?;
    for (kind, id) in &w.deletes {
        delete
            .execute(params![kind.as_str(), id])
            .map_err(sql_err(path))?;
    }
    Ok(())
}

fn insert_revision(c: &Connection, path: &Path, r: &RevisionRecord) -> Result<i64, StoreError> {
    c.prepare_cached(
        "INSERT INTO revisions (id, status, at, git_commit, git_dirty, content_hash, summary, changes, errors)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.id,
            r.status.as_str(),
            r.at,
            r.git_commit,
            r.git_dirty,
            r.content_hash,
            r.summary.to_string(),
            r.changes.to_string(),
            serde_json::to_string(&r.errors).unwrap_or_else(|_| "[]".into()),
        ])
    })
    .map_err(sql_err(path))?;
    Ok(c.last_insert_rowid())
}

/// Rows per multi-row event insert: one statement execution (and one
/// AUTOINCREMENT bookkeeping) per 32 events instead of per event.
const EVENT_ROWS: usize = 32;

fn insert_events(
    c: &Connection,
    path: &Path,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>, StoreError> {
    insert_event_rows(c, path, prepare_events(events)).map(|(events, _, _)| events)
}

fn insert_event_rows(
    c: &Connection,
    path: &Path,
    rows: EventRows,
) -> Result<(Vec<Event>, String, Vec<usize>), StoreError> {
    let EventRows { events, data, ends } = rows;
    let mut out = Vec::with_capacity(events.len());
    let mut start = 0;
    let mut rows = events.into_iter().zip(ends.iter().copied()).peekable();
    let mut chunk: Vec<(NewEvent, &str)> = Vec::with_capacity(EVENT_ROWS);
    while rows.peek().is_some() {
        chunk.clear();
        for (e, end) in rows.by_ref().take(EVENT_ROWS) {
            chunk.push((e, data.get(start..end).unwrap_or("null")));
            start = end;
        }
        let sql = if chunk.len() == EVENT_ROWS {
            multi_row_event_insert()
        } else {
            "INSERT INTO events (type, at, job_id, run_id, data) VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        let mut stmt = c.prepare_cached(sql).map_err(sql_err(path))?;
        if chunk.len() == EVENT_ROWS {
            let mut i = 1;
            for (e, d) in &chunk {
                stmt.raw_bind_parameter(i, &e.event_type)
                    .and_then(|_| stmt.raw_bind_parameter(i + 1, &e.at))
                    .and_then(|_| stmt.raw_bind_parameter(i + 2, &e.job_id))
                    .and_then(|_| stmt.raw_bind_parameter(i + 3, &e.run_id))
                    .and_then(|_| stmt.raw_bind_parameter(i + 4, *d))
                    .map_err(sql_err(path))?;
                i += 5;
            }
            stmt.raw_execute().map_err(sql_err(path))?;
        } else {
            for (e, d) in &chunk {
                stmt.execute(params![e.event_type, e.at, e.job_id, e.run_id, d])
                    .map_err(sql_err(path))?;
            }
        }
        // One writer, one statement: the rows took consecutive ids
        // ending at the last one.
        let last = c.last_insert_rowid();
        let first = last - chunk.len() as i64 + 1;
        for (k, (e, _)) in chunk.drain(..).enumerate() {
            out.push(Event {
                id: first + k as i64,
                event_type: e.event_type,
                at: e.at,
                job_id: e.job_id,
                run_id: e.run_id,
                data: e.data,
            });
        }
    }
    drop(rows);
    Ok((out, data, ends))
}

/// `INSERT INTO events ... VALUES (...), (...)` for [`EVENT_ROWS`] rows.
fn multi_row_event_insert() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let rows: Vec<String> = (0..EVENT_ROWS)
            .map(|r| {
                let b = r * 5;
                format!(
                    "(?{}, ?{}, ?{}, ?{}, ?{})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                )
            })
            .collect();
        format!(
            "INSERT INTO events (type, at, job_id, run_id, data) VALUES {}",
            rows.join(", ")
        )
    })
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// The applied snapshot from a connection (also used by `plan --state`
/// through a read-only connection).
pub fn read_applied(c: &Connection, path: &Path) -> Result<Applied, StoreError> {
    let mut snapshot = Snapshot::default();
    let mut stmt = c
        .prepare("SELECT kind, id, spec, hash, file, line, col FROM resources")
        .map_err(sql_err(path))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, u32>(6)?,
            ))
        })
        .map_err(sql_err(path))?;
    for row in rows {
        let (kind, id, spec, hash, file, line, column) = row.map_err(sql_err(path))?;
        let what = format!("{kind} {id}");
        let kind = Kind::parse(&kind).ok_or_else(|| corrupt(&what, "unknown kind"))?;
        fn typed<T: serde::de::DeserializeOwned>(
            spec: &str,
            hash: String,
            file: String,
            line: u32,
            column: u32,
            what: &str,
        ) -> Result<Resource<T>, StoreError> {
            Ok(Resource {
                spec: serde_json::from_str(spec).map_err(|e| corrupt(what, e))?,
                file,
                line,
                column,
                hash,
            })
        }
        match kind {
            Kind::Job => {
                snapshot
                    .jobs
                    .insert(id, typed::<Job>(&spec, hash, file, line, column, &what)?);
            }
            Kind::Flow => {
                snapshot
                    .flows
                    .insert(id, typed::<Flow>(&spec, hash, file, line, column, &what)?);
            }
            Kind::Connector => {
                snapshot.connectors.insert(
                    id,
                    typed::<Connector>(&spec, hash, file, line, column, &what)?,
                );
            }
            Kind::Skill => {
                snapshot
                    .skills
                    .insert(id, typed::<Skill>(&spec, hash, file, line, column, &what)?);
            }
        }
    }
    let revision = c
        .query_row(
            &format!("{REVISION_COLUMNS} WHERE status = 'applied' ORDER BY seq DESC LIMIT 1"),
            [],
            revision_from_row,
        )
        .optional()
        .map_err(sql_err(path))?
        .transpose()?;
    Ok(Applied { revision, snapshot })
}

const REVISION_COLUMNS: &str = "SELECT seq, id, status, at, git_commit, git_dirty, content_hash, summary, changes, errors FROM revisions";

fn revision_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<RevisionRecord, StoreError>> {
    let status: String = r.get(2)?;
    let summary: String = r.get(7)?;
    let changes: String = r.get(8)?;
    let errors: String = r.get(9)?;
    let seq: i64 = r.get(0)?;
    let build = || -> Result<RevisionRecord, StoreError> {
        let what = format!("revision {seq}");
        Ok(RevisionRecord {
            seq,
            id: r.get(1).map_err(|e| corrupt(&what, e))?,
            status: if status == "applied" {
                RevisionStatus::Applied
            } else {
                RevisionStatus::Rejected
            },
            at: r.get(3).map_err(|e| corrupt(&what, e))?,
            git_commit: r.get(4).map_err(|e| corrupt(&what, e))?,
            git_dirty: r.get(5).map_err(|e| corrupt(&what, e))?,
            content_hash: r.get(6).map_err(|e| corrupt(&what, e))?,
            summary: serde_json::from_str(&summary).map_err(|e| corrupt(&what, e))?,
            changes: serde_json::from_str(&changes).map_err(|e| corrupt(&what, e))?,
            errors: serde_json::from_str(&errors).map_err(|e| corrupt(&what, e))?,
        })
    };
    Ok(build())
}

fn read_revisions(
    c: &Connection,
    path: &Path,
    before: i64,
    limit: usize,
) -> Result<Vec<RevisionRecord>, StoreError> {
    let before = if before <= 0 { i64::MAX } else { before };
    let mut stmt = c
        .prepare(&format!(
            "{REVISION_COLUMNS} WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
        ))
        .map_err(sql_err(path))?;
    let rows = stmt
        .query_map(params![before, limit as i64], revision_from_row)
        .map_err(sql_err(path))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(sql_err(path))??);
    }
    Ok(out)
}

fn read_events(c: &Connection, path: &Path, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
    let mut sql =
        String::from("SELECT id, type, at, job_id, run_id, data FROM events WHERE id > ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![q.after.into()];
    if let Some(t) = &q.event_type {
        if let Some(prefix) = t.strip_suffix('*') {
            sql.push_str(&format!(
                " AND substr(type, 1, {}) = ?{}",
                prefix.len(),
                args.len() + 1
            ));
            args.push(prefix.to_string().into());
        } else {
            sql.push_str(&format!(" AND type = ?{}", args.len() + 1));
            args.push(t.clone().into());
        }
    }
    if let Some(job) = &q.job_id {
        sql.push_str(&format!(" AND job_id = ?{}", args.len() + 1));
        args.push(job.clone().into());
    }
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len() + 1));
    args.push((q.limit.max(1) as i64).into());
    let mut stmt = c.prepare_cached(&sql).map_err(sql_err(path))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(sql_err(path))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, event_type, at, job_id, run_id, data) = row.map_err(sql_err(path))?;
        let data: Value =
            serde_json::from_str(&data).map_err(|e| corrupt(&format!("event {id}"), e))?;
        out.push(Event {
            id,
            event_type,
            at,
            job_id,
            run_id,
            data,
        });
    }
    Ok(out)
}

/// Get, set (with an optional TTL), increment or delete one key. Expired
/// keys read as absent. Returns the value after the operation (a delete
/// returns the value it removed).
fn kv_op(
    c: &Connection,
    path: &Path,
    key: &str,
    op: super::KvOp,
) -> Result<Option<Value>, StoreError> {
    use super::KvOp;
    let now = super::now_rfc3339();
    let current: Option<Value> = c
        .prepare_cached(
            "SELECT value FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .and_then(|mut st| {
            st.query_row(params![key, now], |r| r.get::<_, String>(0))
                .optional()
        })
        .map_err(sql_err(path))?
        .map(|text| serde_json::from_str(&text).map_err(|e| corrupt(&format!("kv {key}"), e)))
        .transpose()?;
    let put = |value: &Value, expires_at: Option<String>| -> Result<(), StoreError> {
        c.prepare_cached(
            "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        )
        .and_then(|mut st| st.execute(params![key, value.to_string(), expires_at]))
        .map_err(sql_err(path))?;
        Ok(())
    };
    match op {
        KvOp::Get => Ok(current),
        KvOp::Set { value, ttl_sec } => {
            let expires_at = ttl_sec
                .and_then(|t| i64::try_from(t).ok())
                .and_then(|t| {
                    jiff::Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_secs(t))
                        .ok()
                })
                .map(super::format_ts);
            put(&value, expires_at)?;
            Ok(Some(value))
        }
        KvOp::Incr { by } => {
            let base = match &current {
                None => 0,
                Some(v) => v.as_i64().ok_or_else(|| StoreError::Corrupt {
                    what: format!("kv {key}"),
                    message: format!("incr needs a whole number, the key holds {v}"),
                })?,
            };
            let next = Value::from(base.saturating_add(by));
            put(&next, None)?;
            Ok(Some(next))
        }
        KvOp::Delete => {
            c.prepare_cached("DELETE FROM kv WHERE key = ?1")
                .and_then(|mut st| st.execute([key]))
                .map_err(sql_err(path))?;
            Ok(current)
        }
    }
}

fn parse_run(record: &str, seq: i64) -> Result<Run, StoreError> {
    serde_json::from_str(record).map_err(|e| corrupt(&format!("run #{seq}"), e))
}

fn read_runs(c: &Connection, path: &Path, q: &RunQuery) -> Result<Vec<(i64, Run)>, StoreError> {
    let mut sql = String::from("SELECT seq, record FROM runs WHERE seq < ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![q.before.unwrap_or(i64::MAX).into()];
    if let Some(job) = &q.job_id {
        sql.push_str(&format!(" AND job_id = ?{}", args.len() + 1));
        args.push(job.clone().into());
    }
    if let Some(status) = q.status {
        sql.push_str(&format!(" AND status = ?{}", args.len() + 1));
        args.push(status.as_str().to_string().into());
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len() + 1));
    args.push((q.limit.max(1) as i64).into());
    let mut stmt = c.prepare_cached(&sql).map_err(sql_err(path))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql_err(path))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, rec) = row.map_err(sql_err(path))?;
        out.push((seq, parse_run(&rec, seq)?));
    }
    Ok(out)
}

/// Approvals, pending first then newest (also used by the CLI).
pub fn read_approvals(
    c: &Connection,
    path: &Path,
    pending_only: bool,
) -> Result<Vec<Approval>, StoreError> {
    let sql = if pending_only {
        "SELECT id, record FROM approvals WHERE status = 'pending'"
    } else {
        "SELECT id, record FROM approvals"
    };
    let mut stmt = c.prepare(sql).map_err(sql_err(path))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(sql_err(path))?;
    let mut out: Vec<Approval> = Vec::new();
    for row in rows {
        let (id, rec) = row.map_err(sql_err(path))?;
        out.push(serde_json::from_str(&rec).map_err(|e| corrupt(&format!("approval {id}"), e))?);
    }
    out.sort_by(|a, b| {
        (
            a.status != super::runs::ApprovalStatus::Pending,
            std::cmp::Reverse(&a.requested_at),
        )
            .cmp(&(
                b.status != super::runs::ApprovalStatus::Pending,
                std::cmp::Reverse(&b.requested_at),
            ))
    });
    Ok(out)
}

/// Commands not yet handled, with an id above `after` (also used by the
/// CLI, to see a decision still waiting for the daemon).
pub fn read_inbox(
    c: &Connection,
    path: &Path,
    after: i64,
) -> Result<Vec<(i64, InboxCommand)>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT id, command FROM inbox WHERE id > ?1 ORDER BY id LIMIT 1000")
        .map_err(sql_err(path))?;
    let rows = stmt
        .query_map([after], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql_err(path))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, text) = row.map_err(sql_err(path))?;
        match serde_json::from_str(&text) {
            Ok(cmd) => out.push((id, cmd)),
            Err(e) => tracing::warn!(id, error = %e, "store: unreadable inbox command skipped"),
        }
    }
    Ok(out)
}

/// Append a command for the daemon (from another process, e.g. the CLI).
/// Opens its own connection: the daemon may be running.
pub fn post_to_inbox(path: &Path, command: &InboxCommand) -> Result<i64, StoreError> {
    let mut conn = Connection::open(path).map_err(sql_err(path))?;
    configure(&conn, path)?;
    migrate(&mut conn, path)?;
    let text = serde_json::to_string(command).map_err(|e| corrupt("inbox command", e))?;
    conn.execute(
        "INSERT INTO inbox (at, command) VALUES (?1, ?2)",
        params![super::now_rfc3339(), text],
    )
    .map_err(sql_err(path))?;
    Ok(conn.last_insert_rowid())
}

/// What `plan` needs of the live state: each job's last slot and the
/// active runs per job and lane (from a read-only connection).
pub fn read_plan_context(
    c: &Connection,
    path: &Path,
    now: jiff::Timestamp,
) -> Result<crate::reconcile::render::PlanContext, StoreError> {
    let mut ctx = crate::reconcile::render::PlanContext::empty(now);
    let mut stmt = c
        .prepare("SELECT job_id, last_slot FROM job_slots")
        .map_err(sql_err(path))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(sql_err(path))?;
    for row in rows {
        let (job, slot) = row.map_err(sql_err(path))?;
        if let Ok(t) = slot.parse() {
            ctx.last_slots.insert(job, t);
        }
    }
    let mut stmt = c
        .prepare(
            "SELECT seq, record FROM runs
             WHERE status IN ('queued', 'awaiting_approval', 'running', 'retrying')",
        )
        .map_err(sql_err(path))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(sql_err(path))?;
    for row in rows {
        let (seq, rec) = row.map_err(sql_err(path))?;
        let run = parse_run(&rec, seq)?;
        *ctx.active_runs_by_job
            .entry(run.job_id.clone())
            .or_default() += 1;
        if let Some(flow) = run.flow {
            *ctx.active_runs_by_flow.entry(flow).or_default() += 1;
        }
    }
    Ok(ctx)
}

/// Runs of one job or all, newest first, from a read-only connection (CLI).
pub fn read_runs_blocking(
    c: &Connection,
    path: &Path,
    q: &RunQuery,
) -> Result<Vec<(i64, Run)>, StoreError> {
    read_runs(c, path, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SourceFile, build};
    use serde_json::json;

    fn snapshot(text: &str) -> Snapshot {
        let loaded = build(&[SourceFile {
            path: "jobs.d/a.yaml".into(),
            text: text.into(),
        }]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.snapshot
    }

    fn revision(id: &str, status: RevisionStatus) -> RevisionRecord {
        RevisionRecord {
            seq: 0,
            id: id.into(),
            status,
            at: super::super::now_rfc3339(),
            git_commit: None,
            git_dirty: false,
            content_hash: "h".into(),
            summary: json!({"create": 1}),
            changes: json!([]),
            errors: vec![],
        }
    }

    #[tokio::test]
    async fn apply_then_reopen_keeps_the_snapshot_and_history() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.db");
        let desired =
            snapshot("id: a\ntype: noop\n---\nkind: Flow\nid: lane\nmax_active_runs: 2\n");
        {
            let store = SqliteStore::open(&path).unwrap();
            let writes = ResourceWrites::between(&Snapshot::default(), &desired);
            assert_eq!(writes.upserts.len(), 2);
            let (seq, events) = store
                .apply_revision(
                    revision("r1", RevisionStatus::Applied),
                    writes,
                    vec![NewEvent::new("reconcile.applied", json!({})).job("a")],
                )
                .await
                .unwrap();
            assert_eq!(seq, 1);
            assert_eq!(events[0].id, 1);
            store
                .reject_revision(revision("r2", RevisionStatus::Rejected), vec![])
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let applied = store.applied().await.unwrap();
        assert_eq!(applied.snapshot, desired);
        assert_eq!(applied.revision.unwrap().id, "r1");
        let history = store.revisions(0, 10).await.unwrap();
        assert_eq!(
            history.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r2", "r1"]
        );
        // Deletes remove rows; unchanged rows are not rewritten.
        let smaller = snapshot("id: a\ntype: noop\n");
        let writes = ResourceWrites::between(&desired, &smaller);
        assert!(writes.upserts.is_empty());
        assert_eq!(writes.deletes, vec![(Kind::Flow, "lane".to_string())]);
        store
            .apply_revision(revision("r3", RevisionStatus::Applied), writes, vec![])
            .await
            .unwrap();
        assert_eq!(store.applied().await.unwrap().snapshot, smaller);
    }

    #[tokio::test]
    async fn concurrent_appends_get_increasing_ids_and_filters_work() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&tmp.path().join("s.db")).unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let t = if i % 2 == 0 {
                    "run.queued"
                } else {
                    "scheduler.pressure_on"
                };
                s.append_events(vec![
                    NewEvent::new(t, json!({"i": i})).job(format!("j{}", i % 5)),
                ])
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let all = store
            .events(EventQuery {
                after: 0,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 50);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        let page = store
            .events(EventQuery {
                after: all[9].id,
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page[0].id, all[10].id);
        assert_eq!(page.len(), 5);
        let sched = store
            .events(EventQuery {
                after: 0,
                limit: 1000,
                event_type: Some("scheduler.*".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(sched.len(), 25);
        let job = store
            .events(EventQuery {
                after: 0,
                limit: 1000,
                job_id: Some("j1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(job.len(), 10);
    }

    #[tokio::test]
    async fn many_events_in_one_write_get_the_ids_they_are_stored_under() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&tmp.path().join("s.db")).unwrap();
        store
            .append_events(vec![NewEvent::new("a", json!({"first": true}))])
            .await
            .unwrap();
        // Two multi-row chunks and a remainder.
        let batch: Vec<NewEvent> = (0..2 * EVENT_ROWS + 5)
            .map(|i| NewEvent::new("run.queued", json!({"i": i, "s": "q\"x"})).job(format!("j{i}")))
            .collect();
        let written = store.append_events(batch.clone()).await.unwrap();
        let stored = store
            .events(EventQuery {
                after: 1,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(written, stored);
        assert_eq!(stored.first().map(|e| e.id), Some(2));
        assert!(stored.windows(2).all(|w| w[1].id == w[0].id + 1));
        for (e, sent) in stored.iter().zip(&batch) {
            assert_eq!((&e.data, &e.job_id), (&sent.data, &sent.job_id));
        }
    }

    #[tokio::test]
    async fn the_checkpointer_copies_committed_writes_into_the_database_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let db_len = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = db_len();
        // About 2 MB of events: far more than the empty schema's pages.
        let batch: Vec<NewEvent> = (0..4000)
            .map(|i| NewEvent::new("run.queued", json!({"i": i, "pad": "x".repeat(400)})))
            .collect();
        store.append_events(batch).await.unwrap();
        // The writer does not checkpoint (wal_autocheckpoint = 0): only
        // the checkpointer thread can grow the database file.
        let mut grown = false;
        for _ in 0..100 {
            if db_len() > before + 1_000_000 {
                grown = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(grown, "database file stayed at {} bytes", db_len());
    }

    #[tokio::test]
    async fn kv_get_set_incr_delete_and_ttl() {
        use crate::store::KvOp;
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&tmp.path().join("s.db")).unwrap();
        let kv = |k: &str, op| store.kv(k.to_string(), op);
        assert_eq!(kv("a", KvOp::Get).await.unwrap(), None);
        let v = json!({"x": [1, 2]});
        kv(
            "a",
            KvOp::Set {
                value: v.clone(),
                ttl_sec: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(kv("a", KvOp::Get).await.unwrap(), Some(v.clone()));
        assert_eq!(kv("n", KvOp::Incr { by: 2 }).await.unwrap(), Some(json!(2)));
        assert_eq!(kv("n", KvOp::Incr { by: 3 }).await.unwrap(), Some(json!(5)));
        assert!(
            kv("a", KvOp::Incr { by: 1 }).await.is_err(),
            "incr of a non-number"
        );
        assert_eq!(kv("a", KvOp::Delete).await.unwrap(), Some(v));
        assert_eq!(kv("a", KvOp::Get).await.unwrap(), None);
        kv(
            "t",
            KvOp::Set {
                value: json!(1),
                ttl_sec: Some(1),
            },
        )
        .await
        .unwrap();
        assert_eq!(kv("t", KvOp::Get).await.unwrap(), Some(json!(1)));
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(kv("t", KvOp::Get).await.unwrap(), None, "expired");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("PRAGMA user_version = 999").unwrap();
        }
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { .. })
        ));
    }
}
