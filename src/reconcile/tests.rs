use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const HEARTBEAT: &str = "kind: Job\nid: heartbeat\ntype: noop\nschedule:\n  every: 5s\n";

/// The reconciler's whole view of a process: a store, the running
/// revision, the last result, and how often a revision was published.
struct TestApplier {
    store: Store,
    applied: Mutex<Arc<Applied>>,
    last: Mutex<Arc<Option<ReconcileStatus>>>,
    published: AtomicUsize,
}

impl Applier for TestApplier {
    fn store(&self) -> &Store {
        &self.store
    }
    fn applied(&self) -> Arc<Applied> {
        self.applied.lock().unwrap().clone()
    }
    fn publish(&self, applied: Arc<Applied>) {
        *self.applied.lock().unwrap() = applied;
        self.published.fetch_add(1, Ordering::SeqCst);
    }
    fn last_reconcile(&self) -> Arc<Option<ReconcileStatus>> {
        self.last.lock().unwrap().clone()
    }
    fn set_last_reconcile(&self, status: ReconcileStatus) {
        *self.last.lock().unwrap() = Arc::new(Some(status));
    }
}

fn write(dir: &std::path::Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_result_serializes_as_the_strings_the_api_always_showed() {
    for (result, text) in [
        (ReconcileResult::Applied, "applied"),
        (ReconcileResult::Unchanged, "unchanged"),
        (ReconcileResult::Rejected, "rejected"),
    ] {
        assert_eq!(serde_json::to_value(result).unwrap(), json!(text));
    }
}

#[test]
fn load_keeps_the_files_and_sorts_the_findings_by_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "jobs.d/b.yaml", "kind: Job\nid: b\nbogus: 1\n");
    write(dir.path(), "jobs.d/a.yaml", "kind: Job\nid: a\nbogus: 1\n");
    write(dir.path(), "jobs.d/ok.yaml", HEARTBEAT);
    let LoadedDir { files, loaded } = load(dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    let errors: Vec<&str> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.file.as_str())
        .collect();
    assert!(errors.len() >= 2, "{errors:?}");
    let mut sorted = errors.clone();
    sorted.sort();
    assert_eq!(errors, sorted);
    assert!(errors[0].ends_with("a.yaml"), "{errors:?}");
}

#[tokio::test]
async fn a_missing_dir_is_an_error_to_load_and_a_finding_to_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = load(&missing).err().expect("a missing dir is an error");
    assert!(err.to_string().contains("no such directory"), "{err}");
    let loaded = load_dir(missing).await;
    assert!(loaded.has_errors());
    assert_eq!(loaded.diagnostics[0].code, "io");
}

/// The reconciler needs nothing of the daemon but its applier: it
/// applies a valid directory once, leaves the same one unchanged, and
/// records a broken one as rejected once however often it looks again.
#[tokio::test]
async fn the_reconciler_applies_rejects_and_skips_through_its_applier_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    write(dir.path(), "jobs.d/heartbeat.yaml", HEARTBEAT);
    let store = Store::open_sqlite(&state.path().join("state.db")).unwrap();
    let applier = Arc::new(TestApplier {
        applied: Mutex::new(Arc::new(store.applied().await.unwrap())),
        store,
        last: Mutex::new(Arc::new(None)),
        published: AtomicUsize::new(0),
    });
    let reconciler = Reconciler::new(dir.path().to_path_buf(), applier.clone());

    let first = reconciler.reconcile("start").await.unwrap();
    assert_eq!(first.result, ReconcileResult::Applied);
    assert_eq!(first.cause, "start");
    assert_eq!(applier.published.load(Ordering::SeqCst), 1);
    assert!(applier.applied().snapshot.jobs.contains_key("heartbeat"));

    let again = reconciler.reconcile("resync").await.unwrap();
    assert_eq!(again.result, ReconcileResult::Unchanged);
    assert_eq!(again.revision, first.revision);
    assert_eq!(applier.published.load(Ordering::SeqCst), 1);

    write(
        dir.path(),
        "jobs.d/broken.yaml",
        "kind: Job\nid: broken\nbogus: 1\n",
    );
    for cause in ["files", "resync"] {
        let rejected = reconciler.reconcile(cause).await.unwrap();
        assert_eq!(rejected.result, ReconcileResult::Rejected);
        assert!(!rejected.errors.is_empty());
    }
    assert_eq!(applier.published.load(Ordering::SeqCst), 1);
    let last = applier.last_reconcile();
    assert_eq!(last.as_ref().as_ref().unwrap().cause, "resync");
    applier.store.flush().await.unwrap();
    let revisions = applier.store.revisions(0, 10).await.unwrap();
    let rejected = revisions
        .iter()
        .filter(|r| r.status == RevisionStatus::Rejected)
        .count();
    assert_eq!(rejected, 1, "{revisions:?}");
    assert_eq!(revisions.len(), 2, "{revisions:?}");
}
