//! One suite of store semantics, run against both backends: the embedded
//! SQLite file and a real redis-server (each test gets its own key prefix
//! on a shared server; the restart test gets a server of its own).

use std::collections::HashMap;
use std::time::Duration;

use multijob::spec::model::Kind;
use multijob::spec::snapshot::Snapshot;
use multijob::store::output::{OutputChunk, OutputStream};
use multijob::store::redis::RedisStore;
use multijob::store::runs::{
    Approval, ApprovalStatus, FailureState, InboxCommand, Run, RunQuery, RunStatus,
};
use multijob::store::{
    EventQuery, KvOp, Mutation, NewEvent, ResourceWrites, RevisionStatus, Store,
};
use multijob::testkit::RedisServer;
use serde_json::json;

/// Where a test's store lives; `open` may be called again (a reopen).
enum Backend {
    Sqlite(tempfile::TempDir),
    /// Each test starts its own server and stops it when done (a server
    /// shared through a static was never dropped, so it outlived the run).
    Redis {
        _server: RedisServer,
        url: String,
        prefix: String,
    },
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    fn redis() -> Backend {
        let server = RedisServer::start().expect("redis-server");
        Backend::Redis {
            url: server.url(),
            prefix: format!("{{mj-{}}}:", uuid::Uuid::now_v7().simple()),
            _server: server,
        }
    }

    async fn open(&self) -> Store {
        match self {
            Backend::Sqlite(dir) => Store::open_sqlite(&dir.path().join("state.db")).expect("open"),
            Backend::Redis { url, prefix, .. } => Store::Redis(
                RedisStore::open_with_prefix(url, prefix)
                    .await
                    .expect("open redis"),
            ),
        }
    }
}

/// Each check runs once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::sqlite()).await; })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(&super::Backend::redis()).await; })*
        }
    };
}

conformance!(
    apply_then_reopen_keeps_the_snapshot_and_history,
    concurrent_appends_from_two_handles_get_increasing_ids_and_filters_work,
    subscribers_see_committed_events_in_order,
    a_subscriber_sees_its_own_events_and_others_in_order,
    runs_list_page_filter_and_count,
    prune_runs_keeps_the_newest_and_active_ones,
    pruning_frees_each_runs_own_key_whatever_its_output_holds,
    prune_runs_keeps_n_finished_runs_however_many_are_active,
    a_second_run_with_a_taken_run_key_is_refused,
    failure_states_job_slots_and_approvals,
    kv_get_set_incr_delete_and_ttl,
    kv_set_if_absent_from_many_handles_at_once_agrees_on_one_value,
    kv_count_up_to_a_limit_from_many_handles_never_passes_it,
    inbox_post_read_and_done,
    inbox_progress_is_kept_until_the_command_is_done,
    recorded_runs_names_the_runs_with_a_record,
    flush_waits_for_everything_submitted_before_in_order,
    prune_events_and_count_them_by_type,
    a_run_another_handle_wrote_is_updated_in_place,
    a_manual_run_written_again_as_new_is_kept_once,
    output_chunks_read_in_order_from_a_position_and_go_with_their_run,
);

use multijob::testkit::{revision_record as revision, snapshot_of as snapshot};

fn run(id: &str, job: &str, status: RunStatus) -> Run {
    multijob::testkit::sample_run(id, job, &format!("key-{id}"), status)
}

/// Run counts by job and status, sorted.
async fn counts_of(store: &Store) -> Vec<(String, String, u64)> {
    let mut counts = store.run_counts().await.unwrap();
    counts.sort();
    counts
}

/// Expected run counts, as [`counts_of`] gives them.
fn counted(rows: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    rows.iter()
        .map(|(job, status, n)| (job.to_string(), status.to_string(), *n))
        .collect()
}

/// The ids of the runs a query lists, in its order.
async fn run_ids(store: &Store, query: RunQuery) -> Vec<String> {
    store
        .runs(query)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.id)
        .collect()
}

fn put(r: &Run) -> Mutation {
    Mutation::PutRun(Box::new(r.clone()))
}

fn all_events() -> EventQuery {
    EventQuery {
        after: 0,
        limit: 10_000,
        ..Default::default()
    }
}

async fn apply_then_reopen_keeps_the_snapshot_and_history(b: &Backend) {
    let desired = snapshot("id: a\ntype: noop\n---\nkind: Flow\nid: lane\nmax_active_runs: 2\n");
    {
        let store = b.open().await;
        let writes = ResourceWrites::between(&Snapshot::default(), &desired);
        let (seq, events) = store
            .apply_revision(
                revision("r1", RevisionStatus::Applied),
                writes,
                vec![
                    NewEvent::new("reconcile.applied", json!({})).job("a"),
                    NewEvent::new("job.created", json!({})).job("a"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(seq, 1);
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        let (seq, _) = store
            .reject_revision(
                revision("r2", RevisionStatus::Rejected),
                vec![NewEvent::new("reconcile.rejected", json!({}))],
            )
            .await
            .unwrap();
        assert_eq!(seq, 2);
    }
    let store = b.open().await;
    let applied = store.applied().await.unwrap();
    assert_eq!(applied.snapshot, desired);
    let rev = applied.revision.expect("applied revision");
    assert_eq!((rev.id.as_str(), rev.seq), ("r1", 1));
    let history = store.revisions(0, 10).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|r| (r.id.as_str(), r.seq, r.status))
            .collect::<Vec<_>>(),
        [
            ("r2", 2, RevisionStatus::Rejected),
            ("r1", 1, RevisionStatus::Applied)
        ]
    );
    assert_eq!(store.revisions(2, 10).await.unwrap().len(), 1, "before 2");
    assert_eq!(store.revisions(0, 1).await.unwrap()[0].id, "r2", "limit");
    // A rejected revision changed nothing; a delete removes the row.
    let smaller = snapshot("id: a\ntype: noop\n");
    let writes = ResourceWrites::between(&desired, &smaller);
    assert_eq!(writes.deletes, vec![(Kind::Flow, "lane".to_string())]);
    store
        .apply_revision(revision("r3", RevisionStatus::Applied), writes, vec![])
        .await
        .unwrap();
    let applied = store.applied().await.unwrap();
    assert_eq!(applied.snapshot, smaller);
    assert_eq!(applied.revision.unwrap().seq, 3);
    assert_eq!(store.last_event_id().await.unwrap(), 3);
}

async fn concurrent_appends_from_two_handles_get_increasing_ids_and_filters_work(b: &Backend) {
    let (one, two) = (b.open().await, b.open().await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = if i % 3 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            let t = if i % 2 == 0 {
                "run.queued"
            } else {
                "scheduler.pressure_on"
            };
            s.append_events(vec![
                NewEvent::new(t, json!({"i": i})).job(format!("j{}", i % 5)),
            ])
            .await
            .unwrap()
        }));
    }
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap());
    }
    let all = one.events(all_events()).await.unwrap();
    assert_eq!(all.len(), 50);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    returned.sort_by_key(|e| e.id);
    assert_eq!(returned, all, "ids returned are the ids stored");
    assert_eq!(two.last_event_id().await.unwrap(), all[49].id);
    let page = two
        .events(EventQuery {
            after: all[9].id,
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        all[10..15].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let sched = one
        .events(EventQuery {
            event_type: Some("scheduler.*".into()),
            ..all_events()
        })
        .await
        .unwrap();
    assert_eq!(sched.len(), 25);
    let exact = one
        .events(EventQuery {
            event_type: Some("run.queued".into()),
            limit: 3,
            ..all_events()
        })
        .await
        .unwrap();
    assert_eq!(exact.len(), 3);
    assert!(exact.iter().all(|e| e.event_type == "run.queued"));
    let job = one
        .events(EventQuery {
            job_id: Some("j1".into()),
            ..all_events()
        })
        .await
        .unwrap();
    assert_eq!(job.len(), 10);
    assert!(job.iter().all(|e| e.job_id.as_deref() == Some("j1")));
}

/// The next `n` events of a subscription, each within 5 s.
async fn receive(
    live: &mut tokio::sync::broadcast::Receiver<multijob::store::SharedEvent>,
    n: usize,
) -> Vec<multijob::store::Event> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .expect("an event within 5 s")
            .expect("not lagged");
        seen.push((*e).clone());
    }
    seen
}

