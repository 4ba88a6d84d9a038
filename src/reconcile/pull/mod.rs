//! `run --git URL`: the daemon fetches its config repository itself.
//!
//! A [`Puller`] fetches the branch on an interval and at once on SIGHUP
//! or a [`FetchNow`] request (an inbound `action: sync` trigger),
//! checks a new commit out in its own directory and swaps the `current`
//! symlink ([`checkout`]), then tells the reconcile loop; the reconciler
//! loads the commit the symlink points at, confined to that checkout
//! (a symlink in the repository cannot make it read outside). A failed
//! fetch keeps the last good commit and is reported (status, log,
//! `multijob_git_fetch_total{result}`); a commit that does not validate is
//! rejected by the reconciler like any bad revision.

mod checkout;
pub mod remote;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::checkout::Area;
use self::remote::Remote;

/// `multijob_git_fetch_total{result="ok|error|unchanged"}`.
pub type FetchCounter = Family<Vec<(String, String)>, Counter>;

/// What `run --git …` asked for, checked.
#[derive(Debug, Clone)]
pub struct GitOptions {
    pub remote: Remote,
    pub branch: String,
    pub interval: Duration,
    /// `--git-path`: the config directory inside the repository.
    pub subdir: PathBuf,
    pub key: Option<PathBuf>,
}

/// `/api/v1/status`'s `git` block, as far as fetching goes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchStatus {
    /// The remote without credentials.
    pub remote: String,
    pub branch: String,
    /// The commit checked out last (`current`).
    pub fetched: Option<String>,
    pub last_fetch_at: Option<String>,
    pub last_error: Option<String>,
}

/// Asks the puller for one fetch now, as SIGHUP does. Requests coalesce:
/// any number made while a fetch runs cause one more fetch after it.
#[derive(Clone, Default)]
pub struct FetchNow(Arc<tokio::sync::Notify>);

impl FetchNow {
    /// Ask for a fetch; returns at once.
    pub fn request(&self) {
        self.0.notify_one();
    }

    async fn requested(&self) {
        self.0.notified().await;
    }
}

/// Where the puller reports; read by the status API.
#[derive(Default)]
pub struct GitCell {
    status: Mutex<Option<FetchStatus>>,
    pub fetches: FetchCounter,
    /// What the inbound `sync` trigger pulls on (the puller listens).
    pub fetch_now: FetchNow,
}

impl GitCell {
    /// A cell counting into `fetches` (registered by the status metrics).
    pub fn with_counter(fetches: FetchCounter) -> GitCell {
        GitCell {
            status: Mutex::new(None),
            fetches,
            fetch_now: FetchNow::default(),
        }
    }

    pub fn status(&self) -> Option<FetchStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut FetchStatus)) {
        let mut guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.get_or_insert_with(FetchStatus::default));
    }

    fn count(&self, result: &str) {
        self.fetches
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
    }
}

/// A one-off checkout of the branch under `into` (`plan --git`): the
/// config directory in it and the checkout root reads are confined to.
pub async fn checkout_once(
    opts: &GitOptions,
    into: &std::path::Path,
) -> Result<(PathBuf, PathBuf), String> {
    let area = Area {
        root: into.to_path_buf(),
        remote: opts.remote.clone(),
        branch: opts.branch.clone(),
        key: opts.key.clone(),
    };
    let sha = area.fetch().await?;
    area.switch_to(&sha).await?;
    let root = std::fs::canonicalize(area.current())
        .map_err(|e| format!("{}: {e}", area.current().display()))?;
    Ok((root.join(&opts.subdir), root))
}

/// Fetches, checks out and swaps; one per process that reconciles.
pub struct Puller {
    area: Area,
    opts: GitOptions,
    cell: Arc<GitCell>,
}

