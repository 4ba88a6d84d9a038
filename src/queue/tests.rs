//! The queue's locking side: its counts, pressure and indexes as runs are
//! queued, claimed and finished, on a real SQLite store in a temp dir and
//! a virtual clock that follows tokio's paused one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{QueueConfig, RunQueue};
use crate::clock::Clock;
use crate::run::{NewRun, Outcome, RunError};
use crate::store::runs::{ApprovalStatus, RunStatus};
use crate::store::{EventQuery, Store};

struct Rig {
    _tmp: tempfile::TempDir,
    store: Store,
    queue: Arc<RunQueue>,
}

fn rig(yaml: &str, config: QueueConfig) -> Rig {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let (store, queue) =
        crate::testkit::queue_over(tmp.path(), yaml, config, "2026-03-01T10:00:00Z");
    Rig {
        _tmp: tmp,
        store,
        queue,
    }
}

impl Rig {
    fn enqueue(&self, n: usize) -> Vec<String> {
        let runs = (0..n).map(|_| NewRun::manual("a", json!({}))).collect();
        self.queue.enqueue(runs)
    }

    async fn claim(&self) -> crate::run::Claim {
        tokio::time::timeout(Duration::from_secs(1), self.queue.claim())
            .await
            .expect("a ready run")
            .expect("not draining")
    }

    fn counts(&self) -> (usize, usize, usize) {
        let view = self.queue.view();
        (view.waiting(), view.running(), view.active_runs("a"))
    }

    async fn event_types(&self) -> Vec<String> {
        self.store.flush().await.expect("flushed");
        let query = EventQuery {
            after: 0,
            limit: 100,
            event_type: None,
            job_id: None,
        };
        let events = self.store.events(query).await.expect("events");
        events.into_iter().map(|e| e.event_type).collect()
    }
}

const NOOP: &str = "id: a\ntype: noop\n";

