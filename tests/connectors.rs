//! The connector layer against real peers: small axum servers on loopback
//! that record what they receive, and a tiny SMTP sink.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use multijob::connectors::{ChatRequest, HttpRequest, OutboundMessage};
use multijob::run::RunError;
use multijob::signature::{Rejection, Scheme, verify};
use multijob::spec::model::{Provider, RateLimit};

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: Option<String>,
    headers: HashMap<String, String>,
    body: String,
}

impl Recorded {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the request body is JSON")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

type Reply = Arc<dyn Fn(&Recorded) -> (u16, &'static str, String) + Send + Sync>;

#[derive(Clone)]
struct PeerState {
    log: Arc<Mutex<Vec<Recorded>>>,
    reply: Reply,
}

struct Peer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Peer {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
    fn only(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected one request, got {all:#?}");
        all[0].clone()
    }
}

async fn record(
    State(state): State<PeerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, content_type, text) = (state.reply)(&rec);
    state.log.lock().unwrap().push(rec);
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, content_type)],
        text,
    )
        .into_response()
}

async fn peer(
    reply: impl Fn(&Recorded) -> (u16, &'static str, String) + Send + Sync + 'static,
) -> Peer {
    let log = Arc::new(Mutex::new(Vec::new()));
    let state = PeerState {
        log: log.clone(),
        reply: Arc::new(reply),
    };
    let app = Router::new().fallback(record).with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Peer { addr, log }
}

async fn json_peer(reply: Value) -> Peer {
    peer(move |_| (200, "application/json", reply.to_string())).await
}

use multijob::testkit::{connector_spec as connector, connectors_of as build};

/// Sets a process env var under a name unique to the calling test.
fn set_env(name: &str, value: &str) {
    // SAFETY: every test uses its own variable names, and nothing in this
    // test binary reads the environment concurrently through libc getenv.
    unsafe { std::env::set_var(name, value) };
}

fn message(text: &str, key: &str) -> OutboundMessage {
    OutboundMessage {
        text: text.to_string(),
        to: None,
        subject: None,
        idempotency_key: key.to_string(),
    }
}

#[tokio::test]
async fn telegram_posts_to_the_bot_token_path_with_default_chat_id() {
    let peer = json_peer(json!({"ok": true, "result": {"message_id": 42}})).await;
    set_env("MJ_TEST_TG_TOKEN", "123456:tg-secret-token");
    let mut c = connector("tg", Provider::Telegram, &peer.url());
    c.secrets
        .insert("bot_token".into(), "${env:MJ_TEST_TG_TOKEN}".into());
    c.config.insert("chat_id".into(), json!("-1001234567890"));
    let delivery = build(vec![c])
        .send_message("tg", message("hello ops", "run1:notify:0"))
        .await
        .unwrap();
    assert!(delivery.delivered);
    assert_eq!(delivery.provider_message_id.as_deref(), Some("42"));
    let req = peer.only();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/bot123456:tg-secret-token/sendMessage");
    assert_eq!(
        req.json(),
        json!({"chat_id": "-1001234567890", "text": "hello ops"})
    );
    assert_eq!(req.header("idempotency-key"), Some("run1:notify:0"));
}

#[tokio::test]
async fn telegram_error_reply_does_not_leak_the_token_in_the_path() {
    let peer = peer(|r| (401, "text/plain", format!("bad token for {}", r.path))).await;
    set_env("MJ_TEST_TG_TOKEN_LEAK", "999:leaky-token-value");
    let mut c = connector("tg-leak", Provider::Telegram, &peer.url());
    c.secrets
        .insert("bot_token".into(), "${env:MJ_TEST_TG_TOKEN_LEAK}".into());
    let mut msg = message("x", "k");
    msg.to = Some("55".into());
    let err = build(vec![c])
        .send_message("tg-leak", msg)
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Permanent(_)), "{err:?}");
    assert!(!err.to_string().contains("leaky-token-value"), "{err}");
    assert!(err.to_string().contains("/bot***/sendMessage"), "{err}");
}

