//! Desired state (the directory) against running state (the store).
//!
//! One loop, one reload at a time: the watcher and SIGHUP only say
//! "something changed"; [`Reconciler::reconcile`] loads, validates and
//! applies. A revision with any error is rejected whole and the last good
//! one keeps running.

pub mod diff;
pub mod git;
pub mod render;
pub mod source;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::spec::diagnostic::Diagnostic;
use crate::spec::model::Kind;
use crate::spec::{self, Loaded};
use crate::status::state::Shared;
use crate::store::{
    Applied, NewEvent, ResourceWrites, RevisionRecord, RevisionStatus, StoreError, now_rfc3339,
};

/// The result of the last reconcile, as `/api/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileStatus {
    pub at: String,
    /// `applied`, `unchanged` or `rejected`.
    pub result: &'static str,
    /// The revision this reconcile looked at.
    pub revision: String,
    pub errors: Vec<Diagnostic>,
    pub warnings: usize,
    pub duration_ms: u64,
    /// What started it: `start`, `files`, `resync`, `sighup`.
    pub cause: String,
}

pub struct Reconciler {
    pub dir: PathBuf,
    pub shared: Arc<Shared>,
    /// The warnings of the last load, logged once each, not at every
    /// resync.
    warned: std::sync::Mutex<Vec<Diagnostic>>,
}

/// Findings for a directory that cannot be read at all.
fn unreadable(dir: &std::path::Path, message: String) -> Loaded {
    Loaded {
        snapshot: Default::default(),
        diagnostics: vec![Diagnostic::file_error(
            &dir.display().to_string(),
            crate::spec::yaml::Pos { line: 1, column: 1 },
            "io",
            message,
        )],
    }
}

/// Load and check the directory on a blocking thread (it reads files and
/// does CPU work proportional to the config size).
pub async fn load_dir(dir: PathBuf) -> Loaded {
    let fallback = dir.clone();
    tokio::task::spawn_blocking(move || match source::read_config_dir(&dir) {
        Ok(contents) => {
            let mut loaded = spec::build(&contents.files);
            loaded.diagnostics.extend(contents.diagnostics);
            spec::diagnostic::sort(&mut loaded.diagnostics);
            loaded
        }
        Err(e) => unreadable(&dir, e.to_string()),
    })
    .await
    .unwrap_or_else(|e| unreadable(&fallback, format!("loading failed: {e}")))
}

