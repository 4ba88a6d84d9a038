//! The durable state behind a deployment: the applied snapshot, revision
//! history, the event timeline, and the scheduler's tables (runs, per-job
//! state, approvals, the inbox, key-value entries). This module owns the
//! [`Store`] every caller holds, the types it reads and writes, and the
//! two backends behind it (`sqlite`, `redis`); it may use the layers below
//! it (`spec` and what `spec` uses) and nothing above: the run's life
//! cycle in `run` builds on these rows, not the other way round.
//!
//! # Semantics every backend keeps
//! - **Atomic apply.** [`Store::apply_revision`] writes a revision's resource
//!   changes, its history record and its events in one transaction: a crash
//!   leaves either the old revision or the new one, never a mix.
//! - **Acknowledged means durable.** A call that returned `Ok` survives
//!   `kill -9` of any process (SQLite: WAL, synchronous=NORMAL is enough for
//!   process crashes; FULL for power loss is a flag away. Redis: what its
//!   persistence keeps, so run it with `appendonly yes` and
//!   `appendfsync always` for this to hold across a Redis crash).
//! - **Events are ordered.** Event ids strictly increase in commit order; a
//!   reader paging with `after` never misses or repeats one.
//! - **Readers never block the writer**, and several processes may open the
//!   same store: the daemon writes while `plan` or `trigger` read.
//!
//! Callers hold a [`Store`]; the backend is chosen at startup.

mod backlog;
pub mod budgets;
pub mod feed;
pub mod output;
pub mod paused;
pub mod redis;
pub mod runs;
pub mod sqlite;
mod timestamp;
pub mod workers;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use runs::{Approval, FailureState, InboxCommand, Run, RunQuery};

use crate::spec::diagnostic::Diagnostic;
use crate::spec::model::Kind;
use crate::spec::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "store {path} was written by a newer multijob (schema {found}, this binary knows {known})"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("stored {what} is corrupt: {message}")]
    Corrupt { what: String, message: String },
    #[error("the store is shut down")]
    Closed,
    #[error("cannot reach Redis at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("Redis at {url}: {message}")]
    Redis { url: String, message: String },
    /// Another process holds the leader epoch: this one must not write.
    #[error("the store is fenced: another process leads (epoch key {key})")]
    Fenced { key: String },
}

impl StoreError {
    /// Stored `what` does not read back: `e` says how.
    pub fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            what: what.to_string(),
            message: e.to_string(),
        }
    }
}

/// A revision as recorded: applied or rejected, with what it changed or why
/// it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// Sequence number in the history (assigned by the store).
    #[serde(default)]
    pub seq: i64,
    /// `<git sha>[-dirty]+<content hash>` or `nogit+<content hash>`.
    pub id: String,
    pub status: RevisionStatus,
    /// RFC 3339 UTC.
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub git_dirty: bool,
    pub content_hash: String,
    /// `{create, update, delete, unchanged}` for an applied revision.
    pub summary: Value,
    /// `[{action, kind, id}]`, the changes applied.
    pub changes: Value,
    /// Findings that rejected it (empty when applied).
    pub errors: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionStatus {
    Applied,
    Rejected,
}

impl RevisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionStatus::Applied => "applied",
            RevisionStatus::Rejected => "rejected",
        }
    }
}

/// The applied state: the snapshot that runs and the revision it came from.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub revision: Option<RevisionRecord>,
    pub snapshot: Snapshot,
}

/// One resource row to upsert (its spec as JSON).
#[derive(Debug, Clone)]
pub struct ResourceRow {
    pub kind: Kind,
    pub id: String,
    pub spec: Value,
    pub hash: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
}

/// What applying a revision writes: rows to upsert and rows to delete.
#[derive(Debug, Clone, Default)]
pub struct ResourceWrites {
    pub upserts: Vec<ResourceRow>,
    pub deletes: Vec<(Kind, String)>,
}