impl Puller {
    /// `data_dir/git/` holds the mirror and the checkouts.
    pub fn new(opts: GitOptions, data_dir: &std::path::Path, cell: Arc<GitCell>) -> Puller {
        let area = Area {
            root: data_dir.join("git"),
            remote: opts.remote.clone(),
            branch: opts.branch.clone(),
            key: opts.key.clone(),
        };
        cell.update(|s| {
            s.remote = opts.remote.display();
            s.branch = opts.branch.clone();
            s.fetched = area.current_commit();
        });
        Puller { area, opts, cell }
    }

    /// The config directory the daemon reads: `current/<git-path>`.
    pub fn config_dir(&self) -> PathBuf {
        self.area.current().join(&self.opts.subdir)
    }

    /// [`Puller::config_dir`] of a puller over `data_dir`.
    pub fn config_dir_in(data_dir: &std::path::Path, subdir: &std::path::Path) -> PathBuf {
        data_dir.join("git").join("current").join(subdir)
    }

    /// The live checkout, resolved once (a reload reads one commit even if
    /// the symlink swaps meanwhile), and the config directory inside it.
    pub fn resolve(&self) -> Option<(PathBuf, PathBuf)> {
        let root = std::fs::canonicalize(self.area.current()).ok()?;
        Some((root.join(&self.opts.subdir), root))
    }

    /// One fetch; `true` when a new commit is now current.
    pub async fn sync(&self) -> bool {
        let remote = self.opts.remote.display();
        let result = match self.area.fetch().await {
            Ok(sha) if self.area.current_commit().as_deref() == Some(sha.as_str()) => Ok(None),
            Ok(sha) => self.area.switch_to(&sha).await.map(|()| Some(sha)),
            Err(e) => Err(e),
        };
        let now = crate::store::now_rfc3339();
        match result {
            Ok(changed) => {
                let label = if changed.is_some() { "ok" } else { "unchanged" };
                self.cell.count(label);
                let previous = self.cell.status().and_then(|s| s.fetched);
                self.cell.update(|s| {
                    s.last_fetch_at = Some(now);
                    s.last_error = None;
                    s.fetched = self.area.current_commit();
                });
                let Some(sha) = changed else { return false };
                tracing::info!(remote = %remote, branch = %self.opts.branch, commit = %sha, "fetched a new commit");
                let keep: Vec<&str> = [Some(sha.as_str()), previous.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                self.area.prune(&keep).await;
                true
            }
            Err(e) => {
                self.cell.count("error");
                tracing::warn!(remote = %remote, branch = %self.opts.branch, error = %e, "git fetch failed; the last good commit keeps running");
                self.cell.update(|s| {
                    s.last_fetch_at = Some(now);
                    s.last_error = Some(e);
                });
                false
            }
        }
    }

    /// Fetch every interval and at once on SIGHUP or a [`FetchNow`]
    /// request; after a swap, signal
    /// `changed` (the reconcile loop reloads from the new checkout).
    pub async fn run(self: Arc<Self>, changed: mpsc::Sender<()>, cancel: CancellationToken) {
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = async {
                    match hup.as_mut() {
                        Some(h) => { h.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = self.cell.fetch_now.requested() => {
                    tracing::info!(branch = %self.opts.branch, "fetching now: an inbound sync trigger asked");
                }
            }
            if self.sync().await {
                let _ = changed.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FetchNow;
    use std::time::Duration;

    /// Requests made while no fetch waits coalesce into one; a clone asks
    /// the same puller.
    #[tokio::test]
    async fn requests_coalesce_into_one_fetch() {
        let fetch = FetchNow::default();
        let other = fetch.clone();
        for _ in 0..5 {
            other.request();
        }
        let soon = Duration::from_millis(50);
        assert!(tokio::time::timeout(soon, fetch.requested()).await.is_ok());
        assert!(tokio::time::timeout(soon, fetch.requested()).await.is_err());
        fetch.request();
        assert!(tokio::time::timeout(soon, fetch.requested()).await.is_ok());
    }
}
