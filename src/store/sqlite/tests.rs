use super::*;
use crate::spec::model::Kind;
use crate::spec::snapshot::Snapshot;
use crate::store::{ResourceWrites, RevisionStatus, Store};
use rows::EVENT_ROWS;
use serde_json::json;

use crate::testkit::{revision_record as revision, snapshot_of as snapshot};

#[tokio::test]
async fn apply_then_reopen_keeps_the_snapshot_and_history() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    let desired = snapshot("id: a\ntype: noop\n---\nkind: Flow\nid: lane\nmax_active_runs: 2\n");
    {
        let store = Store::Sqlite(SqliteStore::open(&path).unwrap());
        let writes = ResourceWrites::between(&Snapshot::default(), &desired);
        assert_eq!(writes.upserts.len(), 2);
        let (seq, events) = store
            .apply_revision(
                revision("r1", RevisionStatus::Applied),
                writes,
                vec![NewEvent::new("reconcile.applied", json!({})).job("a")],
            )
            .await
            .unwrap();
        assert_eq!(seq, 1);
        assert_eq!(events[0].id, 1);
        store
            .reject_revision(revision("r2", RevisionStatus::Rejected), vec![])
            .await
            .unwrap();
    }
    let store = Store::Sqlite(SqliteStore::open(&path).unwrap());
    let applied = store.applied().await.unwrap();
    assert_eq!(applied.snapshot, desired);
    assert_eq!(applied.revision.unwrap().id, "r1");
    let history = store.revisions(0, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r2", "r1"]
    );
    // Deletes remove rows; unchanged rows are not rewritten.
    let smaller = snapshot("id: a\ntype: noop\n");
    let writes = ResourceWrites::between(&desired, &smaller);
    assert!(writes.upserts.is_empty());
    assert_eq!(writes.deletes, vec![(Kind::Flow, "lane".to_string())]);
    store
        .apply_revision(revision("r3", RevisionStatus::Applied), writes, vec![])
        .await
        .unwrap();
    assert_eq!(store.applied().await.unwrap().snapshot, smaller);
}

