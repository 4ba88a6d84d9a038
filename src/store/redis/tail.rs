//! The event tail: one task per store follows the events stream with a
//! blocking XREAD on a connection of its own and broadcasts each event, so
//! subscribers see every process's events in id order. It outlives Redis
//! restarts: it reconnects and resumes after the last id it saw.
//!
//! The events this process's writer applied are handed to the tail from
//! memory ([`OwnEvents`]): the tail still reads their entries, for their
//! place in the id order, but does not parse them back (6% of a leader's
//! CPU at 23,000 runs/s).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::super::{Event, NewEvent};
use super::batch::Target;
use super::reads::{Entry, entry_seq, parse_events};
use crate::store::StoreError;

/// How long one XREAD blocks; the connection's timeout is longer.
const BLOCK: Duration = Duration::from_secs(5);

/// Most events [`OwnEvents`] holds for the tail; past it the oldest go
/// (the tail parses those entries as it would another process's).
const OWN_EVENTS_CAP: usize = 50_000;

/// Events this process's writer applied, by the id of the stream entry
/// that holds them (a batch's last event id), until the tail reaches it.
/// Kept only once the tail runs (a process without subscribers keeps
/// none).
#[derive(Default)]
pub struct OwnEvents {
    inner: Mutex<OwnInner>,
}

#[derive(Default)]
struct OwnInner {
    on: bool,
    by_entry: BTreeMap<i64, Vec<Event>>,
    held: usize,
}

impl OwnEvents {
    fn lock(&self) -> std::sync::MutexGuard<'_, OwnInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tail runs from now on: keep what lands for it.
    pub fn start(&self) {
        self.lock().on = true;
    }

    /// A batch's events landed with ids from `first`, as one entry.
    pub fn landed(&self, first: i64, events: Vec<NewEvent>) {
        let mut own = self.lock();
        if !own.on || events.is_empty() || first <= 0 {
            return;
        }
        let entry = first + events.len() as i64 - 1;
        let events: Vec<Event> = events
            .into_iter()
            .zip(first..)
            .map(|(e, id)| e.stored(id))
            .collect();
        own.held += events.len();
        own.by_entry.insert(entry, events);
        while own.held > OWN_EVENTS_CAP {
            match own.by_entry.pop_first() {
                Some((_, gone)) => own.held -= gone.len(),
                None => break,
            }
        }
    }

    /// The events of entry `<entry>-<n>` if this process wrote them (and
    /// forget every entry before it: the tail has passed them).
    fn take(&self, entry: i64, n: usize) -> Option<Vec<Event>> {
        let mut own = self.lock();
        let later = own.by_entry.split_off(&(entry + 1));
        let passed = std::mem::replace(&mut own.by_entry, later);
        let mut found = None;
        for (id, events) in passed {
            own.held -= events.len();
            if id == entry && events.len() == n {
                found = Some(events);
            }
        }
        found
    }
}

/// The events of one entry: from memory when this process wrote it,
/// otherwise parsed.
fn entry_events(own: &OwnEvents, entry: Entry) -> Result<Vec<Event>, StoreError> {
    let from_memory = entry
        .0
        .split_once('-')
        .and_then(|(last, n)| Some((last.parse::<i64>().ok()?, n.parse::<usize>().ok()?)))
        .and_then(|(last, n)| own.take(last, n));
    match from_memory {
        Some(events) => Ok(events),
        None => parse_events(entry),
    }
}

pub async fn tail(
    client: redis::Client,
    target: Target,
    mut last: i64,
    publisher: broadcast::Sender<crate::store::SharedEvent>,
    own: std::sync::Arc<OwnEvents>,
    shutdown: CancellationToken,
) {
    let key = format!("{}events", target.prefix);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
    let mut conn: Option<MultiplexedConnection> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let connect = client.get_multiplexed_async_connection_with_config(&config);
                let connected = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = connect => r,
                };
                match connected {
                    Ok(c) => {
                        if delay > Duration::from_millis(100) {
                            tracing::info!(url = %target.url, after = last, "store: event tail reconnected");
                        }
                        delay = Duration::from_millis(100);
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(url = %target.url, error = %e, "store: event tail cannot connect; retrying");
                        if pause(&shutdown, &mut delay).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            // Entries are `<last event id>-<count>`: everything after the
            // entry that ended with `last`.
            .arg(format!("{last}-{}", u64::MAX));
        let read = cmd.query_async::<Option<Vec<(String, Vec<Entry>)>>>(c);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = read => r,
        };
        match result {
            Ok(streams) => {
                for entry in streams.into_iter().flatten().flat_map(|(_, e)| e) {
                    let seq = entry_seq(&entry.0);
                    match entry_events(&own, entry) {
                        Ok(events) => {
                            for event in events {
                                last = event.id;
                                // No subscriber is fine: nobody is listening yet.
                                let _ = publisher.send(std::sync::Arc::new(event));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "store: unreadable event skipped");
                            if let Some(seq) = seq {
                                last = seq;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(url = %target.url, error = %e, after = last, "store: event tail lost its connection; reconnecting");
                conn = None;
                if pause(&shutdown, &mut delay).await {
                    return;
                }
            }
        }
    }
}

/// Sleep with backoff; true when the store shut down meanwhile.
async fn pause(shutdown: &CancellationToken, delay: &mut Duration) -> bool {
    let wait = *delay;
    *delay = (*delay * 2).min(Duration::from_secs(2));
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_events(n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent {
                event_type: "run.queued".into(),
                at: "2026-12-07T00:00:00.000Z".into(),
                job_id: Some("j".into()),
                run_id: Some(format!("r{i}")),
                data: serde_json::json!({"i": i}),
            })
            .collect()
    }

    #[test]
    fn nothing_is_kept_before_the_tail_starts() {
        let own = OwnEvents::default();
        own.landed(1, new_events(3));
        assert!(own.take(3, 3).is_none());
    }

    #[test]
    fn an_entry_comes_back_numbered_once_and_earlier_ones_are_forgotten() {
        let own = OwnEvents::default();
        own.start();
        own.landed(1, new_events(2));
        own.landed(3, new_events(3));
        own.landed(8, new_events(1));
        // Entry 1-2 was never read (another writer's entry came first, or
        // it was trimmed): reaching 5-3 drops it.
        let got = own.take(5, 3).expect("own entry");
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(got[1].run_id.as_deref(), Some("r1"));
        assert!(own.take(5, 3).is_none(), "taken once");
        assert!(own.take(2, 2).is_none(), "passed entries are forgotten");
        // A count that does not match is not this process's entry.
        assert!(own.take(8, 2).is_none());
        assert_eq!(own.lock().held, 0);
    }

    #[test]
    fn the_oldest_go_past_the_cap() {
        let own = OwnEvents::default();
        own.start();
        let per = 1_000;
        let batches = OWN_EVENTS_CAP / per + 2;
        for b in 0..batches as i64 {
            own.landed(1 + b * per as i64, new_events(per));
        }
        assert!(own.lock().held <= OWN_EVENTS_CAP);
        assert!(own.take(per as i64, per).is_none(), "the first went");
        let last = batches as i64 * per as i64;
        assert!(own.take(last, per).is_some(), "the newest stays");
    }
}