impl ResourceWrites {
    /// Rows that differ between two snapshots (by hash or source position).
    pub fn between(running: &Snapshot, desired: &Snapshot) -> ResourceWrites {
        fn kind_writes<T: Serialize>(
            kind: Kind,
            old: &std::collections::BTreeMap<String, crate::spec::snapshot::Resource<T>>,
            new: &std::collections::BTreeMap<String, crate::spec::snapshot::Resource<T>>,
            w: &mut ResourceWrites,
        ) {
            for (id, r) in new {
                let same = old.get(id).is_some_and(|o| {
                    o.hash == r.hash && o.file == r.file && o.line == r.line && o.column == r.column
                });
                if !same {
                    w.upserts.push(ResourceRow {
                        kind,
                        id: id.clone(),
                        spec: serde_json::to_value(&r.spec).unwrap_or(Value::Null),
                        hash: r.hash.clone(),
                        file: r.file.clone(),
                        line: r.line,
                        column: r.column,
                    });
                }
            }
            for id in old.keys() {
                if !new.contains_key(id) {
                    w.deletes.push((kind, id.clone()));
                }
            }
        }
        let mut w = ResourceWrites::default();
        kind_writes(Kind::Job, &running.jobs, &desired.jobs, &mut w);
        kind_writes(Kind::Flow, &running.flows, &desired.flows, &mut w);
        kind_writes(
            Kind::Connector,
            &running.connectors,
            &desired.connectors,
            &mut w,
        );
        kind_writes(Kind::Skill, &running.skills, &desired.skills, &mut w);
        kind_writes(Kind::Trigger, &running.triggers, &desired.triggers, &mut w);
        kind_writes(Kind::Defaults, &running.defaults, &desired.defaults, &mut w);
        w
    }
}

/// A revision to record with its events, in one atomic write: an applied
/// one with its resource writes, a rejected one without (`writes` `None`,
/// resources untouched).
#[derive(Debug, Clone)]
pub struct RevisionWrite {
    pub revision: RevisionRecord,
    pub writes: Option<ResourceWrites>,
    pub events: Vec<NewEvent>,
}

/// Committed events a live subscriber may fall behind by before it is told
/// it lagged (it then resumes from the store by id).
pub const EVENT_BUFFER: usize = 16_384;

/// Most inbox commands one read returns (a full page: read again at once).
pub const INBOX_PAGE: usize = 1000;

/// A write the runtime does not wait for. Writes of one process commit in
/// the order they were submitted; several writes to the same run or job in
/// one batch collapse into the last.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Insert or replace a run record (keyed by run id; a second run with
    /// the same `run_key` is refused).
    PutRun(Box<Run>),
    Event(NewEvent),
    Failure(String, FailureState),
    /// The nominal time (RFC 3339) of the last slot a job got an outcome for.
    JobSlot(String, String),
    PutApproval(Approval),
    /// An inbox command was handled.
    InboxDone(i64),
    /// The first `done` runs of a `trigger --count` inbox command are
    /// queued: a command handled again after a crash resumes there.
    InboxProgress {
        id: i64,
        done: u32,
    },
    /// Keep only the newest `keep` finished runs of a job.
    PruneRuns {
        job_id: String,
        keep: usize,
    },
    /// Drop events older than this RFC 3339 time.
    PruneEvents {
        before: String,
    },
    /// Set a key-value entry (no expiry), e.g. an approval's decision.
    PutKv {
        key: String,
        value: Value,
    },
    /// Hand a run to the cluster's workers (Redis: the `ready` stream, an
    /// entry of up to 16 runs: `runs` their ids, fields `0`, `1`, ...
    /// their records). Submitted with the run's record, in one
    /// call: the record travels in the same batch and is applied first,
    /// so a worker never sees a dispatch before its run. Single-process
    /// stores ignore it. A run of a job with a `worker_group` goes to
    /// that group's stream (`ready:<group>`) instead.
    Dispatch {
        run_id: String,
        group: Option<String>,
    },
    /// A worker's result was applied: acknowledge and drop it from the
    /// `results` stream. Single-process stores ignore it.
    AckResult {
        entry_id: String,
        run_id: String,
    },
    /// Chunks of a run's output (SQLite; a Redis store writes them with
    /// [`Store::record_output`] directly and ignores this).
    Output(Vec<output::OutputChunk>),
}

