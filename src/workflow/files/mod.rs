//! The `files` action: read and write under the run's data directory.
//!
//! A path is relative, has no `..`, and may not leave the data directory
//! through a symlink: an existing ancestor is resolved and must stay inside,
//! and the file itself is opened without following a final symlink. Only
//! regular files are read or written: a FIFO or a device is refused
//! without ever blocking on it ([`crate::regular_file`]). What runs write
//! is bounded per run and per data dir ([`quota`]).
//!
//! It uses `regular_file` and the file system, nothing else of the crate;
//! the engine's `files` step calls [`read`] and [`write`].

pub mod quota;

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

pub use quota::{FilesLimits, FilesQuota, RunUsage};

use crate::regular_file::{self, Mode, OpenError};

/// Files read back into a step output are bounded like rendered strings.
pub const MAX_READ_BYTES: u64 = super::template::MAX_OUTPUT_BYTES as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error("path `{0}` must be relative, without `..`, and name a file")]
    BadPath(String),
    #[error("path `{0}` leaves the data directory")]
    Escapes(String),
    #[error("`{path}`: {message}")]
    Io { path: String, message: String },
    /// `op`: `reads` or `writes`.
    #[error("`{path}` is {what}, not a regular file; files {op} only regular files")]
    NotRegular {
        path: String,
        what: &'static str,
        op: &'static str,
    },
    #[error("`{path}`: {message}")]
    Quota { path: String, message: String },
}

fn io(path: &str, e: impl std::fmt::Display) -> FilesError {
    FilesError::Io {
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// `rel` checked lexically: only normal components.
fn checked(rel: &str) -> Result<PathBuf, FilesError> {
    let path = Path::new(rel);
    let ok = !rel.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.file_name().is_some();
    if ok {
        Ok(path.to_path_buf())
    } else {
        Err(FilesError::BadPath(rel.to_string()))
    }
}

/// Creates the missing directories of `dir` (inside `root`), refusing a
/// symlinked ancestor that resolves outside `root`.
fn ensure_dir_inside(root: &Path, rel_dir: &Path, rel: &str) -> Result<PathBuf, FilesError> {
    let mut current = root.to_path_buf();
    for part in rel_dir.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() || meta.is_dir() => {
                let resolved = current.canonicalize().map_err(|e| io(rel, e))?;
                if !resolved.starts_with(root) {
                    return Err(FilesError::Escapes(rel.to_string()));
                }
                if !resolved.is_dir() {
                    return Err(io(rel, "an ancestor is not a directory"));
                }
            }
            Ok(_) => return Err(io(rel, "an ancestor is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&current).map_err(|e| io(rel, e))?;
            }
            Err(e) => return Err(io(rel, e)),
        }
    }
    Ok(current)
}

fn root(data_dir: &Path) -> Result<PathBuf, FilesError> {
    let shown = data_dir.display().to_string();
    fs::create_dir_all(data_dir).map_err(|e| io(&shown, e))?;
    data_dir.canonicalize().map_err(|e| io(&shown, e))
}

/// Writes `content` to `rel`, charged to the data dir's `quota`; output
/// `{path, bytes}`.
pub fn write(
    data_dir: &Path,
    rel: &str,
    content: &[u8],
    quota: &FilesQuota,
) -> Result<Value, FilesError> {
    let path = checked(rel)?;
    let root = root(data_dir)?;
    let dir = ensure_dir_inside(&root, path.parent().unwrap_or(Path::new("")), rel)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| FilesError::BadPath(rel.into()))?;
    let full = dir.join(file_name);
    let existed = fs::symlink_metadata(&full).is_ok();
    // Not truncated yet: only once it is known to be a regular file.
    let (mut file, meta) =
        regular_file::open(&full, Mode::Write).map_err(|e| opened(rel, "writes", e))?;
    if let Err(message) = quota.charge(content.len() as u64, meta.len()) {
        if !existed {
            // The empty file the open created is not left behind.
            let _ = fs::remove_file(&full);
        }
        return Err(FilesError::Quota {
            path: rel.to_string(),
            message,
        });
    }
    if let Err(e) = file.set_len(0).and_then(|()| file.write_all(content)) {
        quota.recount();
        return Err(io(rel, e));
    }
    Ok(json!({"path": rel, "bytes": content.len()}))
}