#[tokio::test]
async fn slack_posts_text_and_channel_to_the_webhook() {
    let peer = peer(|_| (200, "text/plain", "ok".into())).await;
    let mut c = connector(
        "slack",
        Provider::Slack,
        &format!("{}/services/T/B/X", peer.url()),
    );
    c.config.insert("channel".into(), json!("#ops"));
    let delivery = build(vec![c])
        .send_message("slack", message("deploy done", "key-slack"))
        .await
        .unwrap();
    assert!(delivery.delivered);
    let req = peer.only();
    assert_eq!(req.path, "/services/T/B/X");
    assert_eq!(
        req.json(),
        json!({"text": "deploy done", "channel": "#ops"})
    );
    assert_eq!(req.header("idempotency-key"), Some("key-slack"));
}

#[tokio::test]
async fn webhook_signature_verifies_with_the_same_secret_read_from_a_file() {
    let peer = json_peer(json!({"id": "evt-7"})).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("signing");
    std::fs::write(&secret_path, "whsec-file-secret\n").unwrap();
    let mut c = connector("hook", Provider::Webhook, &format!("{}/in", peer.url()));
    c.secrets.insert(
        "signing_secret".into(),
        format!("${{file:{}}}", secret_path.display()),
    );
    let msg = OutboundMessage {
        text: "disk full".into(),
        to: Some("oncall".into()),
        subject: Some("alert".into()),
        idempotency_key: "run9:alert:0".into(),
    };
    let delivery = build(vec![c]).send_message("hook", msg).await.unwrap();
    assert_eq!(delivery.provider_message_id.as_deref(), Some("evt-7"));
    let req = peer.only();
    assert_eq!(
        req.json(),
        json!({"text": "disk full", "to": "oncall", "subject": "alert", "idempotency_key": "run9:alert:0"})
    );
    assert_eq!(req.header("idempotency-key"), Some("run9:alert:0"));
    // The receiver verifies the exact bytes it got with the inbound
    // listener's own verifier: the scheme two multijob daemons share.
    let sent = req
        .header("x-multijob-signature")
        .expect("a signature header");
    assert!(sent.starts_with("t=") && sent.contains(",v1="), "{sent}");
    let now = jiff::Timestamp::now().as_second();
    let check = |secret: &str, body: &[u8], now: i64| {
        verify(Scheme::Multijob, &req.headers, body, "", secret, now)
    };
    assert_eq!(check("whsec-file-secret", req.body.as_bytes(), now), Ok(()));
    assert_eq!(
        check("another-secret", req.body.as_bytes(), now),
        Err(Rejection::BadSignature),
        "a different secret must not verify"
    );
    assert_eq!(
        check("whsec-file-secret", b"{\"text\":\"rm -rf\"}", now),
        Err(Rejection::BadSignature),
        "another body must not verify"
    );
    // Replayed later than the window, the same request is refused.
    assert_eq!(
        check("whsec-file-secret", req.body.as_bytes(), now + 301 + 5),
        Err(Rejection::StaleTimestamp)
    );
    let t: i64 = sent[2..sent.find(',').unwrap()].parse().unwrap();
    assert!((now - 5..=now).contains(&t), "signed at {t}, now {now}");
}

#[tokio::test]
async fn whatsapp_uses_the_cloud_api_shape() {
    let peer = json_peer(json!({"messages": [{"id": "wamid.HBg"}]})).await;
    set_env("MJ_TEST_WA_TOKEN", "wa-access-token");
    let mut c = connector("wa", Provider::Whatsapp, &format!("{}/v21.0", peer.url()));
    c.secrets
        .insert("access_token".into(), "${env:MJ_TEST_WA_TOKEN}".into());
    c.config.insert("phone_number_id".into(), json!("10987"));
    let mut msg = message("hi there", "wa-key");
    msg.to = Some("+15551234567".into());
    let delivery = build(vec![c]).send_message("wa", msg).await.unwrap();
    assert_eq!(delivery.provider_message_id.as_deref(), Some("wamid.HBg"));
    let req = peer.only();
    assert_eq!(req.path, "/v21.0/10987/messages");
    assert_eq!(req.header("authorization"), Some("Bearer wa-access-token"));
    assert_eq!(req.header("idempotency-key"), Some("wa-key"));
    assert_eq!(
        req.json(),
        json!({"messaging_product": "whatsapp", "to": "+15551234567", "type": "text", "text": {"body": "hi there"}})
    );
}

