//! The SQL thread: commits each prepared batch in one transaction (an
//! operation that waits for its reply in a savepoint of its own), tells
//! callers the outcome, publishes the committed events, and wakes the
//! checkpointer beside it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::kv::kv_op;
use super::prepare::{Item, Prepared, Spare, prepare_loop};
use super::rows::{insert_events, insert_revision, write_resources, write_rows};
use super::{open_beside, sql_err};
use crate::store::backlog::Backlog;
use crate::store::{Event, KvOp, Mutation, NewEvent, RevisionWrite, SharedEvent, StoreError};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Tells a write's caller its result once the transaction's fate is known.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

pub(super) enum WriteOp {
    /// Boxed: a revision is rare, the channel carries many writes.
    Revision {
        write: Box<RevisionWrite>,
        reply: Reply<(i64, Vec<Event>)>,
    },
    AppendEvents {
        events: Vec<NewEvent>,
        reply: Reply<Vec<Event>>,
    },
    /// Fire-and-forget writes, coalesced with the rest of the batch.
    Mutations(Vec<Mutation>),
    /// Replies once everything sent before it is committed.
    Barrier(Reply<()>),
    /// A key-value operation, on the writer so it sees every earlier write.
    Kv {
        key: String,
        op: KvOp,
        reply: Reply<Option<Value>>,
    },
}

/// WAL pages (256 MB) after which a checkpoint waits for the writer to
/// pause, so a writer that never pauses cannot grow the WAL without bound.
/// Forcing it at 64 MB stalled the writer often enough to cost a third of
/// the run rate in a burst.
const CHECKPOINT_FORCE_PAGES: i64 = 65_536;

/// Copies the WAL into the database beside the writer (a passive
/// checkpoint does not block it), woken after commits. Ends when the
/// writer drops its sender.
fn checkpointer(path: PathBuf, commits: mpsc::Receiver<()>) {
    let conn = match open_beside(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "store: no checkpointer; the WAL grows until restart");
            return;
        }
    };
    let mut wal_pages = 0i64;
    while commits.recv().is_ok() {
        // Commits that came in meanwhile need one checkpoint, not one each.
        while commits.try_recv().is_ok() {}
        let mode = if wal_pages >= CHECKPOINT_FORCE_PAGES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            // A busy writer keeps appending: the WAL only starts over
            // after a checkpoint that waited for a pause in writing.
            Ok((log, _done)) => wal_pages = log,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "store: checkpoint failed; retried after the next commit")
            }
        }
        // Frequent small checkpoints cost more than they save.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::warn!(path = %path.display(), error = %e, "store: final checkpoint failed");
    }
}

