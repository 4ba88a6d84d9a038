//! The workflow engine wired to the daemon: [`Actions`] backed by the
//! connectors, the store's key-value table and the run queue.
//!
//! Messages and follow-ups record their idempotency key in the store before
//! returning, so a retried step, a retried attempt or a run reclaimed after
//! a crash returns the recorded result instead of sending again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::actions::{ActionCall, ActionFuture, ActionResult, Actions};
use super::follow_ups::FollowUpBudget;
use super::metrics::WorkflowGauge;
use crate::connectors::send_once::{recorded, send_once, store_error};
use crate::connectors::{ChatRequest, Connectors, HttpRequest, OutboundMessage};
use crate::run::{RunError, RunHost};
use crate::spec::model::Job;
use crate::store::budgets::BudgetKind;
use crate::store::{KvOp, Store};

/// User keys live apart from the runtime's own records.
fn user_key(key: &str) -> String {
    format!("kv:{key}")
}

pub struct RuntimeActions {
    pub connectors: Arc<Connectors>,
    pub store: Store,
    pub queue: Arc<dyn RunHost>,
    pub job: Arc<Job>,
    /// Follow-up depth of the run executing (0 for a scheduled or manual run).
    pub chain_depth: u32,
    /// What is left of `limits.follow_ups` for this attempt.
    pub follow_ups: FollowUpBudget,
    pub metrics: Option<WorkflowGauge>,
    /// LLM tokens used by this run so far (recorded on the run).
    pub tokens: AtomicU64,
    /// What an agent's MCP and skill tools need; holds the run's MCP
    /// sessions, closed when the actions are dropped.
    pub tools_env: super::agent_tools::AgentToolsEnv,
    /// `--allow-command`: an agent's `command` tool may run anything.
    pub allow_command: bool,
    /// Where the `command` tool's working directories live.
    pub data_dir: std::path::PathBuf,
    /// The daily budgets of the job and its flow (none: unbudgeted).
    pub budget: Option<crate::store::budgets::Meter>,
    /// What this run used of them.
    pub budget_used: super::budget_gate::BudgetTally,
}

pub(super) fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub(super) fn number(v: Option<&Value>, what: &str) -> Result<Option<f64>, RunError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| RunError::Permanent(format!("{what} must be a number, not {s:?}"))),
        Some(other) => Err(RunError::Permanent(format!(
            "{what} must be a number, not {other}"
        ))),
    }
}

impl RuntimeActions {
    pub(super) async fn http_impl(&self, args: Value) -> ActionResult {
        let connector = text(args.get("connector"));
        let req: HttpRequest = serde_json::from_value(args)
            .map_err(|e| RunError::Permanent(format!("http step arguments: {e}")))?;
        self.budget_take(BudgetKind::HttpCalls).await?;
        let response = self.connectors.http(connector.as_deref(), req, &[]).await?;
        serde_json::to_value(response).map_err(|e| RunError::Permanent(e.to_string()))
    }

    pub(super) async fn message_impl(&self, call: &ActionCall<'_>, args: Value) -> ActionResult {
        let connector = text(args.get("connector"))
            .ok_or_else(|| RunError::Permanent("a message step needs `connector`".into()))?;
        let key = text(args.get("dedupe_key")).unwrap_or_else(|| call.idempotency_key.clone());
        let record_key = format!("message:{connector}:{key}");
        let msg = OutboundMessage {
            text: text(args.get("text")).unwrap_or_default(),
            to: text(args.get("to")),
            subject: text(args.get("subject")),
            idempotency_key: key,
        };
        // A message sent before (a retried step) is not counted again.
        if let Some(done) = recorded(&self.store, &record_key).await? {
            return Ok(done);
        }
        self.budget_take(BudgetKind::Messages).await?;
        send_once(&self.store, &self.connectors, &connector, &record_key, msg).await
    }

