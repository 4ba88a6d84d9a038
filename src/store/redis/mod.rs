//! The Redis store: the same [`Store`](super::Store) semantics for a
//! deployment of several processes sharing one Redis. This module owns
//! the [`RedisStore`] handle (connecting, the fence, the calls that wait
//! for their write) and splits the rest by concern: `layout` (the key
//! layout check), `migrate` (moving a layout 4 keyspace to 5 in place),
//! `record` (a run's stored encoding), `writer` (the background writer),
//! `batch` (one Lua script call per batch), `reads` (queries and
//! key-value operations) and `tail` (the events stream tail). It may use `store`'s
//! own types and `spec`, nothing above.
//!
//! Every key starts with one hash-tagged prefix (`{mj}:` by default), so a
//! Redis Cluster keeps them in one slot and one Lua script may touch them
//! all. Under the prefix:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `resources` | hash | `kind/id` → `{spec, hash, file, line, column}` |
//! | `applied_revision` | hash | `seq`, `rec` (the applied revision, never trimmed) |
//! | `revisions`, `revision_seq` | hash, counter | seq → revision record (last 1000) |
//! | `events`, `event_seq` | stream, counter | a batch's events as one entry `<last id>-<count>`: `at` (the first's time), `e` (JSON array of `[type, at, job, run, data]`) |
//! | `runs:rec` | hash | run id → the run as JSON without its default fields, `id`, `job_id`, `status`, `run_key` first (see `record`); the one place its status is kept (its seq is its score in `runs`) |
//! | `layout` | string | `5` (`4` stored full records and elected with `leader`, migrated in place by the leader, see `migrate`; `3` also kept a `runs:meta` hash, upgraded to 4 in place; `2` kept an entry per event, `1` a hash per run) |
//! | `layout:migration` | string | while a migration from layout 4 is unfinished: the `runs:rec` scan cursor it reached |
//! | `lease`, `leader:epoch` | string, counter | the leader's node (expiring, renewed) and its term, the fence of every write (see `cluster::election`) |
//! | `leader` | string | layout 4's election key, retired by the migration with a value that never expires, so a layout 4 process never leads again |
//! | `runs`, `runs:job:<job>`, `runs:active` | zsets | run ids by seq (`runs:active`: every unfinished run) |
//! | `runs:status:<s>` | zset | finished runs in status `s` by seq (written once, when the run ends) |
//! | `run_seq`, `run_counts` | counter, hash | `job\nstatus` → count |
//! | `runs:key` | hash | run id → its run key, for the runs that hold one (`runkey:<key>`): pruning frees the key without reading the record |
//! | `runkey:<key>` | string | the run that owns a run key (a slot's or a follow-up's; a manual run's key, `manual:<its id>`, is unique as its id is and has none) |
//! | `failure`, `job_slots`, `approvals` | hashes | job or approval id → JSON / slot |
//! | `kv:<key>` | string | JSON value, with PX for a ttl |
//! | `inbox`, `inbox_seq` | stream, counter | entry `<id>-1`: `cmd` |
//! | `inbox_progress` | hash | inbox id → runs of that `trigger --count` already queued |
//! | `ready`, `results` | streams | the cluster's dispatch (see `Mutation::Dispatch`; a `ready` entry carries up to 16 runs); a run in either is held by a worker |
//! | `ready:<group>`, `ready_groups` | streams, set | the runs of jobs with `worker_group: <group>`, read only by that group's workers (`worker --group`); the set lists the groups dispatched to, for the leader's recovery |
//! | `workers` | hash | worker node → `<slots> <heartbeat ms> <version> <groups> <busy>` (see `store::workers`) |
//! | `batch:<name>` | string | a writer's last applied batch id and its summary (ending `,1` when it applied cleanly), for an hour: retries are no-ops, and a call sent behind it checks it (a writer alternates two names) |
//!
//! Writes go through one Lua script per batch (see `batch.lua`): atomic,
//! fenced, idempotent under retry. Counters incremented inside the script
//! give events and inbox commands integer ids that increase in commit
//! order across processes. Once something subscribes, a background task
//! per store tails the events stream on its own connection and broadcasts
//! what it reads, so every process sees every process's events, in id
//! order (from the newest event when the store was opened).

mod batch;
mod inbox_wait;
mod layout;
mod migrate;
mod output;
mod reads;
pub mod record;
mod tail;
mod writer;

