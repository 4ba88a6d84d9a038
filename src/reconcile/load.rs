//! Reading the config directory into a checked snapshot: the one way the
//! daemon, `plan`, `validate` and `/api/v1/plan` load it.

use std::path::{Path, PathBuf};

use crate::spec::diagnostic::Diagnostic;
use crate::spec::snapshot::Snapshot;
use crate::spec::{self, Loaded, SourceFile};

use super::git;
use super::render::{self, PlanContext, PlanReport};
use super::source::{self, SourceError};

/// A directory read and checked: its files (`validate` quotes their lines)
/// and what they build, with every finding sorted by file and position.
pub struct LoadedDir {
    pub files: Vec<SourceFile>,
    pub loaded: Loaded,
}

/// Read the directory, build the snapshot, sort the diagnostics. A
/// directory that cannot be read at all is an error; a file in it that
/// cannot be read is a finding.
pub fn load(dir: &Path) -> Result<LoadedDir, SourceError> {
    load_within(dir, None)
}

/// [`load`] reading nothing that resolves outside `root` (a git checkout).
pub fn load_within(dir: &Path, root: Option<&Path>) -> Result<LoadedDir, SourceError> {
    let contents = source::read_config_dir_within(dir, root)?;
    let mut loaded = spec::build_at(&contents.files, Some(jiff::Timestamp::now()));
    loaded.diagnostics.extend(contents.diagnostics);
    spec::diagnostic::sort(&mut loaded.diagnostics);
    Ok(LoadedDir {
        files: contents.files,
        loaded,
    })
}

/// Findings for a directory that cannot be read at all.
fn unreadable(dir: &Path, message: String) -> Loaded {
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

/// [`load`] on a blocking thread (it reads files and does CPU work
/// proportional to the config size); an unreadable directory becomes a
/// finding, so a running daemon rejects it like any invalid revision.
pub async fn load_dir(dir: PathBuf) -> Loaded {
    load_dir_within(dir, None).await
}

/// [`load_dir`] confined to `root` (see [`load_within`]).
pub async fn load_dir_within(dir: PathBuf, root: Option<PathBuf>) -> Loaded {
    let fallback = dir.clone();
    tokio::task::spawn_blocking(move || match load_within(&dir, root.as_deref()) {
        Ok(read) => read.loaded,
        Err(e) => unreadable(&dir, e.to_string()),
    })
    .await
    .unwrap_or_else(|e| unreadable(&fallback, format!("loading failed: {e}")))
}

/// What applying `desired` (loaded from `dir`) over `running` would do,
/// under the revision id the reconciler would give it.
pub async fn plan_report(
    dir: &Path,
    running: &Snapshot,
    desired: &Snapshot,
    ctx: &PlanContext,
) -> PlanReport {
    let git = git::git_state(dir).await;
    let revision = git::revision_id(git.as_ref(), &desired.content_hash());
    render::report(&revision, running, desired, ctx)
}
