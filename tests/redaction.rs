//! Secrets leave a connector call in no form: percent-encoded in a URL an
//! error quotes, normalised as a URL, JSON-escaped or base64 in what a peer
//! echoes. Real connectors against real loopback peers (issue #19, defect 5).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, json};

use common::secrets::{credential_forms, echo_peer, found_in, wire_forms};
use multijob::connectors::{Connectors, HttpRequest, OutboundMessage};
use multijob::run::RunError;
use multijob::spec::model::{Connector, Provider};
use multijob::spec::snapshot::Resource;

/// A token with the characters that encoders change: a space, `+`, `/`, `"`.
const TOKEN: &str = "tok en+/\"x-4242-secret";

/// A connector whose secrets are files (in `dir`) holding `values`.
fn connector(
    dir: &Path,
    id: &str,
    provider: Provider,
    base_url: &str,
    values: &[(&str, &str)],
) -> Connector {
    let mut secrets = BTreeMap::new();
    for (name, value) in values {
        let path = dir.join(format!("{id}-{name}"));
        std::fs::write(&path, value).expect("write the secret file");
        secrets.insert(name.to_string(), format!("${{file:{}}}", path.display()));
    }
    Connector {
        id: id.to_string(),
        provider,
        base_url: Some(base_url.to_string()),
        secrets,
        config: Map::new(),
        rate_limit: None,
        allowed_hosts: Vec::new(),
        description: None,
        bridge: None,
        mcp: Default::default(),
    }
}

fn build(c: Connector) -> Connectors {
    let mut map = BTreeMap::new();
    map.insert(c.id.clone(), Resource::new(c, "jobs.d/c.yaml".into(), 1, 1));
    Connectors::new(&map)
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[track_caller]
fn assert_clean(what: &str, text: &str, forms: &[String]) {
    let found = found_in(text, forms);
    assert!(found.is_empty(), "{what} shows {found:?}:\n{text}");
}

fn message() -> OutboundMessage {
    OutboundMessage {
        text: "hello".into(),
        to: Some("-100".into()),
        subject: None,
        idempotency_key: "run:step:0".into(),
    }
}

#[tokio::test]
async fn a_telegram_token_is_masked_percent_encoded_in_the_url_an_error_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let forms = wire_forms(TOKEN);
    // A peer that answers 500 with the path it got: `bot` + the encoded token.
    let secrets = [("bot_token", TOKEN)];
    let tg = connector(dir.path(), "tg", Provider::Telegram, &echo_peer(), &secrets);
    let err = build(tg).send_message("tg", message()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.message().contains("no bot at /bot***"), "{err}");
    assert_clean("the 500 error", err.message(), &forms);
    // No peer at all: reqwest's error quotes the whole URL.
    let base = format!("http://127.0.0.1:{}", closed_port());
    let tg = connector(dir.path(), "tg", Provider::Telegram, &base, &secrets);
    let err = build(tg).send_message("tg", message()).await.unwrap_err();
    assert!(err.message().contains("/bot***"), "{err}");
    assert_clean("the connect error", err.message(), &forms);
}

#[tokio::test]
async fn a_slack_webhook_url_is_masked_after_url_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    // Upper-case scheme and an explicit default port: the URL reqwest
    // quotes is `http://127.0.0.1/services/...`. Nothing listens on :80.
    let hook = "HTTP://127.0.0.1:80/services/T0/B0/hook-secret-4242?x=a b";
    let forms = wire_forms(hook);
    assert!(
        forms
            .iter()
            .any(|f| f.starts_with("http://127.0.0.1/services"))
    );
    let secrets = [("webhook_url", hook)];
    let slack = connector(
        dir.path(),
        "slack",
        Provider::Slack,
        "http://unused",
        &secrets,
    );
    let err = build(slack)
        .send_message("slack", message())
        .await
        .unwrap_err();
    assert!(err.message().contains("***"), "{err}");
    assert_clean("the webhook error", err.message(), &forms);
}

#[tokio::test]
async fn a_bearer_token_echoed_in_any_encoding_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [("bearer_token", TOKEN)];
    let api = connector(dir.path(), "api", Provider::Http, &echo_peer(), &secrets);
    let req = HttpRequest {
        path: Some("/encoded".into()),
        ..Default::default()
    };
    let err = build(api).http(Some("api"), req, &[]).await.unwrap_err();
    assert!(err.message().contains("rejected: ***"), "{err}");
    assert_clean("the error", err.message(), &wire_forms(TOKEN));
}

