//! The chat bridges of the applied revision, kept running: one task per
//! telegram connector with a `bridge:` block, started when a revision adds
//! it, stopped when one removes it, restarted when one changes it. Only
//! the process that owns the run queue runs this (the embedded daemon, or
//! the Redis leader while it leads: `stop` is its term); workers never do.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::inbound::{Intake, telegram};
use crate::spec::model::Connector;
use crate::status::state::Shared;

/// One running bridge: the spec it started with and how to stop it.
struct Running {
    spec: Connector,
    stop: CancellationToken,
}

/// Keep the bridges of each applied revision running until `stop`.
pub(super) fn spawn_bridges(
    shared: Arc<Shared>,
    intake: Intake,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(shared, intake, stop))
}

async fn supervise(shared: Arc<Shared>, intake: Intake, stop: CancellationToken) {
    let mut revisions = shared.applied_tx.subscribe();
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    loop {
        let wanted = telegram::bridges_of(&revisions.borrow_and_update().snapshot);
        running.retain(|id, r| {
            let keep = wanted.get(id) == Some(&r.spec);
            if !keep {
                tracing::info!(connector = %id, "telegram bridge stopped (removed or changed)");
                r.stop.cancel();
            }
            keep
        });
        for (id, spec) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let token = stop.child_token();
            telegram::spawn(shared.clone(), intake.clone(), spec.clone(), token.clone());
            running.insert(id, Running { spec, stop: token });
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = revisions.changed() => if changed.is_err() { break },
        }
    }
    for r in running.values() {
        r.stop.cancel();
    }
}
