//! The preparing thread beside the writer: gathers what producers
//! submitted into batches, coalesces runtime writes and serializes their
//! records and event data, so the SQL thread only binds and executes.

use std::sync::mpsc;

use super::writer::WriteOp;
use crate::store::runs::Run;
use crate::store::{Coalesced, NewEvent};

/// Most runtime writes one transaction takes (the rest wait for the
/// next): big enough that a run queued, started and finished within it is
/// written once.
const MAX_BATCH: usize = 65_536;

/// A batch as the preparing thread hands it to the SQL thread: the
/// operations in submission order, runtime writes coalesced and serialized.
pub(super) struct Prepared {
    pub(super) items: Vec<Item>,
    /// Only runtime writes and barriers: no savepoints needed.
    pub(super) alone: bool,
    /// Runtime writes in the batch, for the backlog.
    pub(super) mutation_count: usize,
}

pub(super) enum Item {
    /// Boxed: one per batch, and an operation need not be as big.
    Rows(Box<Rows>),
    Op(WriteOp),
}

/// Coalesced runtime writes with their text already made, ready to bind.
pub(super) struct Rows {
    pub(super) runs: Vec<RunRow>,
    /// Every run record, back to back; `RunRow::end` closes each.
    pub(super) records: String,
    pub(super) events: EventRows,
    /// Everything else of the batch (few rows, serialized as written).
    pub(super) rest: Coalesced,
}

pub(super) struct RunRow {
    pub(super) id: String,
    pub(super) run_key: String,
    pub(super) job_id: String,
    pub(super) status: &'static str,
    pub(super) end: usize,
}

/// A written batch's buffers, handed back to the preparing thread to fill
/// again: fresh multi-megabyte buffers per batch cost page faults and
/// purges (madvise) worth ~4 µs a run. Emptying them there also frees the
/// rows' strings off the SQL thread.
#[derive(Default)]
pub(super) struct Spare {
    pub(super) runs: Vec<RunRow>,
    pub(super) records: String,
    pub(super) data: String,
    pub(super) ends: Vec<usize>,
}

/// Events with their data as JSON text, back to back.
pub(super) struct EventRows {
    pub(super) events: Vec<NewEvent>,
    pub(super) data: String,
    pub(super) ends: Vec<usize>,
}

/// How much of a batch an operation takes: its runtime writes, or one.
fn op_size(op: &WriteOp) -> usize {
    match op {
        WriteOp::Mutations(ms) => ms.len().max(1),
        _ => 1,
    }
}

/// A batch smaller than this does not need the previous batches' buffers.
const QUIET_BATCH: usize = 1024;

pub(super) fn prepare_loop(
    rx: mpsc::Receiver<WriteOp>,
    out: mpsc::SyncSender<Prepared>,
    spares: mpsc::Receiver<Spare>,
) {
    let mut spare = Spare::default();
    while let Ok(first) = rx.recv() {
        // The biggest buffers come back; keep the roomiest.
        while let Ok(back) = spares.try_recv() {
            if back.records.capacity() > spare.records.capacity() {
                spare = back;
            }
        }
        let mut size = op_size(&first);
        let mut batch = vec![first];
        while size < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    size += op_size(&op);
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        if size < QUIET_BATCH {
            // Quiet again: an idle store holds no burst-sized buffers.
            spare = Spare::default();
        }
        let alone = batch
            .iter()
            .all(|op| matches!(op, WriteOp::Mutations(_) | WriteOp::Barrier(_)));
        let mut mutation_count = 0;
        let mut items = Vec::new();
        let mut coalesced = Coalesced::default();
        for op in batch {
            match op {
                WriteOp::Mutations(ms) => {
                    mutation_count += ms.len();
                    ms.into_iter().for_each(|m| coalesced.add(m));
                }
                // Writes submitted before this operation land before it
                // (a kv read sees the PutKv sent just before it).
                other => {
                    if !coalesced.is_empty() {
                        let w = std::mem::take(&mut coalesced);
                        items.push(Item::Rows(Box::new(prepare_rows(
                            w,
                            std::mem::take(&mut spare),
                        ))));
                    }
                    items.push(Item::Op(other));
                }
            }
        }
        if !coalesced.is_empty() {
            items.push(Item::Rows(Box::new(prepare_rows(
                coalesced,
                std::mem::take(&mut spare),
            ))));
        }
        let prepared = Prepared {
            items,
            alone,
            mutation_count,
        };
        if out.send(prepared).is_err() {
            return;
        }
    }
}

fn prepare_rows(mut w: Coalesced, spare: Spare) -> Rows {
    let Spare {
        mut runs,
        records,
        data,
        ends,
    } = spare;
    let records_in = w.take_runs();
    let mut buf = records.into_bytes();
    buf.clear();
    runs.clear();
    for run in records_in {
        let start = buf.len();
        if let Err(e) = serde_json::to_writer(&mut buf, &run) {
            buf.truncate(start);
            tracing::error!(run = %run.id, error = %e, "store: run record not serializable; not written");
            continue;
        }
        let Run {
            id,
            run_key,
            job_id,
            status,
            ..
        } = *run;
        runs.push(RunRow {
            id,
            run_key,
            job_id,
            status: status.as_str(),
            end: buf.len(),
        });
    }
    // serde_json writes UTF-8 only; checked once for the whole batch.
    let records = String::from_utf8(buf).unwrap_or_else(|e| {
        tracing::error!(error = %e, "store: run records are not UTF-8; none written");
        runs.clear();
        String::new()
    });
    let events = prepare_events_into(std::mem::take(&mut w.events), data, ends);
    Rows {
        runs,
        records,
        events,
        rest: w,
    }
}

pub(super) fn prepare_events(events: Vec<NewEvent>) -> EventRows {
    prepare_events_into(events, String::new(), Vec::new())
}

fn prepare_events_into(events: Vec<NewEvent>, data: String, mut ends: Vec<usize>) -> EventRows {
    let mut data = data.into_bytes();
    data.clear();
    ends.clear();
    for e in &events {
        let start = data.len();
        if let Err(err) = serde_json::to_writer(&mut data, &e.data) {
            data.truncate(start);
            tracing::error!(event = %e.event_type, error = %err, "store: event data not serializable; stored as null");
            data.extend_from_slice(b"null");
        }
        ends.push(data.len());
    }
    match String::from_utf8(data) {
        Ok(data) => EventRows { events, data, ends },
        Err(e) => {
            tracing::error!(error = %e, "store: event data is not UTF-8; stored as null");
            let ends = (1..=events.len()).map(|i| i * 4).collect();
            let data = "null".repeat(events.len());
            EventRows { events, data, ends }
        }
    }
}
