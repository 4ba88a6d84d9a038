//! Desired state (the directory) against running state (the store): this
//! module owns loading the directory ([`load`]), the pure diff, the plan
//! report, the watcher and applying a revision. It may use `spec`, `store`,
//! `calendar` and the layers below them; what it changes of the running
//! process it reaches through the narrow [`Applier`], never the daemon's
//! shared state.
//!
//! One loop, one reload at a time: the watcher and SIGHUP only say
//! "something changed"; [`Reconciler::reconcile`] loads, validates and
//! applies. A revision with any error is rejected whole and the last good
//! one keeps running.

pub mod author;
pub mod defaults_notes;
pub mod diff;
pub mod git;
mod load;
pub mod pull;
pub mod render;
pub mod source;
pub mod trigger_notes;
pub mod watch;

pub use load::{LoadedDir, load, load_dir, load_dir_within, load_within, plan_report};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::spec::Loaded;
use crate::spec::diagnostic::Diagnostic;
use crate::spec::model::Kind;
use crate::spec::snapshot::Snapshot;
use crate::store::{
    Applied, NewEvent, ResourceWrites, RevisionRecord, RevisionStatus, Store, StoreError,
    now_rfc3339,
};

/// What a reconcile did with the revision it looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileResult {
    /// It differed from what ran and now runs.
    Applied,
    /// It is what runs already.
    Unchanged,
    /// It has errors; the last good revision keeps running.
    Rejected,
}

/// The result of the last reconcile, as `/api/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileStatus {
    pub at: String,
    /// `applied`, `unchanged` or `rejected`.
    pub result: ReconcileResult,
    /// The revision this reconcile looked at.
    pub revision: String,
    pub errors: Vec<Diagnostic>,
    pub warnings: usize,
    pub duration_ms: u64,
    /// What started it: `start`, `files`, `resync`, `sighup`.
    pub cause: String,
}

/// What the reconciler reads and changes of the running process, and
/// nothing more: the store it records revisions in, the revision that
/// runs, and the last result.
pub trait Applier: Send + Sync {
    fn store(&self) -> &Store;
    /// The revision that runs now.
    fn applied(&self) -> Arc<Applied>;
    /// Make `applied` the running revision and tell the tasks that react
    /// to a new one (the scheduler, the queue).
    fn publish(&self, applied: Arc<Applied>);
    fn last_reconcile(&self) -> Arc<Option<ReconcileStatus>>;
    fn set_last_reconcile(&self, status: ReconcileStatus);
}

pub struct Reconciler {
    pub dir: PathBuf,
    applier: Arc<dyn Applier>,
    /// The warnings of the last load, logged once each, not at every
    /// resync.
    warned: std::sync::Mutex<Vec<Diagnostic>>,
    /// `run --git`: `dir` is the `current` symlink of its checkouts.
    puller: Option<Arc<pull::Puller>>,
    /// Said once: sync triggers are applied and nothing pulls.
    warned_sync: std::sync::atomic::AtomicBool,
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

/// The revision one reconcile looks at: its id, and what its record says
/// of where it came from.
struct Revision {
    id: String,
    git: Option<git::GitState>,
    content_hash: String,
}

impl Revision {
    fn record(
        &self,
        status: RevisionStatus,
        summary: serde_json::Value,
        changes: serde_json::Value,
        errors: Vec<Diagnostic>,
    ) -> RevisionRecord {
        RevisionRecord {
            seq: 0,
            id: self.id.clone(),
            status,
            at: now_rfc3339(),
            git_commit: self.git.as_ref().map(|g| g.commit.clone()),
            git_dirty: self.git.as_ref().is_some_and(|g| g.dirty),
            content_hash: self.content_hash.clone(),
            summary,
            changes,
            errors,
        }
    }
}

/// One reconcile in progress: what its status reports besides the result.
struct Attempt<'a> {
    started: Instant,
    cause: &'a str,
    revision: Revision,
    warnings: usize,
}

