//! The SQL that writes: a batch's runtime rows (runs, events, the
//! scheduler's per-job state, approvals, inbox marks, pruning) and an
//! applied or rejected revision's resources and history record.

use std::path::Path;

use rusqlite::{Connection, params};

use super::prepare::{EventRows, Rows, Spare, prepare_events};
use super::{corrupt, sql_err};
use crate::store::{Coalesced, Event, NewEvent, ResourceWrites, RevisionRecord, StoreError};

pub(super) fn write_rows(
    c: &Connection,
    path: &Path,
    rows: Rows,
) -> Result<(Vec<Event>, Spare), StoreError> {
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
    if !w.output.is_empty() {
        super::output::insert(c, path, &w.output)?;
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

pub(super) fn write_resources(
    c: &Connection,
    path: &Path,
    w: &ResourceWrites,
) -> Result<(), StoreError> {
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

pub(super) fn insert_revision(
    c: &Connection,
    path: &Path,
    r: &RevisionRecord,
) -> Result<i64, StoreError> {
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
pub(super) const EVENT_ROWS: usize = 32;

pub(super) fn insert_events(
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
            out.push(e.stored(first + k as i64));
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
