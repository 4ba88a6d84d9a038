//! The tools an agent gets beyond the built-ins: an MCP server's tools
//! (`mcp:<connector>.<tool>`, the server's own input schema passed to the
//! model) and skills (`skill:<id>`, params from the skill's `params`
//! schema, run like a `uses` step), picked by [`super::tool_policy`].
//!
//! MCP sessions live as long as the run's [`RuntimeActions`]: opened when
//! an agent step first offers a connector's tools, reused by the run's
//! later rounds and agent steps, and dropped with the actions when the run
//! ends, fails, times out or is cancelled (dropping a session kills a
//! stdio server's process group). A session a failure stopped is dropped
//! at once, so the next call opens a fresh one.
//!
//! Every call the model asks for is recorded ([`Offered::record`]): tool,
//! arguments with the connectors' secrets redacted, duration, outcome
//! (`ok`, `error`, `refused`) and an excerpt of the output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::actions::{ActionCall, ActionResult};
use super::files::FilesQuota;
use super::runtime::RuntimeActions;
use super::tool_policy::{any_match, function_name, policy_allows, split_mcp, tool_name_of};
use super::{Engine, RunInfo};
use crate::clock::Clock;
use crate::connectors::ToolCall;
use crate::connectors::mcp::{McpError, McpSession};
use crate::connectors::redact::RedactorBuilder;
use crate::connectors::secrets::{self, Redactor};
use crate::run::RunError;
use crate::spec::model::{Connector, Provider, Step};
use crate::store::Applied;

/// How deep `skill:` calls nest: an agent inside a skill an agent called
/// may call one more skill, no deeper.
pub const MAX_AGENT_SKILL_DEPTH: u32 = 2;

/// Characters of a call's output kept in its record.
const EXCERPT_CHARS: usize = 500;

tokio::task_local! {
    /// How many `skill:` calls the code running is inside.
    static SKILL_DEPTH: u32;
}

/// What an agent's MCP and skill tools need from the run.
pub struct AgentToolsEnv {
    pub applied: Arc<Applied>,
    /// Keys the MCP tool-list cache.
    pub revision: String,
    pub data_dir: PathBuf,
    pub cancel: CancellationToken,
    pub clock: Clock,
    pub files: Arc<FilesQuota>,
    /// The run's open MCP sessions, by connector id.
    sessions: tokio::sync::Mutex<BTreeMap<String, McpSession>>,
}

impl AgentToolsEnv {
    pub fn new(
        applied: Arc<Applied>,
        data_dir: PathBuf,
        cancel: CancellationToken,
        clock: Clock,
        files: Arc<FilesQuota>,
    ) -> Self {
        let revision = applied
            .revision
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        AgentToolsEnv {
            applied,
            revision,
            data_dir,
            cancel,
            clock,
            files,
            sessions: Default::default(),
        }
    }
}

/// The MCP and skill tools offered to one agent step: their schemas for
/// the model, and which tool each function name stands for.
pub struct Offered {
    pub schemas: Vec<Value>,
    by_function: BTreeMap<String, String>,
    redactor: Redactor,
}

impl Offered {
    /// The tool a function name the model used stands for, if offered.
    pub fn tool_for(&self, function: &str) -> Option<&str> {
        self.by_function.get(function).map(String::as_str)
    }

    /// The tools' names, for the system prompt.
    pub fn names(&self) -> Vec<String> {
        self.by_function.values().cloned().collect()
    }

    fn offer(&mut self, tool: String, description: String, parameters: Value) {
        let function = function_name(&tool);
        if self.by_function.contains_key(&function) {
            return; // another tool took this function name first
        }
        self.schemas.push(json!({"type": "function", "function": {
            "name": function, "description": description, "parameters": parameters,
        }}));
        self.by_function.insert(function, tool);
    }

