//! Scheduler guards and retry backoff, deterministic: tokio's clock is
//! paused and the runtime's clock follows it, so "three seconds later" is
//! exact. The scheduler is driven tick by tick; the store is a real SQLite
//! file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use multijob::clock::Clock;
use multijob::queue::{QueueConfig, RunQueue};
use multijob::run::{NewRun, Outcome};
use multijob::schedule::scheduler::{Scheduler, SchedulerConfig, StatsCell};
use multijob::spec::{SourceFile, build};
use multijob::store::runs::RunStatus;
use multijob::store::{Applied, RevisionRecord, RevisionStatus, Store};
use multijob::worker::{WorkerContext, WorkerPool};
use serde_json::json;

struct Rig {
    _tmp: tempfile::TempDir,
    store: Store,
    queue: Arc<RunQueue>,
    scheduler: Scheduler,
    stats: Arc<StatsCell>,
}

const START: &str = "2026-11-22T10:00:00.500Z";

fn rig(yaml: &str, config: SchedulerConfig, queue_config: QueueConfig) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&tmp.path().join("state.db")).unwrap();
    let loaded = build(&[SourceFile {
        path: "jobs.d/t.yaml".into(),
        text: yaml.into(),
    }]);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    let applied = Arc::new(Applied {
        revision: Some(RevisionRecord {
            seq: 1,
            id: "test".into(),
            status: RevisionStatus::Applied,
            at: START.into(),
            git_commit: None,
            git_dirty: false,
            content_hash: "x".into(),
            summary: json!({}),
            changes: json!([]),
            errors: vec![],
        }),
        snapshot: loaded.snapshot,
    });
    let clock = Clock::virtual_at(START.parse().unwrap());
    let queue = RunQueue::new(store.clone(), applied.clone(), queue_config, clock);
    let stats = Arc::new(StatsCell::default());
    let mut scheduler = Scheduler::new(queue.clone(), config, stats.clone());
    scheduler.apply(applied, &HashMap::new());
    Rig {
        _tmp: tmp,
        store,
        queue,
        scheduler,
        stats,
    }
}

fn default_rig(yaml: &str) -> Rig {
    rig(yaml, SchedulerConfig::default(), QueueConfig::default())
}

impl Rig {
    /// Advance the clock by `secs` one second at a time, ticking each time.
    async fn seconds(&mut self, secs: u64) {
        for _ in 0..secs {
            tokio::time::advance(Duration::from_secs(1)).await;
            self.scheduler.tick();
            tokio::task::yield_now().await;
        }
    }

