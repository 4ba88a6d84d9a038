//! The worker registry: each worker process says every second, in the
//! `workers` hash, how many slots it has, which worker groups it serves
//! and which version it runs. The leader sizes its dispatch from it, the
//! status API lists it (`GET /api/v1/workers`), and `plan`/`validate
//! --server` warn about groups no live worker serves. A value is
//! `"<slots> <heartbeat ms> <version> <groups> <busy> l<layout>"`: the last
//! part names the Redis key layout the process reads (see
//! `store::redis::layout`), so a migration knows who would not read the
//! new one. A worker of an earlier version writes fewer parts (down to
//! `"<slots> <heartbeat ms>"`, read as serving no group, of layout 4 or
//! older).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A worker whose heartbeat is older than this is not live (workers beat
/// every second).
pub const FRESH_WITHIN: Duration = Duration::from_secs(5);

/// Longest worker group name (as a job's `worker_group` id).
const MAX_GROUP: usize = 128;

/// One worker process, as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its node name (the consumer name on the streams).
    pub id: String,
    /// The worker groups it serves besides ungrouped runs.
    pub groups: Vec<String>,
    pub slots: usize,
    /// Runs it executes now, when it says (older workers do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<usize>,
    /// Its last heartbeat, RFC 3339.
    pub last_heartbeat: String,
    /// Its version; `null` for a worker of an earlier version.
    #[serde(default)]
    pub version: Option<String>,
    /// Milliseconds since the epoch of `last_heartbeat`.
    #[serde(skip, default)]
    pub beat_ms: u64,
    /// The Redis key layout it reads; 4 for a process that does not say
    /// (the releases before layout 5).
    #[serde(skip, default)]
    pub layout: u32,
}

/// What a heartbeat without a layout part stands for.
const LAYOUT_UNSAID: u32 = 4;

/// Whether `name` may name a worker group: an id as a job's
/// `worker_group` is (letters, digits, `.`, `_`, `-`; starting with a
/// letter or digit; at most 128 characters). The error says why not.
pub fn check_group(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() {
        return Err("a worker group name is empty".into());
    }
    if name.len() > MAX_GROUP {
        return Err(format!(
            "worker group name `{}…` is longer than {MAX_GROUP} characters",
            name.chars().take(32).collect::<String>()
        ));
    }
    if !first_ok || !rest_ok {
        return Err(format!(
            "worker group name `{name}` is not an id: use letters, digits, `.`, `_`, `-`, \
             starting with a letter or digit (e.g. `gpu`)"
        ));
    }
    Ok(())
}

/// The heartbeat value of a worker with these slots, busy count and groups.
pub fn encode(slots: usize, busy: usize, groups: &[String], now_ms: u64) -> String {
    let groups = if groups.is_empty() {
        "-".to_string()
    } else {
        groups.join(",")
    };
    format!(
        "{slots} {now_ms} {} {groups} {busy} l{}",
        env!("CARGO_PKG_VERSION"),
        super::redis::LAYOUT
    )
}

