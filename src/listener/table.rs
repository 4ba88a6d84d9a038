//! The open connections: what each is doing (for eviction and timeouts),
//! and the count of long-lived streams.
//!
//! Shared by the accept loop (admit, evict), each connection's task (its
//! watchdog) and the requests it serves (busy, streaming). Hot paths touch
//! only a connection's own atomics; the table's lock is taken once per
//! accept and once per close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::limits::{self, Candidate, Phase};

/// The registry of open connections, with the cap it enforces.
pub struct Table {
    origin: Instant,
    max: usize,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    streams: Arc<Streams>,
}

/// The new connection's state, or why it cannot be admitted.
pub enum Admit {
    /// Admitted; `evicted` is the connection closed to make room, if any.
    Open { conn: Arc<ConnState>, evicted: bool },
    /// At the cap and every connection is inside a request.
    Full { open: usize },
}

impl Table {
    pub fn new(max: usize) -> Arc<Table> {
        Arc::new(Table {
            origin: Instant::now(),
            max,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            streams: Arc::new(Streams {
                open: AtomicUsize::new(0),
                max: limits::max_streams(max),
            }),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        // Nothing panics while holding it; a poisoned map is still sound.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Register a connection just accepted, closing the best victim
    /// ([`limits::victim`]) when the table is full.
    pub fn admit(&self) -> Admit {
        let mut conns = self.lock();
        let mut evicted = false;
        if conns.len() >= self.max {
            match pick(&conns) {
                Some(id) => {
                    if let Some(v) = conns.remove(&id) {
                        v.evict();
                    }
                    evicted = true;
                }
                None => return Admit::Full { open: conns.len() },
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState::new(id, self.origin, self.streams.clone()));
        conns.insert(id, conn.clone());
        Admit::Open { conn, evicted }
    }

    /// Close the best victim, if any (the process ran out of descriptors).
    pub fn evict_one(&self) -> bool {
        let mut conns = self.lock();
        let Some(id) = pick(&conns) else {
            return false;
        };
        if let Some(v) = conns.remove(&id) {
            v.evict();
        }
        true
    }

    /// A connection's task ended.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

fn pick(conns: &HashMap<u64, Arc<ConnState>>) -> Option<u64> {
    limits::victim(conns.values().map(|c| {
        let p = c.phase();
        Candidate {
            id: c.id,
            busy: p.busy,
            served: p.served,
            idle_since: p.idle_since,
        }
    }))
}

/// How many long-lived streams are open, against their share of the cap.
pub struct Streams {
    open: AtomicUsize,
    max: usize,
}

/// More streams than their share of the connections were asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsFull {
    pub max: usize,
}

/// One connection, as its task, its IO and its requests see it.
pub struct ConnState {
    pub id: u64,
    origin: Instant,
    /// Requests in flight (HTTP/1: 0 or 1).
    busy: AtomicUsize,
    /// Requests received so far.
    served: AtomicU64,
    /// Milliseconds since the origin, plus one (0: unset).
    idle_since: AtomicU64,
    head_started: AtomicU64,
    /// The request in flight holds one of the stream slots.
    streaming: AtomicBool,
    /// A write is waiting for the peer to read: the end of a response may
    /// still be in hyper's buffer after its body ended.
    write_blocked: AtomicBool,
    evicted: AtomicBool,
    /// Wakes the watchdog: a phase change or an eviction.
    changed: Notify,
    streams: Arc<Streams>,
}

impl ConnState {
    fn new(id: u64, origin: Instant, streams: Arc<Streams>) -> ConnState {
        let c = ConnState {
            id,
            origin,
            busy: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            streaming: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
            streams,
        };
        c.idle_since.store(c.stamp(), Ordering::Relaxed);
        c
    }

    fn stamp(&self) -> u64 {
        let ms = self.origin.elapsed().as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
    }

    fn since(stamp: u64) -> Option<Duration> {
        stamp.checked_sub(1).map(Duration::from_millis)
    }

    /// The instant `d` after the table's origin (phases are measured so).
    pub fn instant(&self, d: Duration) -> Instant {
        self.origin + d
    }

    /// Where it stands now (times since the table's origin).
    pub fn phase(&self) -> Phase {
        Phase {
            busy: self.busy.load(Ordering::Acquire) > 0
                || self.write_blocked.load(Ordering::Acquire),
            served: self.served.load(Ordering::Relaxed) > 0,
            idle_since: Self::since(self.idle_since.load(Ordering::Acquire)).unwrap_or_default(),
            head_started: Self::since(self.head_started.load(Ordering::Acquire)),
        }
    }

    /// Bytes arrived: the first since the connection went idle starts the
    /// header timeout of a kept-alive connection.
    pub fn on_read(&self) {
        if self.head_started.load(Ordering::Relaxed) == 0
            && self
                .head_started
                .compare_exchange(0, self.stamp(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// A write could not go out: the peer has not read what it was sent.
    /// Until it does, the connection is still answering (the stalled-write
    /// guard bounds how long), not idle.
    pub fn on_write_blocked(&self) {
        if !self.write_blocked.load(Ordering::Relaxed) {
            self.write_blocked.store(true, Ordering::Release);
        }
    }

    /// A write went out. After a blocked one, a response that had ended
    /// has now been sent: the connection is idle from here.
    pub fn on_write(&self) {
        if self.write_blocked.load(Ordering::Relaxed)
            && self.write_blocked.swap(false, Ordering::AcqRel)
        {
            self.idle_since.store(self.stamp(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A request head is complete and handed to the application.
    pub fn begin_request(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// Its response ended (sent, or dropped with the connection).
    pub fn end_request(&self) {
        if self.streaming.swap(false, Ordering::AcqRel) {
            self.streams.open.fetch_sub(1, Ordering::AcqRel);
        }
        self.head_started.store(0, Ordering::Release);
        self.idle_since.store(self.stamp(), Ordering::Release);
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }

    /// The request in flight becomes a long-lived stream, if the streams'
    /// share of the connections allows another one.
    pub fn begin_stream(&self) -> Result<(), StreamsFull> {
        if self.streaming.load(Ordering::Acquire) {
            return Ok(());
        }
        let max = self.streams.max;
        let taken = self
            .streams
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            });
        match taken {
            Ok(_) => {
                self.streaming.store(true, Ordering::Release);
                Ok(())
            }
            Err(_) => Err(StreamsFull { max }),
        }
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Resolves on the next phase change or eviction (a change before the
    /// call is not lost: `Notify` keeps one permit).
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(t: &Table) -> Arc<ConnState> {
        match t.admit() {
            Admit::Open { conn, .. } => conn,
            Admit::Full { open } => panic!("table full at {open}"),
        }
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let t = Table::new(3);
        let a = open(&t);
        let b = open(&t);
        let c = open(&t);
        a.begin_request();
        // b and c never sent a head: b (older) goes, a (busy) stays.
        let Admit::Open { evicted, .. } = t.admit() else {
            panic!("full")
        };
        assert!(evicted);
        assert!(b.is_evicted());
        assert!(!a.is_evicted() && !c.is_evicted());
        assert_eq!(t.open(), 3);
    }

    #[test]
    fn when_every_connection_is_busy_a_new_one_is_refused() {
        let t = Table::new(2);
        let a = open(&t);
        let b = open(&t);
        a.begin_request();
        b.begin_request();
        assert!(matches!(t.admit(), Admit::Full { open: 2 }));
        // Once a response ends, its connection may make room again.
        b.end_request();
        assert!(matches!(t.admit(), Admit::Open { evicted: true, .. }));
        assert!(b.is_evicted());
    }

    #[test]
    fn a_closed_connection_frees_its_place() {
        let t = Table::new(1);
        let a = open(&t);
        a.begin_request();
        t.remove(a.id);
        assert!(matches!(t.admit(), Admit::Open { evicted: false, .. }));
    }

    #[test]
    fn streams_take_at_most_their_share_and_give_it_back() {
        let t = Table::new(9); // 7 streams at most
        let conns: Vec<_> = (0..9).map(|_| open(&t)).collect();
        for (i, c) in conns.iter().enumerate() {
            c.begin_request();
            let r = c.begin_stream();
            if i < 7 {
                assert_eq!(r, Ok(()), "stream {i}");
            } else {
                assert_eq!(r, Err(StreamsFull { max: 7 }), "stream {i}");
            }
        }
        conns[0].end_request();
        conns[8].end_request();
        conns[8].begin_request();
        assert_eq!(conns[8].begin_stream(), Ok(()));
    }

    #[test]
    fn a_response_still_being_written_is_not_idle() {
        let t = Table::new(1);
        let a = open(&t);
        a.begin_request();
        a.end_request();
        a.on_write_blocked();
        assert!(a.phase().busy);
        assert!(matches!(t.admit(), Admit::Full { open: 1 }));
        let before = a.phase().idle_since;
        std::thread::sleep(Duration::from_millis(5));
        a.on_write();
        let p = a.phase();
        assert!(!p.busy);
        assert!(p.idle_since > before, "idle from the last write on");
        assert!(matches!(t.admit(), Admit::Open { evicted: true, .. }));
    }

    #[tokio::test]
    async fn phase_follows_reads_and_requests() {
        let t = Table::new(4);
        let c = open(&t);
        let p = c.phase();
        assert!(!p.busy && !p.served && p.head_started.is_none());
        c.on_read();
        assert!(c.phase().head_started.is_some());
        c.begin_request();
        assert!(c.phase().busy);
        c.end_request();
        let p = c.phase();
        assert!(!p.busy && p.served && p.head_started.is_none());
        // The phase changes woke the watchdog (a permit is kept).
        tokio::time::timeout(Duration::from_secs(5), c.changed())
            .await
            .expect("notified");
    }
}
