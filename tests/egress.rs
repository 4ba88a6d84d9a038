//! Egress: a connector's credentials go only to its own origin, and
//! unspecified, link-local and metadata addresses are refused in every
//! spelling (issue #19, defect 8). Real peers on loopback record what
//! reaches them; the last test runs the daemon.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, Uri};
use serde_json::json;

use common::{ConfigDir, Daemon};
use multijob::connectors::{ChatRequest, HttpRequest, OutboundMessage};
use multijob::run::RunError;
use multijob::spec::model::{Connector, Provider};

/// What reached a peer: (path, Authorization header).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Peer {
    url: String,
    port: u16,
    seen: Seen,
}

impl Peer {
    fn start() -> Peer {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let auth = headers
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            log.lock().unwrap().push((uri.path().to_string(), auth));
            async { axum::Json(json!({"ok": true, "id": "m1"})) }
        });
        let url = common::serve(app);
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Peer { url, port, seen }
    }

    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

use multijob::testkit::{connector_spec as connector, connectors_of as build};

/// A connector `shop` on peer `a` whose bearer token is `token`.
fn shop(a: &Peer, env: &str, token: &str) -> Connector {
    // SAFETY: each test sets its own variable, read only through the connector.
    unsafe { std::env::set_var(env, token) };
    let mut c = connector("shop", Provider::Http, &format!("{}/api/", a.url));
    c.secrets
        .insert("bearer_token".into(), format!("${{env:{env}}}"));
    c
}

fn to(url: &str) -> HttpRequest {
    HttpRequest {
        url: Some(url.to_string()),
        timeout_ms: Some(3000),
        ..Default::default()
    }
}

/// Regression (issue #19, defect 8): the host matched and the port did not
/// count, so the bearer token went to another local service, however its
/// address was spelled.
#[tokio::test]
async fn a_connectors_token_never_reaches_another_port_in_any_spelling() {
    let (a, b) = (Peer::start(), Peer::start());
    let conns = build(vec![shop(&a, "MJ_EGRESS_TOKEN_1", "token-for-a-only")]);
    let pb = b.port;
    for target in [
        format!("http://127.0.0.1:{pb}/steal"),
        format!("http://0x7f000001:{pb}/steal"),
        format!("http://2130706433:{pb}/steal"),
        format!("http://127.1:{pb}/steal"),
        format!("http://0177.0.0.1:{pb}/steal"),
        format!("http://[::ffff:127.0.0.1]:{pb}/steal"),
        format!("http://127.0.0.1:{}@127.0.0.1:{pb}/steal", a.port),
    ] {
        let err = conns.http(Some("shop"), to(&target), &[]).await;
        let Err(RunError::Permanent(msg)) = &err else {
            panic!("{target}: expected a permanent refusal, got {err:?}");
        };
        let own = format!("`http://127.0.0.1:{}`", a.port);
        assert!(
            msg.starts_with(&format!("egress to `http://127.0.0.1:{pb}` refused"))
                && msg.contains(&own),
            "{target}: {msg}"
        );
    }
    assert_eq!(b.seen(), vec![], "nothing may reach B");

    conns
        .http(Some("shop"), to(&format!("{}/api/ok", a.url)), &[])
        .await
        .unwrap();
    let want = Some("Bearer token-for-a-only".to_string());
    assert_eq!(a.seen(), vec![("/api/ok".to_string(), want)]);
}

