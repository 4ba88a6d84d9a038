//! The agent's `command` tool: an argv the model asks for runs when the
//! job's `commands` policy allows its prefix ([`policy`]), without a shell,
//! in its own process group (see `connectors::process`), with an
//! environment holding only the fixed `PATH` and the job's declared
//! variables (secret references, resolved at the call and masked in what
//! the model sees), in a directory inside the data dir, under a timeout
//! that kills the whole group and an output cap.
//!
//! An argv under an `approve` prefix parks the run in `awaiting_approval`
//! with the exact argv as the reason; approved, it runs once: its result
//! is recorded under a key made of the run, the step and the argv before
//! the model hears of it, so a retry returns the record instead of running
//! it again. Everything is refused unless the daemon runs with
//! `--allow-command`.

pub mod policy;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use self::policy::{Verdict, argv_of, judge};
use super::actions::ActionCall;
use super::runtime::RuntimeActions;
use crate::connectors::ToolCall;
use crate::connectors::process::{CHILD_PATH, dir_inside, relative_cwd, supervise};
use crate::connectors::redact::{Redactor, RedactorBuilder};
use crate::connectors::secrets;
use crate::connectors::send_once::{record, recorded, store_error};
use crate::run::{RunError, approval_record_key};
use crate::spec::model::CommandPolicy;
use crate::store::KvOp;

/// A command still running after this (unless `commands.timeout_ms`) is
/// killed with its group.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// Bytes of stdout and of stderr kept (unless `commands.max_output_bytes`).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 256 * 1024;

