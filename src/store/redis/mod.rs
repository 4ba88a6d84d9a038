//! The Redis store: the same [`Store`](super::Store) semantics for a
//! deployment of several processes sharing one Redis.
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
//! | `runs:rec` | hash | run id → the run as JSON, the one place its status is kept (its seq is its score in `runs`) |
//! | `layout` | string | `4` (`3` also kept a `runs:meta` hash, upgraded in place; `2` kept an entry per event, `1` a hash per run) |
//! | `runs`, `runs:job:<job>`, `runs:active` | zsets | run ids by seq (`runs:active`: every unfinished run) |
//! | `runs:status:<s>` | zset | finished runs in status `s` by seq (written once, when the run ends) |
//! | `run_seq`, `run_counts` | counter, hash | `job\nstatus` → count |
//! | `runkey:<key>` | string | the run that owns a run key (a slot's or a follow-up's; a manual run's key, `manual:<its id>`, is unique as its id is and has none) |
//! | `failure`, `job_slots`, `approvals` | hashes | job or approval id → JSON / slot |
//! | `kv:<key>` | string | JSON value, with PX for a ttl |
//! | `inbox`, `inbox_seq` | stream, counter | entry `<id>-1`: `cmd` |
//! | `inbox_progress` | hash | inbox id → runs of that `trigger --count` already queued |
//! | `ready`, `results` | streams | the cluster's dispatch (see `Mutation::Dispatch`; a `ready` entry carries up to 16 runs); a run in either is held by a worker |
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
mod reads;
mod tail;

pub use batch::DISPATCH_PACK;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::runs::InboxCommand;
use super::{
    Coalesced, Event, KvOp, Mutation, NewEvent, ResourceWrites, RevisionRecord, StoreError,
};
use batch::{Ops, Outcome, Target};

/// The key prefix of a deployment.
pub const DEFAULT_PREFIX: &str = "{mj}:";

/// Most submitted write requests taken from the channel at a time.
const MAX_BATCH: usize = 4096;
/// Most mutations one script call applies (more when one submitted
/// vector holds more; none does by far): a script blocks the server
/// while it runs, so 100,000 runs enqueued at once go in several calls
/// (one call over five seconds makes Redis answer BUSY to everyone,
/// the leader's renewal included).
const MAX_SCRIPT_MUTATIONS: usize = 4096;

/// Writes to the shared connection; none blocks, a big batch may take a while.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

enum WriteOp {
    Mutations(Vec<Mutation>),
    /// Replies once everything sent before it is applied.
    Barrier(oneshot::Sender<Result<(), StoreError>>),
    /// On the writer, so it sees every write submitted before it.
    Kv {
        key: String,
        op: KvOp,
        reply: oneshot::Sender<Result<Option<Value>, StoreError>>,
    },
}

