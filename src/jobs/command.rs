//! `command`: run an argv without a shell, in its own process group.
//!
//! Off unless the daemon runs with `--allow-command`. What runs comes from
//! the applied spec (`job.inputs`), never from trigger inputs: a trigger or
//! an inbound message must not be able to choose a program (SPEC 4, "inputs
//! never change policy").
//!
//! The child gets a cleared environment, a null stdin and its own process
//! group, so cancellation (timeout, `overlap: replace`, shutdown) can reach
//! everything it started: SIGTERM to the group, up to [`TERM_GRACE`] for it
//! to go, then SIGKILL.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RunContext;
use super::output::OutputSink;
use crate::run::{RunError, RunResult};
use crate::spec::model::Job;
use crate::store::output::OutputStream;

/// The child's whole `PATH`: system directories only, whatever the
/// daemon's own environment holds.
pub const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Bytes of stdout and of stderr kept; the rest is counted and dropped.
pub const CAPTURE_LIMIT: usize = 64 * 1024;

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

pub async fn run(job: &Job, ctx: &RunContext, cancel: &CancellationToken) -> RunResult {
    if !ctx.allow_command {
        return Err(RunError::Permanent(format!(
            "job {} is a command job, and command jobs are off: start the daemon with \
             --allow-command to run them",
            ctx.job_id
        )));
    }
    let invocation = Invocation::from_inputs(&job.inputs)?;
    let job_dir = path_component("job id", &ctx.job_id)?;
    let run_dir = path_component("run id", &ctx.run_id)?;
    if cancel.is_cancelled() {
        return Err(RunError::Cancelled);
    }

    let cwd = match &invocation.cwd {
        Some(cwd) => cwd.clone(),
        None => Path::new("command").join(job_dir),
    };
    // The run's scratch dir is its HOME: tools that write dotfiles write
    // them there, not into the daemon's home.
    let scratch = Path::new("scratch").join(run_dir);
    let data_dir = ctx.data_dir.clone();
    let dirs = tokio::task::spawn_blocking(move || {
        let cwd = dir_inside(&data_dir, &cwd)?;
        let home = dir_inside(&data_dir, &scratch)?;
        Ok::<_, RunError>((cwd, home))
    })
    .await
    .map_err(|e| RunError::retryable(format!("preparing directories did not finish: {e}")))?;
    let (cwd, home) = dirs?;

    let result = spawn_and_wait(&invocation, ctx, &cwd, &home, cancel).await;
    // Scratch is per attempt; a later attempt starts from an empty HOME.
    if let Err(e) = tokio::fs::remove_dir_all(&home).await {
        tracing::warn!(run_id = %ctx.run_id, dir = %home.display(), "could not remove scratch dir: {e}");
    }
    result
}

/// The checked inputs of a command job.
#[derive(Debug, Clone, PartialEq)]
struct Invocation {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    /// Relative to the data dir, with `.` removed; `None` means the default.
    cwd: Option<PathBuf>,
}

impl Invocation {
    fn from_inputs(inputs: &Map<String, Value>) -> Result<Invocation, RunError> {
        let bad = |what: String| RunError::Permanent(format!("input {what}"));
        let argv = match inputs.get("argv") {
            None | Some(Value::Null) => {
                return Err(bad(
                    "argv: missing; a command job needs a list such as [\"/bin/echo\", \"hi\"]"
                        .into(),
                ));
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(bad(
                    "argv: expected a list of strings (it runs without a shell, so a \
                     command line is not split)"
                        .into(),
                ));
            }
        };
        if argv.is_empty() {
            return Err(bad("argv: is empty".into()));
        }
        let argv = argv
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if i == 0 && s.is_empty() => Err(bad("argv[0]: is empty".into())),
                Value::String(s) if s.contains('\0') => {
                    Err(bad(format!("argv[{i}]: contains a NUL byte")))
                }
                Value::String(s) => Ok(s.clone()),
                other => Err(bad(format!(
                    "argv[{i}]: expected a string, got {other} (quote it)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut env = BTreeMap::new();
        match inputs.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Object(vars)) => {
                for (key, value) in vars {
                    if !is_env_name(key) {
                        return Err(bad(format!(
                            "env: name {key:?} must match ^[A-Z_][A-Z0-9_]*$"
                        )));
                    }
                    if key.starts_with("MULTIJOB_") {
                        return Err(bad(format!(
                            "env: {key} is reserved: the runner sets MULTIJOB_* itself"
                        )));
                    }
                    match value {
                        Value::String(s) if s.contains('\0') => {
                            return Err(bad(format!("env.{key}: contains a NUL byte")));
                        }
                        Value::String(s) => {
                            env.insert(key.clone(), s.clone());
                        }
                        other => {
                            return Err(bad(format!(
                                "env.{key}: expected a string, got {other} (quote it: \
                                 {key}: \"{other}\")"
                            )));
                        }
                    }
                }
            }
            Some(_) => return Err(bad("env: expected a map of names to strings".into())),
        }

        let cwd = match inputs.get("cwd") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(relative_cwd(s)?),
            Some(_) => {
                return Err(bad("cwd: expected a path relative to the data dir".into()));
            }
        };
        Ok(Invocation { argv, env, cwd })
    }
}

fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'_'))
        && bytes.all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'))
}

