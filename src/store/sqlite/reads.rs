//! The queries: the applied snapshot, revisions, events and runs, and the
//! scheduler's per-job state. Each runs on one connection, pooled or
//! read-only (the CLI's).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{all_rows, corrupt, sql_err};
use crate::spec::model::{Connector, Defaults, Flow, Job, Kind, Skill, Trigger};
use crate::spec::snapshot::{Resource, Snapshot};
use crate::store::runs::{Approval, FailureState, LiveState, Run, RunQuery, sort_approvals};
use crate::store::{Applied, Event, EventQuery, RevisionRecord, RevisionStatus, StoreError};

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
            Kind::Trigger => {
                snapshot.triggers.insert(
                    id,
                    typed::<Trigger>(&spec, hash, file, line, column, &what)?,
                );
            }
            Kind::Defaults => {
                snapshot.defaults.insert(
                    id,
                    typed::<Defaults>(&spec, hash, file, line, column, &what)?,
                );
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

pub(super) fn revisions(
    c: &Connection,
    path: &Path,
    before: i64,
    limit: usize,
) -> Result<Vec<RevisionRecord>, StoreError> {
    let before = if before <= 0 { i64::MAX } else { before };
    let sql = format!("{REVISION_COLUMNS} WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2");
    all_rows(
        c,
        path,
        &sql,
        params![before, limit as i64],
        revision_from_row,
    )?
    .into_iter()
    .collect()
}

pub fn events(c: &Connection, path: &Path, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
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
    let rows = all_rows(c, path, &sql, rusqlite::params_from_iter(args), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            (
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ),
        ))
    })?;
    rows.into_iter()
        .map(|(id, (event_type, at, job_id, run_id, data))| {
            let data: Value =
                serde_json::from_str(&data).map_err(|e| corrupt(&format!("event {id}"), e))?;
            Ok(Event::from_parts(
                id,
                (event_type, at, job_id, run_id, data),
            ))
        })
        .collect()
}

/// A `runs` row read as `SELECT seq, record`.
fn seq_and_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn parse_run(record: &str, seq: i64) -> Result<Run, StoreError> {
    serde_json::from_str(record).map_err(|e| corrupt(&format!("run #{seq}"), e))
}

pub(super) fn runs(
    c: &Connection,
    path: &Path,
    q: &RunQuery,
) -> Result<Vec<(i64, Run)>, StoreError> {
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
    all_rows(
        c,
        path,
        &sql,
        rusqlite::params_from_iter(args),
        seq_and_record,
    )?
    .into_iter()
    .map(|(seq, rec)| Ok((seq, parse_run(&rec, seq)?)))
    .collect()
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
    let rows = all_rows(c, path, sql, [], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = rows
        .into_iter()
        .map(|(id, rec)| {
            serde_json::from_str(&rec).map_err(|e| corrupt(&format!("approval {id}"), e))
        })
        .collect::<Result<Vec<Approval>, _>>()?;
    sort_approvals(&mut out);
    Ok(out)
}

/// What `plan` needs of the live state: each job's last slot and the
/// active runs per job and flow (also from a read-only connection).
pub fn read_live_state(c: &Connection, path: &Path) -> Result<LiveState, StoreError> {
    Ok(LiveState::gather(
        job_slots(c, path)?,
        &active_runs(c, path)?,
    ))
}

/// Runs of one job or all, newest first, from a read-only connection (CLI).
pub fn read_runs_blocking(
    c: &Connection,
    path: &Path,
    q: &RunQuery,
) -> Result<Vec<(i64, Run)>, StoreError> {
    runs(c, path, q)
}

/// One run by id, from a read-only connection (CLI).
pub fn read_run(c: &Connection, path: &Path, id: &str) -> Result<Option<(i64, Run)>, StoreError> {
    run(c, path, id)
}

/// Runs whose id starts with `prefix` (at most `limit`), newest first, from
/// a read-only connection: the CLI accepts an id's first characters.
pub fn read_runs_by_prefix(
    c: &Connection,
    path: &Path,
    prefix: &str,
    limit: usize,
) -> Result<Vec<(i64, Run)>, StoreError> {
    // `GLOB` with the prefix's metacharacters escaped as classes: ids are
    // ASCII, and `[`, `*`, `?` in a typed prefix must match themselves.
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        match ch {
            '*' | '?' | '[' => {
                pattern.push('[');
                pattern.push(ch);
                pattern.push(']');
            }
            _ => pattern.push(ch),
        }
    }
    pattern.push('*');
    all_rows(
        c,
        path,
        "SELECT seq, record FROM runs WHERE id GLOB ?1 ORDER BY seq DESC LIMIT ?2",
        rusqlite::params![pattern, limit.max(1) as i64],
        seq_and_record,
    )?
    .into_iter()
    .map(|(seq, rec)| Ok((seq, parse_run(&rec, seq)?)))
    .collect()
}