#[tokio::test]
async fn a_token_spelled_with_json_escapes_is_masked_in_the_parsed_body() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [("bearer_token", TOKEN)];
    let api = connector(dir.path(), "api", Provider::Http, &echo_peer(), &secrets);
    let req = HttpRequest {
        path: Some("/json".into()),
        ..Default::default()
    };
    let ok = build(api).http(Some("api"), req, &[]).await.unwrap();
    let shown = serde_json::to_string(&ok).unwrap();
    // `\"`-escaped in the text; only `\u` escapes in the text, the token
    // itself once parsed, as a value and as a key; and in a header.
    assert_eq!(ok.body["auth"], "Bearer ***", "{shown}");
    assert_eq!(ok.body["escaped"], "***", "{shown}");
    assert_eq!(ok.body["***"], 1, "{shown}");
    assert_eq!(ok.headers["x-echo"], "Bearer ***", "{shown}");
    assert_clean("the response", &shown, &wire_forms(TOKEN));
}

#[tokio::test]
async fn basic_auth_is_sent_and_its_base64_form_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (user, password) = ("alice-ops", "pa ss>>~~?/+");
    let mut forms = wire_forms(password);
    forms.extend(credential_forms(user, password));
    let secrets = [("username", user), ("password", password)];
    let api = connector(dir.path(), "api", Provider::Http, &echo_peer(), &secrets);
    let req = HttpRequest {
        path: Some("/deny".into()),
        ..Default::default()
    };
    let err = build(api).http(Some("api"), req, &[]).await.unwrap_err();
    assert!(matches!(&err, RunError::Permanent(_)), "{err:?}");
    // The peer got HTTP Basic and said so; the error shows neither part.
    assert!(err.message().contains("denied: Basic ***"), "{err}");
    assert_clean("the 401 error", err.message(), &forms);
}

/// An SMTP server that offers AUTH and rejects it quoting what it got.
async fn smtp_echoing_auth() -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"220 echo ESMTP\r\n").await;
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match line.split_whitespace().next().unwrap_or("") {
                    "EHLO" | "HELO" => "250-echo\r\n250 AUTH PLAIN LOGIN\r\n".to_string(),
                    "AUTH" => format!("535 5.7.8 rejected {line}\r\n"),
                    "QUIT" => "221 bye\r\n".to_string(),
                    _ => "250 OK\r\n".to_string(),
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    format!("smtp://{addr}")
}

#[tokio::test]
async fn smtp_credentials_echoed_as_auth_plain_base64_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (user, password) = ("mailer-41", "smtp pass+/\"8c2e");
    let mut forms = wire_forms(password);
    forms.extend(credential_forms(user, password));
    let secrets = [("username", user), ("password", password)];
    let mut mail = connector(
        dir.path(),
        "mail",
        Provider::Smtp,
        &smtp_echoing_auth().await,
        &secrets,
    );
    mail.config
        .insert("from".into(), json!("multijob@example.com"));
    let mut msg = message();
    msg.to = Some("ops@example.com".into());
    let err = build(mail).send_message("mail", msg).await.unwrap_err();
    assert!(err.message().contains("rejected AUTH PLAIN ***"), "{err}");
    assert_clean("the SMTP error", err.message(), &forms);
}

#[tokio::test]
async fn a_short_secret_is_masked_as_a_word_never_inside_one() {
    let dir = tempfile::tempdir().unwrap();
    let api = connector(
        dir.path(),
        "shop",
        Provider::Http,
        &echo_peer(),
        &[("bearer_token", "shop")],
    );
    let req = HttpRequest {
        path: Some("/plain".into()),
        ..Default::default()
    };
    let ok = build(api).http(Some("shop"), req, &[]).await.unwrap();
    assert_eq!(ok.body, json!("shopee *** shopping"));
    // The peer named a header after it, too.
    assert_eq!(ok.headers["***"], "1", "{:?}", ok.headers);
}

#[tokio::test]
async fn a_secret_under_four_characters_is_refused_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let api = connector(
        dir.path(),
        "pin",
        Provider::Http,
        &echo_peer(),
        &[("bearer_token", "k9")],
    );
    let req = HttpRequest {
        path: Some("/plain".into()),
        ..Default::default()
    };
    let err = build(api).http(Some("pin"), req, &[]).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.message().contains("`bearer_token`"), "{err}");
    assert!(err.message().contains("under 4 characters"), "{err}");
}