/// `inputs.cwd` as a relative path that cannot climb out of the data dir
/// on paper; [`dir_inside`] checks symlinks on disk.
fn relative_cwd(requested: &str) -> Result<PathBuf, RunError> {
    if requested.contains('\0') {
        return Err(RunError::Permanent("input cwd: contains a NUL byte".into()));
    }
    let mut clean = PathBuf::new();
    for part in Path::new(requested).components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(RunError::Permanent(format!(
                    "input cwd: {requested:?} uses `..`; it must stay inside the data dir"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(RunError::Permanent(format!(
                    "input cwd: {requested:?} is absolute; give a path relative to the data dir"
                )));
            }
        }
    }
    Ok(clean)
}

/// An id used as one directory name.
fn path_component<'a>(what: &str, id: &'a str) -> Result<&'a str, RunError> {
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
        return Err(RunError::Permanent(format!(
            "{what} {id:?} cannot name a directory"
        )));
    }
    Ok(id)
}

/// Creates `root/relative` one level at a time, refusing any level that a
/// symlink sends outside `root`. Returns the canonical path.
fn dir_inside(root: &Path, relative: &Path) -> Result<PathBuf, RunError> {
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

async fn spawn_and_wait(
    invocation: &Invocation,
    ctx: &RunContext,
    cwd: &Path,
    home: &Path,
    cancel: &CancellationToken,
) -> RunResult {
    let argv0 = &invocation.argv[0];
    let mut command = Command::new(argv0);
    command
        .args(&invocation.argv[1..])
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("HOME", home)
        // After PATH and HOME, so a job may set its own; MULTIJOB_* are
        // refused in `env`, so these three always tell the truth.
        .envs(&invocation.env)
        .env("MULTIJOB_RUN_ID", &ctx.run_id)
        .env("MULTIJOB_JOB_ID", &ctx.job_id)
        .env("MULTIJOB_ATTEMPT", ctx.attempt.to_string())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = command.spawn().map_err(|e| spawn_error(argv0, &e))?;
    // Recorded as it goes for `logs --follow`, where there is a store.
    let sink = ctx
        .store
        .clone()
        .map(|store| OutputSink::start(store, &ctx.run_id, ctx.attempt));
    let result = supervise(child, cancel, sink.as_ref()).await;
    if let Some(sink) = sink {
        sink.finish().await;
    }
    result
}

fn spawn_error(argv0: &str, e: &io::Error) -> RunError {
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

/// Reads the child's output while waiting for it or for the token.
async fn supervise(
    mut child: Child,
    cancel: &CancellationToken,
    sink: Option<&OutputSink>,
) -> RunResult {
    // With `process_group(0)` the child leads a group whose id is its pid.
    let pgid = child.id().and_then(|pid| i32::try_from(pid).ok());
    let mut guard = GroupGuard { pgid };
    let mut stdout = Capture::default();
    let mut stderr = Capture::default();
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());

    let status = {
        let drain = async {
            tokio::join!(
                pump(out_pipe, &mut stdout, sink, OutputStream::Stdout),
                pump(err_pipe, &mut stderr, sink, OutputStream::Stderr)
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

    let Some(status) = status else {
        terminate_group(&mut child, pgid).await;
        guard.pgid = None;
        return Err(RunError::Cancelled);
    };
    guard.pgid = None;
    let status =
        status.map_err(|e| RunError::retryable(format!("waiting for the command failed: {e}")))?;
    outcome(status, &stdout, &stderr)
}

/// The run's output whatever the exit: what the command printed and its
/// exit code (`null` when a signal ended it). A failure carries the same
/// output, so a failed run's record keeps what it printed.
fn outcome(status: ExitStatus, stdout: &Capture, stderr: &Capture) -> RunResult {
    let output = json!({
        "exit_code": status.code(),
        "stdout": stdout.text(),
        "stderr": stderr.text(),
        "truncated": stdout.truncated() || stderr.truncated(),
    });
    if status.success() {
        return Ok(output);
    }
    let what = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        (None, None) => format!("ended with {status}"),
    };
    let message = match stderr.last_line() {
        Some(line) => format!("{what}: {line}"),
        None => what,
    };
    Err(RunError::retryable(message).with_output(output))
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGQUIT => " (SIGQUIT)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGKILL => " (SIGKILL: killed from outside, often out of memory)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGTERM => " (SIGTERM)",
        _ => "",
    }
}

/// The head of a stream up to [`CAPTURE_LIMIT`], and its end for messages.
#[derive(Debug, Default)]
struct Capture {
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

impl Capture {
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = CAPTURE_LIMIT - self.head.len();
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.tail.extend_from_slice(bytes);
        // Trimming only past twice the limit keeps the copying amortized.
        if self.tail.len() > 2 * TAIL_LIMIT {
            self.tail.drain(..self.tail.len() - TAIL_LIMIT);
        }
    }

    fn truncated(&self) -> bool {
        self.total > self.head.len() as u64
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The last non-blank line, shortened for a one-line message.
    fn last_line(&self) -> Option<String> {
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
    sink: Option<&OutputSink>,
    stream: OutputStream,
) {
    let Some(mut pipe) = pipe else { return };
    // On the heap: a stack buffer would sit in every run's future.
    let mut buf = vec![0u8; 8192];
    // A read error ends the capture; the exit status still says how it went.
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        capture.push(&buf[..n]);
        if let Some(sink) = sink {
            sink.push(stream, &buf[..n]);
        }
    }
}

/// SIGKILLs the group if the run's future is dropped mid-run (a caller
/// that enforces its timeout by dropping): `kill_on_drop` reaches only the
/// leader, and whatever it started would live on.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, signal: libc::c_int) {
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
async fn terminate_group(child: &mut Child, pgid: Option<i32>) {
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

fn group_has_live_members(pgid: i32) -> bool {
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
fn parse_stat(stat: &str) -> Option<(char, i32)> {
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
mod tests;