/// A subscriber's own writes (on Redis, handed to its tail from memory)
/// and another handle's, interleaved: one order, the stored one.
async fn a_subscriber_sees_its_own_events_and_others_in_order(b: &Backend) {
    let own = b.open().await;
    // SQLite's subscribers see their own handle's events only.
    let other = if matches!(b, Backend::Sqlite(_)) {
        own.clone()
    } else {
        b.open().await
    };
    let mut live = own.subscribe();
    for i in 0..30 {
        let by = if i % 3 == 2 { &other } else { &own };
        by.submit(vec![
            Mutation::Event(NewEvent::new(
                "run.queued",
                json!({"i": i, "x": 0.1 * i as f64}),
            )),
            Mutation::Event(NewEvent::new("run.started", json!({"i": i})).run(format!("r{i}"))),
        ])
        .unwrap();
        if i % 5 == 0 {
            by.flush().await.unwrap();
        }
    }
    own.flush().await.unwrap();
    other.flush().await.unwrap();
    let seen = receive(&mut live, 60).await;
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "{seen:?}");
    assert_eq!(seen, own.events(all_events()).await.unwrap());
}

async fn subscribers_see_committed_events_in_order(b: &Backend) {
    let (reader, writer) = (b.open().await, b.open().await);
    let mut live = reader.subscribe();
    // The other handle (for Redis: another connection, as another process).
    let other = if matches!(b, Backend::Sqlite(_)) {
        reader.clone()
    } else {
        writer.clone()
    };
    for i in 0..10 {
        other
            .append_events(vec![NewEvent::new("run.queued", json!({"i": i}))])
            .await
            .unwrap();
        other
            .submit(vec![Mutation::Event(
                NewEvent::new("run.started", json!({"i": i})).run(format!("r{i}")),
            )])
            .unwrap();
    }
    other.flush().await.unwrap();
    let seen = receive(&mut live, 20).await;
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "{seen:?}");
    assert_eq!(seen, reader.events(all_events()).await.unwrap());
    assert_eq!(
        seen.iter().filter(|e| e.run_id.is_some()).count(),
        10,
        "run ids kept"
    );
}