/// Fire-and-forget writes of one batch, coalesced: the latest record of
/// each run, the latest state of each job. Shared by the backends' writers
/// so both collapse a batch the same way.
#[derive(Default)]
pub(crate) struct Coalesced {
    /// Boxed as submitted: replacing a run's record moves no bytes.
    #[allow(clippy::vec_box)]
    pub(crate) runs: Vec<Box<Run>>,
    /// Looked up for every run write: a fast hash, seeded per process.
    run_index: std::collections::HashMap<String, usize, foldhash::fast::RandomState>,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) failure: std::collections::HashMap<String, FailureState>,
    pub(crate) slots: std::collections::HashMap<String, String>,
    pub(crate) approvals: Vec<Approval>,
    pub(crate) inbox_done: Vec<i64>,
    /// `(inbox id, runs queued)`, the latest per command.
    pub(crate) inbox_progress: Vec<(i64, u32)>,
    pub(crate) prune_runs: Vec<(String, usize)>,
    pub(crate) prune_events_before: Option<String>,
    pub(crate) kv: Vec<(String, Value)>,
    /// Run ids and their worker groups, in submission order.
    pub(crate) dispatch: Vec<(String, Option<String>)>,
    /// `(results entry id, run id)`.
    pub(crate) acks: Vec<(String, String)>,
    pub(crate) output: Vec<output::OutputChunk>,
}

impl Coalesced {
    pub(crate) fn add(&mut self, m: Mutation) {
        match m {
            Mutation::PutRun(run) => match self.run_index.get(&run.id) {
                Some(&i) => self.runs[i] = run,
                None => {
                    self.run_index.insert(run.id.clone(), self.runs.len());
                    self.runs.push(run);
                }
            },
            Mutation::Event(e) => self.events.push(e),
            Mutation::Failure(job, state) => {
                self.failure.insert(job, state);
            }
            Mutation::JobSlot(job, slot) => {
                self.slots.insert(job, slot);
            }
            Mutation::PutApproval(a) => self.approvals.push(a),
            Mutation::InboxDone(id) => self.inbox_done.push(id),
            Mutation::InboxProgress { id, done } => {
                match self.inbox_progress.iter_mut().find(|(i, _)| *i == id) {
                    Some(entry) => entry.1 = entry.1.max(done),
                    None => self.inbox_progress.push((id, done)),
                }
            }
            Mutation::PruneRuns { job_id, keep } => {
                // One delete per job and batch is enough.
                if !self
                    .prune_runs
                    .iter()
                    .any(|(j, k)| *j == job_id && *k == keep)
                {
                    self.prune_runs.push((job_id, keep));
                }
            }
            Mutation::PruneEvents { before } => self.prune_events_before = Some(before),
            Mutation::PutKv { key, value } => self.kv.push((key, value)),
            Mutation::Dispatch { run_id, group } => self.dispatch.push((run_id, group)),
            Mutation::AckResult { entry_id, run_id } => self.acks.push((entry_id, run_id)),
            Mutation::Output(chunks) => self.output.extend(chunks),
        }
    }

    /// Take the run records out, leaving the rest of the batch.
    #[allow(clippy::vec_box)]
    pub(crate) fn take_runs(&mut self) -> Vec<Box<Run>> {
        self.run_index = Default::default();
        std::mem::take(&mut self.runs)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.events.is_empty()
            && self.failure.is_empty()
            && self.slots.is_empty()
            && self.approvals.is_empty()
            && self.inbox_done.is_empty()
            && self.inbox_progress.is_empty()
            && self.prune_runs.is_empty()
            && self.prune_events_before.is_none()
            && self.kv.is_empty()
            && self.dispatch.is_empty()
            && self.acks.is_empty()
            && self.output.is_empty()
    }
}

