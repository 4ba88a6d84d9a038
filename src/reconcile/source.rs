//! Reading a config directory from disk: the only IO the spec path needs.
//!
//! Follows symlinks (git-sync and Kubernetes ConfigMaps swap a symlinked
//! directory) and skips names starting with `.` or `_` (which also skips
//! ConfigMaps' `..data` indirection and editors' swap files). Reads only
//! regular files: a config name that is a FIFO or a device (or a symlink
//! to one, like `/dev/zero`) is a warning naming it, never a read that
//! blocks or never ends.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::regular_file::{self, Mode, OpenError};

use crate::spec::SourceFile;
use crate::spec::diagnostic::Diagnostic;

/// The folders a config directory holds.
pub const CONFIG_FOLDERS: [&str; 2] = ["jobs.d", "skills.d"];

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Deeper than this is a symlink loop or a mistake.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{dir}: no such directory")]
    Missing { dir: String },
    #[error("{dir}: has neither jobs.d/ nor skills.d/ (run `multijob init {dir}` to start one)")]
    Empty { dir: String },
    #[error("{dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Every config file's text, in a stable order, plus findings for files
/// that could not be read (they make the revision invalid).
#[derive(Debug, Default)]
pub struct DirContents {
    pub files: Vec<SourceFile>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn read_config_dir(dir: &Path) -> Result<DirContents, SourceError> {
    read_config_dir_within(dir, None)
}

/// [`read_config_dir`], refusing anything that resolves outside `root`
/// (a git checkout: a symlink committed to the repository must not make
/// the daemon read `/etc` or another checkout). `dir` itself too.
pub fn read_config_dir_within(dir: &Path, root: Option<&Path>) -> Result<DirContents, SourceError> {
    let display = dir.display().to_string();
    if let Some(root) = root
        && fs::canonicalize(dir).is_ok_and(|d| !d.starts_with(root))
    {
        return Err(SourceError::Io {
            dir: display,
            source: std::io::Error::other(format!(
                "resolves outside the checkout {}; refused",
                root.display()
            )),
        });
    }
    let display = dir.display().to_string();
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(SourceError::Missing { dir: display }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceError::Missing { dir: display });
        }
        Err(source) => {
            return Err(SourceError::Io {
                dir: display,
                source,
            });
        }
    }
    let mut paths = Vec::new();
    let mut findings = Vec::new();
    let mut found_folder = false;
    let root_dir = root;
    for folder in CONFIG_FOLDERS {
        let root = dir.join(folder);
        if root.is_dir() {
            found_folder = true;
            let mut walk = Walk {
                confine: root_dir,
                seen: HashSet::new(),
                out: &mut paths,
                findings: &mut findings,
            };
            if !walk.escapes(folder, &root) {
                walk.collect(&root, folder, 0);
            }
        }
    }
    if !found_folder {
        return Err(SourceError::Empty { dir: display });
    }
    paths.sort();
    let mut out = DirContents {
        diagnostics: findings,
        ..DirContents::default()
    };
    for (relative, path) in paths {
        match read_one(&relative, &path) {
            ReadOne::Text(text) => out.files.push(SourceFile {
                path: relative,
                text,
            }),
            ReadOne::Gone => {}
            ReadOne::Finding(finding) => out.diagnostics.push(finding),
        }
    }
    Ok(out)
}

/// The largest config file read (10,000 jobs of the bench take ~2 MB).
const MAX_FILE_BYTES: u64 = 8_000_000;

/// What reading one listed file gave.
#[derive(Debug)]
enum ReadOne {
    Text(String),
    /// Deleted since the listing: it is simply gone.
    Gone,
    /// Why it was not read.
    Finding(Diagnostic),
}

