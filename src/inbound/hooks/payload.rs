//! A request's body and headers as a trigger's `inputs` templates see
//! them, and the inputs they render to.
//!
//! The body parses as JSON (webhook, GitHub, Slack events, Telegram,
//! whatever the `Content-Type`) or as form fields (Twilio SMS always;
//! Slack slash commands, sent with `Content-Type: application/x-www-form-urlencoded`). The
//! templates read only `payload`, `headers` (lower-cased names, without
//! any signature or credential header, nor one whose value holds the
//! secret), `source` and `now`, and the run gets exactly the keys the
//! trigger maps: nothing in the request can add a key, or reach the
//! run's policy (tools, limits, approval, commands), which is git's.

use serde_json::{Map, Value, json};

use super::verify::HIDDEN_HEADERS;
use crate::signature::Headers;
use crate::spec::model::{Trigger, TriggerSource};
use crate::workflow::render::{deadline, render};
use crate::workflow::template::{render_value, to_template_value};

pub const FORM: &str = "application/x-www-form-urlencoded";

/// The body as `payload`. Form fields are strings; a repeated field is a
/// list of its values. An empty JSON body is `{}`.
pub fn parse(
    source: TriggerSource,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Value, String> {
    // Only senders that post forms get form parsing; the others send
    // JSON whatever their Content-Type says (curl -d says form).
    let form = match source {
        TriggerSource::Sms => true,
        TriggerSource::Slack => {
            content_type.is_some_and(|t| t.trim().to_ascii_lowercase().starts_with(FORM))
        }
        _ => false,
    };
    if form {
        return Ok(form_fields(body));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not JSON ({e}); a {} trigger takes a JSON body",
            source.as_str()
        )
    })
}

fn form_fields(body: &[u8]) -> Value {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match fields.get_mut(name.as_ref()) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
            None => {
                fields.insert(name.into_owned(), value);
            }
        }
    }
    Value::Object(fields)
}

/// The headers templates may read: lower-cased names, no signature or
/// credential header, nothing that carries the secret.
pub fn visible_headers(headers: &Headers, secret: &str) -> Map<String, Value> {
    headers
        .iter()
        .filter(|(name, value)| {
            !HIDDEN_HEADERS.contains(&name.as_str())
                && (secret.is_empty() || !value.contains(secret))
        })
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect()
}

/// Slack's `url_verification` handshake: the challenge to answer with.
pub fn slack_challenge(source: TriggerSource, payload: &Value) -> Option<String> {
    if source != TriggerSource::Slack || payload["type"] != "url_verification" {
        return None;
    }
    payload["challenge"].as_str().map(str::to_string)
}

/// The run's inputs: each of the trigger's `inputs` rendered over the
/// request. The error names the template and what went wrong.
pub async fn inputs(
    trigger: &Trigger,
    payload: Value,
    headers: Map<String, Value>,
) -> Result<Value, String> {
    if trigger.inputs.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let ctx = to_template_value(json!({
        "payload": payload,
        "headers": headers,
        "source": trigger.source.as_str(),
        "now": crate::store::now_rfc3339(),
    }));
    let templates = Value::Object(trigger.inputs.clone());
    let env = crate::spec::templates::environment();
    let until = deadline(tokio::time::Instant::now(), None);
    match render(render_value, &env, &templates, &ctx, until).await {
        Ok(Value::Object(rendered)) => Ok(Value::Object(rendered)),
        Ok(other) => Err(format!("the inputs rendered to {other}, not an object")),
        Err(e) => Err(e.message().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::RateLimit;

    fn trigger(inputs: Value) -> Trigger {
        Trigger {
            id: "t".into(),
            description: None,
            source: TriggerSource::Webhook,
            job: Some("j".into()),
            skill: None,
            action: None,
            secret: "${env:S}".into(),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            requires_approval: false,
            rate_limit: Some(RateLimit {
                per_minute: 1,
                burst: 1,
            }),
            enabled: true,
        }
    }

    #[test]
    fn json_and_form_bodies_parse_by_source_and_content_type() {
        let json = parse(TriggerSource::Webhook, None, br#"{"id": 7}"#).unwrap();
        assert_eq!(json, json!({"id": 7}));
        let form = parse(TriggerSource::Sms, None, b"Body=hi+there&MessageSid=SM1").unwrap();
        assert_eq!(form, json!({"Body": "hi there", "MessageSid": "SM1"}));
        let slash = parse(TriggerSource::Slack, Some(FORM), b"a=1&a=2&a=3").unwrap();
        assert_eq!(slash, json!({"a": ["1", "2", "3"]}));
        assert_eq!(
            parse(TriggerSource::Github, None, b"  ").unwrap(),
            json!({})
        );
        let bad = parse(TriggerSource::Github, None, b"{nope").unwrap_err();
        assert!(bad.contains("not JSON"), "{bad}");
    }

    #[test]
    fn templates_never_see_credentials_or_the_secret() {
        let headers: Headers = [
            ("x-multijob-signature", "t=1,v1=ab"),
            ("authorization", "Bearer x"),
            ("cookie", "c=1"),
            ("x-echo", "has s3cret-value inside"),
            ("user-agent", "curl"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let visible = visible_headers(&headers, "s3cret-value");
        assert_eq!(Value::Object(visible), json!({"user-agent": "curl"}));
    }

    #[test]
    fn slack_url_verification_is_answered_with_its_challenge() {
        let p = json!({"type": "url_verification", "challenge": "abc"});
        assert_eq!(
            slack_challenge(TriggerSource::Slack, &p).as_deref(),
            Some("abc")
        );
        assert_eq!(slack_challenge(TriggerSource::Webhook, &p), None);
        assert_eq!(
            slack_challenge(TriggerSource::Slack, &json!({"type": "event_callback"})),
            None
        );
    }

    #[tokio::test]
    async fn inputs_hold_only_the_mapped_keys() {
        let t = trigger(
            json!({"order": "{{ payload.id }}", "via": "{{ source }}", "n": "{{ payload.n }}"}),
        );
        let payload = json!({"id": "o-1", "n": 3, "tools": ["shell"], "allow_command": true});
        let out = inputs(&t, payload, Map::new()).await.unwrap();
        assert_eq!(out, json!({"order": "o-1", "via": "webhook", "n": 3}));
        let missing = inputs(&t, json!({}), Map::new()).await.unwrap_err();
        assert!(missing.contains("payload.id"), "{missing}");
    }
}
