//! The change watcher: says "the config directory may have changed", nothing
//! more. One reconcile loop reads, validates and applies; the watcher never
//! reads config itself, and a missed event is caught by the periodic resync.
//!
//! Events come from inotify (notify's recommended watcher) or, with
//! `--watch-poll` or once inotify runs out of watches, from notify's
//! `PollWatcher`. What is watched is a `plan::Plan`, resolved again after
//! every burst that touched the tree's shape, on every resync and, when
//! polling, on every poll tick: symlink swaps and directories that vanish and
//! come back re-target the watches instead of leaving them on a dead inode.
//!
//! Bursts coalesce twice: events within `debounce` of each other make one
//! signal (a long burst one every `4 × debounce` at most), and the channel
//! holds one signal, so a busy reconciler finds one reload waiting, not a queue.

mod plan;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Config, Event, EventKind, PollWatcher, RecommendedWatcher, Watcher};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, error::TrySendError};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use self::plan::{Plan, Relevance};

/// How often to poll once inotify has failed and no `--watch-poll` was given.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// Shortest poll or resync period (tokio intervals reject zero).
const MIN_PERIOD: Duration = Duration::from_millis(10);

const ENOSPC: i32 = 28;
const EMFILE: i32 = 24;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after an event before signalling (default 50 ms).
    pub debounce: Duration,
    /// `--watch-poll`: poll at this interval instead of using inotify.
    pub poll: Option<Duration>,
    /// Period of the full resync signal, the safety net (default 30 s).
    pub resync: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(50),
            poll: None,
            resync: Duration::from_secs(30),
        }
    }
}