#[tokio::test]
async fn sms_posts_to_and_text_with_bearer_key() {
    let peer = json_peer(json!({"sid": "SM1"})).await;
    set_env("MJ_TEST_SMS_KEY", "sms-api-key");
    let mut c = connector("sms", Provider::Sms, &format!("{}/send", peer.url()));
    c.secrets
        .insert("api_key".into(), "${env:MJ_TEST_SMS_KEY}".into());
    c.config.insert("to".into(), json!("+4915112345678"));
    let delivery = build(vec![c])
        .send_message("sms", message("code 1234", "sms-key"))
        .await
        .unwrap();
    assert_eq!(delivery.provider_message_id.as_deref(), Some("SM1"));
    let req = peer.only();
    assert_eq!(req.path, "/send");
    assert_eq!(req.header("authorization"), Some("Bearer sms-api-key"));
    assert_eq!(req.header("idempotency-key"), Some("sms-key"));
    assert_eq!(
        req.json(),
        json!({"to": "+4915112345678", "text": "code 1234"})
    );
}

/// A busy peer that says when to come back (`Retry-After`, in seconds or
/// as a date): the retryable error carries the wait, for the `http` action
/// and a message provider alike; a peer that does not say leaves it empty.
#[tokio::test]
async fn retry_after_from_a_busy_peer_rides_on_the_error() {
    async fn busy(uri: Uri) -> Response {
        let retry_after = match uri.path() {
            "/date" => "Thu, 01 Jan 2099 00:00:00 GMT",
            "/silent" => "",
            _ => "7",
        };
        let mut reply = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
        if !retry_after.is_empty() {
            reply.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(retry_after),
            );
        }
        reply
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(busy);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut sms = connector("sms-busy", Provider::Sms, &format!("{url}/send"));
    sms.config.insert("to".into(), json!("+4915112345678"));
    let connectors = build(vec![connector("shop", Provider::Http, &url), sms]);
    let get = |path: &str| HttpRequest {
        path: Some(path.to_string()),
        ..HttpRequest::default()
    };
    let err = connectors
        .http(Some("shop"), get("/x"), &[])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err:?}");
    assert!(err.message().contains("HTTP 429"), "{err}");
    let dated = connectors
        .http(Some("shop"), get("/date"), &[])
        .await
        .unwrap_err();
    let wait = dated.retry_after().expect("an HTTP-date is a wait");
    assert!(wait > Duration::from_secs(365 * 24 * 3600), "{wait:?}");
    let silent = connectors
        .http(Some("shop"), get("/silent"), &[])
        .await
        .unwrap_err();
    assert!(
        silent.is_retryable() && silent.retry_after().is_none(),
        "{silent:?}"
    );
    let sent = connectors
        .send_message("sms-busy", message("x", "k"))
        .await
        .unwrap_err();
    assert_eq!(sent.retry_after(), Some(Duration::from_secs(7)), "{sent:?}");
}

#[tokio::test]
async fn message_provider_errors_classify_by_status() {
    let flaky = peer(|_| (503, "text/plain", "try later".into())).await;
    let c = connector("sms-flaky", Provider::Sms, &flaky.url());
    let mut msg = message("x", "k");
    msg.to = Some("1".into());
    let err = build(vec![c])
        .send_message("sms-flaky", msg)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let missing = build(vec![]).send_message("nope", message("x", "k")).await;
    assert!(matches!(missing, Err(RunError::Permanent(m)) if m.contains("nope")));
}

