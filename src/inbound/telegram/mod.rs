//! The Telegram bridge: a telegram connector with `bridge:` is long-polled
//! with `getUpdates` ([`api`]), each bridge in a task of its own so a slow
//! command or reply never stalls another bot; within one bridge, commands
//! are handled in order ([`bridge`]). Only chats on `allowed_chat_ids` are
//! answered (an empty list: no one); others get no reply and no run, and
//! an `inbound.rejected` event. Messages become commands in [`parse`]
//! (pure); [`commands`], [`views`] and [`decide`] answer them. Runs go
//! through [`crate::inbound::Intake`] with the update id as delivery id.
//! `/new` and `/apply` (opt-in) author jobs into the config directory
//! ([`new_draft`], drafts kept in memory by [`drafts`]).
//!
//! Only the process that owns the run queue polls (the embedded daemon,
//! or the Redis leader): two pollers on one bot token get 409 from
//! Telegram. The daemon starts and stops bridges as revisions change
//! (`daemon/bridges.rs`).

pub mod api;
mod bridge;
mod commands;
mod decide;
mod drafts;
mod new_draft;
pub mod parse;
mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::connectors::Connectors;
use crate::inbound::Intake;
use crate::spec::model::{Connector, Provider};
use crate::spec::snapshot::Snapshot;
use crate::status::state::Shared;
pub use bridge::offset_key;

/// The connectors of `snapshot` that are bridges: telegram connectors
/// with a `bridge:` block.
pub fn bridges_of(snapshot: &Snapshot) -> BTreeMap<String, Connector> {
    snapshot
        .connectors
        .iter()
        .filter(|(_, r)| r.spec.provider == Provider::Telegram && r.spec.bridge.is_some())
        .map(|(id, r)| (id.clone(), r.spec.clone()))
        .collect()
}

/// Start polling `spec`'s bot until `stop`; its replies go through the
/// connectors of the revision applied now (rate limiters are shared by
/// connector id across revisions).
pub fn spawn(
    shared: Arc<Shared>,
    intake: Intake,
    spec: Connector,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let connectors = Connectors::new(&shared.applied.load().snapshot.connectors)
        .with_metrics(shared.metrics.connector_metrics());
    let desk = commands::Desk {
        connector: spec.id.clone(),
        commands: spec
            .bridge
            .as_ref()
            .map(|b| b.commands.clone())
            .unwrap_or_default(),
        shared,
        intake,
        drafts: drafts::Drafts::new(drafts::Drafts::ttl_from_env()),
    };
    let bridge = Arc::new(bridge::Bridge::new(desk, spec, connectors));
    tokio::spawn(bridge.run(stop))
}
