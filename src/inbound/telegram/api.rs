//! The Bot API's `getUpdates` long poll, with the connector's base URL,
//! bot token (resolved at each poll, redacted from every error) and the
//! connectors' shared HTTP client and egress check. Replies do not come
//! through here: they are `message` sends of the connector (its rate
//! limit, its retries).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::connectors::secrets::{self, Secrets};
use crate::connectors::{client, egress};
use crate::spec::model::Connector;

/// How long Telegram holds a `getUpdates` open when nothing is new.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(25);
/// Updates read per poll: each is handled before the next poll.
pub const POLL_LIMIT: u32 = 20;
/// The largest `getUpdates` answer read; more is a broken or hostile peer.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// One update: its id (the delivery id) and the message, if it was a
/// message this bridge can read.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub chat: Chat,
    #[serde(default)]
    pub from: Option<User>,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chat {
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

impl Message {
    /// Who sent it, for the record: `telegram:<username>`, else
    /// `telegram:<user id>`, else the chat's id (a channel post).
    pub fn sender(&self) -> String {
        match &self.from {
            Some(User {
                username: Some(name),
                ..
            }) if !name.is_empty() => format!("telegram:{}", super::parse::shorten(name)),
            Some(user) => format!("telegram:{}", user.id),
            None => format!("telegram:chat{}", self.chat.id),
        }
    }
}

/// Why a poll failed, and how long to wait before the next.
#[derive(Debug, Clone, PartialEq)]
pub struct PollError {
    pub message: String,
    pub wait: Option<Duration>,
}

impl PollError {
    fn new(message: String) -> PollError {
        PollError {
            message,
            wait: None,
        }
    }
}

/// One `getUpdates` call: the updates from `offset` on (confirming every
/// one before it to Telegram).
pub async fn get_updates(spec: &Connector, offset: Option<i64>) -> Result<Vec<Update>, PollError> {
    let body = json!({
        "offset": offset,
        "timeout": POLL_TIMEOUT.as_secs(),
        "limit": POLL_LIMIT,
        "allowed_updates": ["message"],
    });
    let wait = POLL_TIMEOUT + Duration::from_secs(10);
    let result = call(spec, "getUpdates", &body, wait).await?;
    Ok(updates(result))
}

/// The bot's username (`getMe`): a group command addressed to another
/// bot (`/run@other_bot`) is not for this one.
pub async fn get_me(spec: &Connector) -> Result<Option<String>, PollError> {
    let result = call(spec, "getMe", &json!({}), Duration::from_secs(10)).await?;
    Ok(result["username"].as_str().map(str::to_string))
}

/// POST `body` to Bot API `method` with the connector's token; the
/// answer's `result`. Every error is scrubbed of the token.
async fn call(
    spec: &Connector,
    method: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value, PollError> {
    let id = &spec.id;
    let secrets = Secrets::resolve_all(spec).map_err(|e| PollError::new(e.to_string()))?;
    let redactor = secrets.redactor();
    let token = secrets.get("bot_token").ok_or_else(|| {
        PollError::new(format!(
            "connector `{id}` has no bot_token secret; add `secrets: {{bot_token: ${{env:NAME}}}}`"
        ))
    })?;
    let base = spec.base_url.as_deref().ok_or_else(|| {
        PollError::new(format!(
            "connector `{id}` has no base_url to poll; set `base_url: https://api.telegram.org`"
        ))
    })?;
    let base = secrets::resolve_base_url(id, base).map_err(|e| PollError::new(e.to_string()))?;
    let url = format!("{}/bot{token}/{method}", base.trim_end_matches('/'));
    let what = format!("{method} for connector `{id}`");
    let scrub = |e: String| PollError::new(redactor.redact(&e));
    egress::check_resolved(&url)
        .await
        .map_err(|e| scrub(format!("{what}: {e}")))?;
    let client = client::shared().map_err(|e| PollError::new(e.to_string()))?;
    let resp = client
        .client
        .post(&url)
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| scrub(format!("{what} failed: {}", e.without_url())))?;
    let status = resp.status().as_u16();
    let text = read_capped(resp)
        .await
        .map_err(|e| scrub(format!("{what}: {e}")))?;
    answer(&what, status, &text).map_err(|e| PollError {
        message: redactor.redact(&e.message),
        wait: e.wait,
    })
}

/// The bot's id: the part of its token before `:` (not the secret part),
/// or `None` when the token cannot be read now.
pub fn bot_id(spec: &Connector) -> Option<String> {
    let reference = spec.secrets.get("bot_token")?;
    let token = secrets::resolve(&spec.id, "bot_token", reference).ok()?;
    token.split_once(':').map(|(id, _)| id.to_string())
}

/// The body, refused past [`MAX_ANSWER_BYTES`] without reading it all.
async fn read_capped(mut resp: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is over {MAX_ANSWER_BYTES} bytes; is base_url the Bot API?"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// The `result` of a Bot API answer, or why there is none.
fn answer(what: &str, status: u16, text: &str) -> Result<Value, PollError> {
    let parsed: Result<Answer, _> = serde_json::from_str(text);
    let Ok(answer) = parsed else {
        return Err(PollError::new(format!(
            "{what}: HTTP {status}, not a Bot API answer: {}",
            super::parse::shorten(text)
        )));
    };
    if !answer.ok || !(200..300).contains(&status) {
        let why = answer.description.unwrap_or_default();
        let hint = match status {
            409 => {
                "; another process polls this bot (a second daemon, or a webhook is set: deleteWebhook)"
            }
            401 | 404 => "; check the bot_token secret",
            _ => "",
        };
        return Err(PollError {
            message: format!("{what}: HTTP {status} {why}{hint}"),
            wait: answer
                .parameters
                .and_then(|p| p.retry_after)
                .map(Duration::from_secs),
        });
    }
    Ok(answer.result)
}

/// The updates of a `getUpdates` result. An update that is not a
/// readable message keeps its id (its offset must still be confirmed)
/// without a message.
fn updates(result: Value) -> Vec<Update> {
    let Value::Array(items) = result else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|u| {
            let update_id = u.get("update_id")?.as_i64()?;
            let message = u
                .get("message")
                .and_then(|m| serde_json::from_value(m.clone()).ok());
            Some(Update { update_id, message })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_every_update_id_and_readable_messages() {
        let text = r#"{"ok":true,"result":[
            {"update_id":7,"message":{"chat":{"id":-100},"from":{"id":5,"username":"ana"},"text":"/jobs"}},
            {"update_id":8,"edited_message":{}},
            {"update_id":9,"message":{"chat":"bad"}},
            {"nope":1}]}"#;
        let updates = updates(answer("getUpdates", 200, text).unwrap());
        assert_eq!(
            updates.iter().map(|u| u.update_id).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        let m = updates[0].message.as_ref().unwrap();
        assert_eq!((m.chat.id, m.text.as_deref()), (-100, Some("/jobs")));
        assert_eq!(m.sender(), "telegram:ana");
        assert!(updates[1].message.is_none() && updates[2].message.is_none());
    }

    #[test]
    fn a_refusal_says_why_and_when_to_poll_again() {
        let e = answer(
            "getUpdates",
            409,
            r#"{"ok":false,"description":"Conflict","parameters":{"retry_after":3}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("another process polls"), "{}", e.message);
        assert_eq!(e.wait, Some(Duration::from_secs(3)));
        let e = answer("getUpdates", 502, "<html>bad gateway</html>").unwrap_err();
        assert!(e.message.contains("not a Bot API answer"), "{}", e.message);
    }

    #[test]
    fn the_sender_is_the_username_else_the_user_id() {
        let m: Message =
            serde_json::from_value(json!({"chat": {"id": 1}, "from": {"id": 42}})).unwrap();
        assert_eq!(m.sender(), "telegram:42");
        let m: Message = serde_json::from_value(json!({"chat": {"id": 1}})).unwrap();
        assert_eq!(m.sender(), "telegram:chat1");
    }
}
