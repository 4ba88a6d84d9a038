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
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde_json::{Map, Value, json};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::RunContext;
use super::output::OutputSink;
pub use crate::connectors::process::{CHILD_PATH, TERM_GRACE};
use crate::connectors::process::{Capture, dir_inside, relative_cwd, spawn_error, supervise};
use crate::run::{RunError, RunResult};
use crate::spec::model::Job;
use crate::store::output::OutputStream;

/// Bytes of stdout and of stderr kept; the rest is counted and dropped.
pub const CAPTURE_LIMIT: usize = 64 * 1024;

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
            Some(Value::String(s)) => Some(relative_cwd("input cwd", s)?),
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

/// An id used as one directory name.
fn path_component<'a>(what: &str, id: &'a str) -> Result<&'a str, RunError> {
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
        return Err(RunError::Permanent(format!(
            "{what} {id:?} cannot name a directory"
        )));
    }
    Ok(id)
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
    let on_chunk = |stream: OutputStream, bytes: &[u8]| {
        if let Some(sink) = &sink {
            sink.push(stream, bytes);
        }
    };
    let supervised = supervise(child, cancel, CAPTURE_LIMIT, Some(&on_chunk)).await;
    if let Some(sink) = sink {
        sink.finish().await;
    }
    let Some(status) = supervised.status else {
        return Err(RunError::Cancelled);
    };
    let status =
        status.map_err(|e| RunError::retryable(format!("waiting for the command failed: {e}")))?;
    outcome(status, &supervised.stdout, &supervised.stderr)
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

#[cfg(test)]
mod tests;
