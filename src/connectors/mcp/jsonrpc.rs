//! JSON-RPC 2.0 as MCP uses it: requests the client numbers, the messages a
//! server sends back (a response to one of ours, a request of its own, a
//! notification), and the answers the client gives to a server's requests.
//! Pure: no I/O here.

use serde_json::{Value, json};

/// The protocol revision this client speaks.
pub const PROTOCOL_VERSION: &str = "2025-03-26";

/// `Method not found`, for server requests this client does not serve.
const METHOD_NOT_FOUND: i64 = -32601;

/// One message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to our request `id`: its result, or its error.
    Response {
        id: Value,
        outcome: Result<Value, String>,
    },
    /// The server asks us something (`ping`, `roots/list`, ...).
    Request { id: Value, method: String },
    /// A notification (`notifications/tools/list_changed`, ...).
    Notification { method: String },
}

pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

pub fn notification(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": method})
}

/// The `initialize` request's params: our protocol revision and name.
pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "multijob", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Our answer to a server's request: `ping` gets an empty result, anything
/// else "method not found".
pub fn answer(id: &Value, method: &str) -> Value {
    if method == "ping" {
        return json!({"jsonrpc": "2.0", "id": id, "result": {}});
    }
    json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": METHOD_NOT_FOUND,
        "message": format!("multijob does not serve `{method}`"),
    }})
}

/// Parses one message; a batch (array) gives its members in order.
pub fn parse(text: &str) -> Result<Vec<Incoming>, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("the server sent something that is not JSON ({e})"))?;
    match value {
        Value::Array(items) => items.into_iter().map(classify).collect(),
        one => Ok(vec![classify(one)?]),
    }
}

fn classify(value: Value) -> Result<Incoming, String> {
    let Value::Object(mut m) = value else {
        return Err("the server sent a JSON-RPC message that is not an object".into());
    };
    let method = m.get("method").and_then(Value::as_str).map(str::to_string);
    let id = m.remove("id");
    match (id, method) {
        (Some(id), Some(method)) => Ok(Incoming::Request { id, method }),
        (None, Some(method)) => Ok(Incoming::Notification { method }),
        (Some(id), None) => {
            let outcome = match (m.remove("result"), m.remove("error")) {
                (_, Some(error)) => Err(error_text(&error)),
                (Some(result), None) => Ok(result),
                (None, None) => Err("the response has neither result nor error".into()),
            };
            Ok(Incoming::Response { id, outcome })
        }
        (None, None) => Err("the server sent a message with neither id nor method".into()),
    }
}

fn error_text(error: &Value) -> String {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message");
    format!("JSON-RPC error {code}: {message}")
}

/// Whether a response `id` is the number we sent.
pub fn is_id(id: &Value, ours: u64) -> bool {
    id.as_u64() == Some(ours) || id.as_str() == Some(ours.to_string().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_responses_requests_and_notifications() {
        let got = parse(
            r#"[{"jsonrpc":"2.0","id":1,"result":{"a":1}},
            {"jsonrpc":"2.0","id":"s1","method":"ping"},
            {"jsonrpc":"2.0","method":"notifications/tools/list_changed"},
            {"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"bad"}}]"#,
        )
        .unwrap();
        assert_eq!(
            got[0],
            Incoming::Response {
                id: json!(1),
                outcome: Ok(json!({"a": 1}))
            }
        );
        assert_eq!(
            got[1],
            Incoming::Request {
                id: json!("s1"),
                method: "ping".into()
            }
        );
        assert!(
            matches!(&got[2], Incoming::Notification { method } if method.ends_with("list_changed"))
        );
        assert!(
            matches!(&got[3], Incoming::Response { outcome: Err(e), .. } if e.contains("-32602"))
        );
        assert!(parse("not json").is_err());
        assert!(parse("{}").is_err());
        assert!(parse("3").is_err());
    }

    #[test]
    fn answers_ping_and_refuses_the_rest() {
        assert_eq!(answer(&json!(7), "ping")["result"], json!({}));
        assert_eq!(
            answer(&json!(7), "sampling/createMessage")["error"]["code"],
            json!(-32601)
        );
    }
}
