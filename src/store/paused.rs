//! Operator overrides kept in the store, not in git: which jobs are
//! paused, since when, by whom and why. One key-value entry holds the
//! whole map, so the daemon loads it in one read on start (or on taking
//! the lead), and `plan` or a follower reads it the same way. Only the
//! process that owns the run queue writes it, from its inbox, so a
//! read-modify-write of the map never races another writer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;

/// The key-value entry holding every paused job.
pub const PAUSED_KEY: &str = "__multijob/paused";

/// Where the daemon leaves its answer to an inbox command the CLI waits
/// on (`pause`, `resume`, `reset`, `backfill`).
pub fn reply_key(inbox_id: i64) -> String {
    format!("__multijob/reply/{inbox_id}")
}

/// How long a reply is kept: the CLI waits seconds, not hours.
pub const REPLY_TTL_SEC: u64 = 3600;

/// One paused job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// RFC 3339 UTC.
    pub since: String,
    pub by: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// Paused jobs by id.
pub type Paused = BTreeMap<String, Pause>;

/// The map a [`PAUSED_KEY`] entry holds (absent: nothing is paused).
pub fn paused_from(value: Option<Value>) -> Result<Paused, StoreError> {
    match value {
        None | Some(Value::Null) => Ok(Paused::new()),
        Some(v) => serde_json::from_value(v).map_err(|e| StoreError::corrupt(PAUSED_KEY, e)),
    }
}

/// The entry to store for `paused`.
pub fn paused_value(paused: &Paused) -> Value {
    serde_json::to_value(paused).unwrap_or_else(|_| Value::Object(Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_map_round_trips_and_garbage_is_corrupt() {
        let mut p = Paused::new();
        p.insert(
            "nightly".into(),
            Pause {
                since: "2026-12-07T10:00:00Z".into(),
                by: "ann@host".into(),
                note: Some("vendor outage".into()),
            },
        );
        assert_eq!(paused_from(Some(paused_value(&p))).ok(), Some(p));
        assert_eq!(paused_from(None).ok(), Some(Paused::new()));
        let err = paused_from(Some(serde_json::json!({"x": 3}))).err();
        assert!(err.is_some_and(|e| e.to_string().contains(PAUSED_KEY)));
    }
}