/// Why the reconciler should load the directory again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSignal {
    /// Files changed (or the watches moved to another tree).
    Files,
    /// The periodic resync: reload even though no event was seen.
    Resync,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{dir}: cannot resolve the directory to watch: {source}")]
    Dir {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a file watcher, not even a polling one: {0}")]
    Backend(#[source] notify::Error),
}

/// Watches `dir` and sends a signal whenever its config may have changed.
///
/// The watches are in place when this returns; `dir` need not exist yet.
/// Must be called inside a Tokio runtime. Stops when `cancel` fires or the
/// receiver is dropped; the receiver then yields `None`.
pub fn spawn(
    dir: PathBuf,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<mpsc::Receiver<ChangeSignal>, WatchError> {
    spawn_inner(dir, opts, cancel).map(|(rx, _)| rx)
}

/// Which backend is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Inotify,
    Poll,
}

/// A view into a running watcher, for tests.
#[cfg_attr(not(test), allow(dead_code))]
struct Probe {
    /// Feeds the watcher as if its backend had reported this.
    events: UnboundedSender<notify::Result<Event>>,
    mode: watch::Receiver<Mode>,
}

fn spawn_inner(
    dir: PathBuf,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<(mpsc::Receiver<ChangeSignal>, Probe), WatchError> {
    let dir = std::path::absolute(&dir)
        .map_err(|source| WatchError::Dir {
            dir: dir.display().to_string(),
            source,
        })?
        .components()
        .collect::<PathBuf>();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (mode_tx, mode_rx) = watch::channel(Mode::Inotify);
    let mut engine = Engine {
        plan: Plan::default(),
        backend: None,
        poll: opts.poll.map(|p| p.max(MIN_PERIOD)),
        events: events_tx.clone(),
        mode: mode_tx,
        dir,
    };
    engine
        .install(Plan::compute(&engine.dir))
        .map_err(WatchError::Backend)?;
    tracing::debug!(dir = %engine.dir.display(), roots = ?engine.plan.roots().collect::<Vec<_>>(), "watching");
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(run(engine, events_rx, tx, opts, cancel));
    let probe = Probe {
        events: events_tx,
        mode: mode_rx,
    };
    Ok((rx, probe))
}

/// Held for its `Drop`: dropping a watcher stops it.
#[allow(dead_code)]
enum Backend {
    Inotify(RecommendedWatcher),
    Poll(PollWatcher),
}

/// The watches and the plan they were built from. Lives on blocking threads
/// while it touches the disk.
struct Engine {
    dir: PathBuf,
    plan: Plan,
    backend: Option<Backend>,
    /// `Some` once polling (asked for, or after inotify failed).
    poll: Option<Duration>,
    events: UnboundedSender<notify::Result<Event>>,
    mode: watch::Sender<Mode>,
}

impl Engine {
    /// Resolves the plan again and rebuilds the watches when it changed (or
    /// when `force`d: a folder recreated under the same name needs a new
    /// watch even if the plan looks the same). True when the plan changed.
    fn refresh(&mut self, force: bool) -> bool {
        let plan = Plan::compute(&self.dir);
        let changed = plan != self.plan;
        if !changed && !force {
            return false;
        }
        if changed {
            tracing::debug!(dir = %self.dir.display(), roots = ?plan.roots().collect::<Vec<_>>(), "watches re-targeted");
        }
        self.install_logged(plan);
        // The tree may have moved again while the watches were being added.
        let again = Plan::compute(&self.dir);
        if again != self.plan {
            self.install_logged(again);
        }
        changed
    }

    fn install_logged(&mut self, plan: Plan) {
        if let Err(e) = self.install(plan) {
            tracing::error!(dir = %self.dir.display(), error = %e, "no file watcher; only the periodic resync will see changes");
        }
    }

    /// Builds a fresh backend for `plan`, then drops the old one, so no
    /// moment goes unwatched. Falls back to polling when inotify fails.
    fn install(&mut self, plan: Plan) -> Result<(), notify::Error> {
        let backend = match self.poll {
            Some(every) => self.start_poll(&plan, every)?,
            None => match self.start_inotify(&plan) {
                Ok(backend) => backend,
                Err(e) => {
                    self.fall_back(&e);
                    self.start_poll(&plan, FALLBACK_POLL)?
                }
            },
        };
        self.backend = Some(backend);
        self.plan = plan;
        Ok(())
    }

    fn fall_back(&mut self, error: &notify::Error) {
        let hint = if is_watch_limit(error) {
            "the inotify limit is reached: raise fs.inotify.max_user_watches \
             (and fs.inotify.max_user_instances), e.g. `sysctl fs.inotify.max_user_watches=524288`, \
             or run with --watch-poll SEC"
        } else {
            "inotify is unavailable here; run with --watch-poll SEC to choose the interval"
        };
        tracing::warn!(
            dir = %self.dir.display(),
            error = %error,
            "cannot watch with inotify: {hint}; polling every {}s meanwhile",
            FALLBACK_POLL.as_secs()
        );
        self.poll = Some(FALLBACK_POLL);
        self.mode.send_replace(Mode::Poll);
    }

    fn start_inotify(&self, plan: &Plan) -> Result<Backend, notify::Error> {
        // Canonical roots, and links inside them become roots of their own:
        // following links here would watch one inode under two names.
        let config = Config::default().with_follow_symlinks(false);
        let mut watcher = RecommendedWatcher::new(forward(self.events.clone()), config)?;
        for (path, mode) in plan.watches(false) {
            match watcher.watch(path, mode) {
                Ok(()) => {}
                Err(e) if is_watch_limit(&e) => return Err(e),
                // Gone since the plan was made: its removal is an event too.
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "not watched"),
            }
        }
        Ok(Backend::Inotify(watcher))
    }

    fn start_poll(&self, plan: &Plan, every: Duration) -> Result<Backend, notify::Error> {
        // Seconds-resolution mtimes miss a same-second edit; config trees are
        // small, so hashing their contents each poll is cheap.
        let config = Config::default()
            .with_poll_interval(every)
            .with_compare_contents(true)
            .with_follow_symlinks(false);
        let mut watcher = PollWatcher::new(forward(self.events.clone()), config)?;
        for (path, mode) in plan.watches(true) {
            watcher.watch(path, mode)?;
        }
        self.mode.send_replace(Mode::Poll);
        Ok(Backend::Poll(watcher))
    }
}

/// The backend's event handler: drops reads (the reconciler's own, git's)
/// right on the backend's thread and passes everything else on.
fn forward(
    events: UnboundedSender<notify::Result<Event>>,
) -> impl FnMut(notify::Result<Event>) + Send + 'static {
    move |event| {
        if let Ok(e) = &event
            && is_read(&e.kind)
        {
            return;
        }
        let _ = events.send(event);
    }
}

/// Opening and closing without writing. A close after writing stays: it
/// marks the end of a write.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

/// "No space left on device" from inotify_add_watch is the watch limit;
/// "too many open files" from inotify_init the instance limit.
fn is_watch_limit(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => {
            matches!(io.raw_os_error(), Some(ENOSPC | EMFILE))
                || io.kind() == io::ErrorKind::StorageFull
        }
        _ => false,
    }
}

/// Events seen since the last signal.
#[derive(Debug, Clone, Copy)]
struct Batch {
    first: Instant,
    deadline: Instant,
    /// A config file may have changed: signal even if the plan did not.
    signal: bool,
    /// The tree may have changed shape: rebuild the watches.
    force: bool,
}

