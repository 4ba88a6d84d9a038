//! The schema and its upgrades: a file written by any earlier release
//! opens and is migrated in place, one written by a newer one is refused.

use std::path::Path;

use rusqlite::Connection;

use super::sql_err;
use crate::store::StoreError;

/// Schema migrations, applied in order; `PRAGMA user_version` is the index
/// of the last one applied.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 5: a run's output as it is printed (`logs --follow`), gone with its
    // run: pruning deletes runs, the trigger their output.
    "CREATE TABLE run_output (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        stream TEXT NOT NULL,
        text TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX run_output_run ON run_output (run_id, id);
    CREATE TRIGGER run_output_pruned AFTER DELETE ON runs
    BEGIN
        DELETE FROM run_output WHERE run_id = old.id;
    END;",
];

pub(super) fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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
pub(super) fn tune_writer(conn: &Connection, path: &Path) -> Result<(), StoreError> {
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

/// A read-write connection to the store at `path`, configured and
/// migrated to this binary's schema.
pub(super) fn open_migrated(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(sql_err(path))?;
    configure(&conn, path)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}