/// Two threads: one gathers what producers submitted into batches,
/// coalesces and serializes them (and frees the records); the other only
/// runs SQL. At high run rates the writer is the bottleneck, and a third
/// of its time went to the work now done beside it.
pub(super) fn start(
    conn: Connection,
    rx: mpsc::Receiver<WriteOp>,
    path: &Path,
    publisher: broadcast::Sender<SharedEvent>,
    backlog: Arc<Backlog>,
) -> std::io::Result<()> {
    // One batch prepared ahead: the SQL thread never waits for the next,
    // and memory stays bounded (the rest waits in `rx`, counted as backlog).
    let (prepared_tx, prepared_rx) = mpsc::sync_channel(1);
    let (spare_tx, spare_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("multijob-prep".into())
        .spawn(move || prepare_loop(rx, prepared_tx, spare_rx))?;
    let sql_path = path.to_path_buf();
    std::thread::Builder::new()
        .name("multijob-store-writer".into())
        .spawn(move || writer_loop(conn, prepared_rx, &sql_path, &publisher, &backlog, spare_tx))?;
    Ok(())
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Prepared>,
    path: &Path,
    publisher: &broadcast::Sender<SharedEvent>,
    backlog: &Backlog,
    spares: mpsc::Sender<Spare>,
) {
    let (commits, wake) = mpsc::channel();
    let checkpoint_path = path.to_path_buf();
    if let Err(e) = std::thread::Builder::new()
        .name("multijob-ckpt".into())
        .spawn(move || checkpointer(checkpoint_path, wake))
    {
        // Without it the WAL is only checkpointed when the store closes.
        tracing::error!(error = %e, "store: cannot start the checkpointer thread");
    }
    while let Ok(Prepared {
        items,
        alone,
        mutation_count,
    }) = rx.recv()
    {
        // Immediate: the write lock is taken (or waited for, under the busy
        // timeout) at BEGIN. A deferred transaction that reads first (a kv
        // claim) and then writes fails at once with "database is locked"
        // when the checkpointer restarted the WAL in between.
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, "store: cannot begin a transaction");
                for item in items {
                    if let Item::Op(op) = item {
                        fail(op, path, &message);
                    }
                }
                backlog.done(mutation_count);
                continue;
            }
        };
        // Alone in the transaction (the usual case), the runtime writes
        // need no savepoint of their own: a failure rolls the transaction
        // back, which loses nothing else. A savepoint copies every page it
        // touches to its journal first, most of the writer's work.
        let mut barriers = Vec::new();
        let mut done: Vec<Finish> = Vec::new();
        let mut published: Vec<Event> = Vec::new();
        let mut roll_back = false;
        for item in items {
            match item {
                Item::Rows(rows) => {
                    let written = if alone {
                        write_rows(&tx, path, *rows)
                    } else {
                        in_savepoint(&mut tx, path, |sp| write_rows(sp, path, *rows))
                    };
                    match written {
                        Ok((events, spare)) => {
                            published.extend(events);
                            let _ = spares.send(spare);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "store: a batch of runtime writes failed");
                            roll_back = alone;
                        }
                    }
                }
                Item::Op(WriteOp::Barrier(reply)) => barriers.push(reply),
                Item::Op(other) => done.push(run_op(&mut tx, other, path, &mut published)),
            }
        }
        let committed = if roll_back {
            tx.rollback().map_err(|e| e.to_string())
        } else {
            tx.commit().map_err(|e| e.to_string())
        };
        if let Err(e) = &committed {
            tracing::error!(error = %e, "store: commit failed");
        } else {
            let _ = commits.send(());
            for e in published {
                let _ = publisher.send(std::sync::Arc::new(e));
            }
        }
        for finish in done {
            finish(committed.clone());
        }
        for b in barriers {
            let _ = b.send(committed.clone().map_err(|message| StoreError::Open {
                path: path.display().to_string(),
                message,
            }));
        }
        backlog.done(mutation_count);
    }
}

/// Execute one write in a savepoint; return what to tell its caller once
/// the transaction's outcome is known.
fn run_op(
    tx: &mut Transaction<'_>,
    op: WriteOp,
    path: &Path,
    published: &mut Vec<Event>,
) -> Finish {
    fn finish<T: Send + 'static>(
        reply: Reply<T>,
        result: Result<T, StoreError>,
        path: PathBuf,
    ) -> Finish {
        Box::new(move |committed| {
            let outcome = match (result, committed) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) => Err(e),
                (Ok(_), Err(message)) => Err(StoreError::Open {
                    path: path.display().to_string(),
                    message: format!("commit failed: {message}"),
                }),
            };
            let _ = reply.send(outcome);
        })
    }
    let owned = path.to_path_buf();
    match op {
        WriteOp::Revision { write, reply } => {
            let RevisionWrite {
                revision,
                writes,
                events,
            } = *write;
            let r = in_savepoint(tx, path, |sp| {
                if let Some(writes) = &writes {
                    write_resources(sp, path, writes)?;
                }
                let seq = insert_revision(sp, path, &revision)?;
                let events = insert_events(sp, path, events)?;
                Ok((seq, events))
            });
            if let Ok((_, events)) = &r {
                published.extend(events.iter().cloned());
            }
            finish(reply, r, owned)
        }
        WriteOp::AppendEvents { events, reply } => {
            let r = in_savepoint(tx, path, |sp| insert_events(sp, path, events));
            if let Ok(events) = &r {
                published.extend(events.iter().cloned());
            }
            finish(reply, r, owned)
        }
        WriteOp::Kv { key, op, reply } => {
            let r = in_savepoint(tx, path, |sp| kv_op(sp, path, &key, op));
            finish(reply, r, owned)
        }
        WriteOp::Mutations(_) | WriteOp::Barrier(_) => Box::new(|_| {}),
    }
}

fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    path: &Path,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let sp = tx.savepoint().map_err(sql_err(path))?;
    match f(&sp) {
        Ok(v) => {
            sp.commit().map_err(sql_err(path))?;
            Ok(v)
        }
        Err(e) => Err(e), // dropping the savepoint rolls it back
    }
}

fn fail(op: WriteOp, path: &Path, message: &str) {
    let err = || StoreError::Open {
        path: path.display().to_string(),
        message: message.to_string(),
    };
    match op {
        WriteOp::Revision { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::AppendEvents { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::Barrier(reply) => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::Kv { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        WriteOp::Mutations(ms) => {
            tracing::error!(count = ms.len(), error = message, "store: writes lost");
        }
    }
}
