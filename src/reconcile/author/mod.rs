//! Authoring: a sentence's planned jobs turned into files of the config
//! directory, the way `multijob new` and the chat bridge's `/new` +
//! `/apply` both do it.
//!
//! A [`Draft`] is one planned job with its file and YAML. [`Workspace`]
//! is the directory as read now; [`Workspace::check`] refuses an id the
//! directory already defines (naming its file) and validates the drafts
//! together with the whole directory; [`plan`] is the `plan` of the
//! change; [`write`] puts each file in place by rename, so the daemon's
//! watcher never reads half a file. [`commit`] records the written files
//! in git when the directory is a checkout. Nothing here enables a job:
//! the daemon applies what is written through its normal reconcile.

pub mod commit;

use std::path::Path;

use crate::reconcile::render::{PlanContext, PlanReport};
use crate::reconcile::source::{self, DirContents, SourceError};
use crate::spec::planner::{FROM_NEW, Options, PlannedJob, file_of};
use crate::spec::{self, Loaded, SourceFile};

pub use commit::{Author, Committed, commit};

/// Why a change is refused; the text says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AuthorError {
    #[error(transparent)]
    Dir(#[from] SourceError),
    /// An id the directory already defines, or a `--force` that may not
    /// replace it.
    #[error("{0}")]
    Taken(String),
    /// The directory with the drafts does not validate.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Write(String),
}

/// One planned job ready to write.
#[derive(Debug, Clone)]
pub struct Draft {
    pub job: PlannedJob,
    /// Its path in the directory: `jobs.d/<id>.yaml`.
    pub file: String,
    pub yaml: String,
    pub warnings: Vec<String>,
}

impl Draft {
    pub fn of(job: PlannedJob, sentence: &str) -> Draft {
        Draft {
            file: file_of(&job.id),
            yaml: job.yaml(sentence),
            warnings: job.warnings.clone(),
            job,
        }
    }
}

/// The config directory as read at `now`: its files and what they build.
pub struct Workspace {
    pub contents: DirContents,
    pub before: Loaded,
    pub now: jiff::Timestamp,
}

impl Workspace {
    pub fn read(dir: &Path, now: jiff::Timestamp) -> Result<Workspace, AuthorError> {
        let contents = source::read_config_dir(dir)?;
        let before = spec::build_at(&contents.files, Some(now));
        Ok(Workspace {
            contents,
            before,
            now,
        })
    }

    /// The planner's options: `timezone`, the defaults given, and the
    /// directory's connectors.
    pub fn options(
        &self,
        timezone: String,
        channel: Option<String>,
        account: Option<String>,
    ) -> Options {
        Options {
            timezone,
            channel,
            account,
            connectors: self
                .before
                .snapshot
                .connectors
                .iter()
                .map(|(id, r)| (id.clone(), r.spec.provider))
                .collect(),
        }
    }

    /// The directory with the drafts, when no id is taken (see
    /// [`check_taken`]) and it validates with no error; the drafts'
    /// warnings are added to them.
    pub fn check(
        &self,
        dir: &Path,
        drafts: &mut [Draft],
        force: bool,
    ) -> Result<Loaded, AuthorError> {
        check_taken(dir, &self.before, drafts, force)?;
        let after_files = with_drafts(&self.contents.files, drafts);
        let mut after = spec::build_at(&after_files, Some(self.now));
        after
            .diagnostics
            .extend(self.contents.diagnostics.iter().cloned());
        check_after(&after, drafts)?;
        Ok(after)
    }
}

/// The zone named (trimmed, non-empty), else the system's; an unknown
/// name is an error naming where it came from (`source`, e.g.
/// `--tz/MULTIJOB_TZ`).
pub fn zone(name: Option<&str>, source: &str) -> Result<String, String> {
    let name = match name.map(str::trim).filter(|z| !z.is_empty()) {
        Some(z) => z.to_string(),
        None => match jiff::tz::TimeZone::system().iana_name() {
            Some(z) => z.to_string(),
            None => {
                return Err(format!(
                    "the system time zone has no IANA name: set {source} (e.g. Asia/Jakarta)"
                ));
            }
        },
    };
    jiff::tz::TimeZone::get(&name).map_err(|_| {
        format!("{source} {name:?} is not a known IANA time zone (e.g. Asia/Jakarta, Europe/Berlin, UTC)")
    })?;
    Ok(name)
}