async fn runs_list_page_filter_and_count(b: &Backend) {
    let store = b.open().await;
    let mut runs = Vec::new();
    for i in 0..6 {
        let status = if i < 4 {
            RunStatus::Succeeded
        } else {
            RunStatus::Queued
        };
        runs.push(run(
            &format!("r{i}"),
            if i % 2 == 0 { "a" } else { "b" },
            status,
        ));
    }
    store.submit(runs.iter().map(put).collect()).unwrap();
    store.flush().await.unwrap();
    // SQLite counts a batch done just after it answers the flush.
    store.wait_for_backlog(0).await;
    assert_eq!(store.backlog(), 0);
    let (seq0, r0) = store.run("r0").await.unwrap().expect("r0");
    assert_eq!(r0, runs[0]);
    assert!(store.run("nope").await.unwrap().is_none());
    let newest = store
        .runs(RunQuery {
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids = |v: &[(i64, Run)]| v.iter().map(|(_, r)| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&newest), ["r5", "r4", "r3", "r2"]);
    assert!(newest.windows(2).all(|w| w[0].0 > w[1].0));
    let next = store
        .runs(RunQuery {
            limit: 4,
            before: Some(newest[3].0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&next), ["r1", "r0"]);
    assert_eq!(next[1].0, seq0);
    let a = store
        .runs(RunQuery {
            job_id: Some("a".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&a), ["r4", "r2", "r0"]);
    let queued = store
        .runs(RunQuery {
            status: Some(RunStatus::Queued),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&queued), ["r5", "r4"]);
    let b_done = store
        .runs(RunQuery {
            job_id: Some("b".into()),
            status: Some(RunStatus::Succeeded),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&b_done), ["r3"]);
    // Updates keep the seq and move the run between statuses.
    let mut started = runs[4].clone();
    started.status = RunStatus::Running;
    let mut done = runs[5].clone();
    done.status = RunStatus::Failed;
    store.submit(vec![put(&started), put(&done)]).unwrap();
    store.flush().await.unwrap();
    let active = store.active_runs().await.unwrap();
    assert_eq!(active, vec![started.clone()]);
    let by_status = |status| {
        let store = store.clone();
        async move {
            let found = store
                .runs(RunQuery {
                    status: Some(status),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            ids(&found)
        }
    };
    assert_eq!(by_status(RunStatus::Running).await, ["r4"]);
    assert!(by_status(RunStatus::Queued).await.is_empty());
    assert_eq!(by_status(RunStatus::Failed).await, ["r5"]);
    assert_eq!(
        by_status(RunStatus::Succeeded).await,
        ["r3", "r2", "r1", "r0"]
    );
    let counts = counts_of(&store).await;
    assert_eq!(
        counts,
        counted(&[
            ("a", "running", 1),
            ("a", "succeeded", 2),
            ("b", "failed", 1),
            ("b", "succeeded", 2)
        ])
    );
    let last = store
        .last_runs(vec!["a".into(), "b".into(), "none".into()])
        .await
        .unwrap();
    assert_eq!(
        last.iter()
            .map(|(j, r)| (j.as_str(), r.id.as_str()))
            .collect::<HashMap<_, _>>(),
        HashMap::from([("a", "r4"), ("b", "r5")])
    );
    assert_eq!(store.run("r4").await.unwrap().unwrap().0, newest[1].0);
}

/// Keep the newest `keep` finished runs of `job`, then every run's id,
/// newest first.
async fn prune_and_list(store: &Store, job: &str, keep: usize) -> Vec<String> {
    store
        .submit(vec![Mutation::PruneRuns {
            job_id: job.into(),
            keep,
        }])
        .unwrap();
    store.flush().await.unwrap();
    run_ids(
        store,
        RunQuery {
            limit: 100,
            ..Default::default()
        },
    )
    .await
}

async fn prune_runs_keeps_the_newest_and_active_ones(b: &Backend) {
    let store = b.open().await;
    let mut all = Vec::new();
    for i in 0..8 {
        // r1 stays active however old it gets.
        let status = if i == 1 {
            RunStatus::Retrying
        } else {
            RunStatus::Succeeded
        };
        all.push(run(&format!("r{i}"), "a", status));
    }
    all.push(run("other", "b", RunStatus::Succeeded));
    store.submit(all.iter().map(put).collect()).unwrap();
    let left = prune_and_list(&store, "a", 3).await;
    assert_eq!(left, ["other", "r7", "r6", "r5", "r1"]);
    let counts = store.run_counts().await.unwrap();
    assert!(
        counts.contains(&("a".into(), "succeeded".into(), 3)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("a".into(), "retrying".into(), 1)),
        "{counts:?}"
    );
    // A pruned run's key is free again, as in SQLite.
    store
        .submit(vec![put(&run("r0", "a", RunStatus::Queued))])
        .unwrap();
    store.flush().await.unwrap();
    assert!(store.run("r0").await.unwrap().is_some());
}

async fn prune_runs_keeps_n_finished_runs_however_many_are_active(b: &Backend) {
    // Three long runs newer than every finished one: `--keep-runs 3` must
    // still keep three finished runs, not none.
    let store = b.open().await;
    let mut all = Vec::new();
    for i in 0..8 {
        let status = if i >= 5 {
            RunStatus::Running
        } else {
            RunStatus::Failed
        };
        all.push(run(&format!("r{i}"), "a", status));
    }
    store.submit(all.iter().map(put).collect()).unwrap();
    store.flush().await.unwrap();
    // A run that finishes in the batch that prunes counts as finished.
    let mut r5 = all[5].clone();
    r5.status = RunStatus::Succeeded;
    store
        .submit(vec![
            put(&r5),
            Mutation::PruneRuns {
                job_id: "a".into(),
                keep: 3,
            },
        ])
        .unwrap();
    store.flush().await.unwrap();
    let left = run_ids(
        &store,
        RunQuery {
            limit: 100,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(left, ["r7", "r6", "r5", "r4", "r3"]);
    // Counted by the status each pruned run ended in.
    let mut counts = store.run_counts().await.unwrap();
    counts.sort();
    let expected: Vec<(String, String, u64)> = [("failed", 2), ("running", 2), ("succeeded", 1)]
        .into_iter()
        .map(|(s, n)| ("a".to_string(), s.to_string(), n))
        .collect();
    assert_eq!(counts, expected);
}

/// Pruning frees the run key of each run it deletes, read from the run's
/// own record (on Redis, from its text): not a `run_key` its output or
/// inputs hold, and also when the key needs escaping in JSON.
async fn pruning_frees_each_runs_own_key_whatever_its_output_holds(b: &Backend) {
    let store = b.open().await;
    let decoy = run("decoy", "b", RunStatus::Queued);
    let mut runs = vec![decoy.clone()];
    for i in 0..4 {
        let mut r = run(&format!("p{i}"), "a", RunStatus::Succeeded);
        if i % 2 == 1 {
            r.run_key = format!("a@\"quoted\\{i}\"");
        }
        let held: serde_json::Value = serde_json::from_str(&format!(
            r#"{{"a":1,"run_key":"{}","due_at":null,"status":"queued"}}"#,
            decoy.run_key
        ))
        .unwrap();
        r.output = Some(json!({"x": held.clone(), "last": held.clone()}));
        r.inputs = held;
        runs.push(r);
    }
    store.submit(runs.iter().map(put).collect()).unwrap();
    let left = prune_and_list(&store, "a", 1).await;
    assert_eq!(left, ["p3", "decoy"]);
    // The pruned runs' keys are free again; the decoy's is still taken.
    let mut again = Vec::new();
    for (i, pruned) in runs[1..4].iter().enumerate() {
        let mut r = run(&format!("q{i}"), "a", RunStatus::Queued);
        r.run_key = pruned.run_key.clone();
        again.push(r);
    }
    let mut second = run("decoy2", "b", RunStatus::Queued);
    second.run_key = decoy.run_key.clone();
    again.push(second);
    for r in &again {
        store.submit(vec![put(r)]).unwrap();
        store.flush().await.unwrap();
    }
    for id in ["q0", "q1", "q2"] {
        assert!(
            store.run(id).await.unwrap().is_some(),
            "{id}: its key was freed"
        );
    }
    assert!(
        store.run("decoy2").await.unwrap().is_none(),
        "the decoy's key stays taken"
    );
    assert_eq!(
        counts_of(&store).await,
        [
            ("a".into(), "queued".into(), 3),
            ("a".into(), "succeeded".into(), 1),
            ("b".into(), "queued".into(), 1),
        ]
    );
}

async fn a_second_run_with_a_taken_run_key_is_refused(b: &Backend) {
    let store = b.open().await;
    let first = run("first", "a", RunStatus::Queued);
    let mut second = run("second", "a", RunStatus::Queued);
    second.run_key = first.run_key.clone();
    store.submit(vec![put(&first)]).unwrap();
    store.flush().await.unwrap();
    store.submit(vec![put(&second)]).unwrap();
    let mut again = first.clone();
    again.status = RunStatus::Running;
    store.submit(vec![put(&again)]).unwrap();
    store.flush().await.unwrap();
    assert!(store.run("second").await.unwrap().is_none(), "refused");
    assert_eq!(store.run("first").await.unwrap().unwrap().1, again);
    assert_eq!(store.active_runs().await.unwrap().len(), 1);
}

async fn failure_states_job_slots_and_approvals(b: &Backend) {
    let store = b.open().await;
    let state = FailureState {
        consecutive_failures: 2,
        cooldown_until: Some("2030-01-01T00:00:00.000Z".into()),
        last_error: Some("boom".into()),
    };
    let approval = |id: &str, status, at: &str| Approval {
        id: id.into(),
        run_id: format!("run-{id}"),
        job_id: "a".into(),
        step_id: None,
        reason: Some("why".into()),
        status,
        requested_at: at.into(),
        decided_at: None,
        decided_by: None,
        note: None,
    };
    store
        .submit(vec![
            Mutation::Failure("a".into(), FailureState::default()),
            Mutation::Failure("a".into(), state.clone()),
            Mutation::JobSlot("a".into(), "2025-01-01T00:02:00.000Z".into()),
            Mutation::JobSlot("b".into(), "2025-01-01T00:00:00.000Z".into()),
            Mutation::PutApproval(approval(
                "p1",
                ApprovalStatus::Pending,
                "2025-01-01T00:00:00Z",
            )),
            Mutation::PutApproval(approval(
                "p2",
                ApprovalStatus::Pending,
                "2025-01-02T00:00:00Z",
            )),
            Mutation::PutApproval(approval(
                "d1",
                ApprovalStatus::Approved,
                "2025-01-03T00:00:00Z",
            )),
        ])
        .unwrap();
    store.flush().await.unwrap();
    // A slot never moves back.
    store
        .submit(vec![Mutation::JobSlot(
            "a".into(),
            "2025-01-01T00:01:00.000Z".into(),
        )])
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.failure_states().await.unwrap(), [("a".into(), state)]);
    let mut slots = store.job_slots().await.unwrap();
    slots.sort();
    assert_eq!(
        slots,
        [
            ("a".to_string(), "2025-01-01T00:02:00.000Z".to_string()),
            ("b".to_string(), "2025-01-01T00:00:00.000Z".to_string())
        ]
    );
    let ids = |v: Vec<Approval>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids(store.approvals(true).await.unwrap()), ["p2", "p1"]);
    assert_eq!(
        ids(store.approvals(false).await.unwrap()),
        ["p2", "p1", "d1"]
    );
    let mut decided = approval("p1", ApprovalStatus::Rejected, "2025-01-01T00:00:00Z");
    decided.decided_by = Some("cli:me".into());
    store
        .submit(vec![Mutation::PutApproval(decided.clone())])
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(ids(store.approvals(true).await.unwrap()), ["p2"]);
    assert!(store.approvals(false).await.unwrap().contains(&decided));
}

async fn kv_get_set_incr_delete_and_ttl(b: &Backend) {
    let store = b.open().await;
    let kv = |k: &'static str, op| {
        let s = store.clone();
        async move { s.kv(k, op).await }
    };
    assert_eq!(kv("a", KvOp::Get).await.unwrap(), None);
    let v = json!({"x": [1, 2]});
    let set = |value, ttl_sec| KvOp::Set { value, ttl_sec };
    kv("a", set(v.clone(), None)).await.unwrap();
    assert_eq!(kv("a", KvOp::Get).await.unwrap(), Some(v.clone()));
    assert_eq!(kv("n", KvOp::Incr { by: 2 }).await.unwrap(), Some(json!(2)));
    assert_eq!(
        kv("n", KvOp::Incr { by: -5 }).await.unwrap(),
        Some(json!(-3))
    );
    let not_a_number = kv("a", KvOp::Incr { by: 1 }).await;
    assert!(
        matches!(
            not_a_number,
            Err(multijob::store::StoreError::Corrupt { .. })
        ),
        "{not_a_number:?}"
    );
    assert_eq!(kv("a", KvOp::Delete).await.unwrap(), Some(v));
    assert_eq!(kv("a", KvOp::Get).await.unwrap(), None);
    assert_eq!(kv("a", KvOp::Delete).await.unwrap(), None);
    kv("t", set(json!(1), Some(1))).await.unwrap();
    assert_eq!(kv("t", KvOp::Get).await.unwrap(), Some(json!(1)));
    // Incr drops a ttl (SQLite writes it without one).
    kv("i", set(json!(1), Some(1))).await.unwrap();
    kv("i", KvOp::Incr { by: 1 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(kv("t", KvOp::Get).await.unwrap(), None, "expired");
    assert_eq!(kv("i", KvOp::Get).await.unwrap(), Some(json!(2)));
    // A kv call sees every write submitted before it, flushed or not.
    store
        .submit(vec![Mutation::PutKv {
            key: "p".into(),
            value: json!("v"),
        }])
        .unwrap();
    assert_eq!(kv("p", KvOp::Get).await.unwrap(), Some(json!("v")));
}

/// A delivery id claimed by two replicas at once: one value stands, and
/// every claimant reads it; it expires with its ttl.
async fn kv_set_if_absent_from_many_handles_at_once_agrees_on_one_value(b: &Backend) {
    let mut handles = Vec::new();
    // Redis: one handle per replica. The embedded store has one writer
    // per file (the daemon's lock), so claims share its handle.
    let first = b.open().await;
    for i in 0..8 {
        let store = match b {
            Backend::Sqlite(_) => first.clone(),
            Backend::Redis { .. } => b.open().await,
        };
        handles.push(tokio::spawn(async move {
            let op = KvOp::SetIfAbsent {
                value: json!(format!("run-{i}")),
                ttl_sec: 1,
            };
            store.kv("delivery", op).await.unwrap()
        }));
    }
    let mut standing = Vec::new();
    for h in handles {
        standing.push(h.await.unwrap());
    }
    standing.dedup();
    assert_eq!(standing.len(), 1, "{standing:?}");
    let store = first;
    assert_eq!(store.kv("delivery", KvOp::Get).await.unwrap(), standing[0]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        store.kv("delivery", KvOp::Get).await.unwrap(),
        None,
        "expired"
    );
    let again = KvOp::SetIfAbsent {
        value: json!("later"),
        ttl_sec: 60,
    };
    assert_eq!(
        store.kv("delivery", again).await.unwrap(),
        Some(json!("later"))
    );
}

/// A daily budget's counter taken by many handles at once: exactly
/// `limit` units are granted, a refused call changes nothing, the key has
/// a ttl, and a count without a limit always adds.
async fn kv_count_up_to_a_limit_from_many_handles_never_passes_it(b: &Backend) {
    let first = b.open().await;
    let count = |by, limit: Option<i64>| KvOp::Count {
        by,
        limit,
        ttl_sec: 1,
    };
    let mut handles = Vec::new();
    for _ in 0..12 {
        let store = match b {
            Backend::Sqlite(_) => first.clone(),
            Backend::Redis { .. } => b.open().await,
        };
        handles.push(tokio::spawn(async move {
            let op = KvOp::Count {
                by: 1,
                limit: Some(5),
                ttl_sec: 60,
            };
            store.kv("budget", op).await.unwrap().unwrap()
        }));
    }
    let mut granted = 0;
    for h in handles {
        let v = h.await.unwrap();
        if v["counted"] == json!(true) {
            granted += 1;
        } else {
            assert_eq!(v["count"], json!(5), "refused at the limit: {v}");
        }
    }
    assert_eq!(granted, 5);
    let store = first;
    assert_eq!(store.kv("budget", KvOp::Get).await.unwrap(), Some(json!(5)));
    // Over the limit by 2: refused, nothing kept.
    let refused = store.kv("c", count(2, Some(1))).await.unwrap();
    assert_eq!(refused, Some(json!({"counted": false, "count": 0})));
    assert_eq!(store.kv("c", KvOp::Get).await.unwrap(), None);
    let free = store.kv("c", count(7, None)).await.unwrap();
    assert_eq!(free, Some(json!({"counted": true, "count": 7})));
    // A string is not a count.
    store
        .kv(
            "s",
            KvOp::Set {
                value: json!("x"),
                ttl_sec: None,
            },
        )
        .await
        .unwrap();
    let bad = store.kv("s", count(1, None)).await;
    assert!(
        matches!(bad, Err(multijob::store::StoreError::Corrupt { .. })),
        "{bad:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.kv("c", KvOp::Get).await.unwrap(), None, "expired");
}

async fn inbox_post_read_and_done(b: &Backend) {
    let store = b.open().await;
    let trigger = InboxCommand::Trigger {
        run_id: "r1".into(),
        job_id: "a".into(),
        inputs: json!({"k": 1}),
        count: 1,
    };
    let decide = InboxCommand::Decide {
        approval_id: "p1".into(),
        approve: true,
        by: "cli:me".into(),
        note: Some("looked at the diff".into()),
    };
    let first = store.post_to_inbox(&trigger).await.unwrap();
    let second = b.open().await.post_to_inbox(&decide).await.unwrap();
    assert!(second > first);
    assert_eq!(
        store.inbox(0).await.unwrap(),
        [(first, trigger), (second, decide.clone())]
    );
    assert_eq!(
        store.inbox(first).await.unwrap(),
        [(second, decide.clone())]
    );
    store.submit(vec![Mutation::InboxDone(first)]).unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.inbox(0).await.unwrap(), [(second, decide)]);
}

async fn inbox_progress_is_kept_until_the_command_is_done(b: &Backend) {
    let store = b.open().await;
    let burst = InboxCommand::Trigger {
        run_id: "r1".into(),
        job_id: "a".into(),
        inputs: json!({}),
        count: 10_000,
    };
    let id = store.post_to_inbox(&burst).await.unwrap();
    assert_eq!(store.inbox_progress(id).await.unwrap(), 0);
    // Progress only grows, whatever order the writes commit in.
    store
        .submit(vec![
            Mutation::InboxProgress { id, done: 512 },
            Mutation::InboxProgress { id, done: 256 },
        ])
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.inbox_progress(id).await.unwrap(), 512);
    store
        .submit(vec![Mutation::InboxProgress { id, done: 256 }])
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(b.open().await.inbox_progress(id).await.unwrap(), 512);
    // Done: the command and its progress are gone; a late progress write
    // does not bring it back.
    store
        .submit(vec![
            Mutation::InboxDone(id),
            Mutation::InboxProgress { id, done: 768 },
        ])
        .unwrap();
    store.flush().await.unwrap();
    assert!(store.inbox(0).await.unwrap().is_empty());
    assert_eq!(store.inbox_progress(id).await.unwrap(), 0);
}

async fn recorded_runs_names_the_runs_with_a_record(b: &Backend) {
    let store = b.open().await;
    let mut writes = Vec::new();
    for i in 0..600 {
        if i % 3 == 0 {
            writes.push(put(&run(&format!("r-{i}"), "a", RunStatus::Succeeded)));
        }
    }
    store.submit(writes).unwrap();
    store.flush().await.unwrap();
    let asked: Vec<String> = (0..600).map(|i| format!("r-{i}")).collect();
    let found = store.recorded_runs(asked).await.unwrap();
    assert_eq!(found.len(), 200);
    assert!(found.contains("r-0") && found.contains("r-597"));
    assert!(!found.contains("r-1") && !found.contains("r-599"));
    assert!(store.recorded_runs(Vec::new()).await.unwrap().is_empty());
}

async fn flush_waits_for_everything_submitted_before_in_order(b: &Backend) {
    let store = b.open().await;
    for i in 0..300 {
        store
            .submit(vec![Mutation::Event(NewEvent::new(
                "run.queued",
                json!({"i": i}),
            ))])
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_for_backlog(0).await;
    assert_eq!(store.backlog(), 0);
    let all = store.events(all_events()).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.data["i"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>(),
        "submission order"
    );
}

/// A writer indexes the runs it wrote itself without reading them back
/// (Redis); a run another handle wrote (an earlier leader) is read first.
async fn a_run_another_handle_wrote_is_updated_in_place(b: &Backend) {
    let (one, two) = (b.open().await, b.open().await);
    let first = run("x1", "a", RunStatus::Queued);
    one.submit(vec![put(&first)]).unwrap();
    one.flush().await.unwrap();
    let (seq, _) = one.run("x1").await.unwrap().expect("x1");
    // Two writes from the other handle: one finishes x1, one is new.
    let mut done = first.clone();
    done.status = RunStatus::Succeeded;
    let fresh = run("x2", "a", RunStatus::Running);
    two.submit(vec![put(&done), put(&fresh)]).unwrap();
    two.flush().await.unwrap();
    // And the first handle moves its own run on again.
    let mut again = done.clone();
    again.status = RunStatus::Failed;
    one.submit(vec![put(&again)]).unwrap();
    one.flush().await.unwrap();
    for store in [&one, &two] {
        store.wait_for_backlog(0).await;
        let (s, r) = store.run("x1").await.unwrap().expect("x1");
        assert_eq!((s, r.status), (seq, RunStatus::Failed), "seq kept");
        let counts = counts_of(store).await;
        assert_eq!(counts, counted(&[("a", "failed", 1), ("a", "running", 1)]));
        let active = store.active_runs().await.unwrap();
        assert_eq!(active, vec![fresh.clone()]);
        let failed = store
            .runs(RunQuery {
                status: Some(RunStatus::Failed),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert!(
            store
                .runs(RunQuery {
                    status: Some(RunStatus::Succeeded),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// A manual run's key names the run (`manual:<id>`). A handle that does
/// not know the run (a new leader handling an inbox command again) writes
/// it as new: it is updated in place, once, and pruned like any other.
async fn a_manual_run_written_again_as_new_is_kept_once(b: &Backend) {
    let manual = |id: &str, status| {
        let mut r = run(id, "a", status);
        r.run_key = format!("manual:{id}");
        r
    };
    let (one, two) = (b.open().await, b.open().await);
    let first = manual("m1", RunStatus::Succeeded);
    one.submit(vec![put(&first)]).unwrap();
    one.flush().await.unwrap();
    let (seq, _) = one.run("m1").await.unwrap().expect("m1");
    let again = manual("m1", RunStatus::Queued);
    let fresh = manual("m2", RunStatus::Queued);
    two.submit(vec![put(&again), put(&fresh)]).unwrap();
    two.flush().await.unwrap();
    // Both new to a third handle, in one batch with a run it never saw.
    let three = b.open().await;
    let mut done = fresh.clone();
    done.status = RunStatus::Succeeded;
    three
        .submit(vec![put(&done), put(&manual("m3", RunStatus::Succeeded))])
        .unwrap();
    three.flush().await.unwrap();
    let (s, r) = three.run("m1").await.unwrap().expect("m1");
    assert_eq!((s, r), (seq, again), "seq kept, record replaced");
    let counts = counts_of(&three).await;
    assert_eq!(
        counts,
        counted(&[("a", "queued", 1), ("a", "succeeded", 2)])
    );
    let all = || RunQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(run_ids(&three, all()).await, ["m3", "m2", "m1"]);
    three
        .submit(vec![Mutation::PruneRuns {
            job_id: "a".into(),
            keep: 1,
        }])
        .unwrap();
    three.flush().await.unwrap();
    // m1 is active (queued again): kept; m2 pruned.
    assert_eq!(run_ids(&three, all()).await, ["m3", "m1"]);
    let counts = counts_of(&three).await;
    assert_eq!(
        counts,
        counted(&[("a", "queued", 1), ("a", "succeeded", 1)])
    );
}

async fn prune_events_and_count_them_by_type(b: &Backend) {
    let store = b.open().await;
    let at = |t: &str, when: &str| {
        let mut e = NewEvent::new(t, json!({}));
        e.at = when.into();
        e
    };
    // One write each: Redis keeps a batch's events in one stream entry and
    // prunes whole entries (a batch's events are milliseconds apart).
    for e in [
        at("run.queued", "2025-01-01T00:00:00.000Z"),
        at("run.queued", "2025-01-02T00:00:00.000Z"),
        at("run.failed", "2025-01-03T00:00:00.000Z"),
        at("run.queued", "2025-01-04T00:00:00.000Z"),
    ] {
        store.append_events(vec![e]).await.unwrap();
    }
    assert_eq!(
        store
            .event_counts_since("2025-01-02T00:00:00.000Z")
            .await
            .unwrap(),
        [("run.failed".to_string(), 1), ("run.queued".to_string(), 2)]
    );
    store
        .submit(vec![Mutation::PruneEvents {
            before: "2025-01-03T00:00:00.000Z".into(),
        }])
        .unwrap();
    store.flush().await.unwrap();
    let left = store.events(all_events()).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.id).collect::<Vec<_>>(),
        [3, 4],
        "older events dropped, ids kept"
    );
    assert_eq!(store.last_event_id().await.unwrap(), 4);
}

/// What only the Redis store has: restarts, the leader fence, dispatch.
mod redis_only {
    use super::*;
    use ::redis::AsyncCommands;

    /// Fence the store's writes to term `epoch` of `key`, as a leader's are.
    async fn hold_term(r: &RedisStore, key: &str, epoch: u64) {
        let mut c = r.connection();
        let _: () = c.set(r.key(key), epoch).await.unwrap();
        r.set_fence(Some((key.into(), epoch)));
    }

    fn redis_of(store: &Store) -> &RedisStore {
        match store {
            Store::Redis(r) => r,
            other => panic!("not Redis: {other:?}"),
        }
    }

    #[tokio::test]
    async fn keys_of_the_older_run_layout_are_refused_not_misread() {
        let backend = Backend::redis();
        let Backend::Redis { url, prefix, .. } = &backend else {
            unreachable!()
        };
        // A fresh prefix opens (and records its layout), and opens again.
        let store = backend.open().await;
        drop(store);
        let _again = backend.open().await;
        // Runs written by the older version: a run counter, no layout.
        let old = format!("{{mj-{}}}:", uuid::Uuid::now_v7().simple());
        let client = ::redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = c.set(format!("{old}run_seq"), 7).await.unwrap();
        let refused = RedisStore::open_with_prefix(url, &old).await;
        let Err(e) = refused else {
            panic!("a store of the older layout opened")
        };
        assert!(e.to_string().contains("layout"), "{e}");
        assert!(prefix != &old);
    }

    /// Layout 3 kept a `runs:meta` hash beside the records; it opens as
    /// layout 4 without it, its runs read and written as before.
    #[tokio::test]
    async fn a_store_of_layout_3_is_upgraded_in_place() {
        let backend = Backend::redis();
        let store = backend.open().await;
        let first = run("l1", "a", RunStatus::Running);
        store.submit(vec![put(&first)]).unwrap();
        store.flush().await.unwrap();
        let r = redis_of(&store);
        let mut c = r.connection();
        let (layout_key, meta_key) = (r.key("layout"), r.key("runs:meta"));
        let _: () = c.set(&layout_key, "3").await.unwrap();
        let _: () = c.hset(&meta_key, "l1", "a\trunning\tkey-l1").await.unwrap();
        drop(store);
        let store = backend.open().await;
        let layout: String = c.get(&layout_key).await.unwrap();
        let meta: bool = c.exists(&meta_key).await.unwrap();
        assert_eq!((layout.as_str(), meta), ("4", false));
        let mut done = first.clone();
        done.status = RunStatus::Succeeded;
        store.submit(vec![put(&done)]).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.run("l1").await.unwrap().expect("l1").1, done);
        assert_eq!(
            store.run_counts().await.unwrap(),
            [("a".to_string(), "succeeded".to_string(), 1)]
        );
    }

    #[tokio::test]
    async fn kv_sees_earlier_submits_without_a_flush() {
        let backend = Backend::redis();
        let store = backend.open().await;
        store
            .submit(vec![Mutation::PutKv {
                key: "p".into(),
                value: json!("v"),
            }])
            .unwrap();
        assert_eq!(store.kv("p", KvOp::Get).await.unwrap(), Some(json!("v")));
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_a_restart_and_the_store_reconnects() {
        let mut server = RedisServer::start_with(true).expect("redis-server");
        let store = Store::open_redis(&server.url()).await.unwrap();
        let mut live = store.subscribe();
        let r1 = run("r1", "a", RunStatus::Succeeded);
        store
            .submit(vec![
                put(&r1),
                Mutation::Event(NewEvent::new("run.completed", json!({}))),
            ])
            .unwrap();
        store.flush().await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .unwrap()
            .unwrap();
        server.kill();
        // Submitted while Redis is down: the writer retries until it is back.
        let r2 = run("r2", "a", RunStatus::Queued);
        store
            .submit(vec![
                put(&r2),
                Mutation::Event(NewEvent::new("run.queued", json!({}))),
            ])
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.restart().expect("restart");
        tokio::time::timeout(Duration::from_secs(20), store.flush())
            .await
            .expect("flush within 20 s of the restart")
            .unwrap();
        assert_eq!(store.run("r1").await.unwrap().unwrap().1, r1);
        assert_eq!(store.run("r2").await.unwrap().unwrap().1, r2);
        let events = store.events(all_events()).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.id).collect::<Vec<_>>(),
            [1, 2],
            "no event lost or written twice"
        );
        // The tail reconnected and goes on after the last id it saw.
        let second = tokio::time::timeout(Duration::from_secs(15), live.recv())
            .await
            .expect("the tail reconnects")
            .unwrap();
        assert_eq!((first.id, second.id), (1, 2));
        // A reader's call on a dropped connection may fail once; later ones work.
        server.kill();
        server.restart().expect("restart");
        let mut ok = false;
        for _ in 0..50 {
            if store.ping().await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "the store reconnects by itself");
        assert_eq!(store.last_event_id().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_deposed_leader_writes_nothing() {
        let backend = Backend::redis();
        let store = backend.open().await;
        let r = redis_of(&store);
        let mut c = r.connection();
        hold_term(r, "epoch", 1).await;
        let fenced = r.fenced();
        store
            .submit(vec![Mutation::Event(NewEvent::new("a", json!({})))])
            .unwrap();
        store.flush().await.unwrap();
        assert!(!*fenced.borrow());
        // Another process took over.
        let _: () = c.set(r.key("epoch"), 2).await.unwrap();
        store
            .submit(vec![
                Mutation::Event(NewEvent::new("b", json!({}))),
                put(&run("late", "a", RunStatus::Queued)),
            ])
            .unwrap();
        let flushed = store.flush().await;
        assert!(
            matches!(flushed, Err(multijob::store::StoreError::Fenced { .. })),
            "{flushed:?}"
        );
        assert!(*fenced.borrow());
        let applied = store
            .append_events(vec![NewEvent::new("c", json!({}))])
            .await;
        assert!(matches!(
            applied,
            Err(multijob::store::StoreError::Fenced { .. })
        ));
        assert_eq!(store.events(all_events()).await.unwrap().len(), 1);
        assert!(store.run("late").await.unwrap().is_none());
        assert_eq!(store.backlog(), 0, "fenced writes are not pending forever");
    }

    /// The leader (fenced) indexes the runs it wrote from memory; the
    /// indexes and counts must come out as the careful way makes them.
    #[tokio::test]
    async fn the_fenced_writer_moves_its_runs_between_indexes() {
        let backend = Backend::redis();
        let store = backend.open().await;
        let r = redis_of(&store);
        hold_term(r, "leader:epoch", 7).await;
        let mut one = run("f1", "a", RunStatus::Queued);
        let mut two = run("f2", "b", RunStatus::Queued);
        store.submit(vec![put(&one), put(&two)]).unwrap();
        store.flush().await.unwrap();
        let (seq1, _) = store.run("f1").await.unwrap().expect("f1");
        one.status = RunStatus::Running;
        two.status = RunStatus::Cancelled;
        store.submit(vec![put(&one), put(&two)]).unwrap();
        store.flush().await.unwrap();
        one.status = RunStatus::Succeeded;
        let three = run("f3", "a", RunStatus::Queued);
        store.submit(vec![put(&one), put(&three)]).unwrap();
        store.flush().await.unwrap();
        let (seq, got) = store.run("f1").await.unwrap().expect("f1");
        assert_eq!((seq, got), (seq1, one.clone()));
        let counts = counts_of(&store).await;
        assert_eq!(
            counts,
            counted(&[
                ("a", "queued", 1),
                ("a", "succeeded", 1),
                ("b", "cancelled", 1)
            ])
        );
        assert_eq!(store.active_runs().await.unwrap(), vec![three.clone()]);
        let ids = |status| {
            run_ids(
                &store,
                RunQuery {
                    status: Some(status),
                    limit: 10,
                    ..Default::default()
                },
            )
        };
        assert_eq!(ids(RunStatus::Succeeded).await, ["f1"]);
        assert_eq!(ids(RunStatus::Cancelled).await, ["f2"]);
        assert_eq!(ids(RunStatus::Queued).await, ["f3"]);
        assert!(ids(RunStatus::Running).await.is_empty());
        // A run another handle wrote, updated here with a new one: the
        // batch goes the careful way, and numbering resumes after it.
        let other = backend.open().await;
        let foreign = run("g1", "b", RunStatus::Queued);
        other.submit(vec![put(&foreign)]).unwrap();
        other.flush().await.unwrap();
        let mut foreign_done = foreign.clone();
        foreign_done.status = RunStatus::Succeeded;
        let four = run("f4", "a", RunStatus::Queued);
        store.submit(vec![put(&foreign_done), put(&four)]).unwrap();
        store.flush().await.unwrap();
        let five = run("f5", "a", RunStatus::Queued);
        store.submit(vec![put(&five)]).unwrap();
        store.flush().await.unwrap();
        let seq_of = |id: &'static str| {
            let store = store.clone();
            async move { store.run(id).await.unwrap().expect("run").0 }
        };
        let (s3, s4, s5, sg) = (
            seq_of("f3").await,
            seq_of("f4").await,
            seq_of("f5").await,
            seq_of("g1").await,
        );
        assert!(s3 < sg && sg < s4 && s4 < s5, "{s3} {sg} {s4} {s5}");
        assert_eq!(ids(RunStatus::Succeeded).await, ["g1", "f1"]);
        assert_eq!(ids(RunStatus::Queued).await, ["f5", "f4", "f3"]);
        // Another term: the writer forgets, and still writes correctly.
        hold_term(r, "leader:epoch", 8).await;
        let mut three = three;
        three.status = RunStatus::Failed;
        let mut four = four;
        four.status = RunStatus::Failed;
        let mut five = five;
        five.status = RunStatus::Cancelled;
        store
            .submit(vec![put(&three), put(&four), put(&five)])
            .unwrap();
        store.flush().await.unwrap();
        assert_eq!(ids(RunStatus::Failed).await, ["f4", "f3"]);
        assert_eq!(ids(RunStatus::Cancelled).await, ["f5", "f2"]);
        assert!(store.active_runs().await.unwrap().is_empty());
        let counts = counts_of(&store).await;
        assert_eq!(
            counts,
            counted(&[
                ("a", "cancelled", 1),
                ("a", "failed", 2),
                ("a", "succeeded", 1),
                ("b", "cancelled", 1),
                ("b", "succeeded", 1)
            ])
        );
    }

    /// The writer sends a batch while the one before it is still in
    /// flight, assuming that one applies as encoded. When it does not
    /// (a run key taken: the careful way), the second must not apply as
    /// encoded; it is sent again.
    #[tokio::test]
    async fn a_batch_behind_one_that_went_the_careful_way_is_sent_again() {
        let backend = Backend::redis();
        let store = backend.open().await;
        let r = redis_of(&store);
        hold_term(r, "leader:epoch", 9).await;
        let other = backend.open().await;
        let mut holder = run("x1", "a", RunStatus::Queued);
        holder.run_key = "key-shared".into();
        other.submit(vec![put(&holder)]).unwrap();
        other.flush().await.unwrap();
        // Redis holds scripts meanwhile, so both batches are in flight.
        let mut admin = ::redis::Client::open(r.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = ::redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(5000)
            .arg("WRITE")
            .query_async(&mut admin)
            .await
            .unwrap();
        let mut second = run("y1", "a", RunStatus::Queued);
        second.run_key = "key-shared".into();
        let mut third = run("z1", "a", RunStatus::Queued);
        store.submit(vec![put(&second), put(&third)]).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        second.status = RunStatus::Running;
        third.status = RunStatus::Running;
        store.submit(vec![put(&second), put(&third)]).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _: () = ::redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut admin)
            .await
            .unwrap();
        store.flush().await.unwrap();
        assert!(
            store.run("y1").await.unwrap().is_none(),
            "the slot's first run stands"
        );
        assert_eq!(store.run("x1").await.unwrap().expect("x1").1, holder);
        assert_eq!(store.run("z1").await.unwrap().expect("z1").1, third);
        let counts = counts_of(&store).await;
        assert_eq!(counts, counted(&[("a", "queued", 1), ("a", "running", 1)]));
        let active: Vec<String> = store
            .active_runs()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(active, ["x1", "z1"]);
    }

    #[tokio::test]
    async fn dispatch_and_ack_follow_the_run_records() {
        let backend = Backend::redis();
        let store = backend.open().await;
        let r = redis_of(&store);
        let mut c = r.connection();
        let queued = run("d1", "a", RunStatus::Queued);
        // No results group yet: the ack of nothing must not fail the batch.
        store
            .submit(vec![
                put(&queued),
                Mutation::Dispatch {
                    run_id: "d1".into(),
                    group: None,
                },
                Mutation::AckResult {
                    entry_id: "1-1".into(),
                    run_id: "none".into(),
                },
            ])
            .unwrap();
        store.flush().await.unwrap();
        assert!(store.run("d1").await.unwrap().is_some());
        let ready: Vec<(String, HashMap<String, String>)> = ::redis::cmd("XRANGE")
            .arg(r.key("ready"))
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(ready.len(), 1);
        // Runs packed per entry: ids space-separated, then each record in
        // a field of its own, numbered from 0.
        assert_eq!(ready[0].1["runs"], "d1");
        assert_eq!(ready[0].1.len(), 2);
        // As the store keeps it (layout 5: without its default fields).
        let record = multijob::store::redis::record::decode(&ready[0].1["0"]).unwrap();
        assert_eq!(record, queued);
        let keys = multijob::cluster::Keys::new(|n| r.key(n));
        let held = |c: ::redis::aio::ConnectionManager| {
            let keys = keys.clone();
            async move {
                let mut c = c;
                multijob::cluster::leader::dispatched(&mut c, &keys)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(held(c.clone()).await, ["d1".to_string()].into());
        // A worker's result (two runs in one entry, as workers send them),
        // appended as its ready entry goes: the run is still held.
        let results = r.key("results");
        let _: () = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&results)
            .arg("leader")
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await
            .unwrap();
        let result = |run: &str| json!({"run_id": run, "attempt": 1, "outcome": {"kind": "succeeded", "output": null}, "worker": "w"});
        let rs = json!([result("d1"), result("d2")]).to_string();
        let (entry,): (String,) = ::redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&results)
            .arg("*")
            .arg("rs")
            .arg(&rs)
            .cmd("DEL")
            .arg(r.key("ready"))
            .ignore()
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(
            held(c.clone()).await,
            ["d1".to_string(), "d2".to_string()].into()
        );
        // Read by the leader's group, applied, then acknowledged.
        let read: ::redis::streams::StreamReadReply = ::redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("leader")
            .arg("me")
            .arg("STREAMS")
            .arg(&results)
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        let got = multijob::cluster::leader::results_of(&read.keys[0].ids[0]).unwrap();
        assert_eq!(
            got.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["d1", "d2"]
        );
        store
            .submit(vec![Mutation::AckResult {
                entry_id: entry,
                run_id: String::new(),
            }])
            .unwrap();
        store.flush().await.unwrap();
        let pending: (i64, ::redis::Value, ::redis::Value, ::redis::Value) =
            ::redis::cmd("XPENDING")
                .arg(&results)
                .arg("leader")
                .query_async(&mut c)
                .await
                .unwrap();
        assert_eq!(pending.0, 0);
        assert_eq!(c.xlen::<_, i64>(&results).await.unwrap(), 0);
        assert!(held(c.clone()).await.is_empty());
    }

    /// Figures for the README: `cargo test --test store_conformance
    /// writer_throughput -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn writer_throughput() {
        for backend in [Backend::sqlite(), Backend::redis()] {
            let store = backend.open().await;
            let n = 20_000;
            let started = std::time::Instant::now();
            for i in 0..n {
                let r = run(&format!("t{i}"), &format!("j{}", i % 50), RunStatus::Queued);
                store
                    .submit(vec![
                        put(&r),
                        Mutation::Event(NewEvent::new("run.queued", json!({})).run(&r.id)),
                    ])
                    .unwrap();
            }
            store.flush().await.unwrap();
            let took = started.elapsed();
            println!(
                "{}: {n} runs + {n} events in {took:?} = {:.0} mutations/s",
                store.describe(),
                (2 * n) as f64 / took.as_secs_f64()
            );
        }
    }
}

fn chunk(run_id: &str, seq: u32, stream: OutputStream, text: &str) -> OutputChunk {
    OutputChunk {
        pos: 0,
        run_id: run_id.into(),
        attempt: 1,
        seq,
        stream,
        text: text.into(),
        at: "2026-01-01T00:00:00.000Z".into(),
    }
}

async fn output_chunks_read_in_order_from_a_position_and_go_with_their_run(b: &Backend) {
    let store = b.open().await;
    let runs: Vec<Run> = (0..3)
        .map(|i| run(&format!("o{i}"), "a", RunStatus::Succeeded))
        .collect();
    store.submit(runs.iter().map(put).collect()).unwrap();
    store
        .record_output(vec![
            chunk("o0", 0, OutputStream::Stdout, "one\n"),
            chunk("o0", 1, OutputStream::Stderr, "err\n"),
        ])
        .await
        .unwrap();
    store
        .record_output(vec![chunk("o0", 2, OutputStream::Stdout, "two\n")])
        .await
        .unwrap();
    store
        .record_output(vec![chunk("o2", 0, OutputStream::Stdout, "keep\n")])
        .await
        .unwrap();
    store.flush().await.unwrap();
    let all = store.output("o0", 0).await.unwrap();
    let texts: Vec<&str> = all.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["one\n", "err\n", "two\n"]);
    assert_eq!(all[1].stream, OutputStream::Stderr);
    // Reading on from a position returns only what came after it.
    let rest = store.output("o0", all[1].pos).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].text, "two\n");
    assert!(store.output("o0", all[2].pos).await.unwrap().is_empty());
    assert!(store.output("nope", 0).await.unwrap().is_empty());
    // Pruning a run drops its output; a kept run keeps its own.
    store
        .submit(vec![Mutation::PruneRuns {
            job_id: "a".into(),
            keep: 1,
        }])
        .unwrap();
    store.flush().await.unwrap();
    assert!(store.run("o0").await.unwrap().is_none());
    assert!(store.output("o0", 0).await.unwrap().is_empty());
    assert_eq!(store.output("o2", 0).await.unwrap().len(), 1);
}
