//! The streamable HTTP transport: each message is POSTed to the server's
//! URL with `Accept: application/json, text/event-stream`; the answer is a
//! JSON body or a server-sent event stream carrying JSON-RPC messages. The
//! `Mcp-Session-Id` the server gives at `initialize` goes back on every
//! later request. Requests go through the connectors' shared client (no
//! redirects, the egress resolver) after the egress address check, with
//! the bearer token and declared headers, to the connector's own origin
//! only. A body over the connector's cap is refused as it arrives.

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use serde_json::Value;

use super::jsonrpc::{self, Incoming};
use super::{Events, McpFailure};
use crate::connectors::egress;

const SESSION_HEADER: &str = "mcp-session-id";

pub struct HttpServer {
    client: reqwest::Client,
    url: String,
    /// Authorization and the declared headers (resolved values).
    headers: HeaderMap,
    session_id: Option<String>,
    cap: usize,
}

impl HttpServer {
    pub fn new(client: reqwest::Client, url: String, headers: HeaderMap, cap: usize) -> Self {
        HttpServer {
            client,
            url,
            headers,
            session_id: None,
            cap,
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    pub async fn notify(&mut self, message: &Value) -> Result<(), McpFailure> {
        let resp = self.post(message).await?;
        check_status(&resp)?;
        Ok(())
    }

    pub async fn request(
        &mut self,
        id: u64,
        message: &Value,
        events: &mut Events,
    ) -> Result<Value, McpFailure> {
        let resp = self.post(message).await?;
        check_status(&resp)?;
        if let Some(sid) = resp.headers().get(SESSION_HEADER)
            && let Ok(sid) = sid.to_str()
        {
            self.session_id = Some(sid.to_string());
        }
        let sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !sse {
            let body = read_capped(resp, self.cap).await?;
            if let Some(result) = self.handle(&body, id, events).await? {
                return Ok(result);
            }
        } else if let Some(result) = self.read_stream(resp, id, events).await? {
            return Ok(result);
        }
        Err(McpFailure::Protocol(format!(
            "the answer to request {id} did not contain its response"
        )))
    }

    /// Reads an event stream until the response to `id` (the server may
    /// keep the stream open after it), at most `cap` bytes in all.
    async fn read_stream(
        &self,
        mut resp: reqwest::Response,
        id: u64,
        events: &mut Events,
    ) -> Result<Option<Value>, McpFailure> {
        let mut stream = SseBuffer::default();
        let mut read = 0usize;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| McpFailure::Transport(format!("reading the event stream failed: {e}")))?
        {
            read += chunk.len();
            if read > self.cap {
                return Err(McpFailure::TooLarge(self.cap));
            }
            for data in stream.push(&String::from_utf8_lossy(&chunk)) {
                if let Some(result) = self.handle(&data, id, events).await? {
                    return Ok(Some(result));
                }
            }
        }
        for data in stream.finish() {
            if let Some(result) = self.handle(&data, id, events).await? {
                return Ok(Some(result));
            }
        }
        Ok(None)
    }

    /// One JSON-RPC message (or batch) from the server: the response to
    /// `id` if it is one; the server's requests are answered on the way.
    async fn handle(
        &self,
        text: &str,
        id: u64,
        events: &mut Events,
    ) -> Result<Option<Value>, McpFailure> {
        for incoming in jsonrpc::parse(text).map_err(McpFailure::Protocol)? {
            match incoming {
                Incoming::Response { id: got, outcome } if jsonrpc::is_id(&got, id) => {
                    return outcome.map(Some).map_err(McpFailure::Protocol);
                }
                Incoming::Response { .. } => {}
                Incoming::Request { id, method } => {
                    // Answered on a request of its own; its reply is 202.
                    let _ = self.post(&jsonrpc::answer(&id, &method)).await;
                }
                Incoming::Notification { method } => events.note(&method),
            }
        }
        Ok(None)
    }

    async fn post(&self, message: &Value) -> Result<reqwest::Response, McpFailure> {
        egress::check_resolved(&self.url)
            .await
            .map_err(|e| McpFailure::Refused(e.message().to_string()))?;
        let mut req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .json(message);
        if let Some(sid) = &self.session_id {
            req = req.header(SESSION_HEADER, sid);
        }
        req.send()
            .await
            .map_err(|e| McpFailure::Transport(format!("POST {} failed: {e}", self.url)))
    }
}

fn check_status(resp: &reqwest::Response) -> Result<(), McpFailure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    Err(McpFailure::Transport(match status.as_u16() {
        401 | 403 => {
            format!("the server answered {status}: check the connector's `token` and `headers`")
        }
        404 => format!(
            "the server answered {status}: check `base_url` (or the server dropped our session)"
        ),
        _ => format!("the server answered {status}"),
    }))
}

/// The body as text, refused once it passes `cap` bytes.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<String, McpFailure> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(McpFailure::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| McpFailure::Transport(format!("reading the answer failed: {e}")))?
    {
        if body.len() + chunk.len() > cap {
            return Err(McpFailure::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A server-sent event stream read in chunks: each complete event's
/// `data` (multi-line data joined with newlines, as the SSE format says).
#[derive(Default)]
struct SseBuffer {
    pending: String,
    data: Vec<String>,
}

impl SseBuffer {
    fn push(&mut self, chunk: &str) -> Vec<String> {
        self.pending.push_str(&chunk.replace('\r', ""));
        let mut events = Vec::new();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            self.line(line.trim_end_matches('\n'), &mut events);
        }
        events
    }

    /// The last event of a stream that ended without a blank line.
    fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        self.line(&rest, &mut events);
        self.line("", &mut events);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(self.data.join("\n"));
                self.data.clear();
            }
        } else if let Some(rest) = line.strip_prefix("data:") {
            self.data
                .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_and_joined_across_chunks() {
        let mut b = SseBuffer::default();
        assert!(b.push("event: message\r\nid: 1\ndata: {\"a\":").is_empty());
        assert_eq!(b.push("\ndata: 1}\n\n: comment\nda"), vec!["{\"a\":\n1}"]);
        assert!(b.push("ta:{\"b\":2}\n").is_empty());
        assert_eq!(b.finish(), vec!["{\"b\":2}"]);
        assert!(SseBuffer::default().finish().is_empty());
    }
}
