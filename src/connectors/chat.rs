//! OpenAI-compatible chat completions, for the `llm` and `agent` actions.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Connectors;
use super::http::join;
use crate::run::RunError;
use crate::spec::model::Provider;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    /// OpenAI-shaped messages (`{role, content}`, tool results, ...).
    pub messages: Vec<Value>,
    /// Ask for a JSON object reply (`response_format: json_object`).
    #[serde(default)]
    pub json_mode: bool,
    /// An OpenAI `response_format` sent as is (e.g. `{type: json_schema,
    /// json_schema: {...}}` for structured output); wins over `json_mode`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// OpenAI-shaped tool definitions (`{type: function, function: {...}}`).
    #[serde(default)]
    pub tools: Vec<Value>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Parsed from the model's JSON string; kept as a string when it is not JSON.
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub total_tokens: u64,
}

impl Connectors {
    pub async fn chat(&self, connector: &str, req: ChatRequest) -> Result<ChatResponse, RunError> {
        let result = self.chat_inner(connector, req).await;
        match &result {
            Ok(r) => {
                self.count(connector, "ok");
                self.count_tokens(connector, r.total_tokens);
            }
            Err(_) => self.count(connector, "error"),
        }
        result
    }

    async fn chat_inner(
        &self,
        connector: &str,
        req: ChatRequest,
    ) -> Result<ChatResponse, RunError> {
        let call = self.begin(connector, Some(&[Provider::Openai])).await?;
        let result = async {
            let url = join(call.base_url()?, "chat/completions");
            let mut body = json!({"model": req.model, "messages": req.messages});
            if let Some(format) = &req.response_format {
                body["response_format"] = format.clone();
            } else if req.json_mode {
                body["response_format"] = json!({"type": "json_object"});
            }
            if !req.tools.is_empty() {
                body["tools"] = Value::Array(req.tools.clone());
            }
            if let Some(t) = req.temperature {
                body["temperature"] = json!(t);
            }
            if let Some(m) = req.max_tokens {
                body["max_tokens"] = json!(m);
            }
            let mut builder = self.http_client()?.post(&url).json(&body);
            if let Some(key) = call.secrets.get("api_key") {
                builder = builder.bearer_auth(key);
            }
            let reply = self
                .post_provider(&call, &url, builder, "chat completion")
                .await?;
            parse_reply(&reply)
        }
        .await;
        result.map_err(|e| super::error::redacted(e, call.redactor()))
    }
}

pub fn parse_reply(reply: &Value) -> Result<ChatResponse, RunError> {
    let message = reply.pointer("/choices/0/message").ok_or_else(|| {
        RunError::Permanent(format!(
            "chat completion reply has no choices[0].message: {}",
            truncate(&reply.to_string())
        ))
    })?;
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .map(str::to_string);
    let tool_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| calls.iter().map(tool_call).collect())
        .unwrap_or_default();
    let total_tokens = reply
        .pointer("/usage/total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(ChatResponse {
        content,
        tool_calls,
        total_tokens,
    })
}

fn tool_call(call: &Value) -> ToolCall {
    let text = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let arguments = match call.pointer("/function/arguments") {
        Some(Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(other) => other.clone(),
        None => Value::Object(Default::default()),
    };
    ToolCall {
        id: text("/id").to_string(),
        name: text("/function/name").to_string(),
        arguments,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(super::error::BODY_SNIPPET).collect()
}