    pub(super) async fn llm_impl(&self, args: Value) -> ActionResult {
        let connector = text(args.get("connector"))
            .ok_or_else(|| RunError::Permanent("an llm step needs `connector`".into()))?;
        let json_mode = args.get("json").and_then(Value::as_bool).unwrap_or(false);
        let mut messages = Vec::new();
        if let Some(system) = text(args.get("system")) {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages
            .push(json!({"role": "user", "content": text(args.get("prompt")).unwrap_or_default()}));
        let req = ChatRequest {
            model: text(args.get("model")).unwrap_or_else(|| "gpt-4o-mini".to_string()),
            messages,
            json_mode,
            response_format: None,
            tools: Vec::new(),
            temperature: number(args.get("temperature"), "temperature")?,
            max_tokens: number(args.get("max_tokens"), "max_tokens")?.map(|n| n as u64),
        };
        self.budget_tokens_left().await?;
        let reply = self.connectors.chat(&connector, req).await?;
        self.budget_spend_tokens(reply.total_tokens).await?;
        self.spend_tokens(reply.total_tokens)?;
        let content = reply.content.unwrap_or_default();
        if json_mode {
            serde_json::from_str(&content).map_err(|e| {
                RunError::retryable(format!("the model's reply is not the JSON asked for: {e}"))
            })
        } else {
            Ok(Value::String(content))
        }
    }

    pub(super) async fn kv_impl(&self, args: Value) -> ActionResult {
        let field = |name: &str| text(args.get(name));
        let (key, op) = if let Some(k) = field("get") {
            (k, KvOp::Get)
        } else if let Some(k) = field("set") {
            let ttl = number(args.get("ttl_sec"), "ttl_sec")?.map(|t| t.max(0.0) as u64);
            (
                k,
                KvOp::Set {
                    value: args.get("value").cloned().unwrap_or(Value::Null),
                    ttl_sec: ttl,
                },
            )
        } else if let Some(k) = field("incr") {
            let by = number(args.get("value"), "value")?.unwrap_or(1.0) as i64;
            (k, KvOp::Incr { by })
        } else if let Some(k) = field("delete") {
            (k, KvOp::Delete)
        } else {
            return Err(RunError::Permanent(
                "a kv step needs one of get, set, incr, delete".into(),
            ));
        };
        let value = self
            .store
            .kv(&user_key(&key), op)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Corrupt { message, .. } => {
                    RunError::Permanent(format!("kv {key}: {message}"))
                }
                other => store_error(other),
            })?;
        Ok(value.unwrap_or(Value::Null))
    }

    /// The decision recorded for this step, or a pause until there is one.
    /// The approval's step id is the step's idempotency key, which is what
    /// the decision is recorded under.
    async fn approval_impl(&self, call: &ActionCall<'_>, args: Value) -> ActionResult {
        let decision = self
            .store
            .kv(
                &crate::run::approval_record_key(&call.idempotency_key),
                KvOp::Get,
            )
            .await
            .map_err(store_error)?;
        match decision {
            Some(d) if d["decision"] == "approved" => Ok(json!({
                "decision": "approved",
                "decided_at": d["decided_at"],
                "by": d["by"],
            })),
            Some(d) => Err(RunError::Permanent(format!(
                "approval rejected by {}",
                d["by"].as_str().unwrap_or("an operator")
            ))),
            None => Err(RunError::AwaitingApproval {
                approval_id: format!("ap-{}", call.idempotency_key.replace([':', '/'], "-")),
                key: call.idempotency_key.clone(),
                reason: text(args.get("reason")).unwrap_or_else(|| {
                    format!(
                        "step `{}` of job {} asks for approval",
                        call.step_id, call.run.job_id
                    )
                }),
            }),
        }
    }

    /// Count tokens against `limits.llm_tokens`.
    pub(super) fn spend_tokens(&self, n: u64) -> Result<(), RunError> {
        let total = self.tokens.fetch_add(n, Ordering::SeqCst) + n;
        match self.job.limits.llm_tokens {
            Some(limit) if total > limit => Err(RunError::Permanent(format!(
                "limits.llm_tokens exceeded: {total} tokens used, the limit is {limit}"
            ))),
            _ => Ok(()),
        }
    }

    pub(super) fn metric_impl(&self, call: &ActionCall<'_>, args: Value) -> ActionResult {
        let name = text(args.get("name"))
            .ok_or_else(|| RunError::Permanent("a metric step needs `name`".into()))?;
        let value = number(args.get("value"), "value")?
            .ok_or_else(|| RunError::Permanent("a metric step needs `value`".into()))?;
        if let Some(gauge) = &self.metrics {
            let mut labels = vec![
                ("job".to_string(), call.run.job_id.clone()),
                ("name".to_string(), name),
            ];
            if let Some(Value::Object(extra)) = args.get("labels") {
                for (k, v) in extra {
                    // One bad name would make scrapers reject the whole
                    // /metrics page, every other family included.
                    if !is_label_name(k) {
                        return Err(RunError::Permanent(format!(
                            "metric label `{k}` is not a Prometheus label name \
                             (a letter or `_`, then letters, digits, `_`; not `__...`)"
                        )));
                    }
                    if k != "job" && k != "name" {
                        labels.push((k.clone(), text(Some(v)).unwrap_or_default()));
                    }
                }
            }
            gauge.get_or_create(&labels).set(value);
        }
        Ok(json!(value))
    }
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, and `__` is reserved.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

impl Actions for RuntimeActions {
    fn http<'a>(&'a self, _call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(self.http_impl(args))
    }

    fn llm<'a>(&'a self, _call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(self.llm_impl(args))
    }

    fn agent<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(self.agent_impl(call, args))
    }

    fn message<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(self.message_impl(call, args))
    }

    fn kv<'a>(&'a self, _call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(self.kv_impl(args))
    }

    fn schedule_job<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(self.schedule_job_impl(call, args))
    }

    fn approval<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(self.approval_impl(call, args))
    }

    fn metric<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        let result = self.metric_impl(call, args);
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::is_label_name;

    #[test]
    fn label_names_follow_prometheus() {
        for ok in ["shop", "shop_id", "_x", "_", "a1", "Region"] {
            assert!(is_label_name(ok), "{ok}");
        }
        for bad in ["", "bad-key", "1a", "__reserved", "a.b", "é"] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }
}