impl Batch {
    fn note(batch: &mut Option<Batch>, debounce: Duration, signal: bool, force: bool) {
        let now = Instant::now();
        let b = batch.get_or_insert(Batch {
            first: now,
            deadline: now,
            signal: false,
            force: false,
        });
        b.deadline = (now + debounce).min(b.first + debounce * 4);
        b.signal |= signal;
        b.force |= force;
    }
}

async fn run(
    mut engine: Engine,
    mut events: UnboundedReceiver<notify::Result<Event>>,
    tx: mpsc::Sender<ChangeSignal>,
    opts: WatchOptions,
    cancel: CancellationToken,
) {
    let debounce = opts.debounce;
    let resync_every = opts.resync.max(MIN_PERIOD);
    let mut resync = tokio::time::interval_at(Instant::now() + resync_every, resync_every);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut recheck: Option<Interval> = None;
    let mut batch: Option<Batch> = None;
    loop {
        // Polling re-resolves the plan on its own tick: links swapped within
        // one second leave no mtime trace.
        if let (Some(every), None) = (engine.poll, &recheck) {
            let mut i = tokio::time::interval_at(Instant::now() + every, every);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            recheck = Some(i);
        }
        let deadline = batch.map(|b| b.deadline);
        enum Wake {
            Stop,
            Event(notify::Result<Event>),
            Flush,
            Resync,
            Recheck,
        }
        let wake = tokio::select! {
            biased;
            _ = cancel.cancelled() => Wake::Stop,
            _ = tx.closed() => Wake::Stop,
            // Timers before events: a steady stream of ignored events (a busy
            // parent directory) must not hold back a due signal.
            _ = sleep_until(deadline) => Wake::Flush,
            _ = resync.tick() => Wake::Resync,
            _ = tick(&mut recheck) => Wake::Recheck,
            Some(event) = events.recv() => Wake::Event(event),
        };
        let signal = match wake {
            Wake::Stop => break,
            Wake::Event(Ok(event)) => {
                let relevance = relevance(&engine.plan, &event);
                tracing::trace!(?event, ?relevance, "watch event");
                if relevance != Relevance::Ignore {
                    let structural = relevance == Relevance::Structural;
                    Batch::note(&mut batch, debounce, true, structural);
                }
                None
            }
            Wake::Event(Err(e)) if engine.poll.is_none() && is_watch_limit(&e) => {
                engine.fall_back(&e);
                let Some(e) = refresh(engine, true).await else {
                    break;
                };
                engine = e.0;
                // Events may have been lost before the switch.
                Some(ChangeSignal::Files)
            }
            Wake::Event(Err(e)) => {
                // A path that vanished mid-scan and the like: look again
                // after the burst, signal only if the tree moved.
                tracing::debug!(dir = %engine.dir.display(), error = %e, "watch error");
                Batch::note(&mut batch, debounce, false, false);
                None
            }
            Wake::Flush => {
                let Some(b) = batch.take() else { continue };
                let Some((e, changed)) = refresh(engine, b.force).await else {
                    break;
                };
                engine = e;
                (b.signal || changed).then_some(ChangeSignal::Files)
            }
            Wake::Resync => {
                let Some((e, _)) = refresh(engine, false).await else {
                    break;
                };
                engine = e;
                Some(ChangeSignal::Resync)
            }
            Wake::Recheck => {
                let Some((e, changed)) = refresh(engine, false).await else {
                    break;
                };
                engine = e;
                changed.then_some(ChangeSignal::Files)
            }
        };
        if let Some(signal) = signal {
            match tx.try_send(signal) {
                // A signal is already waiting: it means the same thing.
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Closed(_)) => break,
            }
        }
    }
}

/// How much `event` matters: its most relevant path. An overflowed queue or
/// an event without paths could mean anything.
fn relevance(plan: &Plan, event: &Event) -> Relevance {
    if event.need_rescan() || event.paths.is_empty() {
        return Relevance::Structural;
    }
    event
        .paths
        .iter()
        .map(|p| plan.classify(p))
        .max()
        .unwrap_or(Relevance::Ignore)
}

/// Runs [`Engine::refresh`] off the async threads (it walks the tree and
/// polling backends scan synchronously). `None` if it panicked.
async fn refresh(mut engine: Engine, force: bool) -> Option<(Engine, bool)> {
    let dir = engine.dir.clone();
    match tokio::task::spawn_blocking(move || {
        let changed = engine.refresh(force);
        (engine, changed)
    })
    .await
    {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "the watcher failed; stopping it");
            None
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
