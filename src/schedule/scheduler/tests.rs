use super::tick::{CHUNK, successor_wait};
use super::*;
use crate::run::{NewRun, new_run_id};
use crate::store::runs::Trigger;

/// A scheduler over `jobs` 1-second jobs (overlap allow), no workers.
fn rig(jobs: usize, cap: usize) -> (tempfile::TempDir, Scheduler, Arc<StatsCell>) {
    let text: String = (0..jobs)
        .map(|i| format!("id: j{i:04}\ntype: noop\noverlap: allow\nschedule: {{every: 1s}}\n---\n"))
        .collect();
    rig_of(&text, cap, &HashMap::new())
}

/// A scheduler over the jobs in `text`, started with `last_slots`
/// (each job's last decided slot, as after a restart), no workers.
fn rig_of(
    text: &str,
    cap: usize,
    last_slots: &HashMap<String, Timestamp>,
) -> (tempfile::TempDir, Scheduler, Arc<StatsCell>) {
    rig_at(text, cap, last_slots, "2026-11-22T10:00:00.500Z")
}

/// [`rig_of`] with the virtual clock starting at `at`.
fn rig_at(
    text: &str,
    cap: usize,
    last_slots: &HashMap<String, Timestamp>,
    at: &str,
) -> (tempfile::TempDir, Scheduler, Arc<StatsCell>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open_sqlite(&tmp.path().join("s.db")).unwrap();
    let text = text.to_string();
    let loaded = crate::spec::build(&[crate::spec::SourceFile {
        path: "jobs.d/t.yaml".into(),
        text,
    }]);
    let applied = Arc::new(Applied {
        revision: None,
        snapshot: loaded.snapshot,
    });
    let clock = crate::clock::Clock::virtual_at(at.parse().unwrap());
    let queue = RunQueue::new(
        store,
        applied.clone(),
        crate::queue::QueueConfig {
            pressure_high: 1_000_000,
            pressure_low: 1,
            ..Default::default()
        },
        clock,
    );
    let stats = Arc::new(StatsCell::default());
    let config = SchedulerConfig {
        max_dispatch_per_tick: Some(cap),
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(queue, config, stats.clone());
    s.apply(applied, last_slots);
    (tmp, s, stats)
}

/// Start the next ready run and finish it at once; its job id.
async fn run_one(queue: &RunQueue) -> Option<String> {
    let claim = tokio::time::timeout(Duration::from_millis(10), queue.claim())
        .await
        .ok()??;
    queue.finish(
        &claim.run.id,
        crate::run::Outcome::Succeeded(serde_json::Value::Null),
    );
    Some(claim.run.job_id)
}

/// Regression (QA): in a lane of one, the job whose id sorts later never
/// ran: both came due together every tick, a lane skip did not keep the
/// slot's wait, so the id broke the tie every time.
#[tokio::test(start_paused = true)]
async fn jobs_sharing_a_lane_take_turns_whatever_their_ids() {
    for (first, second) in [("lane-a", "lane-b"), ("zz-late", "aa-early")] {
        let text = format!(
            "kind: Flow\nid: lane\nmax_active_runs: 1\n---\n\
             id: {first}\ntype: noop\nflow: lane\nschedule: {{every: 1s}}\n---\n\
             id: {second}\ntype: noop\nflow: lane\nschedule: {{every: 1s}}\n"
        );
        let (_tmp, mut s, stats) = rig_of(&text, 80, &HashMap::new());
        let queue = s.queue.clone();
        let mut ran = Vec::new();
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(1)).await;
            s.tick();
            ran.push(run_one(&queue).await.unwrap_or_default());
        }
        // One dispatch per tick, and the lane alternates.
        for pair in ran.windows(2) {
            assert_ne!(pair[0], pair[1], "{ran:?}");
        }
        // Every slot has exactly one outcome.
        let snap = stats.snapshot();
        assert_eq!(snap.dispatched, 6, "{snap:?}");
        assert_eq!(snap.skipped.get("flow_limit"), Some(&6), "{snap:?}");
    }
}

/// Regression (QA): `run_all` with `max_catchup_runs: 3` queued one
/// catch-up run; `overlap: forbid` saw the first as active and skipped
/// the other two.
#[tokio::test(start_paused = true)]
async fn run_all_queues_every_catchup_slot_within_the_cap() {
    let text =
        "id: every2\ntype: noop\nschedule: {every: 2s, misfire: run_all, max_catchup_runs: 3}\n";
    // The clock starts at 10:00:00.500: 10:00:00 was decided before a
    // downtime of 11 s, so 5 slots were missed.
    let last: Timestamp = "2026-11-22T09:59:50Z".parse().unwrap();
    let last_slots = HashMap::from([("every2".to_string(), last)]);
    let (_tmp, s, stats) = rig_of(text, 80, &last_slots);
    let snap = stats.snapshot();
    assert_eq!(snap.dispatched, 3, "{snap:?}");
    assert_eq!(snap.skipped.get("overlap"), None, "{snap:?}");
    assert_eq!(s.queue.view().active_runs("every2"), 3);
}

