//! The inbound listener in a daemon (`run --inbound-listen ADDR`): bound
//! with the API's address, before the store is opened (a taken port ends
//! the start early), and served with the API listener's limits, on every
//! process that serves the API: the embedded daemon (runs go into its
//! queue) and each Redis replica (runs go through the store's inbox to
//! the leader). Worker processes do not listen.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use super::DaemonOptions;
use crate::inbound::Intake;
use crate::inbound::hooks::sync::{FetchRoute, GitSync};
use crate::inbound::hooks::{Hooks, router};
use crate::listener::{self, HostPolicy};
use crate::status::state::Shared;

/// `--inbound-listen` and how to read the public URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundOptions {
    pub listen: SocketAddr,
    /// Behind a reverse proxy: the public URL (Twilio's signatures) is
    /// built from `X-Forwarded-Proto` and `X-Forwarded-Host`.
    pub behind_proxy: bool,
}

/// Bind the inbound address, if one is configured.
pub(super) async fn bind(opts: &DaemonOptions) -> anyhow::Result<Option<TcpListener>> {
    let Some(inbound) = &opts.inbound else {
        return Ok(None);
    };
    let listener = crate::listener::bind(inbound.listen).with_context(|| {
        format!(
            "listening for inbound hooks on {} (--inbound-listen)",
            inbound.listen
        )
    })?;
    Ok(Some(listener))
}

/// Serve `POST /hooks/{trigger}` until the daemon shuts down; with
/// `--git`, a sync trigger's fetch goes by `route` (this process's
/// puller, or the Redis leader's through the inbox).
pub(super) fn serve(
    opts: &DaemonOptions,
    shared: &Arc<Shared>,
    listener: Option<TcpListener>,
    intake: Intake,
    route: FetchRoute,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let (Some(listener), Some(inbound)) = (listener, &opts.inbound) else {
        return Ok(None);
    };
    let local = listener
        .local_addr()
        .context("reading the inbound address")?;
    // Senders name the public host; every request is signed, so there is
    // nothing for a DNS rebinding page to read.
    let config = listener::Config {
        hosts: HostPolicy::new(&["*".to_string()]).map_err(anyhow::Error::msg)?,
        ..opts.api.clone()
    };
    tracing::info!(
        listen = %local,
        behind_proxy = inbound.behind_proxy,
        triggers = shared.applied.load().snapshot.triggers.len(),
        "serving inbound hooks: POST /hooks/<trigger>"
    );
    let git = opts.git.as_ref().map(|g| GitSync {
        branch: g.branch.clone(),
        route,
    });
    let hooks = Hooks::new(
        shared.clone(),
        intake,
        inbound.behind_proxy,
        config.timeouts.header,
    );
    let hooks = Arc::new(hooks.with_git(git));
    Ok(Some(tokio::spawn(listener::serve(
        listener,
        router(hooks),
        config,
        shared.metrics.inbound_listener_stats(),
        shared.shutdown.clone(),
    ))))
}
