//! The key-value store of workflow `kv` steps and idempotency records:
//! one operation at a time, on the writer, so it sees every earlier write.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{corrupt, sql_err};
use crate::store::{KvOp, StoreError, format_ts, now_rfc3339};

/// Get, set (with an optional TTL), increment or delete one key. Expired
/// keys read as absent. Returns the value after the operation (a delete
/// returns the value it removed).
pub(super) fn kv_op(
    c: &Connection,
    path: &Path,
    key: &str,
    op: KvOp,
) -> Result<Option<Value>, StoreError> {
    let now = now_rfc3339();
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
    let expiry = |ttl_sec: Option<u64>| {
        ttl_sec
            .and_then(|t| i64::try_from(t).ok())
            .and_then(|t| {
                jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(t))
                    .ok()
            })
            .map(format_ts)
    };
    match op {
        KvOp::Get => Ok(current),
        KvOp::Set { value, ttl_sec } => {
            put(&value, expiry(ttl_sec))?;
            Ok(Some(value))
        }
        // One statement, so handles on other connections (or processes)
        // claiming the key at once agree: an expired value counts as absent.
        KvOp::SetIfAbsent { value, ttl_sec } => {
            let text = value.to_string();
            let claimed = c
                .prepare_cached(
                    "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
                     WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?4",
                )
                .and_then(|mut st| st.execute(params![key, text, expiry(Some(ttl_sec)), now]))
                .map_err(sql_err(path))?;
            if claimed == 1 {
                return Ok(Some(value));
            }
            kv_op(c, path, key, KvOp::Get).map(|standing| standing.or(Some(value)))
        }
        KvOp::Incr { by } => {
            let base = whole_number(key, current.as_ref())?;
            let next = Value::from(base.saturating_add(by));
            put(&next, None)?;
            Ok(Some(next))
        }
        // The writer runs one operation at a time: read, decide and write
        // cannot interleave with another process's (the file is locked
        // by one writer).
        KvOp::Count { by, limit, ttl_sec } => {
            let base = whole_number(key, current.as_ref())?;
            let next = base.saturating_add(by);
            if limit.is_some_and(|l| next > l) {
                return Ok(Some(serde_json::json!({"counted": false, "count": base})));
            }
            put(&Value::from(next), expiry(Some(ttl_sec)))?;
            Ok(Some(serde_json::json!({"counted": true, "count": next})))
        }
        KvOp::Delete => {
            c.prepare_cached("DELETE FROM kv WHERE key = ?1")
                .and_then(|mut st| st.execute([key]))
                .map_err(sql_err(path))?;
            Ok(current)
        }
    }
}

/// The number a key holds (absent: 0), for an increment.
fn whole_number(key: &str, current: Option<&Value>) -> Result<i64, StoreError> {
    match current {
        None => Ok(0),
        Some(v) => v.as_i64().ok_or_else(|| StoreError::Corrupt {
            what: format!("kv {key}"),
            message: format!("incr needs a whole number, the key holds {v}"),
        }),
    }
}

/// One key's value from a read-only connection (the CLI, beside a daemon).
pub fn read_kv(c: &Connection, path: &Path, key: &str) -> Result<Option<Value>, StoreError> {
    kv_op(c, path, key, KvOp::Get)
}
