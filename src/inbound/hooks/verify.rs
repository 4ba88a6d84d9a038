//! What each trigger source means on the wire: its signature scheme, where
//! its delivery id is, and the URL a Twilio sender signed. Pure: the
//! handler passes the headers, the parsed payload and the flags.

use serde_json::Value;

use crate::signature::{self, Headers, Scheme};
use crate::spec::model::TriggerSource;
use crate::store::runs::Trigger as RunTrigger;

/// The header a `webhook` sender puts its delivery id in.
pub const DELIVERY_HEADER: &str = "x-multijob-delivery";
pub const GITHUB_DELIVERY_HEADER: &str = "x-github-delivery";

/// The signature scheme a source's requests carry.
pub fn scheme(source: TriggerSource) -> Scheme {
    match source {
        TriggerSource::Webhook => Scheme::Multijob,
        TriggerSource::Github => Scheme::Github,
        TriggerSource::Slack => Scheme::Slack,
        TriggerSource::Telegram => Scheme::Telegram,
        TriggerSource::Sms => Scheme::Twilio,
    }
}

/// The run trigger a source's runs are recorded with.
pub fn run_trigger(source: TriggerSource) -> RunTrigger {
    match source {
        TriggerSource::Webhook => RunTrigger::Webhook,
        TriggerSource::Github => RunTrigger::Github,
        TriggerSource::Slack => RunTrigger::Slack,
        TriggerSource::Telegram => RunTrigger::Telegram,
        TriggerSource::Sms => RunTrigger::Sms,
    }
}

/// The headers that carry a signature or a credential: never shown to
/// templates, whatever the source.
pub const HIDDEN_HEADERS: [&str; 9] = [
    signature::MULTIJOB_HEADER,
    signature::GITHUB_HEADER,
    signature::SLACK_HEADER,
    signature::TELEGRAM_HEADER,
    signature::TWILIO_HEADER,
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-hub-signature",
];

/// The sender's id for this delivery, if it sends one: a header
/// (`webhook`, `github`) or a payload field (Slack's `event_id`, or a
/// slash command's `trigger_id`; Telegram's `update_id`; Twilio's
/// `MessageSid`). Numbers become their decimal text.
pub fn delivery_id(source: TriggerSource, headers: &Headers, payload: &Value) -> Option<String> {
    let field = |name: &str| match payload.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let header = |name: &str| headers.get(name).filter(|v| !v.is_empty()).cloned();
    match source {
        TriggerSource::Webhook => header(DELIVERY_HEADER),
        TriggerSource::Github => header(GITHUB_DELIVERY_HEADER),
        TriggerSource::Slack => field("event_id").or_else(|| field("trigger_id")),
        TriggerSource::Telegram => field("update_id"),
        TriggerSource::Sms => field("MessageSid").or_else(|| field("SmsSid")),
    }
}

/// The URL the sender signed (Twilio signs the full URL it requested):
/// `http://{Host}{path?query}`; behind a proxy (`--inbound-behind-proxy`)
/// the scheme and host the proxy forwarded (`X-Forwarded-Proto`,
/// `X-Forwarded-Host`), which only a trusted proxy may set.
pub fn public_url(headers: &Headers, path_and_query: &str, behind_proxy: bool) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = first("host").unwrap_or("localhost");
    if behind_proxy {
        let proto = first("x-forwarded-proto").unwrap_or("https");
        let host = first("x-forwarded-host").unwrap_or(host);
        format!("{proto}://{host}{path_and_query}")
    } else {
        format!("http://{host}{path_and_query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_source_finds_its_delivery_id() {
        let h = headers(&[("x-multijob-delivery", "d-1"), ("x-github-delivery", "g-1")]);
        let none = json!({});
        assert_eq!(
            delivery_id(TriggerSource::Webhook, &h, &none).as_deref(),
            Some("d-1")
        );
        assert_eq!(
            delivery_id(TriggerSource::Github, &h, &none).as_deref(),
            Some("g-1")
        );
        let slack = json!({"event_id": "Ev1", "trigger_id": "T1"});
        assert_eq!(
            delivery_id(TriggerSource::Slack, &h, &slack).as_deref(),
            Some("Ev1")
        );
        let slash = json!({"trigger_id": "T1"});
        assert_eq!(
            delivery_id(TriggerSource::Slack, &h, &slash).as_deref(),
            Some("T1")
        );
        let telegram = json!({"update_id": 123456});
        assert_eq!(
            delivery_id(TriggerSource::Telegram, &h, &telegram).as_deref(),
            Some("123456")
        );
        let sms = json!({"MessageSid": "SM1"});
        assert_eq!(
            delivery_id(TriggerSource::Sms, &h, &sms).as_deref(),
            Some("SM1")
        );
        assert_eq!(
            delivery_id(TriggerSource::Webhook, &Headers::new(), &none),
            None
        );
        assert_eq!(
            delivery_id(TriggerSource::Telegram, &h, &json!({"update_id": [1]})),
            None
        );
    }

    #[test]
    fn the_public_url_trusts_forwarded_headers_only_behind_a_proxy() {
        let h = headers(&[
            ("host", "10.0.0.5:9000"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "hooks.example.com"),
        ]);
        assert_eq!(
            public_url(&h, "/hooks/sms?a=1", false),
            "http://10.0.0.5:9000/hooks/sms?a=1"
        );
        assert_eq!(
            public_url(&h, "/hooks/sms?a=1", true),
            "https://hooks.example.com/hooks/sms?a=1"
        );
        let plain = headers(&[("host", "h:1")]);
        assert_eq!(public_url(&plain, "/hooks/x", true), "https://h:1/hooks/x");
    }
}