/// allowed_hosts still widens where a step may go, but the request carries
/// none of the connector's credentials.
#[tokio::test]
async fn an_allowed_host_is_reached_without_the_connectors_token() {
    let (a, b) = (Peer::start(), Peer::start());
    let mut c = shop(&a, "MJ_EGRESS_TOKEN_2", "token-for-a-only");
    c.allowed_hosts = vec![format!("2130706433:{}", b.port)];
    let conns = build(vec![c]);
    let target = format!("http://127.1:{}/listed", b.port);
    let resp = conns.http(Some("shop"), to(&target), &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(b.seen(), vec![("/listed".to_string(), None)]);
    let err = conns
        .http(
            Some("shop"),
            to(&format!("https://127.0.0.1:{}/", a.port)),
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.message().contains("refused"), "{err}");
    assert_eq!(a.seen(), vec![], "another scheme is another origin");
}

/// Regression (issue #19, defect 8): `base_url: http://0.0.0.0:PORT`
/// reached a service listening on 127.0.0.1:PORT.
#[tokio::test]
async fn an_unspecified_base_url_is_refused_for_every_provider() {
    let p = Peer::start();
    let mut hook = connector(
        "hook",
        Provider::Webhook,
        &format!("http://0.0.0.0:{}/", p.port),
    );
    hook.config.insert("to".into(), json!("ops"));
    let conns = build(vec![
        connector(
            "zero",
            Provider::Http,
            &format!("http://0.0.0.0:{}", p.port),
        ),
        connector("short", Provider::Http, &format!("http://0:{}", p.port)),
        hook,
        connector(
            "ai",
            Provider::Openai,
            &format!("http://0.0.0.0:{}/v1", p.port),
        ),
    ]);
    let get = HttpRequest {
        path: Some("/x".into()),
        timeout_ms: Some(3000),
        ..Default::default()
    };
    let results = [
        conns.http(Some("zero"), get.clone(), &[]).await.map(|_| ()),
        conns.http(Some("short"), get, &[]).await.map(|_| ()),
        conns.send_message("hook", message()).await.map(|_| ()),
        conns.chat("ai", chat()).await.map(|_| ()),
    ];
    for r in results {
        assert!(
            matches!(&r, Err(RunError::Permanent(m)) if m.contains("unspecified")),
            "{r:?}"
        );
    }
    assert_eq!(p.seen(), vec![], "nothing may reach the local peer");
}

/// Regression (issue #19, defect 8): Alibaba Cloud's metadata address and
/// IPv6 spellings of 169.254.169.254 were not refused.
#[tokio::test]
async fn metadata_addresses_are_refused_before_connecting() {
    let bases = [
        "http://100.100.100.200",
        "http://[::a9fe:a9fe]",
        "http://[64:ff9b::a9fe:a9fe]",
        "http://[::ffff:a9fe:a9fe]",
        "http://[fd00:ec2::254]",
        "http://0xa9fea9fe",
    ];
    for base in bases {
        let mut hook = connector("hook", Provider::Webhook, base);
        hook.config.insert("to".into(), json!("ops"));
        let conns = build(vec![
            connector("api", Provider::Http, base),
            hook,
            connector("ai", Provider::Openai, base),
        ]);
        let get = HttpRequest {
            path: Some("/latest/meta-data/".into()),
            timeout_ms: Some(2000),
            ..Default::default()
        };
        let results = [
            conns.http(Some("api"), get, &[]).await.map(|_| ()),
            conns.send_message("hook", message()).await.map(|_| ()),
            conns.chat("ai", chat()).await.map(|_| ()),
        ];
        for r in results {
            assert!(
                matches!(&r, Err(RunError::Permanent(m)) if m.contains("metadata")),
                "{base}: {r:?}"
            );
        }
    }
    // Listed in allowed_hosts, still refused.
    let a = Peer::start();
    let mut c = connector("listed", Provider::Http, &a.url);
    c.allowed_hosts = vec!["100.100.100.200".into(), "::a9fe:a9fe".into()];
    let conns = build(vec![c]);
    for url in ["http://100.100.100.200/", "http://[::a9fe:a9fe]/"] {
        let err = conns.http(Some("listed"), to(url), &[]).await.unwrap_err();
        assert!(
            !err.is_retryable() && err.message().contains("metadata"),
            "{url}: {err}"
        );
    }
}

fn message() -> OutboundMessage {
    OutboundMessage {
        text: "hello".into(),
        to: None,
        subject: None,
        idempotency_key: "k1".into(),
    }
}

fn chat() -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        ..Default::default()
    }
}

/// The daemon: a workflow step aimed at another port fails with the
/// refusal, the other service sees nothing, and the daemon keeps serving.
#[test]
fn a_step_aimed_at_another_port_fails_and_the_daemon_keeps_serving() {
    let (a, b) = (Peer::start(), Peer::start());
    let d = ConfigDir::new();
    d.write(
        "jobs.d/steal.yaml",
        &format!(
            "kind: Connector\nid: shop\nprovider: http\nbase_url: {}\nsecrets: {{bearer_token: \"${{env:MJ_EGRESS_DAEMON_TOKEN}}\"}}\n---\nid: steal\ntype: agent.workflow\nsteps:\n  - id: leak\n    http: {{connector: shop, url: \"http://0x7f000001:{}/steal\"}}\n",
            a.url, b.port
        ),
    );
    let env = [("MJ_EGRESS_DAEMON_TOKEN", "daemon-token-for-a")];
    let daemon = Daemon::start_env(d.path(), &[], &env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let r = d.run(&["trigger", "steal"]);
    let id = r
        .stdout()
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the refusal", |v| {
        v["status"] == "failed"
    });
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("step `leak`")
            && error.contains(&format!("egress to `http://127.0.0.1:{}` refused", b.port)),
        "{run:#}"
    );
    assert_eq!(b.seen(), vec![], "nothing may reach B");
    assert_eq!(daemon.get("/readyz").0, 200);
}
