//! One conversation with one MCP server (see the module doc of
//! [`super`]): opening it, the requests with their timeout and cancel,
//! the tool list and tool calls, and closing it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::http::HttpServer;
use super::stdio::StdioServer;
use super::{Events, McpError, McpFailure, cache, jsonrpc};
use crate::connectors::client;
use crate::connectors::redact::{RedactorBuilder, SHORTEST};
use crate::connectors::secrets::{self, Redactor};
use crate::run::RunError;
use crate::spec::model::{Connector, McpTransport, Provider};
use crate::spec::validate::inside_data_dir;

/// A tool as the server describes it; `input_schema` is the server's own
/// JSON Schema of its arguments, to pass to a model as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolInfo {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
}

/// A successful tool call: the text parts joined with newlines, and the
/// whole `content` array (secrets scrubbed) for callers that want images
/// or resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub text: String,
    pub content: Value,
}

enum Transport {
    Stdio(StdioServer),
    Http(HttpServer),
}

/// A session with one server; see the module doc of [`super`].
pub struct McpSession {
    connector: String,
    revision: String,
    transport: Option<Transport>,
    next_id: u64,
    timeout: Duration,
    cancel: CancellationToken,
    redactor: Redactor,
    events: Events,
}

impl McpSession {
    /// Starts (stdio) or reaches (http) the connector's server and
    /// initializes it. `revision` keys the tool cache; `data_dir` is where a
    /// stdio server's `cwd` is resolved; `cancel` stops any request at once
    /// (and a stdio server with it).
    pub async fn open(
        connector: &Connector,
        revision: &str,
        data_dir: &Path,
        cancel: CancellationToken,
    ) -> Result<McpSession, McpError> {
        let id = connector.id.as_str();
        let fail = |f: McpFailure| McpError::Failed(f.into_run_error(id, "open"));
        if connector.provider != Provider::Mcp {
            return Err(fail(McpFailure::Config("its provider is not `mcp`".into())));
        }
        let mcp = &connector.mcp;
        let cap = mcp.max_output_bytes.map_or(super::DEFAULT_MAX_OUTPUT, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
        let Resolved {
            env,
            headers,
            redactor,
        } = resolve(connector).map_err(fail)?;
        let transport = match mcp.transport {
            Some(McpTransport::Stdio) => {
                let cwd = mcp.cwd.as_deref().unwrap_or("");
                inside_data_dir(cwd)
                    .map_err(|why| fail(McpFailure::Config(format!("cwd `{cwd}` {why}"))))?;
                let dir = data_dir.join(cwd);
                Transport::Stdio(StdioServer::spawn(&mcp.command, &env, &dir, cap).map_err(fail)?)
            }
            Some(McpTransport::Http) => {
                Transport::Http(http_server(connector, headers, cap).map_err(fail)?)
            }
            None => return Err(fail(McpFailure::Config("`transport` is not set".into()))),
        };
        let mut session = McpSession {
            connector: connector.id.clone(),
            revision: revision.to_string(),
            transport: Some(transport),
            next_id: 0,
            timeout: mcp
                .timeout_ms
                .map_or(super::DEFAULT_TIMEOUT, Duration::from_millis),
            cancel,
            redactor,
            events: Events::default(),
        };
        session
            .request("initialize", jsonrpc::initialize_params())
            .await?;
        session.notify("notifications/initialized").await?;
        Ok(session)
    }

    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// The stdio server's process group (for checks that it is gone).
    pub fn process_group(&self) -> Option<i32> {
        match &self.transport {
            Some(Transport::Stdio(s)) => s.pgid(),
            _ => None,
        }
    }

    /// The http server's `Mcp-Session-Id`, once it gave one.
    pub fn http_session_id(&self) -> Option<&str> {
        match &self.transport {
            Some(Transport::Http(h)) => h.session_id(),
            _ => None,
        }
    }

    /// The server's tools: from the cache, else every page of `tools/list`.
    pub async fn tools(&mut self) -> Result<Arc<Vec<ToolInfo>>, McpError> {
        self.drop_cache_if_changed();
        if let Some(tools) = cache::get(&self.revision, &self.connector) {
            return Ok(tools);
        }
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _page in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let result = self.request("tools/list", params).await?;
            tools.extend(parse_tools(&result).map_err(|m| self.protocol("tools/list", m))?);
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            if cursor.is_none() {
                let tools = Arc::new(tools);
                // A change announced while listing makes this list stale.
                if !std::mem::take(&mut self.events.tools_changed) {
                    cache::put(&self.revision, &self.connector, tools.clone());
                }
                return Ok(tools);
            }
        }
        Err(self.protocol(
            "tools/list",
            format!("more than {MAX_PAGES} pages of tools; the server's cursor does not end"),
        ))
    }

