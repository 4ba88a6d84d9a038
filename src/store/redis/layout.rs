//! The key layout of a deployment: a keyspace written by an older
//! release is upgraded in place where it can be and refused where it
//! cannot, so a store never half-reads runs it does not understand.
//!
//! Layout 5 stores run records compactly (see `record`) and elects its
//! leader with `lease`; layout 4 is read as it is (its records decode the
//! same) until the leader migrates it (see `migrate`). Opening a layout 4
//! keyspace is allowed for that reason: workers and replicas of this
//! version serve it meanwhile.

use super::batch::Target;
use super::reads;
use crate::store::StoreError;

/// The key layout this version writes.
pub const LAYOUT: &str = "5";
/// The layout before: full JSON records, the leader elected with `leader`.
pub(super) const LAYOUT_V4: &str = "4";
/// Layout 3 kept a `runs:meta` hash beside the records (job, status and
/// run key per run, written on every status change); everything else
/// reads as layout 4, so it is upgraded to 4 in place by dropping that
/// hash (and then migrated to 5 as 4 is).
const LAYOUT_WITH_META: &str = "3";
/// Present while a migration to layout 5 is unfinished: the `runs:rec`
/// scan cursor it has reached.
pub(super) const MIGRATION: &str = "layout:migration";

/// What a store found at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Layout 5, nothing left to migrate.
    Current,
    /// Layout 4: the leader migrates it when it starts.
    Older,
    /// Layout 5 with a migration cut short: the leader finishes it.
    Unfinished,
}

/// Check the layout of the keys under the target's prefix; a fresh
/// keyspace gets this layout. Refuse a layout this version cannot read
/// (a hash per run, no `layout` key; events one entry each; a newer one).
pub(super) async fn check(target: &Target) -> Result<Found, StoreError> {
    let mut c = target.conn.clone();
    let key = format!("{}layout", target.prefix);
    let (layout, old_runs, migrating): (Option<String>, bool, bool) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("EXISTS")
        .arg(format!("{}run_seq", target.prefix))
        .cmd("EXISTS")
        .arg(format!("{}{MIGRATION}", target.prefix))
        .query_async(&mut c)
        .await
        .map_err(reads::err(target, "reading the key layout"))?;
    match layout.as_deref() {
        Some(LAYOUT) if migrating => Ok(Found::Unfinished),
        Some(LAYOUT) => Ok(Found::Current),
        Some(LAYOUT_V4) => Ok(Found::Older),
        Some(LAYOUT_WITH_META) => {
            // UNLINK frees the hash off Redis's main thread.
            let _: () = redis::pipe()
                .atomic()
                .cmd("UNLINK")
                .arg(format!("{}runs:meta", target.prefix))
                .ignore()
                .cmd("SET")
                .arg(&key)
                .arg(LAYOUT_V4)
                .ignore()
                .query_async(&mut c)
                .await
                .map_err(reads::err(target, "upgrading the key layout"))?;
            tracing::info!(prefix = %target.prefix, "store: Redis key layout 3 upgraded to 4 (runs:meta dropped)");
            Ok(Found::Older)
        }
        None if !old_runs => {
            // NX: two processes opening a fresh keyspace agree.
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(LAYOUT)
                .arg("NX")
                .query_async(&mut c)
                .await
                .map_err(reads::err(target, "writing the key layout"))?;
            Ok(Found::Current)
        }
        found => Err(StoreError::Open {
            path: target.url.clone(),
            message: format!(
                "keys under {} use run layout {} and this multijob reads layouts 4 and {LAYOUT}: \
                 start it on a fresh prefix or database, or run the version that wrote them",
                target.prefix,
                found.unwrap_or("1 (a hash per run)")
            ),
        }),
    }
}