#[tokio::test]
async fn openai_chat_sends_json_mode_and_tools_and_parses_tool_calls() {
    let peer = json_peer(json!({
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": {
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "http", "arguments": "{\"url\":\"https://example.com\"}"
            }}]
        }, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}
    }))
    .await;
    set_env("MJ_TEST_OPENAI_KEY", "sk-test-openai");
    let mut c = connector("llm", Provider::Openai, &format!("{}/v1", peer.url()));
    c.secrets
        .insert("api_key".into(), "${env:MJ_TEST_OPENAI_KEY}".into());
    let tools = vec![json!({"type": "function", "function": {
        "name": "http", "parameters": {"type": "object", "properties": {"url": {"type": "string"}}}
    }})];
    let req = ChatRequest {
        model: "gpt-test".into(),
        messages: vec![json!({"role": "user", "content": "check the site"})],
        json_mode: true,
        response_format: None,
        tools: tools.clone(),
        temperature: Some(0.2),
        max_tokens: Some(256),
    };
    let resp = build(vec![c]).chat("llm", req).await.unwrap();
    assert_eq!(resp.content, None);
    assert_eq!(resp.total_tokens, 70);
    assert_eq!(resp.tool_calls.len(), 1);
    assert_eq!(resp.tool_calls[0].id, "call_1");
    assert_eq!(resp.tool_calls[0].name, "http");
    assert_eq!(
        resp.tool_calls[0].arguments,
        json!({"url": "https://example.com"})
    );

    let got = peer.only();
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(got.header("authorization"), Some("Bearer sk-test-openai"));
    let body = got.json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "check the site"}])
    );
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(body["tools"], Value::Array(tools));
    assert_eq!(body["temperature"], json!(0.2));
    assert_eq!(body["max_tokens"], json!(256));
}

#[tokio::test]
async fn openai_plain_reply_gives_content_and_no_json_mode_field() {
    let peer = json_peer(json!({
        "choices": [{"message": {"role": "assistant", "content": "all good"}}],
        "usage": {"total_tokens": 12}
    }))
    .await;
    let c = connector("llm-plain", Provider::Openai, &peer.url());
    let req = ChatRequest {
        model: "m".into(),
        messages: vec![json!({"role": "user", "content": "hi"})],
        ..Default::default()
    };
    let resp = build(vec![c]).chat("llm-plain", req).await.unwrap();
    assert_eq!(resp.content.as_deref(), Some("all good"));
    assert!(resp.tool_calls.is_empty());
    assert_eq!(resp.total_tokens, 12);
    let body = peer.only().json();
    assert!(body.get("response_format").is_none() && body.get("tools").is_none());
}

#[tokio::test]
async fn http_joins_path_adds_bearer_and_query_and_parses_json() {
    let peer = json_peer(json!({"items": [1, 2]})).await;
    set_env("MJ_TEST_HTTP_BEARER", "http-bearer-token");
    let mut c = connector("shop", Provider::Http, &format!("{}/api/", peer.url()));
    c.secrets
        .insert("bearer_token".into(), "${env:MJ_TEST_HTTP_BEARER}".into());
    let mut query = Map::new();
    query.insert("page".into(), json!(2));
    query.insert("q".into(), json!("a b"));
    let mut headers = Map::new();
    headers.insert("X-Trace".into(), json!("t1"));
    let req = HttpRequest {
        method: "post".into(),
        path: Some("/v1/orders".into()),
        query: Some(query),
        headers: Some(headers),
        json: Some(json!({"sku": "A1"})),
        ..Default::default()
    };
    let resp = build(vec![c]).http(Some("shop"), req, &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, json!({"items": [1, 2]}));
    assert!(
        resp.headers["content-type"]
            .as_str()
            .unwrap()
            .contains("json")
    );
    let got = peer.only();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/api/v1/orders");
    assert_eq!(got.query.as_deref(), Some("page=2&q=a+b"));
    assert_eq!(
        got.header("authorization"),
        Some("Bearer http-bearer-token")
    );
    assert_eq!(got.header("x-trace"), Some("t1"));
    assert_eq!(got.json(), json!({"sku": "A1"}));
}

