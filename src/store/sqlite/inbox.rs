//! The command inbox: what other processes (the CLI's `trigger` and
//! `approvals`) leave for the daemon, and how far a long command got.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{all_rows, corrupt, sql_err};
use crate::store::StoreError;
use crate::store::runs::InboxCommand;

/// Commands not yet handled, with an id above `after` (also used by the
/// CLI, to see a decision still waiting for the daemon).
pub fn read_inbox(
    c: &Connection,
    path: &Path,
    after: i64,
) -> Result<Vec<(i64, InboxCommand)>, StoreError> {
    let sql = "SELECT id, command FROM inbox WHERE id > ?1 ORDER BY id LIMIT ?2";
    let page = crate::store::INBOX_PAGE as i64;
    let rows = all_rows(c, path, sql, [after, page], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for (id, text) in rows {
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
    let conn = super::migrations::open_migrated(path)?;
    let text = serde_json::to_string(command).map_err(|e| corrupt("inbox command", e))?;
    conn.execute(
        "INSERT INTO inbox (at, command) VALUES (?1, ?2)",
        params![crate::store::now_rfc3339(), text],
    )
    .map_err(sql_err(path))?;
    Ok(conn.last_insert_rowid())
}

/// How many runs of inbox command `id` are queued already (0 for a
/// command not started or gone).
pub(super) fn progress(c: &Connection, path: &Path, id: i64) -> Result<u32, StoreError> {
    c.query_row("SELECT progress FROM inbox WHERE id = ?1", [id], |r| {
        r.get::<_, u32>(0)
    })
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(sql_err(path))
}
