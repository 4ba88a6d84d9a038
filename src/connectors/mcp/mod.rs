//! MCP client: a connector with `provider: mcp` is a Model Context Protocol
//! server, reached over stdio (a child process, [`stdio`]) or streamable
//! HTTP ([`http`]), spoken to in JSON-RPC 2.0 ([`jsonrpc`]).
//!
//! An [`McpSession`] is one conversation with one server, meant to live for
//! one run: [`McpSession::open`] starts it (`initialize`, then
//! `notifications/initialized`), [`McpSession::tools`] lists its tools
//! (`tools/list`, every page, cached per revision and connector in
//! [`cache`] and dropped when the server says
//! `notifications/tools/list_changed`), [`McpSession::call`] calls one
//! (`tools/call`; the text parts joined, `isError` a [`McpError::Tool`]),
//! and [`McpSession::close`] ends it (a stdio server's whole process group
//! is killed; dropping the session does the same). Every request has the
//! connector's `timeout_ms` and `max_output_bytes`; a timeout or a cancel
//! kills a stdio server, and the session cannot be used again.
//!
//! Secrets: `env`, `headers` and `token` are references resolved when the
//! session opens; whatever the server says is scrubbed of their values
//! before it leaves this module.

pub mod cache;
pub mod http;
pub mod jsonrpc;
mod session;
pub mod stdio;

use std::time::Duration;

use crate::run::RunError;

pub use session::{McpSession, ToolInfo, ToolOutput};

/// Default limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on one answer.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

/// What went wrong talking to a server, before the connector's name and the
/// redaction are added (see [`McpError`]).
#[derive(Debug)]
pub enum McpFailure {
    /// The connector's settings cannot work (bad argv, cwd, secret).
    Config(String),
    /// Egress policy refused the address.
    Refused(String),
    /// The server did not answer in time.
    Timeout(Duration),
    /// The run was cancelled.
    Cancelled,
    /// An answer was bigger than the cap (bytes).
    TooLarge(usize),
    /// The server broke the protocol or answered with a JSON-RPC error.
    Protocol(String),
    /// The pipe or connection failed, or the server exited.
    Transport(String),
}

/// An error of a session, with the connector named and secrets scrubbed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum McpError {
    /// The tool ran and reported failure (`isError: true`): the server is
    /// fine, and its text is what the model should see.
    #[error("MCP tool `{connector}.{tool}` failed: {text}")]
    Tool {
        connector: String,
        tool: String,
        text: String,
    },
    /// The server could not be reached, timed out, answered too much or
    /// broke the protocol.
    #[error("{0}")]
    Failed(RunError),
}

impl McpError {
    pub fn into_run_error(self) -> RunError {
        match self {
            McpError::Tool { .. } => RunError::Permanent(self.to_string()),
            McpError::Failed(e) => e,
        }
    }
}

impl From<RunError> for McpError {
    fn from(e: RunError) -> Self {
        McpError::Failed(e)
    }
}

/// What the server said besides answers, noted while reading them.
#[derive(Debug, Default)]
pub struct Events {
    pub tools_changed: bool,
}

impl Events {
    pub fn note(&mut self, method: &str) {
        if method == "notifications/tools/list_changed" {
            self.tools_changed = true;
        }
    }
}

impl McpFailure {
    /// As a run error for `connector` (`what`: the request), retryable for
    /// timeouts and broken pipes, permanent for the rest.
    fn into_run_error(self, connector: &str, what: &str) -> RunError {
        let at = format!("MCP server `{connector}` ({what})");
        match self {
            McpFailure::Config(m) => {
                RunError::Permanent(format!("{at}: {m}; fix connector `{connector}`"))
            }
            McpFailure::Refused(m) => RunError::Permanent(format!("{at}: {m}")),
            McpFailure::Timeout(d) => RunError::retryable(format!(
                "{at}: no answer within {} ms; the server was stopped (raise `timeout_ms` if it \
                 needs longer)",
                d.as_millis()
            )),
            McpFailure::Cancelled => RunError::retryable(format!("{at}: cancelled")),
            McpFailure::TooLarge(cap) => RunError::Permanent(format!(
                "{at}: the answer is larger than max_output_bytes ({cap} bytes), so it was \
                 refused and the server was stopped; raise `max_output_bytes` or ask for less"
            )),
            McpFailure::Protocol(m) => RunError::Permanent(format!("{at}: {m}")),
            McpFailure::Transport(m) => RunError::retryable(format!("{at}: {m}")),
        }
    }
}
