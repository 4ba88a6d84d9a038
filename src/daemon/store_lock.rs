//! One daemon per embedded store: an OS advisory lock on a file beside the
//! store (`state.db.lock`), taken before the store is opened and held for
//! the process's life. The kernel releases it when the process dies, so a
//! killed daemon's lock is taken over by the next start; what the file
//! says (pid, listen address, since) is what a refused start prints, and
//! what a take-over logs. CLI commands never take it: they read the store
//! read-only and post to its inbox beside the daemon.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the holder writes into the lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub listen: String,
    /// RFC 3339.
    pub since: String,
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
    /// What a process that died holding it had written.
    pub stale: Option<Holder>,
}

/// The lock file of the store at `state`.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StoreLock {
    /// Take the lock of the store at `state` for a daemon listening on
    /// `listen`, or say who holds it.
    pub fn acquire(state: &Path, listen: SocketAddr) -> anyhow::Result<StoreLock> {
        // The file itself, not the name given: two names of one store
        // (a symlink) share one lock.
        let real = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
        let path = lock_path(&real);
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                anyhow::anyhow!("opening the store's lock file {}: {e}", path.display())
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(anyhow::anyhow!(refusal(&path, state)));
            }
            Err(TryLockError::Error(e)) => anyhow::bail!(
                "locking {}: {e} (a file system without locks? give the store another place with --state)",
                path.display()
            ),
        }
        let stale = read_holder(&mut file);
        let holder = Holder {
            pid: std::process::id(),
            listen: listen.to_string(),
            since: crate::store::now_rfc3339(),
        };
        write_holder(&mut file, Some(&holder))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(StoreLock { file, path, stale })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A clean stop empties the file (the lock itself goes with the
    /// process): the next start has no stale holder to report. The file
    /// stays: removing it would let two processes lock two different files.
    pub fn release(mut self) {
        let _ = write_holder(&mut self.file, None);
    }
}

/// `another multijob (pid N, listening on ADDR, since T) holds STORE`, and
/// what to do about it.
fn refusal(lock: &Path, state: &Path) -> String {
    // The holder writes right after locking: give it a moment.
    let mut holder = None;
    for _ in 0..20 {
        holder = File::open(lock).ok().and_then(|mut f| read_holder(&mut f));
        if holder.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let who = match holder {
        Some(h) => format!(
            "pid {}, listening on {}, since {}",
            h.pid, h.listen, h.since
        ),
        None => format!("pid unknown: {} is empty", lock.display()),
    };
    format!(
        "another multijob ({who}) holds {}\n  hint: stop it first, or give this one another store with --dir or --state",
        state.display()
    )
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    // A lock file is a line of JSON; anything longer is not ours.
    file.take(4096).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn write_holder(file: &mut File, holder: Option<&Holder>) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    if let Some(h) = holder {
        let line = serde_json::to_string(h).map_err(std::io::Error::other)?;
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
    }
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().expect("a literal address")
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.db");
        let first = StoreLock::acquire(&state, addr()).expect("first lock");
        assert_eq!(first.stale, None);
        let err = StoreLock::acquire(&state, addr()).expect_err("second lock");
        let msg = err.to_string();
        let expected = format!(
            "another multijob (pid {}, listening on 127.0.0.1:9, since ",
            std::process::id()
        );
        assert!(msg.starts_with(&expected), "{msg}");
        assert!(msg.contains(&format!("holds {}", state.display())), "{msg}");
        first.release();
        let again = StoreLock::acquire(&state, addr()).expect("after release");
        assert_eq!(again.stale, None, "a clean stop leaves no stale holder");
    }

    #[test]
    fn two_names_of_one_store_share_its_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.db");
        std::fs::write(&state, "").expect("a store file");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&state, &link).expect("symlink");
        let _first = StoreLock::acquire(&state, addr()).expect("first lock");
        let err = StoreLock::acquire(&link, addr()).expect_err("the same store");
        assert!(err.to_string().contains("another multijob"), "{err}");
    }

    #[test]
    fn a_dropped_lock_without_release_is_reported_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("sub").join("state.db");
        let first = StoreLock::acquire(&state, addr()).expect("first lock");
        drop(first);
        let next = StoreLock::acquire(&state, addr()).expect("take over");
        let stale = next.stale.clone().expect("stale holder");
        assert_eq!(stale.pid, std::process::id());
        assert_eq!(stale.listen, "127.0.0.1:9");
        assert!(!state.exists(), "the lock does not create the store");
    }

    /// A lock file someone else wrote (garbage, oversized) is no holder:
    /// the start goes on and overwrites it.
    #[test]
    fn a_garbage_lock_file_does_not_stop_a_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.db");
        std::fs::write(lock_path(&state), "x".repeat(100_000)).expect("write");
        let lock = StoreLock::acquire(&state, addr()).expect("lock");
        assert_eq!(lock.stale, None);
        let text = std::fs::read_to_string(lock_path(&state)).expect("read");
        let holder: Holder = serde_json::from_str(text.trim()).expect("a holder line");
        assert_eq!(holder.pid, std::process::id());
    }
}
