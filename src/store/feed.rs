//! An exact, ordered feed of committed events for a long-lived reader (SSE
//! clients, the metrics task): every event after a cursor, once, in id order.
//!
//! Memory first, the store as the fallback. The feed subscribes to the
//! store's broadcast *before* it reads anything, so every event committed
//! later is in the subscription; it backfills from the store (pages of
//! [`PAGE`]) up to the first id the subscription holds, then streams live,
//! skipping ids it has already passed. A reader that falls too far behind
//! (the broadcast says `Lagged`) is told so once and caught up from the
//! store by id: it still gets every event, only from disk.
//!
//! Exactness rests on two store guarantees: ids increase in commit order,
//! and an event is published only after its commit.

use std::collections::VecDeque;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::{EventQuery, SharedEvent, Store, StoreError};

/// Events read from the store per query while catching up.
pub const PAGE: usize = 1000;

/// What the feed yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(SharedEvent),
    /// The reader fell behind the broadcast; the feed goes on from the store
    /// after `resume_after` (the last event it yielded).
    Lagged {
        resume_after: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    CatchUp,
    Live,
}

pub struct Feed {
    store: Store,
    live: broadcast::Receiver<SharedEvent>,
    /// Only `event_type` and `job_id` are used.
    filter: EventQuery,
    /// Every event with an id up to here has been looked at.
    cursor: i64,
    /// The last event yielded (or the start cursor).
    last_yielded: i64,
    mode: Mode,
    /// The first live event, taken to learn where memory starts.
    held: Option<SharedEvent>,
    backlog: VecDeque<SharedEvent>,
}

impl Feed {
    /// Subscribe, then start after `after`, or after the newest committed
    /// event when `None` ("from now").
    pub async fn subscribe(
        store: Store,
        after: Option<i64>,
        filter: EventQuery,
    ) -> Result<Feed, StoreError> {
        let live = store.subscribe();
        let after = match after {
            Some(a) => a,
            None => store.last_event_id().await?,
        };
        Ok(Feed::new(store, live, after, filter))
    }

    /// A feed over an existing subscription; `live` must have been taken
    /// before anything after `after` was read.
    pub fn new(
        store: Store,
        live: broadcast::Receiver<SharedEvent>,
        after: i64,
        filter: EventQuery,
    ) -> Feed {
        Feed {
            store,
            live,
            filter,
            cursor: after,
            last_yielded: after,
            mode: Mode::CatchUp,
            held: None,
            backlog: VecDeque::new(),
        }
    }