/// The catch-up runs of one restart do not overlap each other, but a
/// run still active from before the restart does overlap them.
#[tokio::test(start_paused = true)]
async fn run_all_catchup_still_skips_for_a_run_active_before() {
    let text =
        "id: every2\ntype: noop\nschedule: {every: 2s, misfire: run_all, max_catchup_runs: 3}\n";
    let (_tmp, mut s, stats) = rig_of(text, 80, &HashMap::new());
    // A run from before the restart, still queued.
    s.queue.enqueue(vec![NewRun {
        id: new_run_id(),
        job_id: "every2".into(),
        trigger: Trigger::Manual,
        inputs: serde_json::Value::Null,
        run_key: "manual".into(),
        scheduled_at: None,
        chain_depth: 0,
        due_at: None,
        extra: serde_json::Value::Null,
        requires_approval: false,
        traceparent: None,
    }]);
    let last: Timestamp = "2026-11-22T09:59:50Z".parse().unwrap();
    let applied = s.applied.clone();
    s.jobs.clear();
    s.apply(applied, &HashMap::from([("every2".to_string(), last)]));
    let snap = stats.snapshot();
    assert_eq!(snap.dispatched, 0, "{snap:?}");
    assert_eq!(snap.skipped.get("overlap"), Some(&3), "{snap:?}");
}

#[test]
fn a_slot_held_back_by_its_lane_passes_its_wait_on() {
    let t = |s: &str| -> Timestamp { s.parse().unwrap() };
    let (waited, next) = (t("2026-11-22T10:00:01Z"), t("2026-11-22T10:00:02Z"));
    assert_eq!(
        successor_wait(waited, next, Some(SkipReason::FlowLimit)),
        waited
    );
    // A job busy with its own run, or that ran, waits afresh.
    assert_eq!(successor_wait(waited, next, None), next);
    assert_eq!(
        successor_wait(waited, next, Some(SkipReason::Overlap)),
        next
    );
}

#[tokio::test(start_paused = true)]
async fn a_tick_of_several_chunks_dispatches_every_slot_once() {
    let (_tmp, mut s, stats) = rig(3 * CHUNK + 7, 1_000_000);
    tokio::time::advance(Duration::from_secs(1)).await;
    s.tick();
    assert_eq!(stats.snapshot().dispatched, 3 * CHUNK as u64 + 7);
    assert_eq!(s.queue.view().waiting(), 3 * CHUNK + 7);
}