/// One listed file's text. It was a regular file when listed; it is
/// checked again as it is opened (a swap for a FIFO in between must not
/// block the reload).
fn read_one(relative: &str, path: &Path) -> ReadOne {
    let (file, meta) = match regular_file::open(path, Mode::Read { follow: true }) {
        Ok(opened) => opened,
        Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return ReadOne::Gone,
        Err(OpenError::NotRegular(what)) => {
            return ReadOne::Finding(not_regular(relative, path, what));
        }
        Err(OpenError::Io(e)) => {
            return ReadOne::Finding(io_finding(relative, format!("cannot read: {e}")));
        }
    };
    // Parsed values take ~50 times the text: one huge file (a dump
    // committed by mistake) must not take the daemon's memory.
    let too_large = |len: u64| {
        io_finding(
            relative,
            format!(
                "{:.1} MB: a config file may be at most {} MB; split it",
                len as f64 / 1e6,
                MAX_FILE_BYTES / 1_000_000
            ),
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return ReadOne::Finding(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
        return ReadOne::Finding(io_finding(relative, format!("cannot read: {e}")));
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return ReadOne::Finding(too_large(bytes.len() as u64));
    }
    match String::from_utf8(bytes) {
        Ok(text) => ReadOne::Text(text),
        Err(e) => ReadOne::Finding(io_finding(
            relative,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )),
    }
}

/// The warning for a config name that is not a regular file (`what` it
/// is, and where a symlink points): skipped, the rest loads.
fn not_regular(relative: &str, path: &Path, what: &str) -> Diagnostic {
    let through = match fs::read_link(path) {
        Ok(target) => format!("a symlink to `{}`, which is {what}", target.display()),
        Err(_) => what.to_string(),
    };
    let mut d = io_finding(
        relative,
        format!("{through}, not a regular file; skipped (config files must be regular files)"),
    );
    d.severity = crate::spec::diagnostic::Severity::Warning;
    d
}

fn io_finding(file: &str, message: String) -> Diagnostic {
    Diagnostic::file_error(
        file,
        crate::spec::yaml::Pos { line: 1, column: 1 },
        "io",
        message,
    )
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// One walk of a config folder: what it found and where it may go.
struct Walk<'a> {
    /// Nothing outside this directory is read (after symlinks).
    confine: Option<&'a Path>,
    /// Directories read already (by canonical path).
    seen: HashSet<PathBuf>,
    out: &'a mut Vec<(String, PathBuf)>,
    findings: &'a mut Vec<Diagnostic>,
}

impl Walk<'_> {
    /// `true` when `path` resolves outside the confinement (an error
    /// finding names it).
    fn escapes(&mut self, relative: &str, path: &Path) -> bool {
        let Some(root) = self.confine else {
            return false;
        };
        match fs::canonicalize(path) {
            Ok(real) if real.starts_with(root) => false,
            Ok(_) => {
                let target = fs::read_link(path)
                    .map(|t| format!("a symlink to `{}`", t.display()))
                    .unwrap_or_else(|_| "reached through a symlink".into());
                self.findings.push(io_finding(
                    relative,
                    format!("{target}, outside the repository checkout; refused (commit the file itself)"),
                ));
                true
            }
            Err(_) => false,
        }
    }

    fn collect(&mut self, dir: &Path, relative: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        // A directory reached twice through symlinks is read once.
        if let Ok(canonical) = fs::canonicalize(dir)
            && !self.seen.insert(canonical)
        {
            return;
        }
        // An unreadable folder is an error, not an empty one: its jobs would
        // otherwise read as deleted and be unscheduled at the next reload.
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.findings
                    .push(io_finding(relative, format!("cannot read the folder: {e}")));
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_hidden(name) {
                continue;
            }
            let path = entry.path();
            let child = format!("{relative}/{name}");
            let config_name = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e));
            // metadata() follows symlinks. A dangling link is skipped (a
            // git-sync swap has them for an instant), with a warning when it
            // names a config file; any other failure is an error.
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if config_name {
                        let mut d = io_finding(
                            &child,
                            "a symlink to a file that does not exist; skipped".into(),
                        );
                        d.severity = crate::spec::diagnostic::Severity::Warning;
                        self.findings.push(d);
                    }
                    continue;
                }
                Err(e) => {
                    self.findings
                        .push(io_finding(&child, format!("cannot read: {e}")));
                    continue;
                }
            };
            if meta.is_dir() {
                if !self.escapes(&child, &path) {
                    self.collect(&path, &child, depth + 1);
                }
            } else if meta.is_file() && config_name {
                if !self.escapes(&child, &path) {
                    self.out.push((child, path));
                }
            } else if config_name {
                let what = regular_file::describe(meta.file_type());
                self.findings.push(not_regular(&child, &path, what));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_a_root_symlinks_out_of_it_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let d = tmp.path().join("checkout");
        fs::create_dir_all(outside.join("more")).unwrap();
        fs::write(outside.join("secret.yaml"), "id: s\ntype: noop\n").unwrap();
        fs::write(outside.join("more/x.yaml"), "id: x\ntype: noop\n").unwrap();
        fs::create_dir_all(d.join("jobs.d")).unwrap();
        fs::write(d.join("jobs.d/a.yaml"), "id: a\ntype: noop\n").unwrap();
        std::os::unix::fs::symlink(d.join("jobs.d/a.yaml"), d.join("jobs.d/same.yaml")).unwrap();
        std::os::unix::fs::symlink("../../outside/secret.yaml", d.join("jobs.d/s.yaml")).unwrap();
        std::os::unix::fs::symlink(outside.join("more"), d.join("jobs.d/more")).unwrap();
        let root = fs::canonicalize(&d).unwrap();
        let got = read_config_dir_within(&root, Some(&root)).unwrap();
        let names: Vec<_> = got.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["jobs.d/a.yaml", "jobs.d/same.yaml"]);
        let refused: Vec<_> = got
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.file.as_str())
            .collect();
        assert_eq!(refused.len(), 2, "{:?}", got.diagnostics);
        assert!(refused.contains(&"jobs.d/s.yaml") && refused.contains(&"jobs.d/more"));
        // Without a root (a local directory) they are followed, as before.
        assert_eq!(read_config_dir(&d).unwrap().files.len(), 4);
        std::os::unix::fs::symlink(&outside, d.join("up")).unwrap();
        assert!(read_config_dir_within(&root.join("up"), Some(&root)).is_err());
    }

    #[test]
    fn reads_nested_files_and_skips_hidden_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("jobs.d/team/_drafts")).unwrap();
        fs::create_dir_all(d.join("skills.d")).unwrap();
        fs::write(d.join("jobs.d/a.yaml"), "id: a\ntype: noop\n").unwrap();
        fs::write(d.join("jobs.d/team/b.yml"), "id: b\ntype: noop\n").unwrap();
        fs::write(d.join("jobs.d/team/_drafts/c.yaml"), "id: c\n").unwrap();
        fs::write(d.join("jobs.d/.a.yaml.swp"), "x").unwrap();
        fs::write(d.join("jobs.d/notes.txt"), "x").unwrap();
        fs::write(d.join("skills.d/s.json"), "{}").unwrap();
        let got = read_config_dir(d).unwrap();
        let names: Vec<_> = got.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            ["jobs.d/a.yaml", "jobs.d/team/b.yml", "skills.d/s.json"]
        );
    }

    #[test]
    fn a_file_over_the_size_cap_is_a_finding_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("jobs.d")).unwrap();
        fs::write(d.join("jobs.d/a.yaml"), "id: a\ntype: noop\n").unwrap();
        let big = fs::File::create(d.join("jobs.d/dump.yaml")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let got = read_config_dir(d).unwrap();
        let names: Vec<_> = got.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["jobs.d/a.yaml"]);
        assert_eq!(got.diagnostics.len(), 1);
        let text = format!("{:?}", got.diagnostics[0]);
        assert!(
            text.contains("jobs.d/dump.yaml") && text.contains("at most 8 MB"),
            "{text}"
        );
    }

    #[test]
    fn a_dangling_symlink_to_a_config_file_is_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("jobs.d")).unwrap();
        fs::write(d.join("jobs.d/a.yaml"), "id: a\ntype: noop\n").unwrap();
        std::os::unix::fs::symlink(d.join("gone.yaml"), d.join("jobs.d/b.yaml")).unwrap();
        std::os::unix::fs::symlink(d.join("gone.txt"), d.join("jobs.d/notes.txt")).unwrap();
        let got = read_config_dir(d).unwrap();
        assert_eq!(got.files.len(), 1);
        assert_eq!(got.diagnostics.len(), 1, "{:?}", got.diagnostics);
        let w = &got.diagnostics[0];
        assert_eq!(w.file, "jobs.d/b.yaml");
        assert_eq!(w.severity, crate::spec::diagnostic::Severity::Warning);
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    /// `f` on another thread: a regression that blocks on the FIFO (or
    /// reads /dev/zero forever) fails the test instead of hanging it.
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("blocked reading the config dir")
    }

    #[test]
    fn a_fifo_or_a_device_named_like_a_config_file_is_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        fs::create_dir_all(d.join("jobs.d")).unwrap();
        fs::write(d.join("jobs.d/a.yaml"), "id: a\ntype: noop\n").unwrap();
        mkfifo(&d.join("jobs.d/pipe.yaml"));
        std::os::unix::fs::symlink("/dev/zero", d.join("jobs.d/zero.yaml")).unwrap();
        // Not a config name: ignored as before.
        mkfifo(&d.join("jobs.d/notes.fifo"));
        let got = within_5s(move || read_config_dir(&d).unwrap());
        let names: Vec<_> = got.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["jobs.d/a.yaml"]);
        let mut found: Vec<String> = got.diagnostics.iter().map(|d| d.to_string()).collect();
        found.sort();
        assert_eq!(
            found,
            [
                "jobs.d/pipe.yaml:1:1: warning[io]: a FIFO (named pipe), not a regular file; \
                 skipped (config files must be regular files)",
                "jobs.d/zero.yaml:1:1: warning[io]: a symlink to `/dev/zero`, which is a \
                 character device, not a regular file; skipped (config files must be regular files)",
            ]
        );
    }

    #[test]
    fn a_file_swapped_for_a_fifo_after_the_listing_does_not_block() {
        // The listing saw a regular file; by the read it is a FIFO.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.yaml");
        mkfifo(&path);
        let got = within_5s(move || read_one("jobs.d/a.yaml", &path));
        let ReadOne::Finding(finding) = got else {
            panic!("expected a finding, got {got:?}");
        };
        assert_eq!(finding.file, "jobs.d/a.yaml");
        assert_eq!(finding.severity, crate::spec::diagnostic::Severity::Warning);
        assert!(finding.message.contains("a FIFO (named pipe)"), "{finding}");
    }

    #[test]
    fn missing_and_empty_dirs_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_config_dir(&tmp.path().join("nope")),
            Err(SourceError::Missing { .. })
        ));
        assert!(matches!(
            read_config_dir(tmp.path()),
            Err(SourceError::Empty { .. })
        ));
    }

    #[test]
    fn follows_symlinked_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("rev1/jobs.d")).unwrap();
        fs::write(d.join("rev1/jobs.d/a.yaml"), "id: a\ntype: noop\n").unwrap();
        fs::create_dir_all(d.join("conf")).unwrap();
        std::os::unix::fs::symlink(d.join("rev1/jobs.d"), d.join("conf/jobs.d")).unwrap();
        let got = read_config_dir(&d.join("conf")).unwrap();
        assert_eq!(got.files.len(), 1);
    }
}
