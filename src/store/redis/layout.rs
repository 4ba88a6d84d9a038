//! The key layout of a deployment: a keyspace written by an older
//! release is upgraded in place where it can be and refused where it
//! cannot, so a store never half-reads runs it does not understand.

use super::batch::Target;
use super::reads;
use crate::store::StoreError;

/// The key layout this version writes: one hash of records, written many
/// runs per command; events packed per batch.
const LAYOUT: &str = "4";
/// Layout 3 kept a `runs:meta` hash beside the records (job, status and
/// run key per run, written on every status change); everything else
/// reads the same, so it is upgraded in place by dropping that hash.
const LAYOUT_WITH_META: &str = "3";

/// Refuse a deployment written with an older layout (a hash per run, no
/// `layout` key; events one entry each): this version would not see its
/// runs. Layout 3 is upgraded in place.
pub(super) async fn check(target: &Target) -> Result<(), StoreError> {
    let mut c = target.conn.clone();
    let key = format!("{}layout", target.prefix);
    let (layout, old_runs): (Option<String>, bool) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("EXISTS")
        .arg(format!("{}run_seq", target.prefix))
        .query_async(&mut c)
        .await
        .map_err(reads::err(target, "reading the key layout"))?;
    match layout.as_deref() {
        Some(LAYOUT) => Ok(()),
        Some(LAYOUT_WITH_META) => {
            // UNLINK frees the hash off Redis's main thread.
            let _: () = redis::pipe()
                .atomic()
                .cmd("UNLINK")
                .arg(format!("{}runs:meta", target.prefix))
                .ignore()
                .cmd("SET")
                .arg(&key)
                .arg(LAYOUT)
                .ignore()
                .query_async(&mut c)
                .await
                .map_err(reads::err(target, "upgrading the key layout"))?;
            tracing::info!(prefix = %target.prefix, "store: Redis key layout 3 upgraded to 4 (runs:meta dropped)");
            Ok(())
        }
        None if !old_runs => {
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(LAYOUT)
                .query_async(&mut c)
                .await
                .map_err(reads::err(target, "writing the key layout"))?;
            Ok(())
        }
        found => Err(StoreError::Open {
            path: target.url.clone(),
            message: format!(
                "keys under {} use run layout {} and this multijob reads layout {LAYOUT}: \
                 start it on a fresh prefix or database, or run the version that wrote them",
                target.prefix,
                found.unwrap_or("1 (a hash per run)")
            ),
        }),
    }
}