/// Reads `rel` as UTF-8 text.
pub fn read(data_dir: &Path, rel: &str) -> Result<Value, FilesError> {
    let path = checked(rel)?;
    let root = root(data_dir)?;
    let full = root.join(&path);
    let resolved = full.canonicalize().map_err(|e| io(rel, e))?;
    if !resolved.starts_with(&root) {
        return Err(FilesError::Escapes(rel.to_string()));
    }
    // Resolved already: a symlink here now was swapped in since.
    let (file, meta) = regular_file::open(&resolved, Mode::Read { follow: false })
        .map_err(|e| opened(rel, "reads", e))?;
    let too_large = || io(rel, format!("larger than {MAX_READ_BYTES} bytes"));
    if meta.len() > MAX_READ_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_READ_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io(rel, e))?;
    if text.len() as u64 > MAX_READ_BYTES {
        return Err(too_large());
    }
    Ok(Value::String(text))
}

fn opened(rel: &str, op: &'static str, e: OpenError) -> FilesError {
    match e {
        OpenError::NotRegular(what) => FilesError::NotRegular {
            path: rel.to_string(),
            what,
            op,
        },
        OpenError::Io(e) => escape_or_io(rel, e),
    }
}

fn escape_or_io(rel: &str, e: std::io::Error) -> FilesError {
    // O_NOFOLLOW on a symlink fails with ELOOP.
    if e.raw_os_error() == Some(libc::ELOOP) {
        FilesError::Escapes(rel.to_string())
    } else {
        io(rel, e)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// A write under the default limits.
    fn put(data_dir: &Path, rel: &str, content: &[u8]) -> Result<Value, FilesError> {
        write(
            data_dir,
            rel,
            content,
            &FilesQuota::new(data_dir, FilesLimits::default()),
        )
    }

    use crate::regular_file::test_support::{mkfifo, within_5s};

    #[test]
    fn a_fifo_is_refused_at_once_for_read_and_write() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        mkfifo(&data.join("pipe"));
        let d = data.clone();
        let e = within_5s(move || read(&d, "pipe")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`pipe` is a FIFO (named pipe), not a regular file; files reads only regular files"
        );
        let d = data.clone();
        let e = within_5s(move || put(&d, "pipe", b"x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`pipe` is a FIFO (named pipe), not a regular file; files writes only regular files"
        );
        // Through a symlink inside the data dir, too.
        std::os::unix::fs::symlink(data.join("pipe"), data.join("link")).unwrap();
        let d = data.clone();
        let e = within_5s(move || read(&d, "link")).unwrap_err();
        assert!(matches!(e, FilesError::NotRegular { .. }), "{e}");
    }

    #[test]
    fn a_write_over_the_data_dir_quota_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let quota = FilesQuota::new(
            data,
            FilesLimits {
                dir_bytes: Some(100),
                ..FilesLimits::default()
            },
        );
        write(data, "a.txt", &[b'a'; 60], &quota).unwrap();
        let e = write(data, "b.txt", &[b'b'; 41], &quota).unwrap_err();
        assert!(
            matches!(&e, FilesError::Quota { path, message }
                if path == "b.txt" && message.contains("over its limit of 100 bytes")),
            "{e}"
        );
        assert!(!data.join("b.txt").exists(), "no empty file left behind");
        // An existing file refused a larger content keeps its content.
        let e = write(data, "a.txt", &[b'c'; 101], &quota).unwrap_err();
        assert!(matches!(e, FilesError::Quota { .. }), "{e}");
        assert_eq!(fs::read(data.join("a.txt")).unwrap(), [b'a'; 60]);
        // Replacing it with the same size passes; so does the rest.
        write(data, "a.txt", &[b'd'; 60], &quota).unwrap();
        write(data, "b.txt", &[b'b'; 40], &quota).unwrap();
    }

    #[test]
    fn writes_and_reads_inside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = put(&data, "reports/a/b.txt", b"hello").unwrap();
        assert_eq!(out, json!({"path": "reports/a/b.txt", "bytes": 5}));
        assert_eq!(read(&data, "reports/a/b.txt").unwrap(), json!("hello"));
        assert_eq!(read(&data, "./reports/a/b.txt").unwrap(), json!("hello"));
    }

    #[test]
    fn refuses_absolute_and_parent_paths() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", ""] {
            assert_eq!(
                put(dir.path(), bad, b"x").unwrap_err(),
                FilesError::BadPath(bad.into()),
                "{bad}"
            );
            assert!(read(dir.path(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_symlink_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), data.join("file")).unwrap();

        let escapes = |r: Result<Value, FilesError>| matches!(r, Err(FilesError::Escapes(_)));
        assert!(escapes(put(&data, "link/new/x", b"x")));
        assert!(
            !outside.join("new").exists(),
            "no directory created outside"
        );
        assert!(escapes(put(&data, "file", b"x")));
        assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), "s");
        assert!(escapes(read(&data, "link/secret")));
        assert!(escapes(read(&data, "file")));
    }
}