    /// Calls `tool` with `arguments` (a JSON object).
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Result<ToolOutput, McpError> {
        let result = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await?;
        self.drop_cache_if_changed();
        let content = result.get("content").cloned().unwrap_or(json!([]));
        let text = content
            .as_array()
            .map(|parts| {
                parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            return Err(McpError::Tool {
                connector: self.connector.clone(),
                tool: tool.to_string(),
                text,
            });
        }
        Ok(ToolOutput { text, content })
    }

    /// Ends the session; a stdio server's whole process group is killed.
    pub async fn close(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        if let Some(Transport::Stdio(mut s)) = self.transport.take() {
            s.kill().await;
        }
    }

    fn drop_cache_if_changed(&mut self) {
        if std::mem::take(&mut self.events.tools_changed) {
            cache::drop_entry(&self.revision, &self.connector);
        }
    }

    fn protocol(&self, what: &str, message: String) -> McpError {
        self.scrubbed(McpFailure::Protocol(message).into_run_error(&self.connector, what))
    }

    fn scrubbed(&self, e: RunError) -> McpError {
        McpError::Failed(crate::connectors::error::redacted(e, &self.redactor))
    }

    async fn notify(&mut self, method: &str) -> Result<(), McpError> {
        let message = jsonrpc::notification(method);
        let sent = match self.transport.as_mut() {
            Some(Transport::Stdio(s)) => s.notify(&message).await,
            Some(Transport::Http(h)) => h.notify(&message).await,
            None => Err(closed()),
        };
        sent.map_err(|f| self.scrubbed(f.into_run_error(&self.connector, method)))
    }

    /// One request with the session's timeout and cancel; a timeout, a
    /// cancel or a broken answer ends a stdio server. The result is scrubbed.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        self.next_id += 1;
        let id = self.next_id;
        let message = jsonrpc::request(id, method, params);
        let events = &mut self.events;
        let exchange = async {
            match self.transport.as_mut() {
                Some(Transport::Stdio(s)) => s.request(id, &message, events).await,
                Some(Transport::Http(h)) => h.request(id, &message, events).await,
                None => Err(closed()),
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.timeout, exchange) => {
                r.unwrap_or(Err(McpFailure::Timeout(self.timeout)))
            }
            () = self.cancel.cancelled() => Err(McpFailure::Cancelled),
        };
        match outcome {
            Ok(mut value) => {
                self.redactor.redact_value(&mut value);
                Ok(value)
            }
            Err(failure) => {
                if !matches!(failure, McpFailure::Protocol(_)) {
                    self.stop().await;
                }
                Err(self.scrubbed(failure.into_run_error(&self.connector, method)))
            }
        }
    }
}

impl Drop for McpSession {
    fn drop(&mut self) {
        // The stdio server's own Drop kills its group.
        self.transport.take();
    }
}

/// Pages of `tools/list` read at most (a server whose cursor never ends).
const MAX_PAGES: usize = 100;

fn closed() -> McpFailure {
    McpFailure::Transport(
        "the session is closed (an earlier failure stopped it); open a new one".into(),
    )
}

fn parse_tools(result: &Value) -> Result<Vec<ToolInfo>, String> {
    let Some(list) = result.get("tools").and_then(Value::as_array) else {
        return Err("the `tools/list` result has no `tools` array".into());
    };
    list.iter()
        .map(|t| {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a tool has no `name`")?;
            Ok(ToolInfo {
                name: name.to_string(),
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                input_schema: t
                    .get("inputSchema")
                    .cloned()
                    .unwrap_or(json!({"type": "object"})),
            })
        })
        .collect()
}

/// A connector's references, resolved for one session.
struct Resolved {
    /// `env` as (name, value) pairs.
    env: Vec<(String, String)>,
    /// The declared headers and the bearer token.
    headers: HeaderMap,
    /// Scrubs every value resolved.
    redactor: Redactor,
}

fn resolve(connector: &Connector) -> Result<Resolved, McpFailure> {
    let id = &connector.id;
    let mut forms = RedactorBuilder::default();
    let mut value_of = |name: &str, reference: &str| -> Result<String, McpFailure> {
        let value = secrets::resolve(id, name, reference).map_err(|e| McpFailure::Config(e.0))?;
        if value.chars().count() < SHORTEST {
            return Err(McpFailure::Config(format!(
                "`{name}` ({reference}) resolves to under {SHORTEST} characters, too short to keep \
                 out of outputs; set the real value"
            )));
        }
        forms.secret(&value);
        Ok(value)
    };
    let mcp = &connector.mcp;
    let mut env = Vec::new();
    for (name, reference) in &mcp.env {
        env.push((name.clone(), value_of(name, reference)?));
    }
    let mut headers = HeaderMap::new();
    let bad =
        |name: &str| McpFailure::Config(format!("header `{name}` is not a valid HTTP header"));
    for (name, reference) in &mcp.headers {
        let value = value_of(name, reference)?;
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(name))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| bad(name))?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    if let Some(reference) = &mcp.token {
        let token = value_of("token", reference)?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad("Authorization"))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let redactor = forms
        .build(&format!("connector `{id}`"))
        .map_err(|e| McpFailure::Config(e.to_string()))?;
    Ok(Resolved {
        env,
        headers,
        redactor,
    })
}

fn http_server(
    connector: &Connector,
    headers: HeaderMap,
    cap: usize,
) -> Result<HttpServer, McpFailure> {
    let Some(url) = &connector.base_url else {
        return Err(McpFailure::Config("an http server needs `base_url`".into()));
    };
    let url = secrets::resolve_base_url(&connector.id, url).map_err(|e| McpFailure::Config(e.0))?;
    let shared = client::shared().map_err(|why| McpFailure::Transport(why.to_string()))?;
    if url.starts_with("https:")
        && let Some(why) = shared.tls_unavailable
    {
        return Err(McpFailure::Transport(why.to_string()));
    }
    Ok(HttpServer::new(shared.client, url, headers, cap))
}