/// One key-value operation (workflow `kv` steps, idempotency records).
#[derive(Debug, Clone, PartialEq)]
pub enum KvOp {
    Get,
    Set {
        value: Value,
        ttl_sec: Option<u64>,
    },
    /// Set unless the key holds a value; the value after is the one that
    /// stands (the caller's, or the earlier one). Atomic on both stores:
    /// two processes claiming one key agree on one value.
    SetIfAbsent {
        value: Value,
        ttl_sec: u64,
    },
    Incr {
        by: i64,
    },
    /// Add `by` unless the sum would pass `limit` (none: always add),
    /// keeping (or giving) the key a ttl of `ttl_sec`; atomic on both
    /// stores, so two processes counting one key never both take its
    /// last unit. The value returned is `{"counted": bool, "count": n}`,
    /// `n` the count after (unchanged when refused). Daily budgets.
    Count {
        by: i64,
        limit: Option<i64>,
        ttl_sec: u64,
    },
    Delete,
}

/// An event to append; the store assigns its id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339 UTC.
    pub at: String,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub data: Value,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        NewEvent {
            event_type: event_type.into(),
            at: now_rfc3339(),
            job_id: None,
            run_id: None,
            data,
        }
    }

    pub fn job(mut self, job_id: impl Into<String>) -> Self {
        self.job_id = Some(job_id.into());
        self
    }

    pub fn run(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// The event as stored under `id`.
    pub fn stored(self, id: i64) -> Event {
        Event::from_parts(
            id,
            (
                self.event_type,
                self.at,
                self.job_id,
                self.run_id,
                self.data,
            ),
        )
    }
}

/// An event's fields in their stored order: type, time, job, run, data
/// (a Redis events entry packs each event as this array).
pub(crate) type EventParts = (String, String, Option<String>, Option<String>, Value);

/// An event as the store broadcasts it to its subscribers: one allocation
/// shared by all of them, not a copy each.
pub type SharedEvent = std::sync::Arc<Event>;

/// An event as stored (SPEC section 6 shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub at: String,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub data: Value,
}

impl Event {
    pub(crate) fn from_parts(id: i64, parts: EventParts) -> Event {
        let (event_type, at, job_id, run_id, data) = parts;
        Event {
            id,
            event_type,
            at,
            job_id,
            run_id,
            data,
        }
    }
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events with a larger id.
    pub after: i64,
    pub limit: usize,
    /// Exact type, or a prefix ending in `*` (`scheduler.*`).
    pub event_type: Option<String>,
    pub job_id: Option<String>,
}

impl EventQuery {
    /// Whether `event` passes the type and job filters (the same test the
    /// store applies when it reads; `after` and `limit` are not looked at).
    pub fn matches(&self, event: &Event) -> bool {
        let type_ok = match self.event_type.as_deref() {
            None => true,
            Some(t) => match t.strip_suffix('*') {
                Some(prefix) => event.event_type.starts_with(prefix),
                None => event.event_type == t,
            },
        };
        type_ok
            && self
                .job_id
                .as_ref()
                .is_none_or(|j| event.job_id.as_ref() == Some(j))
    }
}

/// RFC 3339 UTC with milliseconds, the one time format of the store and API.
pub use timestamp::format_ts;

pub fn now_rfc3339() -> String {
    format_ts(jiff::Timestamp::now())
}

/// The same call on whichever backend the store is.
macro_rules! on_backend {
    ($store:expr, $s:ident => $call:expr) => {
        match $store {
            Store::Sqlite($s) => $call,
            Store::Redis($s) => $call,
        }
    };
}