/// Give memory freed after a reload back to the OS. Loading a large
/// directory allocates many short-lived values (documents, position
/// indexes, diffs); glibc keeps freed pages in its arenas otherwise, so the
/// daemon's RSS would stay at the reload's peak.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Reconciler {
    pub fn new(dir: PathBuf, shared: Arc<Shared>) -> Self {
        Reconciler {
            dir,
            shared,
            warned: Default::default(),
        }
    }

    /// Logs the warnings of `loaded` that the last load did not have (a
    /// FIFO named `x.yaml`, a dangling symlink, a deprecated field): an
    /// operator reading the log learns of them without running `validate`.
    fn log_new_warnings(&self, loaded: &Loaded) {
        let now: Vec<Diagnostic> = loaded
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .cloned()
            .collect();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        for d in now.iter().filter(|d| !warned.contains(d)) {
            tracing::warn!("config warning: {d}");
        }
        *warned = now;
    }

    /// Load the directory and apply it if it is valid and differs from what
    /// runs. Store errors are returned; config errors are a rejection.
    pub async fn reconcile(&self, cause: &str) -> Result<ReconcileStatus, StoreError> {
        let result = self.reconcile_inner(cause).await;
        return_freed_memory();
        result
    }

    async fn reconcile_inner(&self, cause: &str) -> Result<ReconcileStatus, StoreError> {
        let started = Instant::now();
        let loaded = load_dir(self.dir.clone()).await;
        self.log_new_warnings(&loaded);
        let git = git::git_state(&self.dir).await;
        let content_hash = loaded.snapshot.content_hash();
        let revision_id = git::revision_id(git.as_ref(), &content_hash);
        let warnings = loaded.warning_count();
        let store = &self.shared.store;

        let status = |result: &'static str, errors: Vec<Diagnostic>| ReconcileStatus {
            at: now_rfc3339(),
            result,
            revision: revision_id.clone(),
            errors,
            warnings,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cause: cause.to_string(),
        };

        if loaded.has_errors() {
            let errors: Vec<Diagnostic> = loaded
                .diagnostics
                .into_iter()
                .filter(Diagnostic::is_error)
                .collect();
            let last = self.shared.last_reconcile.load();
            let repeat = last.as_ref().as_ref().is_some_and(|l| {
                l.result == "rejected" && l.revision == revision_id && l.errors == errors
            });
            let result = status("rejected", errors.clone());
            if !repeat {
                let record = RevisionRecord {
                    seq: 0,
                    id: revision_id.clone(),
                    status: RevisionStatus::Rejected,
                    at: now_rfc3339(),
                    git_commit: git.as_ref().map(|g| g.commit.clone()),
                    git_dirty: git.as_ref().is_some_and(|g| g.dirty),
                    content_hash: content_hash.clone(),
                    summary: json!({}),
                    changes: json!([]),
                    errors: errors.clone(),
                };
                let first: Vec<String> = errors.iter().take(20).map(|d| d.to_string()).collect();
                let event = NewEvent::new(
                    "reconcile.rejected",
                    json!({"revision": revision_id, "error_count": errors.len(), "errors": first}),
                );
                store.reject_revision(record, vec![event]).await?;
                tracing::warn!(
                    revision = %revision_id,
                    errors = errors.len(),
                    first = %errors.first().map(|d| d.to_string()).unwrap_or_default(),
                    "revision rejected; the last good revision keeps running"
                );
            }
            self.shared
                .last_reconcile
                .store(Arc::new(Some(result.clone())));
            return Ok(result);
        }

        let running = self.shared.applied.load_full();
        let same_revision = running
            .revision
            .as_ref()
            .is_some_and(|r| r.id == revision_id);
        let plan = diff::diff(&running.snapshot, &loaded.snapshot);
        let writes = ResourceWrites::between(&running.snapshot, &loaded.snapshot);
        if plan.is_empty() && same_revision && writes.upserts.is_empty() {
            let result = status("unchanged", vec![]);
            self.shared
                .last_reconcile
                .store(Arc::new(Some(result.clone())));
            return Ok(result);
        }

        let changes: Vec<serde_json::Value> = plan
            .changes
            .iter()
            .map(|c| json!({"action": c.action, "kind": c.kind, "id": c.id}))
            .collect();
        let summary = serde_json::to_value(&plan.summary).unwrap_or_default();
        let record = RevisionRecord {
            seq: 0,
            id: revision_id.clone(),
            status: RevisionStatus::Applied,
            at: now_rfc3339(),
            git_commit: git.as_ref().map(|g| g.commit.clone()),
            git_dirty: git.as_ref().is_some_and(|g| g.dirty),
            content_hash,
            summary: summary.clone(),
            changes: json!(changes),
            errors: vec![],
        };
        let mut events = vec![NewEvent::new(
            "reconcile.applied",
            json!({"revision": revision_id, "summary": summary, "cause": cause}),
        )];
        for change in plan.changes.iter().filter(|c| c.kind == Kind::Job) {
            let base = match change.action {
                diff::Action::Create => "job.created",
                diff::Action::Update => "job.updated",
                diff::Action::Delete => "job.deleted",
            };
            let fields: Vec<&str> = change.fields.iter().map(|f| f.path.as_str()).collect();
            events.push(
                NewEvent::new(base, json!({"revision": revision_id, "fields": fields}))
                    .job(change.id.clone()),
            );
            match change.enabled_change {
                Some(true) => events.push(
                    NewEvent::new("job.enabled", json!({"revision": revision_id}))
                        .job(change.id.clone()),
                ),
                Some(false) => events.push(
                    NewEvent::new("job.disabled", json!({"revision": revision_id}))
                        .job(change.id.clone()),
                ),
                None => {}
            }
        }
        let (seq, _) = store.apply_revision(record.clone(), writes, events).await?;
        let applied = Arc::new(Applied {
            revision: Some(RevisionRecord { seq, ..record }),
            snapshot: loaded.snapshot,
        });
        self.shared.applied.store(applied.clone());
        self.shared.on_applied(applied, &plan);
        tracing::info!(
            revision = %revision_id,
            create = plan.summary.create,
            update = plan.summary.update,
            delete = plan.summary.delete,
            cause,
            "revision applied"
        );
        let result = status("applied", vec![]);
        self.shared
            .last_reconcile
            .store(Arc::new(Some(result.clone())));
        Ok(result)
    }
}
