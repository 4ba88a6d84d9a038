//! A run's output chunks in `run_output`: appended by the writer with the
//! rest of a batch, read in the order written (the row id is the reader's
//! position).

use std::path::Path;

use rusqlite::{Connection, params};

use super::{all_rows, sql_err};
use crate::store::StoreError;
use crate::store::output::{OUTPUT_PAGE, OutputChunk, OutputStream};

/// Append `chunks` (inside the writer's transaction).
pub(super) fn insert(
    c: &Connection,
    path: &Path,
    chunks: &[OutputChunk],
) -> Result<(), StoreError> {
    let mut put = c
        .prepare_cached(
            "INSERT INTO run_output (run_id, attempt, seq, stream, text, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql_err(path))?;
    for ch in chunks {
        put.execute(params![
            ch.run_id,
            ch.attempt,
            ch.seq,
            ch.stream.as_str(),
            ch.text,
            ch.at
        ])
        .map_err(sql_err(path))?;
    }
    Ok(())
}

/// The chunks of `run_id` after position `after`, oldest first (also
/// used by the CLI through a read-only connection).
pub fn read_output(
    c: &Connection,
    path: &Path,
    run_id: &str,
    after: i64,
) -> Result<Vec<OutputChunk>, StoreError> {
    let sql = "SELECT id, attempt, seq, stream, text, at FROM run_output
               WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
    let rows = all_rows(
        c,
        path,
        sql,
        params![run_id, after, OUTPUT_PAGE as i64],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        },
    )?;
    rows.into_iter()
        .map(|(pos, attempt, seq, stream, text, at)| {
            let stream = OutputStream::parse(&stream).ok_or_else(|| {
                super::corrupt(
                    &format!("output of run {run_id}"),
                    format!("stream {stream:?}"),
                )
            })?;
            Ok(OutputChunk {
                pos,
                run_id: run_id.to_string(),
                attempt,
                seq,
                stream,
                text,
                at,
            })
        })
        .collect()
}