#[tokio::test]
async fn http_text_body_and_expect_status() {
    let peer = peer(|r| match r.path.as_str() {
        "/missing" => (404, "text/plain", "not here".into()),
        "/busy" => (503, "text/plain", "busy".into()),
        _ => (200, "text/plain", "plain text".into()),
    })
    .await;
    let c = connector("site", Provider::Http, &peer.url());
    let conns = build(vec![c]);
    let get = |path: &str, expect: Option<Value>| HttpRequest {
        path: Some(path.to_string()),
        expect_status: expect,
        ..Default::default()
    };
    let ok = conns.http(Some("site"), get("/", None), &[]).await.unwrap();
    assert_eq!(ok.body, json!("plain text"));
    assert_eq!(peer.requests()[0].method, "GET");
    assert!(peer.requests()[0].header("authorization").is_none());

    let expected_404 = conns
        .http(Some("site"), get("/missing", Some(json!("404"))), &[])
        .await
        .unwrap();
    assert_eq!(expected_404.status, 404);
    assert_eq!(expected_404.body, json!("not here"));

    let err = conns
        .http(Some("site"), get("/missing", None), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Permanent(m) if m.contains("404") && m.contains("200-299")),
        "{err:?}"
    );

    let err = conns
        .http(
            Some("site"),
            get("/busy", Some(json!([200, "400-499"]))),
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn http_timeout_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let c = connector("slow", Provider::Http, &format!("http://{addr}"));
    let req = HttpRequest {
        path: Some("/".into()),
        timeout_ms: Some(200),
        ..Default::default()
    };
    let err = build(vec![c])
        .http(Some("slow"), req, &[])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn egress_is_refused_for_other_hosts_and_metadata() {
    let peer = json_peer(json!({})).await;
    let mut c = connector("api", Provider::Http, &peer.url());
    // Even listed, the metadata address stays unreachable.
    c.allowed_hosts = vec!["169.254.169.254".into()];
    let conns = build(vec![c]);
    let to = |url: &str| HttpRequest {
        url: Some(url.to_string()),
        ..Default::default()
    };

    let other = format!("http://localhost:{}/", peer.addr.port());
    let err = conns.http(Some("api"), to(&other), &[]).await.unwrap_err();
    assert!(
        matches!(&err, RunError::Permanent(m) if m.contains("localhost") && m.contains("refused")),
        "{err:?}"
    );

    let err = conns
        .http(
            Some("api"),
            to("http://169.254.169.254/latest/meta-data/"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Permanent(m) if m.contains("metadata")),
        "{err:?}"
    );

    // Without a connector: only the caller's allowed hosts, and never metadata.
    let allowed = vec!["127.0.0.1".to_string(), "169.254.169.254".to_string()];
    let err = conns
        .http(None, to("http://169.254.169.254/"), &allowed)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    let err = conns.http(None, to(&other), &allowed).await.unwrap_err();
    assert!(err.message().contains("refused"), "{err}");
    let err = conns
        .http(
            None,
            HttpRequest {
                path: Some("/x".into()),
                ..Default::default()
            },
            &allowed,
        )
        .await
        .unwrap_err();
    assert!(err.message().contains("url"), "{err}");
    assert!(
        peer.requests().is_empty(),
        "refused requests must not be sent"
    );

    let ok = conns
        .http(None, to(&format!("{}/ok", peer.url())), &allowed)
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(peer.only().path, "/ok");
}

#[tokio::test]
async fn missing_env_secret_names_the_reference_and_connector() {
    let peer = json_peer(json!({})).await;
    let mut c = connector("needs-secret", Provider::Http, &peer.url());
    c.secrets.insert(
        "bearer_token".into(),
        "${env:MJ_TEST_DEFINITELY_UNSET_TOKEN}".into(),
    );
    let req = HttpRequest {
        path: Some("/".into()),
        ..Default::default()
    };
    let err = build(vec![c])
        .http(Some("needs-secret"), req, &[])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(!err.is_retryable());
    assert!(msg.contains("needs-secret"), "{msg}");
    assert!(
        msg.contains("${env:MJ_TEST_DEFINITELY_UNSET_TOKEN}"),
        "{msg}"
    );
    assert!(peer.requests().is_empty());
}

#[tokio::test]
async fn secrets_are_read_at_use_not_cached() {
    let peer = json_peer(json!({})).await;
    set_env("MJ_TEST_ROTATED", "first-token-value");
    let mut c = connector("rotating", Provider::Http, &peer.url());
    c.secrets
        .insert("bearer_token".into(), "${env:MJ_TEST_ROTATED}".into());
    let conns = build(vec![c]);
    let req = || HttpRequest {
        path: Some("/".into()),
        ..Default::default()
    };
    conns.http(Some("rotating"), req(), &[]).await.unwrap();
    set_env("MJ_TEST_ROTATED", "second-token-value");
    conns.http(Some("rotating"), req(), &[]).await.unwrap();
    let auth: Vec<_> = peer
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(
        auth,
        ["Bearer first-token-value", "Bearer second-token-value"]
    );
}

#[tokio::test]
async fn secret_echoed_by_the_server_is_redacted_in_errors_and_bodies() {
    let peer = peer(|r| {
        let auth = r.header("authorization").unwrap_or_default().to_string();
        if r.path == "/echo" {
            (
                200,
                "application/json",
                json!({"you_sent": auth}).to_string(),
            )
        } else {
            (401, "text/plain", format!("invalid credentials: {auth}"))
        }
    })
    .await;
    set_env("MJ_TEST_ECHOED", "echoed-secret-abc");
    let mut c = connector("echo", Provider::Http, &peer.url());
    c.secrets
        .insert("bearer_token".into(), "${env:MJ_TEST_ECHOED}".into());
    let conns = build(vec![c]);
    let err = conns
        .http(
            Some("echo"),
            HttpRequest {
                path: Some("/deny".into()),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, RunError::Permanent(_)));
    assert!(!err.to_string().contains("echoed-secret-abc"), "{err}");
    assert!(err.to_string().contains("Bearer ***"), "{err}");

    let ok = conns
        .http(
            Some("echo"),
            HttpRequest {
                path: Some("/echo".into()),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ok.body, json!({"you_sent": "Bearer ***"}));
}

#[tokio::test]
async fn each_call_waits_on_the_connector_rate_limit() {
    let peer = json_peer(json!({})).await;
    let mut c = connector("limited", Provider::Http, &peer.url());
    c.rate_limit = Some(RateLimit {
        per_minute: 120,
        burst: 1,
    });
    let conns = build(vec![c.clone()]);
    // A rebuilt set (a new revision) shares the same limiter.
    let rebuilt = build(vec![c]);
    let req = || HttpRequest {
        path: Some("/".into()),
        ..Default::default()
    };
    let start = Instant::now();
    conns.http(Some("limited"), req(), &[]).await.unwrap();
    rebuilt.http(Some("limited"), req(), &[]).await.unwrap();
    conns.http(Some("limited"), req(), &[]).await.unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert_eq!(peer.requests().len(), 3);
}

/// Just enough SMTP to accept one message: records the DATA section.
async fn smtp_sink() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let store = mails.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(buf) = data.as_mut() {
                        if line == "." {
                            store.lock().unwrap().push(data.take().unwrap());
                            write.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            buf.push_str(&line);
                            buf.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 end with .\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            break;
                        }
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, mails)
}

#[tokio::test]
async fn smtp_delivers_through_the_sink_with_message_id_from_the_key() {
    let (addr, mails) = smtp_sink().await;
    let mut c = connector("mail", Provider::Smtp, &format!("smtp://{addr}"));
    c.config
        .insert("from".into(), json!("multijob@example.com"));
    let msg = OutboundMessage {
        text: "nightly report ready".into(),
        to: Some("ops@example.com".into()),
        subject: None,
        idempotency_key: "run3:mail:0".into(),
    };
    let delivery = build(vec![c]).send_message("mail", msg).await.unwrap();
    assert!(delivery.delivered);
    assert_eq!(
        delivery.provider_message_id.as_deref(),
        Some("<run3.mail.0@multijob>")
    );
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(mail.contains("Subject: multijob"), "{mail}");
    assert!(mail.contains("From: multijob@example.com"), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(
        mail.contains("Message-ID: <run3.mail.0@multijob>"),
        "{mail}"
    );
    assert!(mail.contains("nightly report ready"), "{mail}");
}

#[tokio::test]
async fn smtp_to_a_metadata_address_is_refused_and_providers_are_checked() {
    let mut c = connector("mail-meta", Provider::Smtp, "smtp://169.254.169.254:25");
    c.config.insert("from".into(), json!("a@example.com"));
    let mut msg = message("x", "k");
    msg.to = Some("b@example.com".into());
    let conns = build(vec![c]);
    let err = conns.send_message("mail-meta", msg).await.unwrap_err();
    assert!(
        matches!(&err, RunError::Permanent(m) if m.contains("metadata")),
        "{err:?}"
    );

    let req = ChatRequest {
        model: "m".into(),
        ..Default::default()
    };
    let err = conns.chat("mail-meta", req).await.unwrap_err();
    assert!(
        matches!(&err, RunError::Permanent(m) if m.contains("provider smtp") && m.contains("openai")),
        "{err:?}"
    );
}
