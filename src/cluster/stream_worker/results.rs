//! Sending results: a finished run waits here until its result is on the
//! `results` stream (and its entry acknowledged), batched with whatever
//! else finished meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{EntryKey, Node};
use crate::cluster::WORKERS_GROUP;

/// A finished run: its result (none for an unreadable entry, which is
/// only acknowledged), and who waits for it to be sent.
pub(super) struct Done {
    /// The ready entry to acknowledge with this result: set by the last
    /// run of the entry to finish.
    pub(super) ack: Option<EntryKey>,
    pub(super) run_id: String,
    /// The result as JSON.
    pub(super) result: Option<String>,
    /// After this the entry is someone else's to run again.
    pub(super) deadline: tokio::time::Instant,
    pub(super) sent: oneshot::Sender<()>,
}

/// Hand a result to [`send_loop`] and wait until it is sent (or given up
/// after a lease): until then the run stays in flight, so its entry's
/// lease is renewed and its slot stays taken.
pub(super) async fn finish_run(
    node: &Node,
    ack: Option<EntryKey>,
    run_id: &str,
    result: Option<String>,
) {
    let (sent, wait) = oneshot::channel();
    let done = Done {
        ack,
        run_id: run_id.to_string(),
        result,
        deadline: tokio::time::Instant::now() + node.cfg.lease,
        sent,
    };
    if node.done.send(done).is_err() {
        tracing::error!(run = %run_id, "worker: the result sender stopped; the run will execute again elsewhere");
        return;
    }
    let _ = wait.await;
}

/// Most finished entries one transaction sends.
const SEND_BATCH: usize = 512;

/// Send finished entries as they come, everything that queued up while
/// the previous transaction was in flight in one: their results as one
/// `results` entry (field `rs`, a JSON array the leader applies and then
/// acknowledges as a whole), and the acknowledgement and deletion of
/// their ready entries. Retried until an entry's lease runs out; after
/// that the entry is someone else's to run again.
pub(super) async fn send_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Done>) {
    let mut conn = node.conn.clone();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < SEND_BATCH {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        let mut results = String::from("[");
        for text in batch.iter().filter_map(|d| d.result.as_deref()) {
            if results.len() > 1 {
                results.push(',');
            }
            results.push_str(text);
        }
        results.push(']');
        let mut ids: Vec<Vec<&str>> = vec![Vec::new(); node.streams.len()];
        for (stream, id) in batch.iter().filter_map(|d| d.ack.as_ref()) {
            ids[*stream].push(id);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if results.len() > 2 {
            pipe.cmd("XADD")
                .arg(&node.keys.results)
                .arg("*")
                .arg("rs")
                .arg(&results)
                .ignore();
        }
        for (stream, ids) in node.streams.iter().zip(&ids) {
            if ids.is_empty() {
                continue;
            }
            pipe.cmd("XACK")
                .arg(stream)
                .arg(WORKERS_GROUP)
                .arg(ids)
                .ignore()
                .cmd("XDEL")
                .arg(stream)
                .arg(ids)
                .ignore();
        }
        loop {
            let sent: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            let Err(e) = sent else { break };
            let now = tokio::time::Instant::now();
            if batch.iter().all(|d| now >= d.deadline) {
                for d in &batch {
                    tracing::error!(run = %d.run_id, error = %e, "worker: could not send a result within the lease; the run will execute again elsewhere");
                }
                break;
            }
            tracing::warn!(results = batch.len(), error = %e, "worker: sending results failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for d in batch {
            let _ = d.sent.send(());
        }
    }
}