/// A heartbeat value read back, in either form; `None` if unreadable.
pub fn decode(id: &str, value: &str) -> Option<WorkerInfo> {
    let mut parts = value.split_whitespace();
    let slots = parts.next()?.parse().ok()?;
    let beat_ms: u64 = parts.next()?.parse().ok()?;
    let version = parts.next().map(str::to_string);
    let groups = match parts.next() {
        None | Some("-") => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    let busy = parts.next().and_then(|b| b.parse().ok());
    let layout = parts
        .next()
        .and_then(|l| l.strip_prefix('l')?.parse().ok())
        .unwrap_or(LAYOUT_UNSAID);
    let last_heartbeat = jiff::Timestamp::from_millisecond(beat_ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Some(WorkerInfo {
        id: id.to_string(),
        groups,
        slots,
        busy,
        last_heartbeat,
        version,
        beat_ms,
        layout,
    })
}

/// The live workers among the hash's entries (fresh heartbeats), by id.
/// A replica started with `--workers 0` beats with no slots: it runs
/// nothing, so it is no worker.
pub fn live(entries: Vec<(String, String)>, now_ms: u64) -> Vec<WorkerInfo> {
    let mut out: Vec<WorkerInfo> = connected(entries, now_ms)
        .into_iter()
        .filter(|w| w.slots > 0)
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Every process with a fresh heartbeat, replicas without slots too.
pub fn connected(entries: Vec<(String, String)>, now_ms: u64) -> Vec<WorkerInfo> {
    let fresh = FRESH_WITHIN.as_millis() as u64;
    entries
        .iter()
        .filter_map(|(id, value)| decode(id, value))
        .filter(|w| now_ms.saturating_sub(w.beat_ms) <= fresh)
        .collect()
}

impl WorkerInfo {
    /// Whether it runs jobs of `group` (`*`: the embedded daemon's pool,
    /// which serves every group).
    pub fn serves(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group || g == "*")
    }
}

/// The warning for a group no live worker serves, with the fix.
pub fn unserved_warning(group: &str) -> String {
    format!(
        "no live worker serves group `{group}`: start one with `multijob worker --group {group}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_reads_back_in_both_forms() {
        let new = encode(8, 3, &["a".into(), "gpu".into()], 1_700_000_000_000);
        let w = decode("n1", &new).unwrap();
        assert_eq!(w.groups, ["a", "gpu"]);
        assert_eq!((w.slots, w.busy), (8, Some(3)));
        assert_eq!(w.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(w.last_heartbeat, "2023-11-14T22:13:20Z");
        assert_eq!(w.layout.to_string(), super::super::redis::LAYOUT);
        let plain = decode("n2", &encode(2, 0, &[], 5)).unwrap();
        assert!(plain.groups.is_empty());
        // A worker of the previous version.
        let old = decode("n3", "5 1700000000000").unwrap();
        assert_eq!((old.slots, old.busy, old.version), (5, None, None));
        assert!(old.groups.is_empty());
        // The release before layout 5: five parts, read as layout 4.
        let v4 = decode("n5", "2 1700000000000 0.1.0 - 1").unwrap();
        assert_eq!((v4.busy, v4.layout), (Some(1), 4));
        assert_eq!(decode("n4", "garbage"), None);
        assert_eq!(decode("n4", ""), None);
    }

    #[test]
    fn only_fresh_heartbeats_are_live() {
        let now = 1_000_000;
        let entries = vec![
            ("b".to_string(), encode(1, 0, &[], now - 1000)),
            ("a".to_string(), encode(1, 0, &[], now - 60_000)),
            ("c".to_string(), "broken".to_string()),
            ("d".to_string(), encode(0, 0, &[], now)),
        ];
        let ids: Vec<String> = live(entries, now).into_iter().map(|w| w.id).collect();
        assert_eq!(ids, ["b"]);
    }

    #[test]
    fn group_names_are_ids() {
        assert!(check_group("gpu").is_ok());
        assert!(check_group("eu-west.1_a").is_ok());
        for bad in ["", "has space", "-lead", "a/b", "a,b", "ü"] {
            let e = check_group(bad).unwrap_err();
            assert!(e.contains("worker group name"), "{bad}: {e}");
        }
        assert!(
            check_group(&"x".repeat(129))
                .unwrap_err()
                .contains("longer")
        );
    }

    #[test]
    fn a_worker_serves_its_groups_and_the_embedded_pool_every_group() {
        let w = decode("n", &encode(1, 0, &["a".into()], 0)).unwrap();
        assert!(w.serves("a") && !w.serves("gpu"));
        let pool = WorkerInfo {
            groups: vec!["*".into()],
            ..w
        };
        assert!(pool.serves("gpu"));
        assert!(unserved_warning("gpu").contains("multijob worker --group gpu"));
    }
}