/// The store a process uses. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Redis(redis::RedisStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Store {
    /// Open (creating and migrating) the embedded store at `path`.
    pub fn open_sqlite(path: &std::path::Path) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(sqlite::SqliteStore::open(path)?))
    }

    /// Connect to a Redis deployment (keys under `{mj}:`).
    pub async fn open_redis(url: &str) -> Result<Store, StoreError> {
        Ok(Store::Redis(redis::RedisStore::open(url).await?))
    }

    /// A human name for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("sqlite:{}", s.path().display()),
            Store::Redis(s) => s.url().to_string(),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.ping().await)
    }

    /// The live worker processes of a Redis deployment (fresh
    /// heartbeats, by id); `None` on the embedded store, whose daemon's
    /// own pool runs every run.
    pub async fn live_workers(&self) -> Result<Option<Vec<workers::WorkerInfo>>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Redis(r) => r.live_workers().await.map(Some),
        }
    }

    /// Committed events, in id order, as they commit.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<SharedEvent> {
        on_backend!(self, s => s.subscribe())
    }

    /// Queue writes without waiting for them (see [`Mutation`]).
    pub fn submit(&self, mutations: Vec<Mutation>) -> Result<(), StoreError> {
        on_backend!(self, s => s.submit(mutations))
    }

    /// Wait while more than `limit` submitted writes are uncommitted
    /// (backpressure: producers slow to the writer's pace).
    pub async fn wait_for_backlog(&self, limit: usize) {
        on_backend!(self, s => s.wait_for_backlog(limit).await)
    }

    /// Submitted writes not yet committed.
    pub fn backlog(&self) -> usize {
        on_backend!(self, s => s.backlog())
    }

    /// A key-value operation; returns the value after it (a delete returns
    /// the removed value, a get of a missing or expired key `None`).
    pub async fn kv(&self, key: &str, op: KvOp) -> Result<Option<Value>, StoreError> {
        on_backend!(self, s => s.kv(key.to_string(), op).await)
    }

    /// Wait until everything submitted before is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.flush().await)
    }

    /// One run and its seq (the list cursor).
    pub async fn run(&self, id: &str) -> Result<Option<(i64, Run)>, StoreError> {
        on_backend!(self, s => s.run(id.to_string()).await)
    }

    /// Runs newest first.
    pub async fn runs(&self, query: RunQuery) -> Result<Vec<(i64, Run)>, StoreError> {
        on_backend!(self, s => s.runs(query).await)
    }

    /// Events per type since an RFC 3339 time.
    pub async fn event_counts_since(&self, since: &str) -> Result<Vec<(String, u64)>, StoreError> {
        on_backend!(self, s => s.event_counts_since(since.to_string()).await)
    }

    /// The newest run of each of `jobs` (jobs without runs are absent).
    pub async fn last_runs(
        &self,
        jobs: Vec<String>,
    ) -> Result<std::collections::HashMap<String, Run>, StoreError> {
        on_backend!(self, s => s.last_runs(jobs).await)
    }

    /// Every unfinished run, oldest first (recovery on start).
    pub async fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        on_backend!(self, s => s.active_runs().await)
    }

    /// `(job, status, count)` over all stored runs.
    pub async fn run_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        on_backend!(self, s => s.run_counts().await)
    }

    pub async fn failure_states(&self) -> Result<Vec<(String, FailureState)>, StoreError> {
        on_backend!(self, s => s.failure_states().await)
    }

    /// `(job, last slot RFC 3339)` for every job that had a slot.
    pub async fn job_slots(&self) -> Result<Vec<(String, String)>, StoreError> {
        on_backend!(self, s => s.job_slots().await)
    }

    pub async fn approvals(&self, pending_only: bool) -> Result<Vec<Approval>, StoreError> {
        on_backend!(self, s => s.approvals(pending_only).await)
    }

    /// Commands other processes left for the daemon, after `after`.
    pub async fn inbox(&self, after: i64) -> Result<Vec<(i64, InboxCommand)>, StoreError> {
        on_backend!(self, s => s.inbox(after).await)
    }

    /// Returns once another process may have posted a command after
    /// `after`, at the latest after `timeout`: on Redis as soon as one is
    /// posted, with the first such command's seq (read or not: an entry
    /// the daemon cannot parse is skipped, and the reader moves past it);
    /// the SQLite file has nothing to block on, so it waits `timeout` (the
    /// daemon's poll) and returns `None`.
    pub async fn wait_for_inbox(
        &self,
        after: i64,
        timeout: std::time::Duration,
    ) -> Result<Option<i64>, StoreError> {
        match self {
            Store::Sqlite(_) => {
                tokio::time::sleep(timeout).await;
                Ok(None)
            }
            Store::Redis(s) => s.wait_for_inbox(after, timeout).await,
        }
    }

    /// How many runs of inbox command `id` are queued already (see
    /// [`Mutation::InboxProgress`]); 0 for a command not started.
    pub async fn inbox_progress(&self, id: i64) -> Result<u32, StoreError> {
        on_backend!(self, s => s.inbox_progress(id).await)
    }

    /// Which of `ids` have a run record.
    pub async fn recorded_runs(
        &self,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        on_backend!(self, s => s.recorded_runs(ids).await)
    }

    /// Which of `keys` (run keys, `job@slot`) a run record holds.
    pub async fn recorded_run_keys(
        &self,
        keys: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        on_backend!(self, s => s.recorded_run_keys(keys).await)
    }

    /// The paused jobs (see [`paused`]).
    pub async fn paused(&self) -> Result<paused::Paused, StoreError> {
        paused::paused_from(self.kv(paused::PAUSED_KEY, KvOp::Get).await?)
    }

    /// Leave a command for the daemon (the CLI's `trigger` and
    /// `approvals`); returns its inbox id.
    pub async fn post_to_inbox(&self, command: &InboxCommand) -> Result<i64, StoreError> {
        on_backend!(self, s => s.post_to_inbox(command).await)
    }

    /// The applied snapshot and its revision (empty before the first apply).
    pub async fn applied(&self) -> Result<Applied, StoreError> {
        on_backend!(self, s => s.applied().await)
    }

    /// Record an applied revision with its resource writes and events, in
    /// one transaction. Returns the revision's seq and the events' ids.
    pub async fn apply_revision(
        &self,
        revision: RevisionRecord,
        writes: ResourceWrites,
        events: Vec<NewEvent>,
    ) -> Result<(i64, Vec<Event>), StoreError> {
        let w = RevisionWrite {
            revision,
            writes: Some(writes),
            events,
        };
        on_backend!(self, s => s.record_revision(w).await)
    }

    /// Record a rejected revision and its events; resources are untouched.
    pub async fn reject_revision(
        &self,
        revision: RevisionRecord,
        events: Vec<NewEvent>,
    ) -> Result<(i64, Vec<Event>), StoreError> {
        let w = RevisionWrite {
            revision,
            writes: None,
            events,
        };
        on_backend!(self, s => s.record_revision(w).await)
    }

    /// Revision history, newest first, with seq below `before` (0 = from
    /// the newest).
    pub async fn revisions(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<RevisionRecord>, StoreError> {
        on_backend!(self, s => s.revisions(before, limit).await)
    }

    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        on_backend!(self, s => s.append_events(events).await)
    }

    /// Events in id order after `query.after`.
    pub async fn events(&self, query: EventQuery) -> Result<Vec<Event>, StoreError> {
        on_backend!(self, s => s.events(query).await)
    }

    /// Record chunks of a run's output, in order after what was recorded
    /// before (see [`output`]). SQLite: with the next batch, not waited
    /// for; Redis: one call.
    pub async fn record_output(&self, chunks: Vec<output::OutputChunk>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.submit(vec![Mutation::Output(chunks)]),
            Store::Redis(s) => s.record_output(chunks).await,
        }
    }

    /// A run's recorded output after position `after` (0: from the start),
    /// in the order written, at most [`output::OUTPUT_PAGE`] chunks.
    pub async fn output(
        &self,
        run_id: &str,
        after: i64,
    ) -> Result<Vec<output::OutputChunk>, StoreError> {
        on_backend!(self, s => s.output(run_id.to_string(), after).await)
    }

    /// The id of the newest committed event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        on_backend!(self, s => s.last_event_id().await)
    }
}
