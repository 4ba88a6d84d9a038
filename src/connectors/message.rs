//! The `message` action: one text to a chat, channel, address or endpoint.
//!
//! Delivery is at-least-once, so every provider passes the idempotency key
//! on (an `Idempotency-Key` header, a body field, or the e-mail Message-ID)
//! for the receiver to drop a duplicate.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::join;
use super::{Call, Connectors, value_text};
use crate::run::RunError;
use crate::spec::model::Provider;

pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub const SIGNATURE_HEADER: &str = "X-Multijob-Signature";
const DEFAULT_SUBJECT: &str = "multijob";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundMessage {
    pub text: String,
    /// Chat id, channel, phone number or address; defaults from the
    /// connector's config.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivered: bool,
    pub provider_message_id: Option<String>,
}

/// The `X-Multijob-Signature` value for `body` sent now:
/// `t=<unix>,v1=<hex>`, the scheme [`crate::signature`] verifies, so a
/// replayed request fails. Wall time whatever the daemon's clock: the
/// receiver checks the timestamp against its own wall clock.
pub fn signature(secret: &str, body: &[u8]) -> String {
    crate::signature::multijob_header(secret, jiff::Timestamp::now().as_second(), body)
}

impl Connectors {
    pub async fn send_message(
        &self,
        connector: &str,
        msg: OutboundMessage,
    ) -> Result<Delivery, RunError> {
        let result = self.send_message_inner(connector, msg).await;
        self.count(connector, if result.is_ok() { "ok" } else { "error" });
        result
    }

    async fn send_message_inner(
        &self,
        connector: &str,
        msg: OutboundMessage,
    ) -> Result<Delivery, RunError> {
        let call = self.begin(connector, Some(&Provider::MESSAGING)).await?;
        let result = match call.spec.provider {
            Provider::Telegram => self.telegram(&call, &msg).await,
            Provider::Slack => self.slack(&call, &msg).await,
            Provider::Webhook => self.webhook(&call, &msg).await,
            Provider::Whatsapp => self.whatsapp(&call, &msg).await,
            Provider::Sms => self.sms(&call, &msg).await,
            Provider::Smtp => smtp(&call, &msg).await,
            Provider::Http | Provider::Openai | Provider::Mcp => {
                unreachable!("begin() checked the provider")
            }
        };
        result.map_err(|e| super::error::redacted(e, call.redactor()))
    }

    async fn telegram(&self, call: &Call<'_>, msg: &OutboundMessage) -> Result<Delivery, RunError> {
        let token = call.require_secret("bot_token")?;
        let chat_id = recipient(call, msg, "chat_id")?;
        let url = join(call.base_url()?, &format!("bot{token}/sendMessage"));
        let body = json!({"chat_id": chat_id, "text": msg.text});
        let builder = self
            .http_client()?
            .post(&url)
            .header(IDEMPOTENCY_HEADER, &msg.idempotency_key)
            .json(&body);
        let reply = self
            .post_provider(call, &url, builder, "telegram sendMessage")
            .await?;
        if reply.get("ok") == Some(&Value::Bool(false)) {
            return Err(RunError::Permanent(format!(
                "telegram refused the message: {}",
                reply.get("description").map(value_text).unwrap_or_default()
            )));
        }
        Ok(delivered(reply.pointer("/result/message_id")))
    }

    async fn slack(&self, call: &Call<'_>, msg: &OutboundMessage) -> Result<Delivery, RunError> {
        // An incoming-webhook URL is itself a credential; prefer the secret.
        let url = match call.secrets.get("webhook_url") {
            Some(url) => url.to_string(),
            None => call.base_url()?.to_string(),
        };
        let mut body = json!({"text": msg.text});
        if let Some(channel) = msg.to.clone().or_else(|| call.config_str("channel")) {
            body["channel"] = Value::String(channel);
        }
        let builder = self
            .http_client()?
            .post(&url)
            .header(IDEMPOTENCY_HEADER, &msg.idempotency_key)
            .json(&body);
        self.post_provider(call, &url, builder, "slack webhook")
            .await?;
        Ok(delivered(None))
    }

    async fn webhook(&self, call: &Call<'_>, msg: &OutboundMessage) -> Result<Delivery, RunError> {
        let url = call.base_url()?.to_string();
        let to = msg.to.clone().or_else(|| call.config_str("to"));
        let body = serde_json::to_vec(&json!({
            "text": msg.text,
            "to": to,
            "subject": msg.subject,
            "idempotency_key": msg.idempotency_key,
        }))
        .expect("a JSON value serializes");
        let mut builder = self
            .http_client()?
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, &msg.idempotency_key);
        if let Some(secret) = call.secrets.get("signing_secret") {
            builder = builder.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let reply = self
            .post_provider(call, &url, builder.body(body), "webhook")
            .await?;
        Ok(delivered(
            reply.get("id").or_else(|| reply.get("message_id")),
        ))
    }