    /// The next item; `None` once the store's broadcast is closed.
    /// Cancel-safe between items: dropping a pending call loses nothing
    /// already yielded, and the feed is not used again after that anyway.
    pub async fn next(&mut self) -> Result<Option<Item>, StoreError> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                self.last_yielded = e.id;
                return Ok(Some(Item::Event(e)));
            }
            match self.mode {
                Mode::CatchUp => self.catch_up_page().await?,
                Mode::Live => {
                    let event = match self.held.take() {
                        Some(e) => e,
                        None => match self.live.recv().await {
                            Ok(e) => e,
                            Err(RecvError::Lagged(_)) => {
                                self.mode = Mode::CatchUp;
                                return Ok(Some(Item::Lagged {
                                    resume_after: self.last_yielded,
                                }));
                            }
                            Err(RecvError::Closed) => return Ok(None),
                        },
                    };
                    if event.id <= self.cursor {
                        continue;
                    }
                    self.cursor = event.id;
                    if self.filter.matches(&event) {
                        self.last_yielded = event.id;
                        return Ok(Some(Item::Event(event)));
                    }
                }
            }
        }
    }

    /// Read one page from the store into the backlog, or switch to live
    /// once the store has nothing the subscription does not also hold.
    async fn catch_up_page(&mut self) -> Result<(), StoreError> {
        if self.held.is_none() {
            match self.live.try_recv() {
                Ok(e) => self.held = Some(e),
                // Lagged moves the receiver to the oldest event it still
                // has; the store covers the rest.
                Err(TryRecvError::Lagged(_)) => return Ok(()),
                Err(TryRecvError::Empty | TryRecvError::Closed) => {}
            }
        }
        let memory_from = self.held.as_ref().map(|e| e.id);
        if memory_from.is_some_and(|first| first <= self.cursor + 1) {
            self.mode = Mode::Live;
            return Ok(());
        }
        let page = self
            .store
            .events(EventQuery {
                after: self.cursor,
                limit: PAGE,
                event_type: self.filter.event_type.clone(),
                job_id: self.filter.job_id.clone(),
            })
            .await?;
        let mut more = page.len() == PAGE;
        for e in page {
            if memory_from.is_some_and(|first| e.id >= first) {
                more = false;
                break;
            }
            self.cursor = e.id;
            self.backlog.push_back(std::sync::Arc::new(e));
        }
        if !more {
            self.mode = Mode::Live;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEvent;
    use serde_json::json;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open_sqlite(&dir.path().join("state.db")).expect("open");
        (dir, store)
    }

    async fn append(store: &Store, n: usize, event_type: &str) -> Vec<crate::store::Event> {
        let events = (0..n)
            .map(|i| NewEvent::new(event_type, json!({"i": i})).job(format!("j{}", i % 2)))
            .collect();
        store.append_events(events).await.expect("append")
    }

    async fn take(feed: &mut Feed, n: usize) -> Vec<Item> {
        let mut out = Vec::new();
        while out.len() < n {
            let item = tokio::time::timeout(std::time::Duration::from_secs(5), feed.next())
                .await
                .expect("feed stalled")
                .expect("store")
                .expect("closed");
            out.push(item);
        }
        out
    }

    fn ids(items: &[Item]) -> Vec<i64> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.id),
                Item::Lagged { .. } => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn backfills_then_streams_live_without_gaps_or_repeats() {
        let (_dir, store) = store().await;
        let old = append(&store, 2500, "run.queued").await;
        let mut feed = Feed::subscribe(store.clone(), Some(10), EventQuery::default())
            .await
            .expect("feed");
        let new = append(&store, 30, "run.started").await;
        let got = take(&mut feed, 2490 + 30).await;
        let want: Vec<i64> = old[10..].iter().chain(&new).map(|e| e.id).collect();
        assert_eq!(ids(&got), want);
    }

    #[tokio::test]
    async fn from_now_skips_history() {
        let (_dir, store) = store().await;
        append(&store, 5, "run.queued").await;
        let mut feed = Feed::subscribe(store.clone(), None, EventQuery::default())
            .await
            .expect("feed");
        let new = append(&store, 3, "run.started").await;
        let got = take(&mut feed, 3).await;
        assert_eq!(ids(&got), new.iter().map(|e| e.id).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn filters_apply_to_backfill_and_live() {
        let (_dir, store) = store().await;
        append(&store, 4, "run.queued").await;
        append(&store, 4, "scheduler.pressure_on").await;
        let filter = EventQuery {
            event_type: Some("scheduler.*".into()),
            job_id: Some("j1".into()),
            ..EventQuery::default()
        };
        let mut feed = Feed::subscribe(store.clone(), Some(0), filter)
            .await
            .expect("feed");
        append(&store, 4, "scheduler.dispatch_skipped_overlap").await;
        append(&store, 4, "run.completed").await;
        let got = take(&mut feed, 4).await;
        for item in &got {
            let Item::Event(e) = item else {
                panic!("{item:?}")
            };
            assert!(e.event_type.starts_with("scheduler."), "{e:?}");
            assert_eq!(e.job_id.as_deref(), Some("j1"));
        }
    }

    /// A reader behind a small broadcast is told once and still gets every
    /// event, from the store.
    #[tokio::test]
    async fn a_lagging_reader_is_told_and_caught_up_from_the_store() {
        let (_dir, store) = store().await;
        let (tx, rx) = broadcast::channel(4);
        let mut feed = Feed::new(store.clone(), rx, 0, EventQuery::default());
        let first = append(&store, 2, "run.queued").await;
        for e in &first {
            tx.send(std::sync::Arc::new(e.clone())).expect("send");
        }
        let got = take(&mut feed, 2).await;
        assert_eq!(ids(&got), vec![first[0].id, first[1].id]);
        // 20 more while the reader is away: the broadcast keeps only 4.
        let more = append(&store, 20, "run.started").await;
        for e in &more {
            let _ = tx.send(std::sync::Arc::new(e.clone()));
        }
        let got = take(&mut feed, 21).await;
        assert_eq!(
            got[0],
            Item::Lagged {
                resume_after: first[1].id
            }
        );
        assert_eq!(ids(&got), more.iter().map(|e| e.id).collect::<Vec<_>>());
        drop(tx);
        assert_eq!(feed.next().await.expect("store"), None);
    }
}