pub use batch::DISPATCH_PACK;
pub use layout::{Found as LayoutFound, LAYOUT};
pub use migrate::{MigrationPlan, MigrationReport, RETIRED_LEADER};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::backlog::Backlog;
use super::runs::InboxCommand;
use super::{Event, KvOp, Mutation, NewEvent, RevisionWrite, StoreError};
use batch::{Ops, Outcome, Target};
use writer::WriteOp;

/// The key prefix of a deployment.
pub const DEFAULT_PREFIX: &str = "{mj}:";

/// Writes to the shared connection; none blocks, a big batch may take a while.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

type Fence = Arc<Mutex<Option<(String, String)>>>;

/// The event tail, until the first subscriber starts it.
type Tail = Mutex<
    Option<(
        tokio::runtime::Handle,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    )>,
>;

struct Inner {
    target: Target,
    tail: Tail,
    own_events: Arc<tail::OwnEvents>,
    writer: mpsc::UnboundedSender<WriteOp>,
    events: broadcast::Sender<super::SharedEvent>,
    backlog: Arc<Backlog>,
    fence: Fence,
    fenced: watch::Receiver<bool>,
    shutdown: CancellationToken,
    inbox: inbox_wait::InboxWaiter,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops the event tail; the writer ends when its channel closes.
        self.shutdown.cancel();
    }
}

