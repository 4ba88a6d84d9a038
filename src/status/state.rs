//! What the running daemon shares between its tasks: the store, the applied
//! snapshot, the last reconcile result and the live event feed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::queue::{RecoverySummary, RunQueue};
use crate::reconcile::{Applier, ReconcileStatus};
use crate::schedule::scheduler::StatsCell;
use crate::status::metrics::Metrics;
use crate::store::{Applied, Store};

/// Where this replica stands in a Redis deployment. The leader owns the
/// run queue; a follower shows the figures the leader publishes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterRole {
    pub node: String,
    /// `leader` or `follower`.
    pub role: &'static str,
    /// The node holding the leader key, as last read.
    pub leader: Option<String>,
    /// A follower: the leader's queue as it last published it.
    #[serde(skip)]
    pub leader_queue: Option<LeaderQueue>,
}

/// The leader's queue figures, published to Redis twice a second (they
/// expire after 5 s: a follower shows none rather than stale ones).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeaderQueue {
    pub queue_depth: usize,
    pub running: usize,
    pub pressure_mode: bool,
    pub bursts: Vec<crate::queue::Burst>,
    /// Follow-up runs waiting to start, by job (workers check
    /// `limits.queued_follow_ups` against it before handing one over).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub follow_ups_waiting: std::collections::BTreeMap<String, usize>,
    /// When the leader published them (RFC 3339).
    pub at: String,
    /// The leader's last reconcile (followers do not reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile: Option<serde_json::Value>,
}

pub struct Shared {
    pub store: Store,
    /// The config directory.
    pub dir: PathBuf,
    /// The applied snapshot and its revision; swapped whole on apply.
    pub applied: ArcSwap<Applied>,
    pub last_reconcile: ArcSwap<Option<ReconcileStatus>>,
    /// The applied snapshot, for tasks that react to a new revision.
    pub applied_tx: watch::Sender<Arc<Applied>>,
    pub started_at: Instant,
    /// Bearer token for the API (`MULTIJOB_API_TOKEN`).
    pub api_token: Option<String>,
    pub queue: Arc<RunQueue>,
    pub scheduler: Arc<StatsCell>,
    /// Today's daily budgets, as the scheduler's guards see them.
    pub budgets: Arc<crate::schedule::budgets::BudgetBoard>,
    pub workers_busy: Arc<AtomicUsize>,
    pub workers_total: AtomicUsize,
    pub recovery: ArcSwap<Option<RecoverySummary>>,
    /// This process's place in a Redis deployment (none with the embedded
    /// store).
    pub cluster: ArcSwap<Option<ClusterRole>>,
    /// The Prometheus registry and its metrics.
    pub metrics: Metrics,
    /// Cancelled when the daemon stops: long-lived responses (SSE) end so
    /// the server can shut down gracefully.
    pub shutdown: CancellationToken,
    /// `run --git`: the puller's last fetch (none without `--git`).
    pub git: Arc<crate::reconcile::pull::GitCell>,
}

impl Shared {
    pub fn new(
        store: Store,
        dir: PathBuf,
        applied: Applied,
        api_token: Option<String>,
        queue_config: crate::queue::QueueConfig,
        clock: crate::clock::Clock,
    ) -> Arc<Self> {
        let applied = Arc::new(applied);
        let metrics = Metrics::new();
        let queue = RunQueue::new(store.clone(), applied.clone(), queue_config, clock);
        let (applied_tx, _) = watch::channel(applied.clone());
        Arc::new(Shared {
            store,
            dir,
            applied: ArcSwap::new(applied),
            last_reconcile: ArcSwap::new(Arc::new(None)),
            applied_tx,
            started_at: Instant::now(),
            api_token,
            queue,
            scheduler: Arc::new(StatsCell::default()),
            budgets: Default::default(),
            workers_busy: Arc::new(AtomicUsize::new(0)),
            workers_total: AtomicUsize::new(0),
            recovery: ArcSwap::new(Arc::new(None)),
            cluster: ArcSwap::new(Arc::new(None)),
            git: Arc::new(crate::reconcile::pull::GitCell::with_counter(
                metrics.git_fetches.clone(),
            )),
            metrics,
            shutdown: CancellationToken::new(),
        })
    }

    /// Committed events, in id order, as they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<crate::store::SharedEvent> {
        self.store.subscribe()
    }

    pub fn workers(&self) -> (usize, usize) {
        (
            self.workers_busy.load(Ordering::Relaxed),
            self.workers_total.load(Ordering::Relaxed),
        )
    }

    /// True once a revision is applied (from the store or this run).
    pub fn has_revision(&self) -> bool {
        self.applied.load().revision.is_some()
    }
}

/// The reconciler changes four things of the daemon: it records revisions
/// in the store, swaps the applied revision (and tells the scheduler), and
/// keeps its last result for `/api/v1/status`.
impl Applier for Shared {
    fn store(&self) -> &Store {
        &self.store
    }

    fn applied(&self) -> Arc<Applied> {
        self.applied.load_full()
    }

    fn publish(&self, applied: Arc<Applied>) {
        self.applied.store(applied.clone());
        self.applied_tx.send_replace(applied);
    }

    fn last_reconcile(&self) -> Arc<Option<ReconcileStatus>> {
        self.last_reconcile.load_full()
    }

    fn set_last_reconcile(&self, status: ReconcileStatus) {
        self.last_reconcile.store(Arc::new(Some(status)));
    }
}
