//! A store written by the previous release opens and runs: its runs are
//! listed and new runs complete beside them.
//!
//! The fixture (`tests/fixtures/store-previous/`) was written by the
//! release build of the commit before the store was split into
//! `store/sqlite/`: `multijob run --workers 1` on `jobs.d/previous.yaml`
//! (a noop job every second, a workflow job every two) for five seconds,
//! stopped with SIGTERM, its WAL checkpointed into `state.db` with
//! `sqlite3 state.db "PRAGMA wal_checkpoint(TRUNCATE)"`.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};
use serde_json::Value;

const FIXTURE: &str = "tests/fixtures/store-previous";

/// The ids and statuses of the runs the previous release recorded.
fn recorded_runs(db: &Path) -> Vec<(String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the fixture read-only");
    let mut stmt = conn
        .prepare("SELECT id, status FROM runs ORDER BY seq")
        .expect("the fixture has a runs table");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query the fixture")
        .collect::<Result<_, _>>()
        .expect("read the fixture's runs")
}

fn listed_runs(d: &Daemon) -> Vec<Value> {
    let (code, v) = d.get("/api/v1/runs?limit=1000");
    assert_eq!(code, 200, "{v:#}");
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_store_written_by_the_previous_release_opens_lists_its_runs_and_runs_new_ones() {
    let fixture = common::repo().join(FIXTURE);
    let d = ConfigDir::new();
    d.write(
        "jobs.d/previous.yaml",
        &std::fs::read_to_string(fixture.join("jobs.d/previous.yaml")).expect("fixture jobs"),
    );
    // Only the copy is opened: even a reader leaves WAL files beside it.
    let state = d.path().join(".multijob");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::copy(fixture.join("state.db"), state.join("state.db")).expect("copy the fixture");
    let old = recorded_runs(&state.join("state.db"));
    assert!(old.len() >= 4, "the fixture holds runs: {old:?}");

    let daemon = Daemon::start(d.path(), &["--workers", "1"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);

    // Every old run is listed, with the status it was stored with.
    let listed = listed_runs(&daemon);
    for (id, status) in &old {
        let run = listed
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("old run {id} not listed\n{listed:#?}"));
        assert_eq!(run["status"], status.as_str(), "{run:#}");
    }

    // New runs of both jobs complete beside them.
    let old_ids: HashSet<&str> = old.iter().map(|(id, _)| id.as_str()).collect();
    let start = Instant::now();
    let mut done = HashSet::new();
    while done.len() < 2 && start.elapsed() < Duration::from_secs(30) {
        for r in listed_runs(&daemon) {
            let new = r["id"].as_str().is_some_and(|id| !old_ids.contains(id));
            if new && r["status"] == "succeeded" {
                done.insert(r["job_id"].as_str().unwrap_or_default().to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        done,
        HashSet::from(["tick".to_string(), "flow".to_string()]),
        "new runs of both jobs succeed\n--- daemon log ---\n{}",
        daemon.log()
    );
}