/// A Redis-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl RedisStore {
    /// Connect to the deployment at `url` (keys under [`DEFAULT_PREFIX`]).
    pub async fn open(url: &str) -> Result<RedisStore, StoreError> {
        Self::open_with_prefix(url, DEFAULT_PREFIX).await
    }

    /// Connect with keys under `prefix` (tests give each store its own,
    /// like `{mj-<uuid>}:`; keep the braces so keys share a cluster slot).
    pub async fn open_with_prefix(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let shown = redact(url);
        let client = redis::Client::open(url).map_err(|e| StoreError::Redis {
            url: shown.clone(),
            message: format!("not a Redis URL: {e}"),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| StoreError::Unreachable {
                url: shown.clone(),
                message: e.to_string(),
            })?;
        let target = Target {
            conn,
            prefix: prefix.to_string(),
            url: shown,
        };
        if layout::check(&target).await? != layout::Found::Current {
            tracing::info!(prefix = %prefix, "store: the keys are in layout 4 (or its migration is unfinished); the leader migrates them to layout 5 when it starts (`multijob migrate --redis URL --dry-run` shows how)");
        }
        let last = reads::last_event_id(&target).await?;
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let shutdown = CancellationToken::new();
        let own_events = Arc::new(tail::OwnEvents::default());
        // The tail starts with the first subscriber (a `worker` process has
        // none), from the newest event at open.
        let inbox = inbox_wait::InboxWaiter::new(client.clone(), prefix, &target.url);
        let tail = tail::tail(
            client,
            target.clone(),
            last,
            events.clone(),
            own_events.clone(),
            shutdown.clone(),
        );
        let tail: Tail = Mutex::new(Some((tokio::runtime::Handle::current(), Box::pin(tail))));
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let fence: Fence = Arc::default();
        let (fenced_tx, fenced) = watch::channel(false);
        tokio::spawn(
            writer::Writer::new(target.clone(), &backlog, &fence, fenced_tx, &shutdown)
                .with_own_events(&own_events)
                .run(rx),
        );
        Ok(RedisStore {
            inner: Arc::new(Inner {
                target,
                tail,
                own_events,
                writer: tx,
                events,
                backlog,
                fence,
                fenced,
                shutdown,
                inbox,
            }),
        })
    }

    /// The URL (password redacted).
    pub fn url(&self) -> &str {
        &self.inner.target.url
    }

    /// `prefix + name`: the cluster runtime's keys live beside the store's.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.target.prefix)
    }

    /// The shared, self-reconnecting connection (10 s response timeout:
    /// blocking reads need a connection of their own).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.target.conn.clone()
    }

    /// Refuse every later write unless `GET <prefix><epoch key>` equals
    /// `token`, checked atomically with the write (a deposed leader must
    /// not write). `None` lifts the fence.
    pub fn set_fence(&self, fence: Option<(String, u64)>) {
        let full = fence.map(|(name, token)| (self.key(&name), token.to_string()));
        if let Ok(mut f) = self.inner.fence.lock() {
            *f = full;
        }
    }

    /// Becomes true when a write was refused by the fence.
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.inner.fenced.clone()
    }

    fn current_fence(&self) -> Option<(String, String)> {
        self.inner.fence.lock().ok().and_then(|f| f.clone())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<super::SharedEvent> {
        let rx = self.inner.events.subscribe();
        let start = self.inner.tail.lock().ok().and_then(|mut t| t.take());
        if let Some((runtime, tail)) = start {
            self.inner.own_events.start();
            runtime.spawn(tail);
        }
        rx
    }

    pub fn submit(&self, mutations: Vec<Mutation>) -> Result<(), StoreError> {
        if mutations.is_empty() {
            return Ok(());
        }
        let n = mutations.len();
        self.inner.backlog.add(n);
        self.inner
            .writer
            .send(WriteOp::Mutations(mutations))
            .map_err(|_| {
                self.inner.backlog.done(n);
                StoreError::Closed
            })
    }

    pub async fn wait_for_backlog(&self, limit: usize) {
        self.inner.backlog.wait(limit).await
    }

    pub fn backlog(&self) -> usize {
        self.inner.backlog.pending()
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .writer
            .send(WriteOp::Barrier(reply))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn kv(&self, key: String, op: KvOp) -> Result<Option<Value>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .writer
            .send(WriteOp::Kv { key, op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.connection();
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(reads::err(&self.inner.target, "PING"))?;
        Ok(())
    }

    /// The live workers, from the `workers` hash their heartbeats write.
    pub async fn live_workers(&self) -> Result<Vec<super::workers::WorkerInfo>, StoreError> {
        let mut c = self.connection();
        let entries: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key("workers"))
            .query_async(&mut c)
            .await
            .map_err(reads::err(&self.inner.target, "HGETALL workers"))?;
        let now = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        Ok(super::workers::live(entries, now))
    }

    /// Apply ops now (not through the writer), fenced; the caller waits.
    async fn write_now(&self, ops: Ops) -> Result<batch::Applied, StoreError> {
        let fence = self.current_fence();
        // Give up after a few tries: the caller gets the error and decides.
        match batch::apply(&self.inner.target, fence.as_ref(), None, &ops, |n| n >= 5).await? {
            Outcome::Applied(a) => Ok(a),
            Outcome::Stale | Outcome::Renumber => Err(StoreError::Corrupt {
                what: "store batch".into(),
                message: "a call that follows none, its events unnumbered, came back stale".into(),
            }),
            Outcome::Fenced => Err(StoreError::Fenced {
                key: fence.map(|f| f.0).unwrap_or_default(),
            }),
        }
    }

    /// Record `w` in one script call.
    pub async fn record_revision(&self, w: RevisionWrite) -> Result<(i64, Vec<Event>), StoreError> {
        let RevisionWrite {
            revision,
            writes,
            events,
        } = w;
        let mut ops = Ops::default();
        if let Some(writes) = &writes {
            ops.resources(writes);
        }
        ops.revision(&revision)?;
        ops.events(events.clone());
        let applied = self.write_now(ops).await?;
        Ok((applied.revision_seq, numbered(events, applied.first_event)))
    }

    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut ops = Ops::default();
        ops.events(events.clone());
        let applied = self.write_now(ops).await?;
        Ok(numbered(events, applied.first_event))
    }

    /// Leave a command for the leader (the CLI's `trigger`, `approvals`).
    /// Returns once a command is posted after `after`, with its seq, or
    /// `None` after `timeout` (see [`inbox_wait`]).
    pub async fn wait_for_inbox(
        &self,
        after: i64,
        timeout: Duration,
    ) -> Result<Option<i64>, StoreError> {
        self.inner.inbox.wait(after, timeout).await
    }

    pub async fn post_to_inbox(&self, command: &InboxCommand) -> Result<i64, StoreError> {
        let text =
            serde_json::to_string(command).map_err(|e| StoreError::corrupt("inbox command", e))?;
        let script = redis::Script::new(
            "local id = redis.call('INCR', KEYS[1])
             redis.call('XADD', KEYS[2], string.format('%d-1', id), 'at', ARGV[1], 'cmd', ARGV[2])
             return id",
        );
        let mut c = self.connection();
        script
            .key(self.key("inbox_seq"))
            .key(self.key("inbox"))
            .arg(super::now_rfc3339())
            .arg(text)
            .invoke_async(&mut c)
            .await
            .map_err(reads::err(&self.inner.target, "posting to the inbox"))
    }
}

/// Events as stored, given the first id the script assigned (a batch's
/// ids are contiguous: the script runs alone).
fn numbered(events: Vec<NewEvent>, first: i64) -> Vec<Event> {
    events
        .into_iter()
        .zip(first..)
        .map(|(e, id)| e.stored(id))
        .collect()
}
