//! A workflow step and its actions, as the model holds them (split from
//! [`model`](super::model), which re-exports them). Pure data; no IO.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::model::*;

/// One workflow step: common controls plus exactly one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Value>,
    /// A list, or a template that yields one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub continue_on_error: bool,
    /// Arguments of a `uses` step (a skill's params).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub action: Action,
}

/// The action of a step. Field values are templates, hence `Value` where a
/// template may stand for a number, list or object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Http(HttpAction),
    Llm(LlmAction),
    Agent(AgentAction),
    Message(MessageAction),
    Kv(KvAction),
    Files(FilesAction),
    Metric(MetricAction),
    Set(Map<String, Value>),
    ScheduleJob(ScheduleJobAction),
    Approval(ApprovalAction),
    /// A skill id.
    Uses(String),
}

impl Action {
    pub const NAMES: [&'static str; 11] = [
        "http",
        "llm",
        "agent",
        "message",
        "kv",
        "files",
        "metric",
        "set",
        "schedule_job",
        "approval",
        "uses",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Action::Http(_) => "http",
            Action::Llm(_) => "llm",
            Action::Agent(_) => "agent",
            Action::Message(_) => "message",
            Action::Kv(_) => "kv",
            Action::Files(_) => "files",
            Action::Metric(_) => "metric",
            Action::Set(_) => "set",
            Action::ScheduleJob(_) => "schedule_job",
            Action::Approval(_) => "approval",
            Action::Uses(_) => "uses",
        }
    }

    /// The connector this action names, if any.
    pub fn connector(&self) -> Option<&str> {
        match self {
            Action::Http(a) => a.connector.as_deref(),
            Action::Llm(a) => Some(&a.connector),
            Action::Agent(a) => Some(&a.connector),
            Action::Message(a) => Some(&a.connector),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmAction {
    pub connector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Value>,
    pub prompt: Value,
    #[serde(default)]
    pub json: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<Value>,
    /// Prompt experiments: one picked per run from its run key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

/// One arm of a prompt experiment (`llm`/`agent` `variants`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub id: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Value>,
}

fn default_weight() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentAction {
    pub connector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Value>,
    pub goal: Value,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Memory key shared by agents (default: the job id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid_after: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid_ttl_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

fn default_max_steps() -> u32 {
    5
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageAction {
    pub connector: String,
    pub text: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incr: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_sec: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilesAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricAction {
    pub name: Value,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleJobAction {
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_sec: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Value>,
}