#[tokio::test(start_paused = true)]
async fn enqueue_claim_and_finish_keep_the_counts() {
    let r = rig(NOOP, QueueConfig::default());
    let ids = r.enqueue(2);
    assert_eq!(ids.len(), 2);
    assert_eq!(r.counts(), (2, 0, 2));
    let claim = r.claim().await;
    assert_eq!(claim.run.id, ids[0], "the older run first");
    assert_eq!(
        (claim.run.status, claim.run.attempt),
        (RunStatus::Running, 1)
    );
    assert_eq!(r.counts(), (1, 1, 2));
    r.queue
        .finish(&claim.run.id, Outcome::Succeeded(json!({"ok": 1})));
    assert_eq!(r.counts(), (1, 0, 1));
    assert_eq!(r.queue.view().totals(), (1, 1));
    let last = r.queue.view().last_finished("a").expect("a last run");
    assert_eq!(last.status, RunStatus::Succeeded);
    assert_eq!(r.queue.get(&claim.run.id), None, "it left the queue");
    // Writes are group-committed: read what is committed, not what is
    // still on its way to the writer.
    r.store.flush().await.expect("flushed");
    let (_, stored) = r
        .store
        .run(&claim.run.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(
        r.event_types().await,
        ["run.queued", "run.queued", "run.started", "run.completed"]
    );
}

#[tokio::test(start_paused = true)]
async fn pressure_turns_on_at_high_and_off_at_low() {
    let config = QueueConfig {
        pressure_high: 3,
        pressure_low: 1,
        ..QueueConfig::default()
    };
    let r = rig(NOOP, config);
    r.enqueue(2);
    assert!(!r.queue.view().pressure());
    r.enqueue(1);
    assert!(r.queue.view().pressure(), "3 waiting");
    r.claim().await;
    assert!(r.queue.view().pressure(), "2 waiting: still above low");
    r.claim().await;
    assert!(!r.queue.view().pressure(), "1 waiting: down to low");
    let pressure: Vec<String> = r
        .event_types()
        .await
        .into_iter()
        .filter(|t| t.starts_with("scheduler.pressure"))
        .collect();
    assert_eq!(
        pressure,
        ["scheduler.pressure_on", "scheduler.pressure_off"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retried_run_stays_active_and_starts_again_when_due() {
    let r = rig(
        "id: a\ntype: noop\nretry_policy: {max_retry: 1, backoff_sec: [5]}\n",
        QueueConfig::default(),
    );
    r.enqueue(1);
    let first = r.claim().await;
    let boom = Outcome::Failed(RunError::retryable("boom"));
    r.queue.finish(&first.run.id, boom);
    assert_eq!(
        r.queue.run_status(&first.run.id),
        Some((RunStatus::Retrying, 1))
    );
    assert_eq!(r.counts(), (0, 0, 1), "not waiting, not running, active");
    let claim = tokio::spawn({
        let queue = r.queue.clone();
        async move { queue.claim().await }
    });
    tokio::time::advance(Duration::from_secs(4)).await;
    tokio::task::yield_now().await;
    assert!(!claim.is_finished(), "not due before its backoff");
    tokio::time::advance(Duration::from_secs(2)).await;
    let second = claim.await.expect("joined").expect("claimed");
    assert_eq!((second.run.id, second.run.attempt), (first.run.id, 2));
    assert_eq!(r.counts(), (0, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_approval_is_decided_once_and_queues_the_run() {
    let r = rig(
        "id: a\ntype: noop\nrequires_approval: true\n",
        QueueConfig::default(),
    );
    let ids = r.enqueue(1);
    assert!(r.queue.view().approval_pending("a"));
    assert_eq!(
        r.counts(),
        (0, 0, 1),
        "waiting for a decision, not a worker"
    );
    r.store.flush().await.expect("flushed");
    let approvals = r.store.approvals(true).await.expect("approvals");
    let approval = approvals.first().expect("a pending approval").clone();
    assert_eq!(approval.run_id, ids[0]);
    r.queue
        .decide(&approval, true, "ops", None)
        .expect("decided");
    assert!(!r.queue.view().approval_pending("a"));
    assert_eq!(r.counts(), (1, 0, 1));
    let again = r
        .queue
        .decide(&approval, false, "ops", Some("not today"))
        .expect_err("decided twice");
    assert!(again.contains("is already decided"), "{again}");
    r.store.flush().await.expect("flushed");
    let decided = r.store.approvals(false).await.expect("approvals");
    assert_eq!(decided[0].status, ApprovalStatus::Approved);
    assert_eq!(r.claim().await.run.attempt, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_jobs_runs_finishes_the_waiting_and_signals_the_running() {
    let r = rig(NOOP, QueueConfig::default());
    r.enqueue(2);
    let running = r.claim().await;
    assert_eq!(r.queue.cancel_job_runs("a", "replaced"), 2);
    assert!(
        running.cancel.is_cancelled(),
        "the running one through its token"
    );
    assert_eq!(r.counts(), (0, 1, 1), "the waiting one finished at once");
    let reason = r.queue.cancel_reason(&running.run.id);
    assert_eq!(reason.as_deref(), Some("replaced by a newer run of a"));
    r.queue
        .finish(&running.run.id, Outcome::Cancelled("replaced".into()));
    assert_eq!(r.counts(), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_operators_cancel_frees_a_parked_runs_place_and_stops_a_running_one() {
    use super::Cancelled;
    let lane = "kind: Flow\nid: one\nmax_active_runs: 1\n---\nid: a\ntype: noop\nflow: one\noverlap: allow\n";
    let r = rig(lane, QueueConfig::default());
    let ids = r.enqueue(3);
    let first = r.claim().await;
    assert_eq!(first.run.id, ids[0]);
    // The lane is full: the other two are parked behind it.
    let parked = tokio::time::timeout(Duration::from_millis(10), r.queue.claim()).await;
    assert!(parked.is_err(), "the lane holds one running run");
    let ended = r.queue.cancel_run(&ids[1], "ann", Some("not needed"));
    assert!(
        matches!(
            &ended,
            Cancelled::Ended {
                was: RunStatus::Queued,
                approval: None,
                ..
            }
        ),
        "{ended:?}"
    );
    assert_eq!(
        r.queue.cancel_run(&ids[1], "bob", None),
        Cancelled::NotActive
    );
    r.queue.finish(&first.run.id, Outcome::Succeeded(json!({})));
    // The place goes to the next parked run, not to the cancelled one.
    let third = r.claim().await;
    assert_eq!(third.run.id, ids[2]);
    let stopping = r.queue.cancel_run(&ids[2], "ann", Some("stuck"));
    assert_eq!(stopping, Cancelled::Stopping { job_id: "a".into() });
    assert!(third.cancel.is_cancelled());
    assert_eq!(
        r.queue.cancel_reason(&ids[2]).as_deref(),
        Some("cancelled by ann: stuck")
    );
    let again = r.queue.cancel_run(&ids[2], "bob", None);
    assert_eq!(again, Cancelled::AlreadyCancelling { by: "ann".into() });
    // The killed handler fails its attempt: the run ends cancelled.
    r.queue
        .finish(&ids[2], Outcome::Failed(RunError::retryable("killed")));
    r.store.flush().await.expect("flushed");
    let (_, run) = r.store.run(&ids[2]).await.expect("read").expect("a record");
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.cancelled_by.as_deref(), Some("ann"));
    assert_eq!(run.error.as_deref(), Some("cancelled by ann: stuck"));
    let (_, parked) = r.store.run(&ids[1]).await.expect("read").expect("a record");
    assert_eq!((parked.status, parked.attempt), (RunStatus::Cancelled, 0));
    assert_eq!(r.counts(), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_outlives_the_process_that_took_it() {
    let r = rig(NOOP, QueueConfig::default());
    let ids = r.enqueue(1);
    let _running = r.claim().await;
    r.queue.cancel_run(&ids[0], "ann", None);
    r.store.flush().await.expect("flushed");
    let clock = || Clock::virtual_at("2026-03-01T10:00:05Z".parse().expect("a time"));
    // A new Redis leader, the run still held by its worker: told again.
    let next = RunQueue::new(
        r.store.clone(),
        r.queue.applied(),
        QueueConfig::default(),
        clock(),
    );
    let held = std::collections::HashSet::from([ids[0].clone()]);
    next.recover_holding(&held).await.expect("recovered");
    let tokens = next.running_runs_tokens();
    assert_eq!(tokens.len(), 1);
    assert!(
        tokens[0].1.is_cancelled(),
        "the recovered run's token fired"
    );
    assert_eq!(
        next.cancel_reason(&ids[0]).as_deref(),
        Some("cancelled by ann")
    );
    // The process died with it: cancelled, not retried.
    let restarted = RunQueue::new(
        r.store.clone(),
        r.queue.applied(),
        QueueConfig::default(),
        clock(),
    );
    restarted.recover().await.expect("recovered");
    r.store.flush().await.expect("flushed");
    let (_, run) = r.store.run(&ids[0]).await.expect("read").expect("a record");
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.error.as_deref(), Some("cancelled by ann"));
    assert!(restarted.get(&ids[0]).is_none(), "it left the queue");
}

#[tokio::test(start_paused = true)]
async fn an_operators_cancel_of_a_run_waiting_for_its_retry_ends_it_for_good() {
    use super::Cancelled;
    let r = rig(
        "id: a\ntype: noop\nretry_policy: {max_retry: 1, backoff_sec: [5]}\n",
        QueueConfig::default(),
    );
    let ids = r.enqueue(1);
    let first = r.claim().await;
    r.queue
        .finish(&first.run.id, Outcome::Failed(RunError::retryable("boom")));
    let ended = r.queue.cancel_run(&ids[0], "ann", None);
    assert!(
        matches!(
            ended,
            Cancelled::Ended {
                was: RunStatus::Retrying,
                ..
            }
        ),
        "{ended:?}"
    );
    assert_eq!(r.counts(), (0, 0, 0));
    // Its due time passes: nothing starts.
    tokio::time::advance(Duration::from_secs(6)).await;
    let none = tokio::time::timeout(Duration::from_millis(10), r.queue.claim()).await;
    assert!(none.is_err(), "the cancelled run started again");
    r.store.flush().await.expect("flushed");
    let (_, run) = r.store.run(&ids[0]).await.expect("read").expect("a record");
    assert_eq!((run.status, run.attempt), (RunStatus::Cancelled, 1));
    assert_eq!(
        run.attempts[0].error.as_deref(),
        Some("boom"),
        "the attempt keeps its own end"
    );
}

/// A skill's derived job (`skill:<id>`) is admitted like a job, with the
/// skill's gate; a revision without the skill admits no more of its runs
/// and cancels the one not started yet.
#[tokio::test(start_paused = true)]
async fn a_skill_s_derived_job_is_admitted_and_goes_with_its_skill() {
    let skills = "kind: Skill\nid: brief\nsteps: [{id: s, set: {a: 1}}]\n---\n\
                  kind: Skill\nid: gated\nrequires_approval: true\nsteps: [{id: s, set: {a: 1}}]\n";
    let r = rig(
        &format!("id: a\ntype: noop\n---\n{skills}"),
        QueueConfig::default(),
    );
    let manual = |job: &str| NewRun::manual(job, json!({"topic": "x"}));
    let id = r
        .queue
        .enqueue_one(manual("skill:brief"))
        .expect("admitted");
    let claim = r.claim().await;
    assert_eq!(
        (claim.run.id.as_str(), claim.job.id.as_str()),
        (id.as_str(), "skill:brief")
    );
    assert_eq!(claim.run.inputs, json!({"topic": "x"}));
    let gated = r
        .queue
        .enqueue_one(manual("skill:gated"))
        .expect("admitted");
    assert_eq!(
        r.queue.run_status(&gated),
        Some((RunStatus::AwaitingApproval, 0))
    );
    assert_eq!(
        r.queue.enqueue_one(manual("skill:nope")),
        Err(crate::run::NotQueued::NoSuchJob)
    );
    let queued = r
        .queue
        .enqueue_one(manual("skill:brief"))
        .expect("admitted");
    let loaded = crate::spec::build(&[crate::spec::SourceFile {
        path: "jobs.d/t.yaml".into(),
        text: "id: a\ntype: noop\n".into(),
    }]);
    let applied = crate::store::Applied {
        revision: None,
        snapshot: loaded.snapshot,
    };
    r.queue.set_applied(Arc::new(applied));
    assert_eq!(
        r.queue.enqueue_one(manual("skill:brief")),
        Err(crate::run::NotQueued::NoSuchJob)
    );
    // Claiming meets the orphaned run and cancels it, as a deleted job's.
    let next = tokio::time::timeout(Duration::from_millis(50), r.queue.claim()).await;
    assert!(next.is_err(), "nothing is left to claim");
    assert_eq!(r.queue.run_status(&queued), None);
}

#[tokio::test(start_paused = true)]
async fn a_lanes_and_a_jobs_active_run_ids_are_indexed_oldest_first() {
    let r = rig(
        "kind: Flow\nid: l\nmax_active_runs: 1\n---\nid: a\ntype: noop\nflow: l\n",
        QueueConfig::default(),
    );
    let ids = r.enqueue(3);
    let listed = |f: &dyn Fn(&crate::queue::QueueView<'_>) -> Vec<String>| f(&r.queue.view());
    let by_job = |v: &crate::queue::QueueView<'_>| v.job_run_ids("a").map(String::from).collect();
    let by_lane = |v: &crate::queue::QueueView<'_>| v.lane_run_ids("l").map(String::from).collect();
    assert_eq!(listed(&by_job), ids);
    assert_eq!(listed(&by_lane), ids);
    let claim = r.claim().await;
    r.queue.finish(&claim.run.id, Outcome::Succeeded(json!({})));
    assert_eq!(listed(&by_job), ids[1..].to_vec(), "a finished run leaves");
    assert_eq!(listed(&by_lane), ids[1..].to_vec());
    assert_eq!(r.queue.view().lane_run_ids("other").count(), 0);
    assert_eq!(r.queue.view().approval_run("a"), None);
}

#[tokio::test(start_paused = true)]
async fn runs_of_a_group_no_live_worker_serves_wait_queued_and_hold_nothing_back() {
    let jobs = "id: a\ntype: noop\noverlap: allow\nworker_group: gpu\n---\nid: b\ntype: noop\noverlap: allow\n";
    let r = rig(jobs, QueueConfig::default());
    // Unrestricted (the embedded pool) until a leader says otherwise.
    let held = r.enqueue(2);
    let first = r.claim().await;
    assert_eq!(first.run.id, held[0], "served before the groups were known");
    r.queue.set_served_groups(Default::default());
    // `gpu` is not served: its run waits, the ungrouped one goes by.
    let plain = r.queue.enqueue(vec![NewRun::manual("b", json!({}))]);
    assert_eq!(r.claim().await.run.id, plain[0]);
    let none = tokio::time::timeout(Duration::from_millis(10), r.queue.claim()).await;
    assert!(none.is_err(), "a run of an unserved group was handed out");
    assert_eq!(
        r.queue.run_status(&held[1]).map(|(s, _)| s),
        Some(RunStatus::Queued)
    );
    // A gpu worker is live: the held run lines up again.
    r.queue.set_served_groups([("gpu".to_string(), 8)].into());
    assert_eq!(r.claim().await.run.id, held[1]);
}

/// A group's window (its workers' slots, as the leader sizes it) bounds
/// its running runs: a burst of the group waits queued past it, the
/// ungrouped run behind the burst goes by, and each run of the group that
/// ends lets exactly one more start.
#[tokio::test(start_paused = true)]
async fn a_group_at_its_window_waits_without_holding_back_other_runs() {
    let jobs = "id: a\ntype: noop\noverlap: allow\nworker_group: gpu\n---\nid: b\ntype: noop\noverlap: allow\n";
    let r = rig(jobs, QueueConfig::default());
    r.queue.set_served_groups([("gpu".to_string(), 2)].into());
    let gpu = r.enqueue(5);
    let plain = r.queue.enqueue(vec![NewRun::manual("b", json!({}))]);
    let first = r.claim().await;
    let second = r.claim().await;
    assert_eq!([&first.run.id, &second.run.id], [&gpu[0], &gpu[1]]);
    assert_eq!(
        r.claim().await.run.id,
        plain[0],
        "the full group held it back"
    );
    let none = tokio::time::timeout(Duration::from_millis(10), r.queue.claim()).await;
    assert!(
        none.is_err(),
        "a third gpu run started past the window of 2"
    );
    assert_eq!(
        r.queue.run_status(&gpu[2]).map(|(s, _)| s),
        Some(RunStatus::Queued)
    );
    // One ends: one more (the next in line) may start, not two.
    r.queue.finish(&first.run.id, Outcome::Succeeded(json!({})));
    assert_eq!(r.claim().await.run.id, gpu[2]);
    let none = tokio::time::timeout(Duration::from_millis(10), r.queue.claim()).await;
    assert!(
        none.is_err(),
        "the window of 2 was passed after a run ended"
    );
    // The group's workers grow: the window does, and the rest start.
    r.queue.set_served_groups([("gpu".to_string(), 4)].into());
    let mut rest = vec![r.claim().await.run.id, r.claim().await.run.id];
    rest.sort();
    assert_eq!(rest, [gpu[3].clone(), gpu[4].clone()]);
}
