//! Child processes run without a shell, each in its own process group:
//! the pieces shared by the `command` job type and the agent's `command`
//! tool. A child gets the fixed [`CHILD_PATH`], its output is captured up
//! to a limit (the head, plus the end for error messages), and
//! cancellation reaches everything it started: SIGTERM to the group, up to
//! [`TERM_GRACE`] for it to go, then SIGKILL ([`GroupGuard`] SIGKILLs the
//! group when a supervised future is dropped).

use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::run::RunError;
use crate::store::output::OutputStream;

/// The child's whole `PATH`: system directories only, whatever the
/// daemon's own environment holds.
pub const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long a cancelled group gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// After the child exits, how long to keep reading output that something it
/// left running in the background may still hold open. Without a bound, a
/// `daemon &` would keep the run going for as long as it lives.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Bytes of stderr's end kept for the error message when the head was cut.
const TAIL_LIMIT: usize = 4096;

/// Longest stderr line quoted in an error.
const MESSAGE_LINE_LIMIT: usize = 300;

/// Told each chunk of output as it arrives (e.g. to record it live).
pub type OnChunk<'a> = dyn Fn(OutputStream, &[u8]) + Sync + 'a;

/// How a supervised child ended: its exit status, or `None` when the
/// token fired first and the group was terminated; and what it printed.
pub struct Supervised {
    pub status: Option<io::Result<ExitStatus>>,
    pub stdout: Capture,
    pub stderr: Capture,
}

/// Reads the child's output (each chunk also to `on_chunk`) while waiting
/// for it or for the token; on the token, the whole group is terminated.
pub async fn supervise(
    mut child: Child,
    cancel: &CancellationToken,
    limit: usize,
    on_chunk: Option<&OnChunk<'_>>,
) -> Supervised {
    // With `process_group(0)` the child leads a group whose id is its pid.
    let pgid = child.id().and_then(|pid| i32::try_from(pid).ok());
    let mut guard = GroupGuard { pgid };
    let mut stdout = Capture::new(limit);
    let mut stderr = Capture::new(limit);
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());

    let status = {
        let drain = async {
            tokio::join!(
                pump(out_pipe, &mut stdout, on_chunk, OutputStream::Stdout),
                pump(err_pipe, &mut stderr, on_chunk, OutputStream::Stderr)
            );
        };
        tokio::pin!(drain);
        let linger = tokio::time::sleep(DRAIN_AFTER_EXIT);
        tokio::pin!(linger);
        let mut status = None;
        let mut drained = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break None,
                exited = child.wait(), if status.is_none() => {
                    status = Some(exited);
                    linger.as_mut().reset(Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = &mut drain, if !drained => drained = true,
                _ = &mut linger, if status.is_some() && !drained => break status,
            }
            if drained && status.is_some() {
                break status;
            }
        }
    };
    if status.is_none() {
        terminate_group(&mut child, pgid).await;
    }
    guard.pgid = None;
    Supervised {
        status,
        stdout,
        stderr,
    }
}

pub fn spawn_error(argv0: &str, e: &io::Error) -> RunError {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => RunError::Permanent(format!("command not found: {argv0}")),
        (io::ErrorKind::PermissionDenied, _) => {
            RunError::Permanent(format!("permission denied running {argv0}"))
        }
        (_, Some(libc::ENOEXEC)) => {
            RunError::Permanent(format!("{argv0} is not an executable this system can run"))
        }
        // Out of processes, memory or file descriptors: may pass.
        _ => RunError::retryable(format!("could not start {argv0}: {e}")),
    }
}

/// A `cwd` (named `what` in errors) as a relative path that cannot climb out of the data dir
/// on paper; [`dir_inside`] checks symlinks on disk.
pub fn relative_cwd(what: &str, requested: &str) -> Result<PathBuf, RunError> {
    if requested.contains('\0') {
        return Err(RunError::Permanent(format!("{what}: contains a NUL byte")));
    }
    let mut clean = PathBuf::new();
    for part in Path::new(requested).components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(RunError::Permanent(format!(
                    "{what}: {requested:?} uses `..`; it must stay inside the data dir"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(RunError::Permanent(format!(
                    "{what}: {requested:?} is absolute; give a path relative to the data dir"
                )));
            }
        }
    }
    Ok(clean)
}