/// Submitted writes not yet applied (backpressure, as in SQLite).
#[derive(Default)]
struct Backlog {
    pending: AtomicUsize,
    drained: tokio::sync::Notify,
}

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
    writer: mpsc::UnboundedSender<WriteOp>,
    events: broadcast::Sender<Event>,
    backlog: Arc<Backlog>,
    fence: Fence,
    fenced: watch::Receiver<bool>,
    shutdown: CancellationToken,
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
        check_layout(&target).await?;
        let last = reads::last_event_id(&target).await?;
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let shutdown = CancellationToken::new();
        // The tail starts with the first subscriber (a `worker` process has
        // none), from the newest event at open.
        let tail = tail::tail(
            client,
            target.clone(),
            last,
            events.clone(),
            shutdown.clone(),
        );
        let tail: Tail = Mutex::new(Some((tokio::runtime::Handle::current(), Box::pin(tail))));
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let fence: Fence = Arc::default();
        let (fenced_tx, fenced) = watch::channel(false);
        tokio::spawn(
            Writer {
                target: target.clone(),
                marker: format!("writer:{}", uuid::Uuid::now_v7().simple()),
                backlog: backlog.clone(),
                fence: fence.clone(),
                fenced: fenced_tx,
                shutdown: shutdown.clone(),
                known: Default::default(),
                known_fence: None,
                next_seq: None,
                generation: 0,
                sent: 0,
                last_sent: None,
                in_flight: Default::default(),
            }
            .run(rx),
        );
        Ok(RedisStore {
            inner: Arc::new(Inner {
                target,
                tail,
                writer: tx,
                events,
                backlog,
                fence,
                fenced,
                shutdown,
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

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        let rx = self.inner.events.subscribe();
        let start = self.inner.tail.lock().ok().and_then(|mut t| t.take());
        if let Some((runtime, tail)) = start {
            runtime.spawn(tail);
        }
        rx
    }

    pub fn submit(&self, mutations: Vec<Mutation>) -> Result<(), StoreError> {
        if mutations.is_empty() {
            return Ok(());
        }
        let n = mutations.len();
        self.inner.backlog.pending.fetch_add(n, Ordering::Relaxed);
        self.inner
            .writer
            .send(WriteOp::Mutations(mutations))
            .map_err(|_| {
                self.inner.backlog.pending.fetch_sub(n, Ordering::Relaxed);
                StoreError::Closed
            })
    }

    pub async fn wait_for_backlog(&self, limit: usize) {
        let b = &self.inner.backlog;
        loop {
            let drained = b.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if b.pending.load(Ordering::Relaxed) <= limit {
                return;
            }
            drained.await;
        }
    }

    pub fn backlog(&self) -> usize {
        self.inner.backlog.pending.load(Ordering::Relaxed)
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

    /// Apply ops now (not through the writer), fenced; the caller waits.
    async fn write_now(&self, ops: Ops) -> Result<batch::Applied, StoreError> {
        let fence = self.current_fence();
        // Give up after a few tries: the caller gets the error and decides.
        match batch::apply(&self.inner.target, fence.as_ref(), None, &ops, |n| n >= 5).await? {
            Outcome::Applied(a) => Ok(a),
            Outcome::Stale => Err(StoreError::Corrupt {
                what: "store batch".into(),
                message: "a call that follows none came back stale".into(),
            }),
            Outcome::Fenced => Err(StoreError::Fenced {
                key: fence.map(|f| f.0).unwrap_or_default(),
            }),
        }
    }

    pub async fn apply_revision(
        &self,
        revision: RevisionRecord,
        writes: ResourceWrites,
        events: Vec<NewEvent>,
    ) -> Result<(i64, Vec<Event>), StoreError> {
        let mut ops = Ops::default();
        ops.resources(&writes);
        ops.revision(&revision)?;
        ops.events(events.clone());
        let applied = self.write_now(ops).await?;
        Ok((applied.revision_seq, numbered(events, applied.first_event)))
    }

    pub async fn reject_revision(
        &self,
        revision: RevisionRecord,
        events: Vec<NewEvent>,
    ) -> Result<(i64, Vec<Event>), StoreError> {
        let mut ops = Ops::default();
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
    pub async fn post_to_inbox(&self, command: &InboxCommand) -> Result<i64, StoreError> {
        let text = serde_json::to_string(command).map_err(|e| StoreError::Corrupt {
            what: "inbox command".into(),
            message: e.to_string(),
        })?;
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
async fn check_layout(target: &Target) -> Result<(), StoreError> {
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

/// Events as stored, given the first id the script assigned (a batch's
/// ids are contiguous: the script runs alone).
fn numbered(events: Vec<NewEvent>, first: i64) -> Vec<Event> {
    events
        .into_iter()
        .zip(first..)
        .map(|(e, id)| Event {
            id,
            event_type: e.event_type,
            at: e.at,
            job_id: e.job_id,
            run_id: e.run_id,
            data: e.data,
        })
        .collect()
}

/// The background writer: takes what queued up, coalesces it, applies it
/// in one script call, in submission order. Up to two calls are in
/// flight on the one connection (Redis runs them in the order sent), so
/// the leader's encoding, the transfer and Redis's script overlap. The
/// second is encoded assuming the first applies as sent; the script
/// checks that, and a call whose predecessor did not apply cleanly comes
/// back stale and goes again, encoded afresh.
struct Writer {
    target: Target,
    /// The base of this writer's retry markers: calls alternate between
    /// two (`<marker>:0`, `<marker>:1`), one per call in flight.
    marker: String,
    backlog: Arc<Backlog>,
    fence: Fence,
    fenced: watch::Sender<bool>,
    shutdown: CancellationToken,
    /// Active runs this writer wrote, under the fence of `known_fence`,
    /// as of the last batch encoded (encoding assumes the batches before
    /// it apply as sent).
    known: batch::Known,
    known_fence: Option<(String, String)>,
    /// The last run seq as of the last batch encoded, when this writer
    /// (fenced) numbers new runs itself.
    next_seq: Option<i64>,
    /// Bumped whenever `known` is forgotten: a batch encoded before that
    /// and not sent yet is encoded again.
    generation: u64,
    /// Calls sent so far (numbers the markers).
    sent: u64,
    /// Marker and batch id of the last call sent.
    last_sent: Option<(String, String)>,
    /// Oldest first. Only the oldest is polled (after the first poll that
    /// sends it), so a call's retries never overtake the call before it.
    in_flight: std::collections::VecDeque<InFlight>,
}

/// Calls of one writer in flight at a time.
const MAX_IN_FLIGHT: usize = 2;

/// A batch encoded for one script call, with what it was made from.
struct Prepared {
    source: Coalesced,
    count: usize,
    ops: Ops,
    fence: Option<(String, String)>,
    generation: u64,
    /// New runs numbered by this writer (the script checks the numbering).
    numbered_new: bool,
}

type Sent = (Result<Outcome, StoreError>, Prepared);
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = Sent> + Send>>;

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
        let mut failure: Option<StoreError> = None;
        loop {
            let first = match self.in_flight.front_mut() {
                None => rx.recv().await,
                Some(call) => tokio::select! {
                    sent = call => {
                        self.in_flight.pop_front();
                        self.landed(sent, &mut failure).await;
                        continue;
                    }
                    op = rx.recv() => op,
                },
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut pending = Coalesced::default();
            let mut count = 0;
            let mut barriers = Vec::new();
            for op in batch {
                match op {
                    WriteOp::Mutations(ms) => {
                        // A submitted vector stays in one script call: a
                        // dispatch travels with its run's record.
                        if count > 0 && count + ms.len() > MAX_SCRIPT_MUTATIONS {
                            let full = std::mem::take(&mut pending);
                            self.commit(full, std::mem::take(&mut count), &mut failure)
                                .await;
                        }
                        for m in ms {
                            count += 1;
                            pending.add(m);
                        }
                    }
                    WriteOp::Barrier(reply) => barriers.push(reply),
                    WriteOp::Kv { key, op, reply } => {
                        let before = std::mem::take(&mut pending);
                        self.commit(before, std::mem::take(&mut count), &mut failure)
                            .await;
                        self.drain(&mut failure).await;
                        let _ = reply.send(reads::kv_op(&self.target, &key, op).await);
                    }
                }
            }
            self.commit(pending, count, &mut failure).await;
            if !barriers.is_empty() {
                self.drain(&mut failure).await;
                for b in barriers {
                    let _ = b.send(match &failure {
                        None => Ok(()),
                        Some(e) => Err(copy_err(e, &self.target.url)),
                    });
                }
                failure = None;
            }
        }
        self.drain(&mut failure).await;
    }

    /// Encode `pending`, wait for room in flight, then send it.
    async fn commit(&mut self, pending: Coalesced, count: usize, failure: &mut Option<StoreError>) {
        if pending.is_empty() {
            self.done(count);
            return;
        }
        let Some(mut next) = self.prepare(pending, count, failure).await else {
            return;
        };
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.drain_one(failure).await;
        }
        if next.generation != self.generation {
            // The batch before did not go as this one assumed.
            match self.encode(std::mem::take(&mut next.source), count) {
                Ok(again) => next = again,
                Err(e) => {
                    *failure = Some(e);
                    self.done(count);
                    return;
                }
            }
        }
        let mut call = self.send(next);
        // Polled once now, so its request goes out behind the call ahead
        // of it on the connection.
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        match first {
            Poll::Pending => self.in_flight.push_back(call),
            // Failed at once; still settled in order.
            Poll::Ready(sent) if !self.in_flight.is_empty() => {
                self.in_flight.push_back(Box::pin(std::future::ready(sent)))
            }
            Poll::Ready(sent) => self.landed(sent, failure).await,
        }
    }

    /// Wait for every call in flight.
    async fn drain(&mut self, failure: &mut Option<StoreError>) {
        while !self.in_flight.is_empty() {
            self.drain_one(failure).await;
        }
    }

    /// Wait for the oldest call in flight, if any.
    async fn drain_one(&mut self, failure: &mut Option<StoreError>) {
        if let Some(call) = self.in_flight.pop_front() {
            let sent = call.await;
            self.landed(sent, failure).await;
        }
    }

    /// The oldest call came back. A stale one (the call before it did not
    /// apply cleanly; the writer has forgotten what it assumed) goes again
    /// with every call after it, which are stale too: encoded afresh, one
    /// at a time, in order.
    async fn landed(&mut self, sent: Sent, failure: &mut Option<StoreError>) {
        if !matches!(sent.0, Ok(Outcome::Stale)) {
            self.settle(sent, failure);
            return;
        }
        let mut again = vec![sent.1];
        while let Some(call) = self.in_flight.pop_front() {
            match call.await {
                (Ok(Outcome::Stale), p) => again.push(p),
                other => self.settle(other, failure),
            }
        }
        for p in again {
            match self.encode(p.source, p.count) {
                Ok(next) => {
                    let sent = self.send(next).await;
                    self.settle(sent, failure);
                }
                Err(e) => {
                    *failure = Some(e);
                    self.done(p.count);
                }
            }
        }
    }

    fn done(&self, count: usize) {
        self.backlog.pending.fetch_sub(count, Ordering::Relaxed);
        self.backlog.drained.notify_waiters();
    }

    async fn prepare(
        &mut self,
        pending: Coalesced,
        count: usize,
        failure: &mut Option<StoreError>,
    ) -> Option<Prepared> {
        let fence = self.fence.lock().ok().and_then(|f| f.clone());
        if fence != self.known_fence {
            // Another leadership (or the first batch): what this writer
            // wrote may have changed. Start from what Redis says.
            self.drain(failure).await;
            self.forget();
            self.known_fence = fence.clone();
            if fence.is_some() {
                self.next_seq = Self::read_run_seq(&self.target).await;
            }
        }
        match self.encode(pending, count) {
            Ok(p) => Some(p),
            Err(e) => {
                *failure = Some(e);
                self.done(count);
                None
            }
        }
    }

    /// Encode a batch against what this writer knows, and assume it
    /// applies (the next batch is encoded before this one's reply).
    fn encode(&mut self, source: Coalesced, count: usize) -> Result<Prepared, StoreError> {
        let mut ops = Ops::default();
        ops.mutations = count;
        // Only a fenced writer (the leader) is the runs' one writer;
        // without a fence every write reads the run first.
        let fence = self.known_fence.clone();
        let numbering = fence.as_ref().and(self.next_seq);
        let written = match ops.coalesced(&source, &self.known, numbering) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(count, error = %e, "store: writes lost (cannot encode them)");
                return Err(e);
            }
        };
        let new = written.new_runs();
        if let Some(base) = numbering {
            written.remember(&mut self.known, base);
            self.next_seq = Some(base + new as i64);
        } else if new > 0 {
            // Numbered by the script: this writer does not know the seqs.
            self.next_seq = None;
        }
        Ok(Prepared {
            source,
            count,
            ops,
            fence,
            generation: self.generation,
            numbered_new: numbering.is_some() && new > 0,
        })
    }

    fn send(&mut self, p: Prepared) -> InFlight {
        let target = self.target.clone();
        self.sent += 1;
        let seq = batch::Sequence {
            marker: format!("{}:{}", self.marker, self.sent % 2),
            batch_id: uuid::Uuid::now_v7().simple().to_string(),
            after: if self.in_flight.is_empty() {
                None
            } else {
                self.last_sent.clone()
            },
        };
        self.last_sent = Some((seq.marker.clone(), seq.batch_id.clone()));
        let shutdown = self.shutdown.clone();
        Box::pin(async move {
            // Retry a lost connection for as long as the store lives; the
            // batch id makes a retry of an applied batch a no-op.
            let outcome = batch::apply(
                &target,
                p.fence.as_ref(),
                Some(seq),
                &p.ops,
                move |attempt| shutdown.is_cancelled() && attempt >= 5,
            )
            .await;
            (outcome, p)
        })
    }

    fn forget(&mut self) {
        self.known.clear();
        self.next_seq = None;
        self.generation += 1;
    }

    async fn read_run_seq(target: &Target) -> Option<i64> {
        let mut c = target.conn.clone();
        let seq: redis::RedisResult<Option<i64>> = redis::cmd("GET")
            .arg(format!("{}run_seq", target.prefix))
            .query_async(&mut c)
            .await;
        match seq {
            Ok(seq) => Some(seq.unwrap_or(0)),
            Err(e) => {
                // New runs are numbered by the script until the next term.
                tracing::warn!(error = %e, "store: cannot read the run counter");
                None
            }
        }
    }

    /// A call came back: check what the batches after it assumed.
    fn settle(&mut self, (outcome, p): Sent, failure: &mut Option<StoreError>) {
        let count = p.count;
        match outcome {
            Ok(Outcome::Applied(a)) => {
                let this_term = p.fence.is_some() && p.fence == self.known_fence;
                if p.numbered_new && a.new_base < 0 {
                    // The script wrote the new runs the careful way (a run
                    // of another leader, a slot taken, a wrong count):
                    // start over from its counter.
                    self.forget();
                    if this_term {
                        self.next_seq = Some(a.run_seq);
                    }
                } else if this_term && self.next_seq.is_none() {
                    // Numbering resumes from the counter; should a batch
                    // encoded meanwhile have taken seqs, the script sees
                    // the count is off and the writer starts over.
                    self.next_seq = Some(a.run_seq);
                }
                for run in a.refused {
                    // A second run for the same slot: the first one stands.
                    tracing::warn!(run = %run, "store: run not written: its run key is taken");
                }
            }
            Ok(Outcome::Fenced) => {
                let key = p.fence.map(|f| f.0).unwrap_or_default();
                tracing::error!(
                    count, key = %key,
                    "store: fenced: another process leads; writes not applied"
                );
                self.fenced.send_replace(true);
                self.forget();
                *failure = Some(StoreError::Fenced { key });
            }
            Ok(Outcome::Stale) => {
                // Cannot happen: a call is stale only behind another, and
                // those are sent again before settling (see `landed`).
                tracing::error!(count, "store: writes lost (a stale call was settled)");
                self.forget();
                *failure = Some(StoreError::Corrupt {
                    what: "store batch".into(),
                    message: "applied out of order".into(),
                });
            }
            Err(e) => {
                tracing::error!(count, error = %e, "store: writes lost");
                self.forget();
                *failure = Some(e);
            }
        }
        self.done(count);
    }
}

fn copy_err(e: &StoreError, url: &str) -> StoreError {
    match e {
        StoreError::Fenced { key } => StoreError::Fenced { key: key.clone() },
        other => StoreError::Redis {
            url: url.to_string(),
            message: other.to_string(),
        },
    }
}
