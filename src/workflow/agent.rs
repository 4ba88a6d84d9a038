//! The `agent` action: a function-calling loop in which the model picks
//! tool calls among the step's allowed tools, each run through the same
//! code, policies and idempotency as the step it stands for.

use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt;
use serde_json::{Value, json};

use super::actions::{ActionCall, ActionResult};
use super::agent_tools::Offered;
use super::runtime::{RuntimeActions, text};
use crate::connectors::{ChatRequest, ToolCall};
use crate::otel;
use crate::run::RunError;

/// Tools an agent may be offered: step actions with side effects the
/// runtime executes under the same policies as a step would.
const AGENT_TOOLS: [&str; 7] = [
    "http",
    "message",
    "kv",
    "schedule_job",
    "metric",
    "llm",
    "command",
];

/// The fields of each tool, described to the model.
fn tool_schema(name: &str) -> Value {
    if name == "command" {
        return super::command_tool::schema();
    }
    let (description, props, required): (&str, Value, Vec<&str>) = match name {
        "http" => (
            "Make an HTTP request through a connector (its base_url host only).",
            json!({"connector": {"type": "string"}, "method": {"type": "string"}, "path": {"type": "string"},
                   "url": {"type": "string"}, "query": {"type": "object"}, "json": {"type": "object"}}),
            vec![],
        ),
        "message" => (
            "Send a message through a messaging connector.",
            json!({"connector": {"type": "string"}, "text": {"type": "string"}, "to": {"type": "string"},
                   "subject": {"type": "string"}}),
            vec!["connector", "text"],
        ),
        "kv" => (
            "Read or write the durable key-value store: give exactly one of get, set (with value), incr, delete.",
            json!({"get": {"type": "string"}, "set": {"type": "string"}, "value": {},
                   "incr": {"type": "string"}, "delete": {"type": "string"}}),
            vec![],
        ),
        "schedule_job" => (
            "Schedule a follow-up run of a job after a delay.",
            json!({"job": {"type": "string"}, "delay_sec": {"type": "number"}, "inputs": {"type": "object"}}),
            vec!["job"],
        ),
        "metric" => (
            "Record a numeric metric.",
            json!({"name": {"type": "string"}, "value": {"type": "number"}, "labels": {"type": "object"}}),
            vec!["name", "value"],
        ),
        _ => (
            "Ask a language model through a connector.",
            json!({"connector": {"type": "string"}, "prompt": {"type": "string"}, "system": {"type": "string"}}),
            vec!["connector", "prompt"],
        ),
    };
    json!({"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": props, "required": required},
    }})
}

impl RuntimeActions {
    /// The tools an agent step may use: the step's list (or every agent
    /// tool), narrowed by the job's `tools` policy.
    fn allowed_tools(&self, asked: &[String]) -> Vec<String> {
        let policy = &self.job.tools;
        let asked: Vec<String> = if asked.is_empty() {
            AGENT_TOOLS.iter().map(|s| s.to_string()).collect()
        } else {
            asked.to_vec()
        };
        asked
            .into_iter()
            .filter(|t| AGENT_TOOLS.contains(&t.as_str()))
            .filter(|t| policy.allow.as_ref().is_none_or(|a| a.contains(t)))
            .filter(|t| !policy.deny.contains(t))
            .filter(|t| t != "command" || self.command_tool_on())
            .collect()
    }