/// Creates `root/relative` one level at a time, refusing any level that a
/// symlink sends outside `root`. Returns the canonical path.
pub fn dir_inside(root: &Path, relative: &Path) -> Result<PathBuf, RunError> {
    let io_failure = |what: &Path, e: io::Error| {
        let message = format!("{}: {e}", what.display());
        // Permissions do not fix themselves between retries; a full disk may.
        if e.kind() == io::ErrorKind::PermissionDenied {
            RunError::Permanent(message)
        } else {
            RunError::retryable(message)
        }
    };
    std::fs::create_dir_all(root).map_err(|e| io_failure(root, e))?;
    let root = std::fs::canonicalize(root).map_err(|e| io_failure(root, e))?;
    let mut dir = root.clone();
    for part in relative.components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_failure(&dir, e)),
        }
        dir = std::fs::canonicalize(&dir).map_err(|e| io_failure(&dir, e))?;
        if !dir.starts_with(&root) {
            return Err(RunError::Permanent(format!(
                "cwd {} leaves the data dir {} through a symlink",
                relative.display(),
                root.display()
            )));
        }
        if !dir.is_dir() {
            return Err(RunError::Permanent(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// The head of a stream up to its limit, and its end for messages.
#[derive(Debug)]
pub struct Capture {
    limit: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

impl Capture {
    /// Keeps the first `limit` bytes (and the end, for messages).
    pub fn new(limit: usize) -> Capture {
        Capture {
            limit,
            head: Vec::new(),
            tail: Vec::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.limit.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.tail.extend_from_slice(bytes);
        // Trimming only past twice the limit keeps the copying amortized.
        if self.tail.len() > 2 * TAIL_LIMIT {
            self.tail.drain(..self.tail.len() - TAIL_LIMIT);
        }
    }

    pub fn truncated(&self) -> bool {
        self.total > self.head.len() as u64
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The last non-blank line, shortened for a one-line message.
    pub fn last_line(&self) -> Option<String> {
        let source = if self.truncated() {
            &self.tail
        } else {
            &self.head
        };
        let text = String::from_utf8_lossy(source);
        let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
        Some(match line.char_indices().nth(MESSAGE_LINE_LIMIT) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        })
    }
}

async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    capture: &mut Capture,
    on_chunk: Option<&OnChunk<'_>>,
    stream: OutputStream,
) {
    let Some(mut pipe) = pipe else { return };
    // On the heap: a stack buffer would sit in every run's future.
    let mut buf = vec![0u8; 8192];
    // A read error ends the capture; the exit status still says how it went.
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        capture.push(&buf[..n]);
        if let Some(on_chunk) = on_chunk {
            on_chunk(stream, &buf[..n]);
        }
    }
}

/// SIGKILLs the group if the run's future is dropped mid-run (a caller
/// that enforces its timeout by dropping): `kill_on_drop` reaches only the
/// leader, and whatever it started would live on.
pub struct GroupGuard {
    pub pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

pub fn signal_group(pgid: i32, signal: libc::c_int) {
    // kill(0, ..) would signal the daemon's own group and kill(-1, ..)
    // every process it may signal: never let a bad id turn into either.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// SIGTERM, up to [`TERM_GRACE`] for the group to empty, then SIGKILL.
///
/// The group id stays reserved while any member lives (zombies included),
/// so signalling it after the leader is reaped cannot hit a stranger.
pub async fn terminate_group(child: &mut Child, pgid: Option<i32>) {
    let Some(pgid) = pgid else {
        // No id to address the group by: the leader is all we can reach.
        let _ = child.kill().await;
        return;
    };
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    loop {
        // Reap the leader once it exits, so it stops counting as a member.
        let _ = child.try_wait();
        if !group_has_live_members(pgid) {
            break;
        }
        if Instant::now() >= deadline {
            signal_group(pgid, libc::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.wait().await;
}

pub fn group_has_live_members(pgid: i32) -> bool {
    // SAFETY: as in `signal_group`; signal 0 only checks for existence.
    if unsafe { libc::kill(-pgid, 0) } != 0 {
        return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    // The group has members, but they may all be zombies: children of a
    // killed leader are reparented to PID 1, and a PID 1 that does not reap
    // (common in containers) leaves them as zombies for good. Without
    // /proc, assume someone is alive and let the grace period run out.
    live_member_in_proc(pgid).unwrap_or(true)
}

fn live_member_in_proc(pgid: i32) -> Option<bool> {
    for entry in std::fs::read_dir("/proc")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Gone since the listing: not a member any more.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, group)) = parse_stat(&stat)
            && group == pgid
            && !matches!(state, 'Z' | 'X')
        {
            return Some(true);
        }
    }
    std::fs::metadata("/proc/self").ok().map(|_| false)
}

/// State and process group from a `/proc/PID/stat` line.
pub fn parse_stat(stat: &str) -> Option<(char, i32)> {
    // The command name may hold spaces and parentheses; the fields after
    // it start at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        assert_eq!(
            parse_stat("4242 (my (odd) name) S 1 4240 4240 0 -1"),
            Some(('S', 4240))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn capture_keeps_the_head_and_the_last_line() {
        let mut capture = Capture::new(64 * 1024);
        for _ in 0..100 {
            capture.push(&[b'x'; 1000]);
        }
        capture.push(b"\nthe real error\n");
        assert!(capture.truncated());
        assert_eq!(capture.text().len(), 64 * 1024);
        assert_eq!(capture.last_line().as_deref(), Some("the real error"));
        assert!(capture.tail.len() <= 2 * TAIL_LIMIT);
    }
}