    /// The record of one call: `allowed` are the built-ins offered; a name
    /// neither in them nor offered here was refused.
    pub fn record(
        &self,
        tc: &ToolCall,
        output: &Value,
        started: Instant,
        allowed: &[String],
    ) -> Value {
        let (tool, offered) = match self.tool_for(&tc.name) {
            Some(t) => (t.to_string(), true),
            None => (tool_name_of(&tc.name), allowed.contains(&tc.name)),
        };
        let outcome = if !offered {
            "refused"
        } else if output.get("error").is_some() {
            "error"
        } else {
            "ok"
        };
        let mut args = tc.arguments.clone();
        self.redactor.redact_value(&mut args);
        let text = match output {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let excerpt: String = self
            .redactor
            .redact(&text)
            .chars()
            .take(EXCERPT_CHARS)
            .collect();
        json!({
            "tool": tool, "args": args, "output": output,
            "duration_ms": started.elapsed().as_millis() as u64,
            "outcome": outcome, "excerpt": excerpt,
        })
    }
}

/// A redactor of every secret the run's connectors reference (a
/// reference that does not resolve has no value to hide).
fn secrets_redactor<'a>(connectors: impl Iterator<Item = &'a Connector>) -> Redactor {
    let mut forms = RedactorBuilder::default();
    for c in connectors {
        let refs = c.secrets.iter().chain(&c.mcp.env).chain(&c.mcp.headers);
        let token = c.mcp.token.iter().map(|r| ("token", r.as_str()));
        for (name, reference) in refs.map(|(n, r)| (n.as_str(), r.as_str())).chain(token) {
            if let Ok(value) = secrets::resolve(&c.id, name, reference) {
                forms.secret(&value);
            }
        }
    }
    forms.build("the agent's call records").unwrap_or_default()
}

impl RuntimeActions {
    /// The MCP and skill tools the step's `asked` list names (globs too)
    /// and the job's policy allows. Opens the MCP sessions it needs.
    pub(super) async fn offer_tools(&self, asked: &[String]) -> Result<Offered, RunError> {
        let env = &self.tools_env;
        let snapshot = &env.applied.snapshot;
        let mut offered = Offered {
            schemas: Vec::new(),
            by_function: BTreeMap::new(),
            redactor: secrets_redactor(snapshot.connectors.values().map(|r| &r.spec)),
        };
        let servers: Vec<&str> = asked
            .iter()
            .filter_map(|t| t.strip_prefix("mcp:"))
            .collect();
        for (id, resource) in &snapshot.connectors {
            let wanted = servers.iter().any(|s| {
                let connector = s.split_once('.').map_or(*s, |(c, _)| c);
                super::tool_policy::glob_match(connector, id)
            });
            if resource.spec.provider != Provider::Mcp || !wanted {
                continue;
            }
            let mut sessions = env.sessions.lock().await;
            let session = self.session(&mut sessions, id).await?;
            let listed = session.tools().await;
            let tools = listed.map_err(|e| self.forget(&mut sessions, id, e))?;
            for t in tools.iter() {
                let tool = format!("mcp:{id}.{}", t.name);
                if any_match(asked, &tool) && policy_allows(&self.job.tools, &tool) {
                    let description = t.description.clone().unwrap_or_else(|| tool.clone());
                    offered.offer(tool, description, t.input_schema.clone());
                }
            }
        }
        for (id, skill) in &snapshot.skills {
            let tool = format!("skill:{id}");
            if any_match(asked, &tool) && policy_allows(&self.job.tools, &tool) {
                let description = skill.spec.description.clone();
                let params = skill
                    .spec
                    .params
                    .clone()
                    .unwrap_or(json!({"type": "object"}));
                offered.offer(tool.clone(), description.unwrap_or(tool), params);
            }
        }
        Ok(offered)
    }