pub(super) fn run(c: &Connection, path: &Path, id: &str) -> Result<Option<(i64, Run)>, StoreError> {
    c.query_row(
        "SELECT seq, record FROM runs WHERE id = ?1",
        [id],
        seq_and_record,
    )
    .optional()
    .map_err(sql_err(path))?
    .map(|(seq, rec)| Ok((seq, parse_run(&rec, seq)?)))
    .transpose()
}

/// Events per type since `since` (RFC 3339).
pub(super) fn event_counts_since(
    c: &Connection,
    path: &Path,
    since: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = "SELECT type, count(*) FROM events WHERE at >= ?1 GROUP BY type ORDER BY type";
    all_rows(c, path, sql, [since], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })
}

/// The newest run of each of `jobs`.
pub(super) fn last_runs(
    c: &Connection,
    path: &Path,
    jobs: Vec<String>,
) -> Result<HashMap<String, Run>, StoreError> {
    let mut stmt = c
        .prepare_cached("SELECT seq, record FROM runs WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1")
        .map_err(sql_err(path))?;
    let mut out = HashMap::new();
    for job in jobs {
        let row = stmt
            .query_row([&job], seq_and_record)
            .optional()
            .map_err(sql_err(path))?;
        if let Some((seq, rec)) = row {
            out.insert(job, parse_run(&rec, seq)?);
        }
    }
    Ok(out)
}

/// Every run that is not finished, oldest first.
pub(super) fn active_runs(c: &Connection, path: &Path) -> Result<Vec<Run>, StoreError> {
    let sql = "SELECT seq, record FROM runs
               WHERE status IN ('queued', 'awaiting_approval', 'running', 'retrying')
               ORDER BY seq";
    all_rows(c, path, sql, [], seq_and_record)?
        .into_iter()
        .map(|(seq, rec)| parse_run(&rec, seq))
        .collect()
}

/// `(job, status, count)` over all stored runs.
pub(super) fn run_counts(
    c: &Connection,
    path: &Path,
) -> Result<Vec<(String, String, u64)>, StoreError> {
    let sql = "SELECT job_id, status, count(*) FROM runs GROUP BY job_id, status";
    all_rows(c, path, sql, [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })
}

pub fn failure_states(
    c: &Connection,
    path: &Path,
) -> Result<Vec<(String, FailureState)>, StoreError> {
    let sql = "SELECT job_id, state FROM failure_memory";
    let rows = all_rows(c, path, sql, [], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    rows.into_iter()
        .map(|(job, state)| {
            let state = serde_json::from_str(&state)
                .map_err(|e| corrupt(&format!("failure memory of {job}"), e))?;
            Ok((job, state))
        })
        .collect()
}

/// `(job, last slot RFC 3339)`: the last slot each job got an outcome for.
pub(super) fn job_slots(c: &Connection, path: &Path) -> Result<Vec<(String, String)>, StoreError> {
    let sql = "SELECT job_id, last_slot FROM job_slots";
    all_rows(c, path, sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Which of `ids` have a run record.
pub(super) fn recorded_runs(
    c: &Connection,
    path: &Path,
    ids: &[String],
) -> Result<HashSet<String>, StoreError> {
    recorded(c, path, "id", ids)
}

/// Which of `keys` a run record holds as its run key.
pub fn recorded_run_keys(
    c: &Connection,
    path: &Path,
    keys: &[String],
) -> Result<HashSet<String>, StoreError> {
    recorded(c, path, "run_key", keys)
}

/// Which of `values` the runs table holds in `column` (both indexed).
fn recorded(
    c: &Connection,
    path: &Path,
    column: &str,
    values: &[String],
) -> Result<HashSet<String>, StoreError> {
    let mut found = HashSet::new();
    for chunk in values.chunks(256) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let mut stmt = c
            .prepare(&format!(
                "SELECT {column} FROM runs WHERE {column} IN ({marks})"
            ))
            .map_err(sql_err(path))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(chunk), |r| r.get::<_, String>(0))
            .map_err(sql_err(path))?;
        for id in rows {
            found.insert(id.map_err(sql_err(path))?);
        }
    }
    Ok(found)
}
