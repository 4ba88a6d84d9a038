//! The background writer of a Redis store: what producers submit is
//! coalesced and applied one script call per batch, in submission order,
//! with up to two calls in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::batch::{self, Ops, Outcome, Target};
use super::{Fence, reads};
use crate::store::backlog::Backlog;
use crate::store::{Coalesced, KvOp, Mutation, StoreError};

/// Most submitted write requests taken from the channel at a time.
const MAX_BATCH: usize = 4096;
/// Most mutations one script call applies (more when one submitted
/// vector holds more; none does by far): a script blocks the server
/// while it runs, so 100,000 runs enqueued at once go in several calls
/// (one call over five seconds makes Redis answer BUSY to everyone,
/// the leader's renewal included).
const MAX_SCRIPT_MUTATIONS: usize = 4096;

pub(super) enum WriteOp {
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

/// A key-value op and where its answer goes.
type KvCall = (
    String,
    KvOp,
    oneshot::Sender<Result<Option<Value>, StoreError>>,
);

/// Key-value ops that queued up together, after the writes submitted
/// before them have landed. Each comes from a caller waiting on its own
/// answer, so none depends on another: they go out together (pipelined
/// on the connection) instead of one round trip after another. One at a
/// time, a worker's `schedule_job` fan-out (two ops per follow-up) waited
/// on this writer for most of its time.
async fn kv_together(target: &Target, calls: Vec<KvCall>) {
    let mut calls: Vec<_> = calls
        .into_iter()
        .map(|(key, op, reply)| {
            Box::pin(async move {
                let _ = reply.send(reads::kv_op(target, &key, op).await);
            })
        })
        .collect();
    std::future::poll_fn(|cx| {
        calls.retain_mut(|call| call.as_mut().poll(cx).is_pending());
        if calls.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// The background writer: takes what queued up, coalesces it, applies it
/// in one script call, in submission order. Up to two calls are in
/// flight on the one connection (Redis runs them in the order sent), so
/// the leader's encoding, the transfer and Redis's script overlap. The
/// second is encoded assuming the first applies as sent; the script
/// checks that, and a call whose predecessor did not apply cleanly comes
/// back stale and goes again, encoded afresh.
pub(super) struct Writer {
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
    /// The same for events: the fenced leader writes nearly all of them,
    /// so it numbers its own and sends them outside the script; should
    /// anyone else have written one meanwhile, the call comes back
    /// `Renumber` and goes again numbered by the script.
    next_event: Option<i64>,
    /// The event seq the last call of this term came back with: numbering
    /// resumes from it once no call is out (one out may take ids first).
    settled_event: Option<i64>,
    /// Bumped whenever `known` is forgotten: a batch encoded before that
    /// and not sent yet is encoded again.
    generation: u64,
    /// Calls sent so far (numbers the markers).
    sent: u64,
    /// Marker and batch id of the last call sent.
    last_sent: Option<(String, String)>,
    /// Where applied batches' events go for this process's event tail.
    own_events: Arc<super::tail::OwnEvents>,
    /// Oldest first. Only the oldest is polled (after the first poll that
    /// sends it), so a call's retries never overtake the call before it.
    in_flight: VecDeque<InFlight>,
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
    pub(super) fn new(
        target: Target,
        backlog: &Arc<Backlog>,
        fence: &Fence,
        fenced: watch::Sender<bool>,
        shutdown: &CancellationToken,
    ) -> Writer {
        Writer {
            marker: format!("writer:{}", uuid::Uuid::now_v7().simple()),
            target,
            backlog: backlog.clone(),
            fence: fence.clone(),
            fenced,
            shutdown: shutdown.clone(),
            known: Default::default(),
            known_fence: None,
            next_seq: None,
            next_event: None,
            settled_event: None,
            generation: 0,
            sent: 0,
            last_sent: None,
            in_flight: VecDeque::new(),
            own_events: Default::default(),
        }
    }

    /// Hand the events of applied batches to `own` (see [`super::tail`]).
    pub(super) fn with_own_events(mut self, own: &Arc<super::tail::OwnEvents>) -> Writer {
        self.own_events = own.clone();
        self
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
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
            let mut batch = batch.into_iter().peekable();
            while let Some(op) = batch.next() {
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
                        let mut kvs = vec![(key, op, reply)];
                        while let Some(WriteOp::Kv { .. }) = batch.peek() {
                            if let Some(WriteOp::Kv { key, op, reply }) = batch.next() {
                                kvs.push((key, op, reply));
                            }
                        }
                        kv_together(&self.target, kvs).await;
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
        match sent.0 {
            Ok(Outcome::Stale) => {}
            Ok(Outcome::Renumber) => {
                // Nothing of it applied, though the writer assumed all of
                // it did: start over from what Redis says.
                self.forget();
            }
            _ => {
                self.settle(sent, failure);
                return;
            }
        }
        self.own_events.settled();
        let mut again = vec![sent.1];
        while let Some(call) = self.in_flight.pop_front() {
            match call.await {
                (Ok(Outcome::Stale | Outcome::Renumber), p) => {
                    self.own_events.settled();
                    again.push(p)
                }
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
        self.backlog.done(count);
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
                self.next_seq = Self::read_counter(&self.target, "run_seq").await;
                self.next_event = Self::read_counter(&self.target, "event_seq").await;
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
        if self.next_event.is_none() && self.in_flight.is_empty() {
            self.next_event = self.settled_event;
        }
        if fence.is_some()
            && let Some(after) = self.next_event
        {
            self.next_event = Some(after + ops.number_events(after) as i64);
        }
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
        self.own_events.sent();
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
        self.next_event = None;
        self.settled_event = None;
        self.generation += 1;
    }

    /// The counter `name` (`run_seq`, `event_seq`).
    async fn read_counter(target: &Target, name: &str) -> Option<i64> {
        let mut c = target.conn.clone();
        let seq: redis::RedisResult<Option<i64>> = redis::cmd("GET")
            .arg(format!("{}{name}", target.prefix))
            .query_async(&mut c)
            .await;
        match seq {
            Ok(seq) => Some(seq.unwrap_or(0)),
            Err(e) => {
                // Numbered by the script until the next term.
                tracing::warn!(error = %e, counter = name, "store: cannot read a counter");
                None
            }
        }
    }

    /// A call came back: check what the batches after it assumed.
    fn settle(&mut self, (outcome, mut p): Sent, failure: &mut Option<StoreError>) {
        let count = p.count;
        match outcome {
            Ok(Outcome::Applied(a)) => {
                self.own_events
                    .landed(a.first_event, std::mem::take(&mut p.source.events));
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
                if this_term {
                    self.settled_event = Some(a.event_seq).filter(|n| *n >= 0);
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
            Ok(Outcome::Stale | Outcome::Renumber) => {
                // Cannot happen: those are sent again before settling
                // (see `landed`).
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
        self.own_events.settled();
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::RedisStore;
    use crate::store::{EventQuery, Mutation, NewEvent};
    use crate::testkit::RedisServer;

    fn event(kind: &str, i: usize) -> Mutation {
        Mutation::Event(NewEvent::new(kind, serde_json::json!({ "i": i })))
    }

    /// The leader numbers its own events (a plain XADD); another process
    /// writing some in between makes its next call go again, numbered by
    /// the script: every event is stored once, ids in order, and the
    /// leader's subscribers see them all.
    #[tokio::test]
    async fn events_numbered_by_the_leader_survive_another_writer() {
        let server = RedisServer::start().expect("redis-server");
        let leader = RedisStore::open_with_prefix(&server.url(), "{w}:")
            .await
            .expect("open");
        let other = RedisStore::open_with_prefix(&server.url(), "{w}:")
            .await
            .expect("open");
        let mut conn = leader.connection();
        let _: () = redis::cmd("SET")
            .arg("{w}:leader:epoch")
            .arg(1)
            .query_async(&mut conn)
            .await
            .expect("epoch");
        leader.set_fence(Some(("leader:epoch".into(), 1)));
        let mut seen = leader.subscribe();
        for i in 0..40 {
            leader.submit(vec![event("a", i)]).expect("submit");
            if i % 10 == 5 {
                leader.flush().await.expect("flush");
                other.submit(vec![event("b", i)]).expect("submit");
                other.flush().await.expect("flush");
            }
        }
        leader.flush().await.expect("flush");
        let stored = leader
            .events(EventQuery {
                after: 0,
                limit: 1000,
                event_type: None,
                job_id: None,
            })
            .await
            .expect("events");
        let ids: Vec<i64> = stored.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=44).collect::<Vec<i64>>());
        let mine: BTreeSet<i64> = stored
            .iter()
            .filter(|e| e.event_type == "a")
            .filter_map(|e| e.data["i"].as_i64())
            .collect();
        assert_eq!(mine, (0..40).collect());
        assert_eq!(stored.iter().filter(|e| e.event_type == "b").count(), 4);
        let mut live = Vec::new();
        while live.len() < 44 {
            let e = tokio::time::timeout(std::time::Duration::from_secs(5), seen.recv())
                .await
                .expect("every event reaches the subscriber")
                .expect("not lagged");
            live.push(e.id);
        }
        assert_eq!(live, ids);
    }
}