#[tokio::test(start_paused = true)]
async fn slots_decided_ahead_wait_until_their_fire_time() {
    // The clock starts at 10:00:00.500; slots fire on whole seconds.
    let (_tmp, mut s, stats) = rig(3, 1_000_000);
    let observed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = observed.clone();
    stats.set_observer(Box::new(move |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    s.lead = Duration::from_millis(200);
    // 10:00:00.850: the 10:00:01 slots are within the lead.
    tokio::time::advance(Duration::from_millis(350)).await;
    s.tick();
    assert_eq!(stats.snapshot().dispatched, 3);
    let queue = s.queue.clone();
    assert_eq!(queue.view().waiting(), 3, "queued, waiting for their time");
    // Not startable before the fire time...
    let early = tokio::time::timeout(Duration::from_millis(140), queue.claim()).await;
    assert!(early.is_err(), "a run started before its slot fired");
    // ...and startable at it, with its lateness measured then.
    let claim = tokio::time::timeout(Duration::from_millis(20), queue.claim())
        .await
        .expect("ready at its fire time")
        .expect("a claim");
    assert_eq!(
        claim.run.scheduled_at.as_deref(),
        Some("2026-11-22T10:00:01.000Z")
    );
    let lateness = stats.snapshot().lateness;
    assert_eq!(lateness.count, 3);
    assert!(lateness.max_ms <= 10.0, "{lateness:?}");
    // The daemon's metrics hear of them too.
    assert_eq!(observed.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn the_tick_cap_holds_across_chunks() {
    let cap = CHUNK + 10;
    let (_tmp, mut s, stats) = rig(3 * CHUNK, cap);
    tokio::time::advance(Duration::from_secs(1)).await;
    s.tick();
    assert_eq!(stats.snapshot().dispatched, cap as u64);
    let deferred = s.jobs.values().filter(|j| j.deferred).count();
    assert_eq!(deferred, 3 * CHUNK - cap);
}

#[test]
fn the_lead_follows_tick_cost_and_decays_slowly() {
    let ms = Duration::from_millis;
    // Cheap ticks decide at the fire time.
    assert_eq!(
        next_lead(Duration::ZERO, Duration::from_micros(300)),
        Duration::ZERO
    );
    // A 100 ms tick starts the next one 152 ms early; capped at 250 ms.
    assert_eq!(next_lead(Duration::ZERO, ms(100)), ms(152));
    assert_eq!(next_lead(Duration::ZERO, ms(400)), MAX_LEAD);
    // A small tick in between keeps most of it.
    assert_eq!(next_lead(ms(152), Duration::ZERO), ms(133));
    // Many small ticks bring it back to zero.
    let mut lead = ms(152);
    for _ in 0..60 {
        lead = next_lead(lead, Duration::ZERO);
    }
    assert_eq!(lead, Duration::ZERO);
}

#[test]
fn lateness_quantiles_are_close() {
    let mut l = Lateness::default();
    for us in 1..=10_000u64 {
        l.record(us);
    }
    let p50 = l.quantile_us(0.5) as f64;
    let p99 = l.quantile_us(0.99) as f64;
    assert!((p50 - 5000.0).abs() / 5000.0 < 0.07, "{p50}");
    assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "{p99}");
    assert_eq!(l.quantile_us(1.0), 10_000);
    for us in [0, 1, 15, 16, 17, 1000, 123_456, u32::MAX as u64] {
        let i = Lateness::index(us);
        assert!(Lateness::upper(i) >= us, "{us} -> {i}");
    }
}

/// Regression (found by `multijob simulate`): a lane skip keeps the slot's
/// wait for the job's next slot, and the heap was ordered by that wait
/// first, so an hourly job skipped by its lane sat on top of the heap for
/// an hour with its next fire time: the scheduler slept until then and
/// every other job's slots in between were late, then skipped as missed.
#[tokio::test(start_paused = true)]
async fn a_lane_skipped_slot_does_not_hold_back_other_jobs() {
    let text = "kind: Flow\nid: lane\nmax_active_runs: 1\n---\n\
                id: hog\ntype: noop\nflow: lane\nschedule: {every: 1h}\n---\n\
                id: hourly\ntype: noop\nflow: lane\nschedule: {every: 1h}\n---\n\
                id: fast\ntype: noop\noverlap: allow\nschedule: {every: 10s}\n";
    let (_tmp, mut s, stats) = rig_of(text, 80, &HashMap::new());
    // 10:00:00.500 → 11:00:00: one of hog/hourly is skipped by the lane.
    tokio::time::advance(Duration::from_millis(3_599_500)).await;
    s.tick();
    assert_eq!(stats.snapshot().skipped.get("flow_limit"), Some(&1));
    let fast_before = s.queue.view().active_runs("fast");
    // The next wake-up is fast's slot, not the skipped job's next hour.
    let wake = s.heap.peek().map(|Reverse(e)| e.fire_at);
    assert_eq!(wake, Some("2026-11-22T11:00:10Z".parse().unwrap()));
    tokio::time::advance(Duration::from_secs(10)).await;
    s.tick();
    assert_eq!(s.queue.view().active_runs("fast"), fast_before + 1);
}

/// A job that used up its day's budget is held back until midnight in
/// its own time zone on the scheduler's clock, then dispatches again,
/// and the new day counts from zero.
#[tokio::test(start_paused = true)]
async fn a_used_up_daily_budget_resets_at_local_midnight() {
    use crate::schedule::budgets::BudgetBoard;
    use crate::store::budgets::{BudgetKind, Meter};
    let text = "id: digest\ntype: noop\noverlap: allow\n\
                schedule: {every: 1s, timezone: Asia/Jakarta}\n\
                budgets: {messages_per_day: 5}\n";
    // 16:59:57.5 UTC is 23:59:57.5 in Jakarta (UTC+7).
    let start: Timestamp = "2026-11-22T16:59:57.500Z".parse().unwrap();
    let (_tmp, s, stats) = rig_at(text, 80, &HashMap::new(), "2026-11-22T16:59:57.500Z");
    let board = Arc::new(BudgetBoard::default());
    let mut s = s.with_budgets(board.clone());
    let store = s.queue.store().clone();
    let snapshot = s.applied.snapshot.clone();
    let meter = Meter::of(&snapshot.jobs["digest"].spec, None).unwrap();
    let spent = meter.reserve(&store, BudgetKind::Messages, 5, start).await;
    assert!(matches!(spent, Ok(Ok(()))), "{spent:?}");
    board.refresh(&store, &snapshot, None, start).await.unwrap();
    let dispatched = || stats.snapshot().dispatched;
    let budget_skips = || stats.snapshot().skipped.get("budget").copied().unwrap_or(0);
    let before = dispatched();

    // 23:59:58 and 23:59:59: held back by the budget.
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(1)).await;
        s.tick();
    }
    assert_eq!(dispatched(), before, "{:?}", stats.snapshot());
    assert!(budget_skips() >= 2, "{:?}", stats.snapshot());
    assert!(run_one(&s.queue).await.is_none());

    // 00:00:00 and 00:00:01 the next day: running again, before any
    // refresh of the board (its day ended).
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(1)).await;
        s.tick();
        assert_eq!(run_one(&s.queue).await.as_deref(), Some("digest"));
    }
    assert_eq!(dispatched(), before + 2, "{:?}", stats.snapshot());

    // And the new day's count starts at zero.
    let next_day: Timestamp = "2026-11-22T17:00:01.500Z".parse().unwrap();
    let usage = meter.usage(&store, next_day).await.unwrap();
    assert_eq!(usage[0].used, 0, "{usage:?}");
    board
        .refresh(&store, &snapshot, None, next_day)
        .await
        .unwrap();
    assert!(board.blocking("digest", next_day).is_none());
}