    /// The run's session with connector `id`, opened if there is none.
    async fn session<'s>(
        &self,
        sessions: &'s mut BTreeMap<String, McpSession>,
        id: &str,
    ) -> Result<&'s mut McpSession, RunError> {
        if !sessions.contains_key(id) {
            let env = &self.tools_env;
            let opened = self
                .connectors
                .open_mcp(id, &env.revision, &env.data_dir, env.cancel.clone())
                .await
                .map_err(McpError::into_run_error)?;
            sessions.insert(id.to_string(), opened);
        }
        sessions
            .get_mut(id)
            .ok_or_else(|| RunError::Permanent(format!("MCP session `{id}` vanished")))
    }

    /// A failed request stopped the session: drop it (the next call opens
    /// a new one) and say why.
    fn forget(
        &self,
        sessions: &mut BTreeMap<String, McpSession>,
        id: &str,
        e: McpError,
    ) -> RunError {
        sessions.remove(id);
        e.into_run_error()
    }

    /// Runs an offered MCP or skill tool; what the model reads back.
    pub(super) async fn offered_tool_output(
        &self,
        sub: &ActionCall<'_>,
        tool: &str,
        args: Value,
    ) -> Value {
        let result = match split_mcp(tool) {
            Some((connector, name)) => self.mcp_call(connector, name, args).await,
            None => match tool.strip_prefix("skill:") {
                Some(id) => self.skill_call(sub, id, args).await,
                None => Err(RunError::Permanent(format!("`{tool}` is not a tool"))),
            },
        };
        result.unwrap_or_else(|e| json!({"error": e.to_string()}))
    }

    async fn mcp_call(&self, connector: &str, name: &str, args: Value) -> ActionResult {
        let args = match args {
            Value::Null => json!({}),
            Value::Object(_) => args,
            other => {
                return Err(RunError::Permanent(format!(
                    "the arguments of `mcp:{connector}.{name}` must be a JSON object, not {}",
                    other.to_string().chars().take(80).collect::<String>()
                )));
            }
        };
        self.connectors.mcp_permit(connector).await?;
        let mut sessions = self.tools_env.sessions.lock().await;
        let session = self.session(&mut sessions, connector).await?;
        let result = session.call(name, args).await;
        let ok = matches!(result, Ok(_) | Err(McpError::Tool { .. }));
        self.connectors.mcp_called(connector, ok);
        match result {
            Ok(out) => Ok(Value::String(out.text)),
            Err(McpError::Tool { text, .. }) => Ok(json!({"error": text, "is_error": true})),
            Err(e) => Err(self.forget(&mut sessions, connector, e)),
        }
    }

    /// A skill run like a `uses` step whose `with` is the model's
    /// arguments (checked against its params, never rendered).
    async fn skill_call(&self, sub: &ActionCall<'_>, id: &str, args: Value) -> ActionResult {
        let depth = SKILL_DEPTH.try_with(|d| *d).unwrap_or(0);
        if depth >= MAX_AGENT_SKILL_DEPTH {
            return Err(RunError::Permanent(format!(
                "skill `{id}` not run: agents may call skills only {MAX_AGENT_SKILL_DEPTH} levels \
                 deep (an agent inside a skill an agent called); give the skill's agent no \
                 `skill:` tools"
            )));
        }
        let env = &self.tools_env;
        let args = if args.is_null() { json!({}) } else { args };
        let engine = Engine::new(
            &env.applied.snapshot.skills,
            env.data_dir.clone(),
            env.clock,
        )
        .with_limits(self.job.limits.clone())
        .with_files_quota(env.files.clone())
        .with_skill_call(args);
        // The step's id keeps the skill's idempotency keys apart from the
        // run's other steps and calls.
        let step_id = sub
            .idempotency_key
            .strip_prefix(&format!("{}:", sub.run.id))
            .unwrap_or(&sub.idempotency_key);
        let step: Step = serde_json::from_value(json!({"id": step_id, "uses": id}))
            .map_err(|e| RunError::Permanent(format!("skill `{id}`: {e}")))?;
        let run: RunInfo = sub.run.clone();
        let (result, _records) = SKILL_DEPTH
            .scope(
                depth + 1,
                engine.run(&[step], json!({}), run, self, &env.cancel),
            )
            .await;
        result
    }
}