    async fn whatsapp(&self, call: &Call<'_>, msg: &OutboundMessage) -> Result<Delivery, RunError> {
        let token = call.require_secret("access_token")?;
        let phone_number_id = call.config_str("phone_number_id").ok_or_else(|| {
            RunError::Permanent(format!(
                "connector `{}` needs config.phone_number_id (the WhatsApp sender's id)",
                call.spec.id
            ))
        })?;
        let to = recipient(call, msg, "to")?;
        let url = join(call.base_url()?, &format!("{phone_number_id}/messages"));
        let body = json!({
            "messaging_product": "whatsapp",
            "to": to,
            "type": "text",
            "text": {"body": msg.text},
        });
        let builder = self
            .http_client()?
            .post(&url)
            .bearer_auth(token)
            .header(IDEMPOTENCY_HEADER, &msg.idempotency_key)
            .json(&body);
        let reply = self
            .post_provider(call, &url, builder, "whatsapp messages")
            .await?;
        Ok(delivered(reply.pointer("/messages/0/id")))
    }

    async fn sms(&self, call: &Call<'_>, msg: &OutboundMessage) -> Result<Delivery, RunError> {
        let url = call.base_url()?.to_string();
        let to = recipient(call, msg, "to")?;
        let mut builder = self
            .http_client()?
            .post(&url)
            .header(IDEMPOTENCY_HEADER, &msg.idempotency_key)
            .json(&json!({"to": to, "text": msg.text}));
        if let Some(key) = call.secrets.get("api_key") {
            builder = builder.bearer_auth(key);
        }
        let reply = self
            .post_provider(call, &url, builder, "sms gateway")
            .await?;
        Ok(delivered(
            reply
                .get("id")
                .or_else(|| reply.get("message_id"))
                .or_else(|| reply.get("sid")),
        ))
    }
}

/// The message's `to`, or the connector's default under `config.<key>`.
fn recipient(call: &Call<'_>, msg: &OutboundMessage, key: &str) -> Result<String, RunError> {
    msg.to
        .clone()
        .or_else(|| call.config_str(key))
        .ok_or_else(|| {
            RunError::Permanent(format!(
                "message to connector `{}` has no recipient: set the step's `to` or config.{key}",
                call.spec.id
            ))
        })
}

fn delivered(id: Option<&Value>) -> Delivery {
    Delivery {
        delivered: true,
        provider_message_id: id.filter(|v| !v.is_null()).map(value_text),
    }
}

/// SMTP via lettre. base_url is `smtp://host:port` (plain, or STARTTLS with
/// `?tls=required`) or `smtps://host:port` (implicit TLS).
async fn smtp(call: &Call<'_>, msg: &OutboundMessage) -> Result<Delivery, RunError> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let id = &call.spec.id;
    let base = call.base_url()?;
    let from: Mailbox = call
        .config_str("from")
        .ok_or_else(|| {
            RunError::Permanent(format!("connector `{id}` needs config.from (an address)"))
        })?
        .parse()
        .map_err(|e| RunError::Permanent(format!("connector `{id}`: config.from: {e}")))?;
    let to: Mailbox = recipient(call, msg, "to")?
        .parse()
        .map_err(|e| RunError::Permanent(format!("message `to` is not an address: {e}")))?;
    // Receivers and archives dedupe on Message-ID, so it carries the key.
    let key: String = msg
        .idempotency_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    let message_id = format!("<{key}@multijob>");
    let email = Message::builder()
        .from(from)
        .to(to)
        .subject(msg.subject.as_deref().unwrap_or(DEFAULT_SUBJECT))
        .message_id(Some(message_id.clone()))
        .header(ContentType::TEXT_PLAIN)
        .body(msg.text.clone())
        .map_err(|e| RunError::Permanent(format!("cannot build the e-mail: {e}")))?;
    if let Ok(url) = reqwest::Url::parse(base)
        && let Some(host) = url.host_str()
    {
        let port = url
            .port()
            .unwrap_or(if url.scheme() == "smtps" { 465 } else { 25 });
        super::egress::check_host(host, port).await?;
    }
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(base).map_err(|e| {
        RunError::Permanent(format!(
            "connector `{id}`: base_url is not an SMTP URL ({e}); use smtp://host:port"
        ))
    })?;
    if let (Some(user), Some(pass)) = (call.secrets.get("username"), call.secrets.get("password")) {
        builder = builder.credentials(Credentials::new(user.to_string(), pass.to_string()));
    }
    let transport = builder.timeout(Some(super::DEFAULT_TIMEOUT)).build();
    match transport.send(email).await {
        Ok(_) => Ok(Delivery {
            delivered: true,
            provider_message_id: Some(message_id),
        }),
        Err(e) => {
            let text = format!("smtp send via connector `{id}` failed: {e}");
            if e.is_permanent() {
                Err(RunError::Permanent(text))
            } else {
                Err(RunError::retryable(text))
            }
        }
    }
}