impl Attempt<'_> {
    fn status(&self, result: ReconcileResult, errors: Vec<Diagnostic>) -> ReconcileStatus {
        ReconcileStatus {
            at: now_rfc3339(),
            result,
            revision: self.revision.id.clone(),
            errors,
            warnings: self.warnings,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cause: self.cause.to_string(),
        }
    }
}

/// The events of a revision's job changes: created, updated, deleted,
/// and enabled or disabled.
fn job_events(plan: &diff::Plan, revision_id: &str) -> Vec<NewEvent> {
    let mut events = Vec::new();
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
    events
}

impl Reconciler {
    pub fn new(dir: PathBuf, applier: Arc<dyn Applier>) -> Self {
        Reconciler {
            dir,
            applier,
            warned: Default::default(),
            puller: None,
            warned_sync: Default::default(),
        }
    }

    /// A reconciler of the checkouts `puller` makes (`run --git`).
    pub fn with_git(puller: Arc<pull::Puller>, applier: Arc<dyn Applier>) -> Self {
        Reconciler {
            puller: Some(puller.clone()),
            ..Reconciler::new(puller.config_dir(), applier)
        }
    }

    /// The puller of `run --git`, if any.
    pub fn puller(&self) -> Option<Arc<pull::Puller>> {
        self.puller.clone()
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

    /// A daemon without `--git` answers its `action: sync` triggers 409;
    /// `validate` cannot know, so the log says so, once per process.
    fn warn_sync_without_git(&self, snapshot: &crate::spec::snapshot::Snapshot) {
        if self.puller.is_some() {
            return;
        }
        let sync: Vec<&str> = snapshot
            .triggers
            .values()
            .filter(|r| r.spec.enabled && r.spec.action.is_some())
            .map(|r| r.spec.id.as_str())
            .collect();
        if sync.is_empty()
            || self
                .warned_sync
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        tracing::warn!(
            triggers = %sync.join(", "),
            "these triggers have `action: sync`, and this daemon does not pull from git: their requests are answered 409; start it with run --git URL, or point them at a job"
        );
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
        // A git checkout is resolved once: the load and its commit are of
        // one tree even if the symlink swaps meanwhile.
        let (dir, root) = match self.puller.as_ref().and_then(|p| p.resolve()) {
            Some((dir, root)) => (dir, Some(root)),
            None => (self.dir.clone(), None),
        };
        let loaded = load_dir_within(dir.clone(), root).await;
        self.log_new_warnings(&loaded);
        let git = git::git_state(&dir).await;
        let content_hash = loaded.snapshot.content_hash();
        let attempt = Attempt {
            started,
            cause,
            revision: Revision {
                id: git::revision_id(git.as_ref(), &content_hash),
                git,
                content_hash,
            },
            warnings: loaded.warning_count(),
        };
        let result = if loaded.has_errors() {
            let errors = loaded
                .diagnostics
                .into_iter()
                .filter(Diagnostic::is_error)
                .collect();
            self.reject(&attempt, errors).await?
        } else {
            self.warn_sync_without_git(&loaded.snapshot);
            self.apply(&attempt, loaded.snapshot).await?
        };
        self.applier.set_last_reconcile(result.clone());
        Ok(result)
    }

    /// Record a revision with errors as rejected, once: the same errors in
    /// the same revision again (a resync) are not recorded again.
    async fn reject(
        &self,
        attempt: &Attempt<'_>,
        errors: Vec<Diagnostic>,
    ) -> Result<ReconcileStatus, StoreError> {
        let revision_id = &attempt.revision.id;
        let last = self.applier.last_reconcile();
        let repeat = last.as_ref().as_ref().is_some_and(|l| {
            l.result == ReconcileResult::Rejected
                && l.revision == *revision_id
                && l.errors == errors
        });
        let result = attempt.status(ReconcileResult::Rejected, errors.clone());
        if repeat {
            return Ok(result);
        }
        let first: Vec<String> = errors.iter().take(20).map(|d| d.to_string()).collect();
        let event = NewEvent::new(
            "reconcile.rejected",
            json!({"revision": revision_id, "error_count": errors.len(), "errors": first}),
        );
        let first_error = errors.first().map(|d| d.to_string()).unwrap_or_default();
        // Where to look first: a revision with errors has at least one.
        let fix_at = errors
            .first()
            .map(|d| format!("{}:{}", d.file, d.line))
            .unwrap_or_else(|| self.dir.display().to_string());
        let count = errors.len();
        let record =
            attempt
                .revision
                .record(RevisionStatus::Rejected, json!({}), json!([]), errors);
        self.applier
            .store()
            .reject_revision(record, vec![event])
            .await?;
        if self.applier.applied().revision.is_some() {
            tracing::warn!(
                revision = %revision_id,
                errors = count,
                first = %first_error,
                "revision rejected; the last good revision keeps running"
            );
        } else {
            // A first start (or a store that never applied one): there is
            // no good revision to keep, nothing runs until a valid one.
            tracing::warn!(
                revision = %revision_id,
                errors = count,
                first = %first_error,
                "no revision applied yet: fix {fix_at} and save; waiting"
            );
        }
        Ok(result)
    }

    /// Apply a valid revision unless it is what runs already.
    async fn apply(
        &self,
        attempt: &Attempt<'_>,
        desired: Snapshot,
    ) -> Result<ReconcileStatus, StoreError> {
        let revision_id = &attempt.revision.id;
        let running = self.applier.applied();
        let same_revision = running
            .revision
            .as_ref()
            .is_some_and(|r| r.id == *revision_id);
        let plan = diff::diff(&running.snapshot, &desired);
        let writes = ResourceWrites::between(&running.snapshot, &desired);
        if plan.is_empty() && same_revision && writes.upserts.is_empty() {
            return Ok(attempt.status(ReconcileResult::Unchanged, vec![]));
        }
        let changes: Vec<serde_json::Value> = plan
            .changes
            .iter()
            .map(|c| json!({"action": c.action, "kind": c.kind, "id": c.id}))
            .collect();
        let summary = serde_json::to_value(&plan.summary).unwrap_or_default();
        let record = attempt.revision.record(
            RevisionStatus::Applied,
            summary.clone(),
            json!(changes),
            vec![],
        );
        let mut events = vec![NewEvent::new(
            "reconcile.applied",
            json!({"revision": revision_id, "summary": summary, "cause": attempt.cause}),
        )];
        events.extend(job_events(&plan, revision_id));
        let store = self.applier.store();
        let (seq, _) = store.apply_revision(record.clone(), writes, events).await?;
        self.applier.publish(Arc::new(Applied {
            revision: Some(RevisionRecord { seq, ..record }),
            snapshot: desired,
        }));
        tracing::info!(
            revision = %revision_id,
            create = plan.summary.create,
            update = plan.summary.update,
            delete = plan.summary.delete,
            cause = attempt.cause,
            "revision applied"
        );
        log_changes(&plan);
        Ok(attempt.status(ReconcileResult::Applied, vec![]))
    }
}

/// Changes an applied revision logs one line each; a bigger one (a first
/// start with 10,000 jobs) logs these and a count.
const CHANGES_LOGGED: usize = 50;

/// A line per change of an applied revision, like `kubectl apply`.
fn log_changes(plan: &diff::Plan) {
    for change in plan.changes.iter().take(CHANGES_LOGGED) {
        tracing::info!("{}", change.line());
    }
    if plan.changes.len() > CHANGES_LOGGED {
        tracing::info!(
            "... and {} more changes (`multijob plan` before a change lists them all)",
            plan.changes.len() - CHANGES_LOGGED
        );
    }
}

#[cfg(test)]
mod tests;