/// An id the directory already defines: refused, naming its file; with
/// `force` replaced only when `new` wrote it at `jobs.d/<id>.yaml`. A
/// file already at a draft's path is treated the same way.
pub fn check_taken(
    dir: &Path,
    before: &Loaded,
    drafts: &[Draft],
    force: bool,
) -> Result<(), AuthorError> {
    for d in drafts {
        let existing = before.snapshot.jobs.get(&d.job.id);
        let path = dir.join(&d.file);
        if existing.is_none() && !path.exists() {
            continue;
        }
        let (file, line) = existing.map_or((d.file.clone(), 1), |r| (r.file.clone(), r.line));
        if !force {
            return Err(AuthorError::Taken(format!(
                "job {} (planned from {:?}) already exists: {file}:{line} defines it; nothing written. Edit that file, or rerun with --force to replace a job `multijob new` wrote",
                d.job.id, d.job.part
            )));
        }
        let own = file == d.file
            && std::fs::read_to_string(&path)
                .map(|t| t.starts_with(FROM_NEW))
                .unwrap_or(false);
        if !own {
            return Err(AuthorError::Taken(format!(
                "job {}: --force replaces only {} written by `multijob new`, but {file}:{line} {}; edit it by hand or pick another sentence",
                d.job.id,
                d.file,
                if file == d.file {
                    "does not start with its `# multijob new:` comment"
                } else {
                    "defines it"
                }
            )));
        }
    }
    Ok(())
}

/// The directory's files with the drafts in place (a replaced file's old
/// text gone).
pub fn with_drafts(files: &[SourceFile], drafts: &[Draft]) -> Vec<SourceFile> {
    let mut out: Vec<SourceFile> = files
        .iter()
        .filter(|f| !drafts.iter().any(|d| d.file == f.path))
        .cloned()
        .collect();
    out.extend(drafts.iter().map(|d| SourceFile {
        path: d.file.clone(),
        text: d.yaml.clone(),
    }));
    out
}

/// Errors anywhere refuse the change: in a draft, named with its part of
/// the sentence; elsewhere, the directory was invalid already. A draft's
/// warnings join its own.
fn check_after(after: &Loaded, drafts: &mut [Draft]) -> Result<(), AuthorError> {
    let mut errors = draft_errors(after, drafts);
    for diag in &after.diagnostics {
        match drafts.iter_mut().find(|d| d.file == diag.file) {
            Some(d) if !diag.is_error() => {
                d.warnings.push(format!("{}: {}", diag.code, diag.message))
            }
            None if diag.is_error() => errors.push(format!("{diag} (already in the directory)")),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(AuthorError::Invalid(format!(
            "nothing written: the directory with the new jobs does not validate:\n  {}\n(fix the directory, or add what is missing, e.g. a Connector for the channel)",
            errors.join("\n  ")
        )));
    }
    Ok(())
}

/// The errors in the drafts' own files, each named with its part of the
/// sentence (what `new --ai` sends back to the model).
pub fn draft_errors(after: &Loaded, drafts: &[Draft]) -> Vec<String> {
    after
        .diagnostics
        .iter()
        .filter(|diag| diag.is_error())
        .filter_map(|diag| {
            let d = drafts.iter().find(|d| d.file == diag.file)?;
            Some(format!("{diag} (from {:?})", d.job.part))
        })
        .collect()
}

/// The plan of the change: the directory as it was → with the drafts.
pub async fn plan(dir: &Path, before: &Loaded, after: &Loaded, now: jiff::Timestamp) -> PlanReport {
    let ctx = PlanContext::empty(now);
    super::plan_report(dir, &before.snapshot, &after.snapshot, &ctx).await
}

/// Each draft through a temporary file renamed into place, so a reader
/// (the daemon's watcher) never sees half a file. The paths written.
pub fn write(dir: &Path, drafts: &[Draft]) -> Result<Vec<String>, AuthorError> {
    let jobs_d = dir.join("jobs.d");
    std::fs::create_dir_all(&jobs_d)
        .map_err(|e| AuthorError::Write(format!("creating {}: {e}", jobs_d.display())))?;
    let mut written = Vec::new();
    for d in drafts {
        let path = dir.join(&d.file);
        let tmp = jobs_d.join(format!(".{}.yaml.tmp", d.job.id));
        let result = std::fs::write(&tmp, &d.yaml).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            let done = if written.is_empty() {
                "nothing written".to_string()
            } else {
                format!("already written: {}", written.join(", "))
            };
            return Err(AuthorError::Write(format!(
                "writing {}: {e} ({done})",
                path.display()
            )));
        }
        written.push(d.file.clone());
    }
    Ok(written)
}