#[tokio::test]
async fn concurrent_appends_get_increasing_ids_and_filters_work() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&tmp.path().join("s.db")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = store.clone();
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
    for t in tasks {
        t.await.unwrap();
    }
    let read = |q: EventQuery| {
        let store = store.clone();
        async move { store.events(q).await.unwrap() }
    };
    let from_start = EventQuery {
        after: 0,
        limit: 1000,
        ..Default::default()
    };
    let all = read(from_start.clone()).await;
    assert_eq!(all.len(), 50);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let page = read(EventQuery {
        after: all[9].id,
        limit: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(page[0].id, all[10].id);
    assert_eq!(page.len(), 5);
    let sched = read(EventQuery {
        event_type: Some("scheduler.*".into()),
        ..from_start.clone()
    })
    .await;
    assert_eq!(sched.len(), 25);
    let job = read(EventQuery {
        job_id: Some("j1".into()),
        ..from_start
    })
    .await;
    assert_eq!(job.len(), 10);
}

#[tokio::test]
async fn many_events_in_one_write_get_the_ids_they_are_stored_under() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&tmp.path().join("s.db")).unwrap();
    store
        .append_events(vec![NewEvent::new("a", json!({"first": true}))])
        .await
        .unwrap();
    // Two multi-row chunks and a remainder.
    let batch: Vec<NewEvent> = (0..2 * EVENT_ROWS + 5)
        .map(|i| NewEvent::new("run.queued", json!({"i": i, "s": "q\"x"})).job(format!("j{i}")))
        .collect();
    let written = store.append_events(batch.clone()).await.unwrap();
    let stored = store
        .events(EventQuery {
            after: 1,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(written, stored);
    assert_eq!(stored.first().map(|e| e.id), Some(2));
    assert!(stored.windows(2).all(|w| w[1].id == w[0].id + 1));
    for (e, sent) in stored.iter().zip(&batch) {
        assert_eq!((&e.data, &e.job_id), (&sent.data, &sent.job_id));
    }
}

#[tokio::test]
async fn the_checkpointer_copies_committed_writes_into_the_database_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.db");
    let store = SqliteStore::open(&path).unwrap();
    let db_len = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = db_len();
    // About 2 MB of events: far more than the empty schema's pages.
    let batch: Vec<NewEvent> = (0..4000)
        .map(|i| NewEvent::new("run.queued", json!({"i": i, "pad": "x".repeat(400)})))
        .collect();
    store.append_events(batch).await.unwrap();
    // The writer does not checkpoint (wal_autocheckpoint = 0): only
    // the checkpointer thread can grow the database file.
    let mut grown = false;
    for _ in 0..100 {
        if db_len() > before + 1_000_000 {
            grown = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(grown, "database file stayed at {} bytes", db_len());
}

#[tokio::test]
async fn kv_get_set_incr_delete_and_ttl() {
    use crate::store::KvOp;
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&tmp.path().join("s.db")).unwrap();
    let kv = |k: &str, op| store.kv(k.to_string(), op);
    assert_eq!(kv("a", KvOp::Get).await.unwrap(), None);
    let v = json!({"x": [1, 2]});
    kv(
        "a",
        KvOp::Set {
            value: v.clone(),
            ttl_sec: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(kv("a", KvOp::Get).await.unwrap(), Some(v.clone()));
    assert_eq!(kv("n", KvOp::Incr { by: 2 }).await.unwrap(), Some(json!(2)));
    assert_eq!(kv("n", KvOp::Incr { by: 3 }).await.unwrap(), Some(json!(5)));
    assert!(
        kv("a", KvOp::Incr { by: 1 }).await.is_err(),
        "incr of a non-number"
    );
    assert_eq!(kv("a", KvOp::Delete).await.unwrap(), Some(v));
    assert_eq!(kv("a", KvOp::Get).await.unwrap(), None);
    kv(
        "t",
        KvOp::Set {
            value: json!(1),
            ttl_sec: Some(1),
        },
    )
    .await
    .unwrap();
    assert_eq!(kv("t", KvOp::Get).await.unwrap(), Some(json!(1)));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(kv("t", KvOp::Get).await.unwrap(), None, "expired");
}

#[test]
fn a_newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 999").unwrap();
    }
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::TooNew { .. })
    ));
}

#[tokio::test]
async fn the_live_state_counts_unfinished_runs_per_job_and_flow_and_keeps_each_jobs_last_slot() {
    use crate::store::Mutation;
    use crate::store::runs::RunStatus;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.db");
    let store = SqliteStore::open(&path).unwrap();
    let run = |id: &str, job: &str, status: RunStatus, flow: Option<&str>| {
        let mut r = crate::testkit::sample_run(id, job, &format!("key-{id}"), status);
        r.flow = flow.map(str::to_string);
        Mutation::PutRun(Box::new(r))
    };
    store
        .submit(vec![
            run("a1", "a", RunStatus::Running, Some("lane")),
            run("a2", "a", RunStatus::Succeeded, Some("lane")),
            run("a3", "a", RunStatus::Retrying, None),
            run("b1", "b", RunStatus::Queued, Some("lane")),
            Mutation::JobSlot("a".into(), "2026-01-01T00:00:00.000Z".into()),
            Mutation::JobSlot("b".into(), "not a time".into()),
        ])
        .unwrap();
    store.flush().await.unwrap();
    let live = store.live_state().await.unwrap();
    let slot: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    assert_eq!(live.last_slots, [("a".to_string(), slot)].into());
    assert_eq!(
        live.active_runs_by_job,
        [("a".to_string(), 2), ("b".to_string(), 1)].into()
    );
    assert_eq!(live.active_runs_by_flow, [("lane".to_string(), 2)].into());
    // `plan --state` reads the same through a read-only connection.
    let conn = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(read_live_state(&conn, &path).unwrap(), live);
}
