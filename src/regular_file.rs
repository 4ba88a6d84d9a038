//! Opening regular files without ever blocking on a FIFO or a device.
//!
//! Opening a FIFO for reading blocks until a writer appears (for writing,
//! until a reader does), and a device such as `/dev/zero` reads forever: a
//! thread stuck there outlives any timeout and keeps the process from
//! exiting. So the file type is checked before opening (a device is never
//! opened), the open is non-blocking (a FIFO that appears in between opens
//! at once or fails at once), and the opened descriptor is checked again
//! with fstat, closing the race where a regular file is swapped for a FIFO
//! between the check and the open.

use std::fs::{self, File, FileType, Metadata, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// What the path is instead (`a FIFO (named pipe)`, ...).
    #[error("{0}, not a regular file")]
    NotRegular(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<OpenError> for std::io::Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Io(e) => e,
            not_regular => std::io::Error::other(not_regular.to_string()),
        }
    }
}

/// How to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read; `follow`: a final symlink is followed (else refused, ELOOP).
    Read { follow: bool },
    /// Write, creating the file if missing, never following a final
    /// symlink (ELOOP) and never truncating before the type is known:
    /// the caller truncates the regular file it got.
    Write,
}

/// What a non-regular file is, for a message.
pub fn describe(file_type: FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symlink"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// Opens `path` if it is a regular file, with its metadata (from the
/// opened descriptor). Never blocks on a FIFO, never opens a device it
/// saw before opening.
pub fn open(path: &Path, mode: Mode) -> Result<(File, Metadata), OpenError> {
    let follow = matches!(mode, Mode::Read { follow: true });
    let before = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    match before {
        // A symlink where none is followed: the open refuses it (ELOOP).
        Ok(meta) if meta.file_type().is_symlink() => {}
        Ok(meta) if !meta.is_file() => {
            return Err(OpenError::NotRegular(describe(meta.file_type())));
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound && mode == Mode::Write => {}
        Err(e) => return Err(e.into()),
    }
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let mut options = OpenOptions::new();
    match mode {
        Mode::Read { .. } => options.read(true),
        Mode::Write => options.write(true).create(true),
    };
    let file = match options.custom_flags(flags).open(path) {
        Ok(file) => file,
        // A FIFO without a reader (opened to write, non-blocking), or a
        // device without its driver: say which it is.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(match fs::symlink_metadata(path) {
                Ok(meta) if !meta.is_file() => OpenError::NotRegular(describe(meta.file_type())),
                _ => OpenError::Io(e),
            });
        }
        Err(e) => return Err(e.into()),
    };
    checked(file)
}

/// Writes `bytes` to `path`, created or replaced, refusing a FIFO, a
/// device or a final symlink there (reports and backups write their temp
/// files so: a FIFO planted in the data dir must not block them).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), OpenError> {
    let (mut file, _) = open(path, Mode::Write)?;
    file.set_len(0)?;
    file.write_all(bytes)?;
    Ok(())
}

/// `file` if its descriptor is a regular file: what it is at the open,
/// whatever the path showed before.
fn checked(file: File) -> Result<(File, Metadata), OpenError> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(describe(meta.file_type())));
    }
    Ok((file, meta))
}

/// For tests that plant FIFOs: making one, and running what might block
/// on it with a deadline.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    pub(crate) fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    /// `f` on another thread: a regression that blocks fails the test
    /// instead of hanging it.
    pub(crate) fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("blocked: the open must not wait for a FIFO's other end")
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    use super::test_support::{mkfifo, within_5s};

    fn not_regular(r: Result<(File, Metadata), OpenError>) -> &'static str {
        match r {
            Err(OpenError::NotRegular(what)) => what,
            other => panic!("expected NotRegular, got {other:?}"),
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking_for_read_and_write() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        for mode in [
            Mode::Read { follow: true },
            Mode::Read { follow: false },
            Mode::Write,
        ] {
            let path = fifo.clone();
            let what = within_5s(move || not_regular(open(&path, mode)));
            assert_eq!(what, "a FIFO (named pipe)", "{mode:?}");
        }
    }

    #[test]
    fn a_symlink_to_a_device_is_refused_when_followed() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let what = within_5s(move || not_regular(open(&link, Mode::Read { follow: true })));
        assert_eq!(what, "a character device");
    }

    #[test]
    fn the_opened_descriptor_is_checked_too() {
        // A regular file swapped for a FIFO between the check and the open
        // passes the check; the non-blocking open then succeeds when the
        // FIFO has a writer, and only the descriptor's type can refuse it.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let _writer = OpenOptions::new().write(true).open(&fifo).unwrap();
        assert_eq!(not_regular(checked(reader)), "a FIFO (named pipe)");
        let regular = File::create(dir.path().join("a")).unwrap();
        assert!(checked(regular).is_ok());
    }

    #[test]
    fn regular_files_open_and_write_creates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        let (mut file, meta) = open(&path, Mode::Write).unwrap();
        assert_eq!(meta.len(), 0);
        file.write_all(b"hello").unwrap();
        let (mut file, meta) = open(&path, Mode::Read { follow: false }).unwrap();
        assert_eq!(meta.len(), 5);
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        assert!(matches!(
            open(&dir.path().join("missing"), Mode::Read { follow: true }),
            Err(OpenError::Io(e)) if e.kind() == ErrorKind::NotFound
        ));
        assert_eq!(
            not_regular(open(dir.path(), Mode::Read { follow: true })),
            "a directory"
        );
    }

    #[test]
    fn write_replaces_a_regular_file_and_refuses_a_fifo_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.tmp");
        write(&path, b"a longer first version").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        let fifo = dir.path().join("planted.tmp");
        mkfifo(&fifo);
        let e = within_5s(move || std::io::Error::from(write(&fifo, b"x").unwrap_err()));
        assert_eq!(e.to_string(), "a FIFO (named pipe), not a regular file");
    }

    #[test]
    fn a_final_symlink_is_refused_unless_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), "t").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
        for mode in [Mode::Read { follow: false }, Mode::Write] {
            match open(&link, mode) {
                Err(OpenError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ELOOP)),
                other => panic!("{mode:?}: {other:?}"),
            }
        }
        assert!(open(&link, Mode::Read { follow: true }).is_ok());
    }
}
