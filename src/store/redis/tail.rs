//! The event tail: one task per store follows the events stream with a
//! blocking XREAD on a connection of its own and broadcasts each event, so
//! subscribers see every process's events in id order. It outlives Redis
//! restarts: it reconnects and resumes after the last id it saw.
//!
//! The events this process's writer applied are handed to the tail from
//! memory ([`OwnEvents`]): the tail still reads their entries, for their
//! place in the id order, but does not parse them back (6% of a leader's
//! CPU at 23,000 runs/s). The tail often reads an entry before the writer
//! has taken in the reply of the call that wrote it (the writer is busy
//! encoding the next batch): while a call is out and nothing newer has
//! landed, the tail waits for it rather than parse its own events.

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

/// Longest the tail waits for the writer to take in a call's reply
/// before it parses the entry itself (a writer stuck retrying a lost
/// connection must not hold up every subscriber).
const OWN_WAIT: Duration = Duration::from_millis(500);

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
    /// Woken whenever a call of the writer came back.
    settled: tokio::sync::Notify,
}

#[derive(Default)]
struct OwnInner {
    on: bool,
    by_entry: BTreeMap<i64, Vec<Event>>,
    held: usize,
    /// Calls the writer sent whose reply it has not taken in yet.
    out: usize,
    /// The newest entry that landed: an entry at or before it that is not
    /// in `by_entry` is not this process's.
    newest: i64,
}

/// What the tail does with an entry it read.
enum Own {
    Found(Vec<Event>),
    /// Not this process's (or no longer held): parse it.
    Foreign,
    /// A call of the writer is still out and may hold it.
    Wait,
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
        own.newest = own.newest.max(entry);
        own.by_entry.insert(entry, events);
        while own.held > OWN_EVENTS_CAP {
            match own.by_entry.pop_first() {
                Some((_, gone)) => own.held -= gone.len(),
                None => break,
            }
        }
    }

    /// The writer sent a call.
    pub fn sent(&self) {
        self.lock().out += 1;
    }

    /// The writer took in a call's reply (after [`Self::landed`], when it
    /// applied).
    pub fn settled(&self) {
        {
            let mut own = self.lock();
            own.out = own.out.saturating_sub(1);
        }
        self.settled.notify_waiters();
    }

    /// The events of entry `<entry>-<n>` if this process wrote them (and
    /// forget every entry before it: the tail has passed them).
    fn take(&self, entry: i64, n: usize) -> Own {
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
        match found {
            Some(events) => Own::Found(events),
            None if own.on && own.out > 0 && own.newest < entry => Own::Wait,
            None => Own::Foreign,
        }
    }

    /// [`Self::take`], waiting while a call that may hold the entry is out.
    async fn take_landed(&self, entry: i64, n: usize) -> Option<Vec<Event>> {
        let deadline = tokio::time::Instant::now() + OWN_WAIT;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.take(entry, n) {
                Own::Found(events) => return Some(events),
                Own::Foreign => return None,
                Own::Wait => {
                    if tokio::time::timeout_at(deadline, settled).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

/// The events of one entry: from memory when this process wrote it,
/// otherwise parsed.
async fn entry_events(own: &OwnEvents, entry: Entry) -> Result<Vec<Event>, StoreError> {
    let id = entry
        .0
        .split_once('-')
        .and_then(|(last, n)| Some((last.parse::<i64>().ok()?, n.parse::<usize>().ok()?)));
    if let Some((last, n)) = id
        && let Some(events) = own.take_landed(last, n).await
    {
        return Ok(events);
    }
    parse_events(entry)
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
                    match entry_events(&own, entry).await {
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

    impl Own {
        fn found(self) -> Option<Vec<Event>> {
            match self {
                Own::Found(events) => Some(events),
                _ => None,
            }
        }
    }

    #[test]
    fn nothing_is_kept_before_the_tail_starts() {
        let own = OwnEvents::default();
        own.landed(1, new_events(3));
        assert!(own.take(3, 3).found().is_none());
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
        let got = own.take(5, 3).found().expect("own entry");
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(got[1].run_id.as_deref(), Some("r1"));
        assert!(own.take(5, 3).found().is_none(), "taken once");
        assert!(
            own.take(2, 2).found().is_none(),
            "passed entries are forgotten"
        );
        // A count that does not match is not this process's entry.
        assert!(own.take(8, 2).found().is_none());
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
        assert!(
            own.take(per as i64, per).found().is_none(),
            "the first went"
        );
        let last = batches as i64 * per as i64;
        assert!(own.take(last, per).found().is_some(), "the newest stays");
    }

    #[test]
    fn an_entry_newer_than_any_landed_waits_while_a_call_is_out() {
        let own = OwnEvents::default();
        own.start();
        own.landed(1, new_events(2));
        own.sent();
        // Entry 5-3 may be in the call that is out.
        assert!(matches!(own.take(5, 3), Own::Wait));
        own.landed(3, new_events(3));
        own.settled();
        assert_eq!(own.take(5, 3).found().map(|e| e.len()), Some(3));
        // Nothing is out: another process's entry is parsed at once.
        assert!(matches!(own.take(9, 1), Own::Foreign));
        // Out again, but something newer already landed: 6-1 is foreign.
        own.sent();
        own.landed(7, new_events(2));
        assert!(matches!(own.take(6, 1), Own::Foreign));
    }

    #[tokio::test]
    async fn the_tail_takes_an_entry_once_its_call_comes_back() {
        let own = std::sync::Arc::new(OwnEvents::default());
        own.start();
        own.sent();
        let writer = {
            let own = own.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                own.landed(1, new_events(2));
                own.settled();
            })
        };
        let got = own.take_landed(2, 2).await.expect("from memory");
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        writer.await.expect("writer task");
    }

    #[tokio::test]
    async fn a_call_that_never_comes_back_does_not_hold_the_tail() {
        let own = OwnEvents::default();
        own.start();
        own.sent();
        let started = std::time::Instant::now();
        assert!(own.take_landed(2, 2).await.is_none());
        assert!(started.elapsed() >= OWN_WAIT);
    }
}