    /// The function-calling loop: the model picks tool calls among the
    /// allowed tools, each runs through the same code (and idempotency) as
    /// a step; a call outside the list is refused and reported back.
    pub(super) async fn agent_impl(&self, call: &ActionCall<'_>, args: Value) -> ActionResult {
        let connector = text(args.get("connector"))
            .ok_or_else(|| RunError::Permanent("an agent step needs `connector`".into()))?;
        let goal = text(args.get("goal")).unwrap_or_default();
        let max_steps = args
            .get("max_steps")
            .and_then(Value::as_u64)
            .unwrap_or(5)
            .clamp(1, 50);
        let asked: Vec<String> = args
            .get("tools")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let allowed = self.allowed_tools(&asked);
        let mut tools: Vec<Value> = allowed.iter().map(|t| tool_schema(t)).collect();
        let offered = self.offer_tools(&asked).await?;
        tools.extend(offered.schemas.iter().cloned());
        let listed = [allowed.clone(), offered.names()].concat();
        let mut messages = vec![
            json!({"role": "system", "content": format!(
                "You are an operations agent run by multijob for job `{}`. Reach the goal with the tools \
                 you are given ({}); when it is reached, reply with a short final answer and no tool call.",
                call.run.job_id,
                if listed.is_empty() { "none".to_string() } else { listed.join(", ") }
            )}),
            json!({"role": "user", "content": goal}),
        ];
        let memory = self.agent_memory(&args)?;
        if let Some(avoid) = memory.prompt(&self.store).await {
            messages[0]["content"] = json!(format!(
                "{} {avoid}",
                text(messages[0].get("content")).unwrap_or_default()
            ));
        }
        let mut calls = Vec::new();
        for round in 0..max_steps {
            self.budget_tokens_left().await?;
            let reply = self
                .connectors
                .chat(
                    &connector,
                    ChatRequest {
                        model: text(args.get("model")).unwrap_or_else(|| "gpt-4o-mini".to_string()),
                        messages: messages.clone(),
                        json_mode: false,
                        response_format: None,
                        tools: tools.clone(),
                        temperature: None,
                        max_tokens: None,
                    },
                )
                .await?;
            self.budget_spend_tokens(reply.total_tokens).await?;
            self.spend_tokens(reply.total_tokens)?;
            if reply.tool_calls.is_empty() {
                return Ok(json!({"answer": reply.content, "calls": calls}));
            }
            messages.push(json!({
                "role": "assistant",
                "content": reply.content,
                "tool_calls": reply.tool_calls.iter().map(|c| json!({
                    "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })).collect::<Vec<_>>(),
            }));
            for (i, tc) in reply.tool_calls.iter().enumerate() {
                let started = std::time::Instant::now();
                let output = if tc.name == "command" {
                    self.command_tool(call, tc, &allowed).await?
                } else {
                    self.tool_output(call, (round, i), tc, &allowed, &offered)
                        .await
                };
                memory
                    .record(&self.store, &tc.name, &tc.arguments, &output)
                    .await;
                calls.push(offered.record(tc, &output, started, &allowed));
                messages.push(json!({
                    "role": "tool", "tool_call_id": tc.id, "content": output.to_string(),
                }));
            }
        }
        // Out of steps: the last word is what the model said last.
        Ok(
            json!({"answer": Value::Null, "calls": calls, "stopped": format!("max_steps {max_steps} reached")}),
        )
    }

    /// What one tool call the model asked for returns: the tool's output,
    /// or an error the model reads (a refused tool, a failed call). The
    /// round and the call's place in it key its idempotency. In a span of
    /// its own, under the agent step's.
    async fn tool_output(
        &self,
        call: &ActionCall<'_>,
        at: (u64, usize),
        tc: &ToolCall,
        allowed: &[String],
        offered: &Offered,
    ) -> Value {
        let span = otel::child(
            format!("tool {}", tc.name),
            vec![KeyValue::new("multijob.tool", tc.name.clone())],
        );
        let output = self
            .tool_call(call, at, tc, allowed, offered)
            .with_context(span.clone())
            .await;
        let error = output.get("error").map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        otel::end(&span, error.as_deref());
        output
    }

    async fn tool_call(
        &self,
        call: &ActionCall<'_>,
        (round, i): (u64, usize),
        tc: &ToolCall,
        allowed: &[String],
        offered: &Offered,
    ) -> Value {
        if !allowed.contains(&tc.name) && offered.tool_for(&tc.name).is_none() {
            let allowed = [allowed.to_vec(), offered.names()].concat();
            return json!({"error": format!(
                "tool `{}` is not allowed for this step; allowed: {}",
                tc.name,
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )});
        }
        let sub = ActionCall {
            run: call.run,
            step_id: call.step_id,
            item_index: call.item_index,
            idempotency_key: format!("{}:agent:{round}:{i}", call.idempotency_key),
        };
        if let Some(tool) = offered.tool_for(&tc.name) {
            return self
                .offered_tool_output(&sub, tool, tc.arguments.clone())
                .await;
        }
        let result = match tc.name.as_str() {
            "http" => self.http_impl(tc.arguments.clone()).await,
            "message" => self.message_impl(&sub, tc.arguments.clone()).await,
            "kv" => self.kv_impl(tc.arguments.clone()).await,
            "schedule_job" => self.schedule_job_impl(&sub, tc.arguments.clone()).await,
            "metric" => self.metric_impl(&sub, tc.arguments.clone()),
            _ => self.llm_impl(tc.arguments.clone()).await,
        };
        match result {
            Ok(v) => v,
            Err(e) => json!({"error": e.to_string()}),
        }
    }
}