/// The tool as the model sees it.
pub fn schema() -> Value {
    json!({"type": "function", "function": {
        "name": "command",
        "description": "Run a local program without a shell: give its argv as a list, e.g. \
                        {\"argv\": [\"git\", \"status\"]}. Only argv prefixes the job allows run; \
                        some wait for an operator's approval. Returns exit_code, stdout, stderr.",
        "parameters": {"type": "object", "properties": {
            "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        }, "required": ["argv"], "additionalProperties": false},
    }})
}

/// A refusal the model reads; nothing ran.
fn refused(message: String) -> Value {
    json!({"error": message, "refused": true})
}

impl RuntimeActions {
    /// Whether the tool can be offered at all: the daemon allows commands
    /// and the job says which.
    pub(super) fn command_tool_on(&self) -> bool {
        self.allow_command && self.job.commands.is_some()
    }

    /// One `command` call. Refusals and failures are told to the model
    /// (`Ok`); a pause for approval, a cancellation or a store failure
    /// ends the step (`Err`).
    pub(super) async fn command_tool(
        &self,
        call: &ActionCall<'_>,
        tc: &ToolCall,
        allowed: &[String],
    ) -> Result<Value, RunError> {
        if !self.allow_command {
            return Ok(refused(
                "the command tool is off: the daemon must run with --allow-command \
                 (`multijob run --allow-command`) for agents to run commands"
                    .to_string(),
            ));
        }
        let Some(policy) = self
            .job
            .commands
            .as_ref()
            .filter(|_| allowed.iter().any(|t| t == "command"))
        else {
            return Ok(refused(format!(
                "tool `command` is not allowed for this step of job {} (its `tools`, the job's \
                 `tools` policy, or no `commands` policy); allowed: {}",
                call.run.job_id,
                allowed.join(", ")
            )));
        };
        let argv = match argv_of(&tc.arguments) {
            Ok(argv) => argv,
            Err(why) => return Ok(refused(why)),
        };
        match judge(policy, &argv) {
            Verdict::Refuse => Ok(refused(format!(
                "{argv:?} matches no prefix in the job's `commands` (allow: {:?}, approve: {:?}); \
                 nothing ran",
                policy.allow, policy.approve
            ))),
            Verdict::Allow(_) => Ok(self.run_command(call, policy, &argv).await),
            Verdict::Approve(prefix) => self.approved_once(call, policy, &argv, prefix).await,
        }
    }

    /// An `approve` command: the recorded result if it ran, else the
    /// operator's decision, else a pause showing the exact argv.
    async fn approved_once(
        &self,
        call: &ActionCall<'_>,
        policy: &CommandPolicy,
        argv: &[String],
        prefix: &[String],
    ) -> Result<Value, RunError> {
        let key = once_key(&call.idempotency_key, argv);
        if let Some(done) = recorded(&self.store, &key).await? {
            return Ok(done);
        }
        let decision = self
            .store
            .kv(&approval_record_key(&key), KvOp::Get)
            .await
            .map_err(store_error)?;
        match decision {
            Some(d) if d["decision"] == "approved" => {
                let output = self.run_command(call, policy, argv).await;
                record(&self.store, &key, &output).await?;
                Ok(output)
            }
            Some(d) => Ok(refused(format!(
                "{argv:?} was rejected by {}; nothing ran",
                d["by"].as_str().unwrap_or("an operator")
            ))),
            None => Err(RunError::AwaitingApproval {
                approval_id: format!("ap-{}", key.replace([':', '/'], "-")),
                key,
                reason: format!(
                    "agent step `{}` of job {} asks to run the command {argv:?} (approve prefix \
                     {prefix:?})",
                    call.step_id, call.run.job_id
                ),
            }),
        }
    }

    /// Runs `argv` and describes how it went; never an `Err`: the model
    /// reads a failure like any other result.
    async fn run_command(
        &self,
        call: &ActionCall<'_>,
        policy: &CommandPolicy,
        argv: &[String],
    ) -> Value {
        let started = std::time::Instant::now();
        let mut out = match self.spawn_supervised(call, policy, argv).await {
            Ok(out) => out,
            Err(message) => json!({"error": message}),
        };
        out["argv"] = json!(argv);
        out["duration_ms"] = json!(started.elapsed().as_millis() as u64);
        out
    }

    async fn spawn_supervised(
        &self,
        call: &ActionCall<'_>,
        policy: &CommandPolicy,
        argv: &[String],
    ) -> Result<Value, String> {
        let job = &call.run.job_id;
        let (env, redactor) = resolve_env(job, policy)?;
        let cwd = match &policy.cwd {
            Some(cwd) => relative_cwd("commands.cwd", cwd).map_err(|e| e.message().to_string())?,
            None => Path::new("command").join(job),
        };
        let data_dir = self.data_dir.clone();
        let cwd: PathBuf = tokio::task::spawn_blocking(move || dir_inside(&data_dir, &cwd))
            .await
            .map_err(|e| format!("preparing the command's directory did not finish: {e}"))?
            .map_err(|e| e.message().to_string())?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", CHILD_PATH)
            .envs(env)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                crate::connectors::process::spawn_error(&argv[0], &e)
                    .message()
                    .to_string()
            })?;
        let timeout_ms = policy.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let limit = policy.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES) as usize;
        let token = CancellationToken::new();
        let timer = tokio::spawn({
            let token = token.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
                token.cancel();
            }
        });
        let done = supervise(child, &token, limit, None).await;
        timer.abort();
        let shown = |c: &crate::connectors::process::Capture| {
            let mut text = redactor.redact(&c.text());
            if c.truncated() {
                text.push_str(&format!("\n[output cut at {limit} bytes]"));
            }
            text
        };
        let mut out = json!({"stdout": shown(&done.stdout), "stderr": shown(&done.stderr),
                             "truncated": done.stdout.truncated() || done.stderr.truncated()});
        match done.status {
            None => {
                out["timed_out"] = json!(true);
                out["error"] = json!(format!(
                    "timed out after {timeout_ms} ms; its whole process group was killed"
                ));
            }
            Some(Ok(status)) => {
                out["exit_code"] = json!(status.code());
                if !status.success() {
                    out["error"] = json!(format!("{:?} ended with {status}", argv[0]));
                }
            }
            Some(Err(e)) => out["error"] = json!(format!("waiting for {:?} failed: {e}", argv[0])),
        }
        Ok(out)
    }
}

/// The declared environment, resolved, and a redactor for its values.
fn resolve_env(
    job: &str,
    policy: &CommandPolicy,
) -> Result<(Vec<(String, String)>, Redactor), String> {
    let mut forms = RedactorBuilder::default();
    let mut env = Vec::new();
    for (name, reference) in &policy.env {
        let value =
            secrets::resolve(&format!("{job}.commands.env"), name, reference).map_err(|e| e.0)?;
        forms.secret(&value);
        env.push((name.clone(), value));
    }
    let redactor = forms
        .build("commands.env")
        .map_err(|e| format!("job {job}: commands.env: {e}"))?;
    Ok((env, redactor))
}

/// Where an approved command's result is recorded: the run and step (the
/// step's idempotency key), and the argv, hashed.
fn once_key(step_key: &str, argv: &[String]) -> String {
    let mut hash = Sha256::new();
    for arg in argv {
        hash.update((arg.len() as u64).to_le_bytes());
        hash.update(arg.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{step_key}:command:{hex}")
}

#[cfg(test)]
mod tests {
    use super::once_key;

    #[test]
    fn the_once_key_tells_argv_apart() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = once_key("r1:s", &v(&["git", "push"]));
        assert_eq!(a, once_key("r1:s", &v(&["git", "push"])));
        assert_ne!(a, once_key("r1:s", &v(&["git", "pus", "h"])));
        assert_ne!(a, once_key("r2:s", &v(&["git", "push"])));
        assert!(a.starts_with("r1:s:command:"));
    }
}