    fn skipped(&self, reason: &str) -> u64 {
        self.stats
            .snapshot()
            .skipped
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    fn dispatched(&self) -> u64 {
        self.stats.snapshot().dispatched
    }

    fn workers(&self, n: usize) -> WorkerPool {
        WorkerPool::spawn(
            n,
            self.queue.clone(),
            WorkerContext::new(self._tmp.path().join("data"), false),
            Arc::new(AtomicUsize::new(0)),
        )
    }
}

// Without workers a dispatched run stays queued, so it stays active.

#[tokio::test(start_paused = true)]
async fn overlap_forbid_skips_while_a_run_is_active() {
    let mut r = default_rig("id: a\ntype: noop\nschedule: {every: 1s}\n");
    r.seconds(3).await;
    assert_eq!(r.dispatched(), 1);
    assert_eq!(r.skipped("overlap"), 2);
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_dispatches_every_slot() {
    let mut r = default_rig("id: a\ntype: noop\noverlap: allow\nschedule: {every: 1s}\n");
    r.seconds(3).await;
    assert_eq!(r.dispatched(), 3);
    assert_eq!(r.queue.view().active_runs("a"), 3);
}

#[tokio::test(start_paused = true)]
async fn overlap_buffer_one_holds_one_slot_and_skips_the_rest() {
    let mut r = default_rig(
        "id: a\ntype: simulation.heavy\noverlap: buffer_one\nschedule: {every: 1s}\ninputs: {work_ms: 2500}\n",
    );
    let _pool = r.workers(1);
    r.seconds(1).await; // slot 1 dispatched and running
    r.seconds(1).await; // slot 2 buffered
    r.seconds(1).await; // slot 3 skipped: the buffer is full
    assert_eq!(r.dispatched(), 1);
    assert_eq!(r.skipped("overlap"), 1);
    // The running run ends at ~3.5 s; the buffered slot goes right after.
    tokio::time::advance(Duration::from_millis(700)).await;
    tokio::task::yield_now().await;
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    r.scheduler.tick();
    assert_eq!(
        r.dispatched(),
        2,
        "the buffered slot runs once the active run ends"
    );
}

#[tokio::test(start_paused = true)]
async fn overlap_replace_cancels_the_active_run() {
    let mut r = default_rig("id: a\ntype: noop\noverlap: replace\nschedule: {every: 1s}\n");
    r.seconds(1).await;
    let first = r.queue.view().active_runs("a");
    assert_eq!(first, 1);
    r.seconds(1).await;
    assert_eq!(r.dispatched(), 2);
    // The first (queued) run was cancelled; one run is active.
    assert_eq!(r.queue.view().active_runs("a"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_lane_skips_with_flow_limit() {
    let mut r = default_rig(
        "kind: Flow\nid: lane\nmax_active_runs: 1\n---\nid: a\ntype: noop\nflow: lane\nschedule: {every: 1s}\n---\nid: b\ntype: noop\nflow: lane\nschedule: {every: 1s}\n",
    );
    r.seconds(1).await;
    assert_eq!(r.dispatched(), 1, "one lane place");
    assert_eq!(r.skipped("flow_limit"), 1);
    assert_eq!(r.queue.view().lane("lane").active, 1);
}

#[tokio::test(start_paused = true)]
async fn pressure_lets_only_critical_jobs_dispatch() {
    let mut r = rig(
        "id: normal\ntype: noop\noverlap: allow\nschedule: {every: 1s}\n---\nid: urgent\ntype: noop\noverlap: allow\npriority: critical\nschedule: {every: 1s}\n",
        SchedulerConfig::default(),
        QueueConfig {
            pressure_high: 3,
            pressure_low: 1,
            ..QueueConfig::default()
        },
    );
    r.seconds(2).await; // 4 runs queued: pressure on after the third
    assert!(r.queue.view().pressure());
    r.seconds(1).await;
    assert!(r.skipped("pressure") >= 1);
    assert_eq!(
        r.queue.view().active_runs("urgent"),
        3,
        "critical keeps dispatching"
    );
    // Draining the queue turns pressure off again.
    let _pool = r.workers(2);
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        !r.queue.view().pressure(),
        "pressure measures the waiting queue, not history"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_memory_cools_down_and_doubles() {
    let mut r = default_rig(
        "id: f\ntype: simulation.heavy\nschedule: {every: 1s}\nfailure_memory: {threshold: 2, cooldown_sec: 4, cooldown_max_sec: 8}\ninputs: {fail_attempts: 1000}\n",
    );
    let _pool = r.workers(1);
    let settle = || async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    };
    r.seconds(1).await;
    settle().await;
    r.seconds(1).await;
    settle().await;
    let view = r.queue.view();
    let f = view.failure("f").cloned().unwrap();
    drop(view);
    assert_eq!(f.consecutive_failures, 2);
    assert!(f.cooldown_until.is_some());
    // 4 s of cooldown: the next 3 slots are skipped, the 4th dispatches.
    r.seconds(3).await;
    assert_eq!(r.skipped("cooldown"), 3);
    r.seconds(1).await;
    settle().await;
    // Third failure: cooldown doubles to 8 s.
    let f = r.queue.view().failure("f").cloned().unwrap();
    assert_eq!(f.consecutive_failures, 3);
    let until: jiff::Timestamp = f.cooldown_until.unwrap().parse().unwrap();
    let left = until.duration_since(r.queue.clock().now()).as_secs();
    assert!((7..=8).contains(&left), "{left}");
}

#[tokio::test(start_paused = true)]
async fn a_pending_approval_skips_slots() {
    let mut r = default_rig("id: g\ntype: noop\nrequires_approval: true\nschedule: {every: 1s}\n");
    r.seconds(1).await;
    assert!(r.queue.view().approval_pending("g"));
    r.seconds(2).await;
    assert_eq!(r.dispatched(), 1);
    assert_eq!(r.skipped("approval"), 2);
}

#[tokio::test(start_paused = true)]
async fn the_tick_cap_defers_fairly() {
    let mut yaml = String::new();
    for i in 0..5 {
        yaml.push_str(&format!(
            "id: j{i}\ntype: noop\noverlap: allow\nschedule: {{every: 1s}}\n---\n"
        ));
    }
    let mut r = rig(
        &yaml,
        SchedulerConfig {
            max_dispatch_per_tick: Some(2),
            tick: Duration::from_secs(1),
        },
        QueueConfig::default(),
    );
    r.seconds(1).await;
    assert_eq!(r.dispatched(), 2);
    r.seconds(1).await;
    // The three held back go first: their old slots are superseded by due
    // ones (tick_limit) and two of them dispatch ahead of j0 and j1.
    assert_eq!(r.skipped("tick_limit"), 3);
    assert_eq!(r.dispatched(), 4);
    let view = r.queue.view();
    let ran: Vec<usize> = (0..5).map(|i| view.active_runs(&format!("j{i}"))).collect();
    drop(view);
    assert!(ran.iter().filter(|n| **n >= 1).count() >= 4, "{ran:?}");
    r.seconds(1).await;
    let view = r.queue.view();
    assert!(
        (0..5).all(|i| view.active_runs(&format!("j{i}")) >= 1),
        "nobody starves"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_wait_their_backoff_exactly() {
    let r = default_rig(
        "id: flaky\ntype: simulation.heavy\nretry_policy: {max_retry: 3, backoff_sec: [10, 20]}\ninputs: {fail_attempts: 3}\n",
    );
    let _pool = r.workers(1);
    let run = r
        .queue
        .enqueue(vec![NewRun::manual("flaky", json!({}))])
        .remove(0);
    let settle = || async {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    let status = |q: &RunQueue| q.get(&run).map(|r| (r.status, r.attempt));
    assert_eq!(status(&r.queue), Some((RunStatus::Retrying, 1)));
    tokio::time::advance(Duration::from_millis(9_900)).await;
    settle().await;
    assert_eq!(
        status(&r.queue),
        Some((RunStatus::Retrying, 1)),
        "not before 10 s"
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(
        status(&r.queue),
        Some((RunStatus::Retrying, 2)),
        "second attempt failed at 10 s"
    );
    tokio::time::advance(Duration::from_millis(19_800)).await;
    settle().await;
    assert_eq!(
        status(&r.queue),
        Some((RunStatus::Retrying, 2)),
        "the last backoff (20 s) repeats"
    );
    tokio::time::advance(Duration::from_millis(400)).await;
    settle().await;
    assert_eq!(status(&r.queue), Some((RunStatus::Retrying, 3)));
    tokio::time::advance(Duration::from_secs(21)).await;
    settle().await;
    assert_eq!(status(&r.queue), None, "finished: it left the queue");
    r.store.flush().await.unwrap();
    let (_, stored) = r.store.run(&run).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(stored.attempt, 4);
    let f = r.queue.view().failure("flaky").cloned().unwrap_or_default();
    assert_eq!(
        f.consecutive_failures, 0,
        "a run that succeeds in the end is no failure"
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_out_of_retries_counts_once_in_failure_memory() {
    let r = default_rig(
        "id: bad\ntype: simulation.heavy\nretry_policy: {max_retry: 2, backoff_sec: [1]}\ninputs: {fail_attempts: 10}\n",
    );
    let _pool = r.workers(1);
    let run = r
        .queue
        .enqueue(vec![NewRun::manual("bad", json!({}))])
        .remove(0);
    for _ in 0..4 {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_millis(1_100)).await;
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(r.queue.get(&run).is_none());
    let f = r.queue.view().failure("bad").cloned().unwrap();
    assert_eq!(f.consecutive_failures, 1, "three attempts, one failed run");
}

// A real multi-threaded runtime: workers claim runs the moment `enqueue`
// releases the queue's lock. Every run's last record must be its end,
// never a `queued` record that reached the store after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_of_a_burst_is_stored_as_it_ended() {
    let r = rig(
        "id: n\ntype: noop\noverlap: allow\n",
        SchedulerConfig::default(),
        QueueConfig {
            keep_runs: 100_000,
            ..QueueConfig::default()
        },
    );
    let _pool = r.workers(16);
    // Four producers queue small slices while the workers are busy, so
    // workers keep claiming the newest runs as they are queued.
    let (total, slice, producers) = (20_000, 50, 4);
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let queue = r.queue.clone();
            tokio::spawn(async move {
                for _ in 0..(total / slice / producers) {
                    let runs = (0..slice).map(|_| NewRun::manual("n", json!({}))).collect();
                    assert_eq!(queue.enqueue(runs).len(), slice);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while r.queue.view().totals().1 < total as u64 {
        assert!(std::time::Instant::now() < deadline, "runs did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.store.flush().await.unwrap();
    let stored = r
        .store
        .runs(multijob::store::runs::RunQuery {
            job_id: Some("n".into()),
            status: None,
            limit: 2 * total,
            before: None,
        })
        .await
        .unwrap();
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for (_, run) in &stored {
        *by_status.entry(run.status.as_str()).or_default() += 1;
    }
    assert_eq!(by_status, HashMap::from([("succeeded", total)]));
}

/// A result from a worker process carries its own start and end (the
/// worker's clock): the record's end and duration are the attempt's, not
/// when the leader got to the result. An end ahead of the leader's clock
/// counts as now.
#[tokio::test(start_paused = true)]
async fn a_remote_attempt_ends_when_its_worker_says() {
    let r = default_rig("id: n\ntype: noop\n");
    let ids = r.queue.enqueue(vec![
        NewRun::manual("n", json!({})),
        NewRun::manual("n", json!({})),
    ]);
    let mut claimed = Vec::new();
    for _ in &ids {
        claimed.push(r.queue.claim().await.expect("a ready run").run.id);
    }
    let now = r.queue.clock().now();
    let start = now - jiff::SignedDuration::from_millis(900);
    let end = now - jiff::SignedDuration::from_millis(850);
    r.queue
        .record_start(&claimed[0], multijob::store::format_ts(start), "w1");
    r.queue.finish_at(
        &claimed[0],
        Outcome::Succeeded(json!({})),
        Some(&multijob::store::format_ts(end)),
    );
    let ahead = now + jiff::SignedDuration::from_secs(60);
    r.queue.finish_at(
        &claimed[1],
        Outcome::Succeeded(json!({})),
        Some(&multijob::store::format_ts(ahead)),
    );
    r.store.flush().await.unwrap();
    let (_, first) = r.store.run(&claimed[0]).await.unwrap().unwrap();
    assert_eq!(first.duration_ms, Some(50), "{first:#?}");
    assert_eq!(
        first.finished_at.as_deref(),
        Some(multijob::store::format_ts(end).as_str())
    );
    assert_eq!(first.attempts[0].finished_at, first.finished_at);
    let (_, second) = r.store.run(&claimed[1]).await.unwrap().unwrap();
    assert_eq!(
        second.finished_at.as_deref(),
        Some(multijob::store::format_ts(now).as_str())
    );
}
