//! The inbound listener (`run --inbound-listen`, `POST /hooks/<trigger>`)
//! with the real binary and real HTTP: signed requests of every source
//! become one run per delivery with only the mapped inputs; unsigned,
//! stale, oversized, too many or unknown ones are refused with a reason
//! and leave no run; on Redis two replicas given the same delivery at once
//! queue it once.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::hooks::{
    Reply, chunked_upload, free_addr, hmac_hex, read_reply, request, rss_kb, slowloris,
};
use common::{ConfigDir, Daemon, Run};
use serde_json::{Value, json};

const SECRET: &str = "s3cret-hook-key";

const JOBS: &str = "id: fulfil\ntype: noop\n";

/// The secret line of a trigger the daemon can verify.
const SIGNED: &str = "secret: ${env:HOOK_SECRET}\n";

/// A trigger document of `source` for job `fulfil`, with `rest` after.
fn trigger_doc(id: &str, source: &str, rest: &str) -> String {
    format!("kind: Trigger\nid: {id}\nsource: {source}\njob: fulfil\n{rest}")
}

fn shop() -> String {
    let inputs = r#"inputs: {order_id: "{{ payload.id }}", total: "{{ payload.amount }}", agent: "{{ headers['user-agent'] }}"}"#;
    trigger_doc("shop", "webhook", &format!("{SIGNED}{inputs}\n"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A `webhook` request signed now (or at `t`), with a delivery id.
fn webhook(addr: &str, trigger: &str, body: &Value, delivery: Option<&str>, t: i64) -> Reply {
    let body = body.to_string();
    let mut headers = vec![
        (
            "X-Multijob-Signature",
            multijob::signature::multijob_header(SECRET, t, body.as_bytes()),
        ),
        ("Content-Type", "application/json".to_string()),
        ("User-Agent", "shop/1.0".to_string()),
    ];
    if let Some(d) = delivery {
        headers.push(("X-Multijob-Delivery", d.to_string()));
    }
    request(
        addr,
        "POST",
        &format!("/hooks/{trigger}"),
        &headers,
        body.as_bytes(),
    )
}

fn cli(d: &ConfigDir, redis: Option<&str>, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    if let Some(url) = redis {
        all.extend(["--redis", url]);
    }
    d.run(&all)
}

fn start(d: &ConfigDir, inbound: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--inbound-listen", inbound];
    args.extend(extra);
    let daemon = Daemon::start_env(d.path(), &args, &[("HOOK_SECRET", SECRET)]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon
}

fn runs_of(daemon: &Daemon, job: &str) -> Vec<Value> {
    let (code, body) = daemon.get(&format!("/api/v1/runs?job={job}&limit=500"));
    assert_eq!(code, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

fn run_status(daemon: &Daemon, id: &str, status: &str) -> Value {
    daemon.wait_until(&format!("/api/v1/runs/{id}"), status, |v| {
        v["status"] == status
    })
}

fn rejected_events(daemon: &Daemon) -> Vec<Value> {
    let (_, body) = daemon.get("/api/v1/events?type=inbound.rejected&limit=200");
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Every must-show of one listener, on the embedded store or on Redis.
fn signed_webhooks_make_one_run_per_delivery(redis: Option<&str>) {
    let d = ConfigDir::new();
    d.write("jobs.d/fulfil.yaml", JOBS)
        .write("jobs.d/shop.yaml", &shop())
        .write(
            "jobs.d/gated.yaml",
            &trigger_doc("gated", "webhook", &format!("{SIGNED}inputs: {{order_id: \"{{{{ payload.id }}}}\"}}\nrequires_approval: true\n")),
        )
        // A secret the daemon cannot resolve, and a disabled trigger.
        .write(
            "jobs.d/broken.yaml",
            &trigger_doc("nosecret", "webhook", "secret: ${env:HOOK_SECRET_NOT_SET}\n"),
        )
        .write("jobs.d/off.yaml", &trigger_doc("off", "webhook", &format!("{SIGNED}enabled: false\n")));
    let addr = free_addr();
    let extra: Vec<&str> = redis.map(|url| vec!["--redis", url]).unwrap_or_default();
    let daemon = start(&d, &addr, &extra);

    // Signed: 202 and a run with the mapped inputs.
    let order = json!({"id": "o-17", "amount": 42.5});
    let first = webhook(&addr, "shop", &order, Some("d-1"), now());
    assert_eq!(first.code, 202, "{}\n{}", first.body, daemon.log());
    assert_eq!(first.json()["duplicate"], false);
    let run_id = first.json()["run_id"].as_str().expect("run_id").to_string();
    let run = daemon.run_ended(&run_id);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["trigger"], "webhook", "{run:#}");
    assert_eq!(
        run["inputs"],
        json!({"order_id": "o-17", "total": 42.5, "agent": "shop/1.0"}),
        "{run:#}"
    );

    // The same delivery again: the first run's id, nothing new queued.
    let again = webhook(&addr, "shop", &order, Some("d-1"), now());
    assert_eq!(again.code, 202, "{}", again.body);
    assert_eq!(again.json(), json!({"run_id": run_id, "duplicate": true}));
    assert_eq!(runs_of(&daemon, "fulfil").len(), 1);

    // A payload that reaches for the run's policy gets only mapped keys,
    // and no approval gate comes with it.
    let hostile = json!({
        "id": "o-18", "amount": 1,
        "tools": ["shell"], "limits": {"timeout_ms": 1}, "requires_approval": false,
        "allow_command": true, "allow_sensitive_commands": true, "inputs": {"x": 1}
    });
    let reply = webhook(&addr, "shop", &hostile, Some("d-2"), now());
    assert_eq!(reply.code, 202, "{}", reply.body);
    let hostile_run = daemon.run_ended(reply.json()["run_id"].as_str().expect("id"));
    assert_eq!(hostile_run["status"], "succeeded", "{hostile_run:#}");
    let keys: Vec<&String> = hostile_run["inputs"]
        .as_object()
        .expect("inputs")
        .keys()
        .collect();
    assert_eq!(keys, ["order_id", "total", "agent"], "{hostile_run:#}");

    refusals_leave_no_run(&daemon, &addr);

    // A trigger that requires approval parks its run; the CLI releases it.
    let gated = webhook(&addr, "gated", &json!({"id": "o-19"}), Some("g-1"), now());
    assert_eq!(gated.code, 202, "{}", gated.body);
    let gated_id = gated.json()["run_id"].as_str().expect("id").to_string();
    run_status(&daemon, &gated_id, "awaiting_approval");
    cli(&d, redis, &["approvals", "approve", &gated_id]).assert_code(0);
    run_status(&daemon, &gated_id, "succeeded");
    assert_eq!(runs_of(&daemon, "fulfil").len(), 3);

    // Nothing of it is on the status API.
    let (code, _) = common::http(&daemon.url, "POST", "/hooks/shop", &[]);
    assert!(code == 404 || code == 405, "{code}");
}

/// Bad signatures, stale timestamps, missing headers, unknown triggers,
/// bodies that do not parse or render: refused, no run, an event naming
/// the reason (never the body or the secret), the daemon still serving.
fn refusals_leave_no_run(daemon: &Daemon, addr: &str) {
    let before = runs_of(daemon, "fulfil").len();
    let body = json!({"id": "marker-body-text", "amount": 1}).to_string();
    let cases: [(&str, Vec<(&str, String)>); 4] = [
        (
            "bad_signature",
            vec![(
                "X-Multijob-Signature",
                format!("t={},v1={}", now(), "ab".repeat(32)),
            )],
        ),
        (
            "stale_timestamp",
            vec![(
                "X-Multijob-Signature",
                multijob::signature::multijob_header(SECRET, now() - 600, body.as_bytes()),
            )],
        ),
        ("missing_header", vec![]),
        (
            "malformed",
            vec![("X-Multijob-Signature", "garbage".to_string())],
        ),
    ];
    for (reason, headers) in &cases {
        let reply = request(addr, "POST", "/hooks/shop", headers, body.as_bytes());
        assert_eq!(reply.code, 401, "{reason}: {}", reply.body);
        assert_eq!(reply.json()["reason"], *reason, "{}", reply.body);
    }
    let unknown = webhook(addr, "nope", &json!({}), None, now());
    assert_eq!(unknown.code, 404, "{}", unknown.body);
    assert!(
        unknown.json()["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no trigger nope")),
        "{}",
        unknown.body
    );
    let not_json = request(
        addr,
        "POST",
        "/hooks/shop",
        &[(
            "X-Multijob-Signature",
            multijob::signature::multijob_header(SECRET, now(), b"{nope"),
        )],
        b"{nope",
    );
    assert_eq!(not_json.code, 422, "{}", not_json.body);
    let unmapped = webhook(addr, "shop", &json!({"amount": 1}), Some("d-9"), now());
    assert_eq!(unmapped.code, 422, "{}", unmapped.body);
    assert!(unmapped.body.contains("payload.id"), "{}", unmapped.body);
    let off = webhook(addr, "off", &json!({}), None, now());
    assert_eq!(off.code, 404, "{}", off.body);
    let no_secret = webhook(addr, "nosecret", &json!({}), None, now());
    assert_eq!(no_secret.code, 503, "{}", no_secret.body);
    assert_eq!(no_secret.json()["reason"], "secret_unavailable");
    assert!(
        !no_secret.body.contains("HOOK_SECRET_NOT_SET"),
        "{}",
        no_secret.body
    );
    let long_id = "d".repeat(300);
    let too_long = webhook(
        addr,
        "shop",
        &json!({"id": "x", "amount": 1}),
        Some(&long_id),
        now(),
    );
    assert_eq!(too_long.code, 422, "{}", too_long.body);
    let get = request(addr, "GET", "/hooks/shop", &[], b"");
    assert_eq!(get.code, 405, "{}", get.body);
    let elsewhere = request(addr, "POST", "/api/v1/runs", &[], b"");
    assert_eq!(elsewhere.code, 404, "{}", elsewhere.body);
    assert!(elsewhere.json()["error"].is_string(), "{}", elsewhere.body);

    let events = (0..200)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            rejected_events(daemon)
        })
        .find(|e| e.len() >= 9)
        .unwrap_or_else(|| {
            panic!(
                "rejections: {:#?}\n{}",
                rejected_events(daemon),
                daemon.log()
            )
        });
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|e| e["data"]["reason"].as_str())
        .collect();
    for reason in [
        "bad_signature",
        "stale_timestamp",
        "missing_header",
        "malformed",
        "not_found",
        "invalid_payload",
        "render_failed",
        "secret_unavailable",
        "invalid_delivery_id",
    ] {
        assert!(reasons.contains(&reason), "{reason} not in {reasons:?}");
    }
    let bad = events
        .iter()
        .find(|e| e["data"]["reason"] == "bad_signature")
        .expect("event");
    assert_eq!(bad["data"]["trigger"], "shop", "{bad:#}");
    assert_eq!(bad["data"]["source"], "webhook", "{bad:#}");
    assert!(
        bad["data"]["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{bad:#}"
    );
    let text = Value::Array(events).to_string();
    assert!(
        !text.contains("marker-body-text") && !text.contains(SECRET),
        "{text}"
    );
    assert_eq!(runs_of(daemon, "fulfil").len(), before);
}

#[test]
fn signed_webhooks_make_one_run_per_delivery_on_sqlite() {
    signed_webhooks_make_one_run_per_delivery(None);
}

#[test]
fn signed_webhooks_make_one_run_per_delivery_on_redis() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    signed_webhooks_make_one_run_per_delivery(Some(&server.url()));
}

#[test]
fn a_burst_over_the_rate_limit_gets_429_with_retry_after() {
    let d = ConfigDir::new();
    d.write("jobs.d/fulfil.yaml", JOBS).write(
        "jobs.d/burst.yaml",
        &trigger_doc(
            "burst",
            "webhook",
            &format!("{SIGNED}rate_limit: {{per_minute: 60, burst: 10}}\n"),
        ),
    );
    let addr = free_addr();
    let daemon = start(&d, &addr, &[]);
    let started = Instant::now();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    (0..10)
                        .map(|_| webhook(&addr, "burst", &json!({}), None, now()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs();
    let accepted = replies.iter().filter(|r| r.code == 202).count();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.code == 429).collect();
    // One token a second comes back while the burst is sent.
    assert!(
        (10..=10 + elapsed as usize).contains(&accepted),
        "{accepted} accepted in {elapsed} s"
    );
    assert_eq!(accepted + limited.len(), 200);
    for r in &limited {
        let secs: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&secs), "{secs}");
    }
    let runs = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            runs_of(&daemon, "fulfil")
        })
        .find(|r| r.len() >= accepted)
        .expect("the accepted runs");
    assert_eq!(runs.len(), accepted);
    // The refusals are counted, and their events throttled: at most one a
    // second, each with the refusals it stands for.
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    let line = format!(
        "multijob_inbound_requests_total{{trigger=\"burst\",source=\"webhook\",result=\"rate_limited\"}} {}",
        limited.len()
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    let events = rejected_events(&daemon);
    assert!(
        !events.is_empty() && events.len() <= 2 + elapsed as usize,
        "{} events in {elapsed} s",
        events.len()
    );
    assert_eq!(events[0]["data"]["reason"], "rate_limited");
}

#[test]
fn a_5_mib_body_is_refused_unread_and_slow_clients_keep_no_one_out() {
    let d = ConfigDir::new();
    d.write("jobs.d/fulfil.yaml", JOBS)
        .write("jobs.d/shop.yaml", &shop());
    let addr = free_addr();
    let daemon = start(&d, &addr, &["--header-timeout", "3"]);
    let warm = webhook(&addr, "shop", &json!({"id": "w", "amount": 1}), None, now());
    assert_eq!(warm.code, 202, "{}", warm.body);
    let pid = daemon.child.id();
    let before = rss_kb(pid);

    let big = vec![b'x'; 5 * 1024 * 1024];
    for _ in 0..5 {
        let header = multijob::signature::multijob_header(SECRET, now(), &big);
        let reply = request(
            &addr,
            "POST",
            "/hooks/shop",
            &[("X-Multijob-Signature", header)],
            &big,
        );
        assert_eq!(reply.code, 413, "{}", reply.body);
        assert_eq!(reply.json()["reason"], "too_large", "{}", reply.body);
    }
    eprintln!(
        "RSS before {before} kB, after 5 sized bodies {} kB",
        rss_kb(pid)
    );
    // No length given: refused once the stream passes 1 MiB.
    let chunked = chunked_upload(&addr, "/hooks/shop", &big);
    assert!(chunked == 413 || chunked == 0, "{chunked}");
    let after = rss_kb(pid);
    eprintln!("RSS after a chunked 5 MiB body {after} kB");
    assert!(after < before + 3 * 1024, "RSS {before} kB -> {after} kB");

    // 50 clients sending a header byte a second hold connections; a
    // signed request still gets in, and they are cut at the header timeout.
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || slowloris(&addr))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let reply = webhook(&addr, "shop", &json!({"id": "s", "amount": 2}), None, now());
    assert_eq!(reply.code, 202, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let cut = slow
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .filter(|cut| *cut)
        .count();
    assert_eq!(cut, 50, "slow clients the listener closed");
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    let line = "multijob_inbound_connections_dropped_total{reason=\"header_timeout\"} 50";
    assert!(metrics.contains(line), "{line} not in\n{metrics}");

    // A body sent a byte a second is cut at the header timeout too.
    let started = Instant::now();
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head =
        format!("POST /hooks/shop HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{{");
    s.write_all(head.as_bytes()).expect("head");
    let trickle = std::thread::spawn({
        let mut s = s.try_clone().expect("clone");
        move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_secs(1));
                if s.write_all(b" ").is_err() {
                    break;
                }
            }
        }
    });
    let reply = read_reply(&mut s);
    assert_eq!(reply.code, 408, "{}", reply.body);
    assert_eq!(reply.json()["reason"], "body_timeout", "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    drop(s);
    trickle.join().expect("trickle");
    let (code, _) = daemon.get("/readyz");
    assert_eq!(code, 200);
}

/// A signed trigger of `source` whose inputs are `inputs` (YAML flow mapping).
fn mapped(id: &str, source: &str, inputs: &str) -> String {
    trigger_doc(id, source, &format!("{SIGNED}inputs: {inputs}\n"))
}

fn accepted_inputs(daemon: &Daemon, reply: &Reply) -> Value {
    assert_eq!(reply.code, 202, "{}\n{}", reply.body, daemon.log());
    let run = daemon.run_ended(reply.json()["run_id"].as_str().expect("run_id"));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    run["inputs"].clone()
}

#[test]
fn github_slack_telegram_and_twilio_requests_signed_as_they_sign_are_accepted() {
    let d = ConfigDir::new();
    d.write("jobs.d/fulfil.yaml", JOBS)
        .write("jobs.d/gh.yaml", &mapped("gh", "github", r#"{repo: "{{ payload.repository.full_name }}", event: "{{ headers['x-github-event'] }}"}"#))
        .write("jobs.d/sl.yaml", &mapped("sl", "slack", r#"{text: "{{ payload.event.text if payload.event is defined else payload.text }}"}"#))
        .write("jobs.d/tg.yaml", &mapped("tg", "telegram", r#"{text: "{{ payload.message.text }}"}"#))
        .write("jobs.d/sms.yaml", &mapped("sms", "sms", r#"{from: "{{ payload.From }}", body: "{{ payload.Body }}"}"#));
    let addr = free_addr();
    let daemon = start(&d, &addr, &[]);

    // GitHub: X-Hub-Signature-256 over the body, X-GitHub-Delivery.
    let push =
        json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/shop"}}).to_string();
    let github = |signature: String| {
        let headers = vec![
            ("X-Hub-Signature-256", signature),
            ("X-GitHub-Event", "push".to_string()),
            (
                "X-GitHub-Delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
            ),
            ("Content-Type", "application/json".to_string()),
        ];
        request(&addr, "POST", "/hooks/gh", &headers, push.as_bytes())
    };
    let ok = github(format!("sha256={}", hmac_hex(SECRET, &[push.as_bytes()])));
    assert_eq!(
        accepted_inputs(&daemon, &ok),
        json!({"repo": "acme/shop", "event": "push"})
    );
    let redelivered = github(format!("sha256={}", hmac_hex(SECRET, &[push.as_bytes()])));
    assert_eq!(
        redelivered.json(),
        json!({"run_id": ok.json()["run_id"], "duplicate": true})
    );
    assert_eq!(
        github(format!("sha256={}", hmac_hex("other", &[push.as_bytes()]))).code,
        401
    );

    // Slack: v0 over "v0:{timestamp}:{body}"; the URL handshake answered.
    let slack = |body: &str, content_type: &str| {
        let ts = now().to_string();
        let signature = format!(
            "v0={}",
            hmac_hex(SECRET, &[b"v0:", ts.as_bytes(), b":", body.as_bytes()])
        );
        let headers = vec![
            ("X-Slack-Request-Timestamp", ts),
            ("X-Slack-Signature", signature),
            ("Content-Type", content_type.to_string()),
        ];
        request(&addr, "POST", "/hooks/sl", &headers, body.as_bytes())
    };
    let handshake = slack(
        r#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#,
        "application/json",
    );
    assert_eq!(handshake.code, 200, "{}", handshake.body);
    assert_eq!(
        handshake.json()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    let event = r#"{"type":"event_callback","event_id":"Ev0PV52K25","event":{"type":"app_mention","text":"deploy"}}"#;
    assert_eq!(
        accepted_inputs(&daemon, &slack(event, "application/json")),
        json!({"text": "deploy"})
    );
    assert_eq!(slack(event, "application/json").json()["duplicate"], true);
    let slash =
        "command=%2Fdeploy&text=shop+now&trigger_id=13345224609.738474920.8088930838d88f008e0";
    let slash_reply = slack(slash, "application/x-www-form-urlencoded");
    assert_eq!(
        accepted_inputs(&daemon, &slash_reply),
        json!({"text": "shop now"})
    );

    // Telegram webhook mode: the secret token header; update_id dedupes.
    let update =
        json!({"update_id": 10001, "message": {"text": "/status", "chat": {"id": 5}}}).to_string();
    let telegram = |token: &str| {
        let headers = vec![("X-Telegram-Bot-Api-Secret-Token", token.to_string())];
        request(&addr, "POST", "/hooks/tg", &headers, update.as_bytes())
    };
    let tg = telegram(SECRET);
    assert_eq!(accepted_inputs(&daemon, &tg), json!({"text": "/status"}));
    assert_eq!(telegram(SECRET).json()["run_id"], tg.json()["run_id"]);
    assert_eq!(telegram("wrong").code, 401);

    // Twilio: HMAC-SHA1 of the URL it requested and the sorted fields.
    let form = "MessageSid=SM1a2b3c&From=%2B14155550100&To=%2B14155550111&Body=order+status";
    let url = format!("http://{addr}/hooks/sms");
    let signature = multijob::signature::twilio::sign(SECRET, &url, form.as_bytes());
    let headers = vec![
        ("X-Twilio-Signature", signature),
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        ),
    ];
    let sms = request(&addr, "POST", "/hooks/sms", &headers, form.as_bytes());
    assert_eq!(
        accepted_inputs(&daemon, &sms),
        json!({"from": "+14155550100", "body": "order status"})
    );
    let other_url =
        multijob::signature::twilio::sign(SECRET, "https://elsewhere/hooks/sms", form.as_bytes());
    let wrong = request(
        &addr,
        "POST",
        "/hooks/sms",
        &[("X-Twilio-Signature", other_url)],
        form.as_bytes(),
    );
    assert_eq!(wrong.code, 401, "{}", wrong.body);
    assert_eq!(runs_of(&daemon, "fulfil").len(), 5);
}

#[test]
fn two_redis_replicas_given_the_same_delivery_at_once_queue_it_once() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    let url = server.url();
    let d = ConfigDir::new();
    d.write("jobs.d/fulfil.yaml", JOBS)
        .write("jobs.d/shop.yaml", &shop());
    let (a, b) = (free_addr(), free_addr());
    let first = start(&d, &a, &["--redis", &url]);
    let second = start(&d, &b, &["--redis", &url]);
    // Both know the trigger once the leader applied it: an unsigned
    // request is then a 401, not a 404.
    for addr in [&a, &b] {
        let known = (0..400).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            request(addr, "POST", "/hooks/shop", &[], b"{}").code == 401
        });
        assert!(
            known,
            "{addr} never knew trigger shop\n{}\n{}",
            first.log(),
            second.log()
        );
    }
    for round in 0..3 {
        let delivery = format!("same-{round}");
        let order = json!({"id": format!("o-{round}"), "amount": round});
        let barrier = std::sync::Barrier::new(2);
        let send = |addr: &str| {
            barrier.wait();
            webhook(addr, "shop", &order, Some(&delivery), now())
        };
        let replies: Vec<Reply> = std::thread::scope(|s| {
            let ha = s.spawn(|| send(&a));
            let hb = s.spawn(|| send(&b));
            vec![ha.join().expect("a"), hb.join().expect("b")]
        });
        for r in &replies {
            assert_eq!(r.code, 202, "{}", r.body);
        }
        let duplicates = replies
            .iter()
            .filter(|r| r.json()["duplicate"] == true)
            .count();
        assert_eq!(duplicates, 1, "{} / {}", replies[0].body, replies[1].body);
        let (ra, rb) = (replies[0].json(), replies[1].json());
        assert_eq!(ra["run_id"], rb["run_id"], "{ra} {rb}");
        let run = first.run_ended(ra["run_id"].as_str().expect("id"));
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs_of(&first, "fulfil").len(), 3);
    assert_eq!(runs_of(&second, "fulfil").len(), 3);
}

#[test]
fn a_taken_inbound_address_ends_the_start_with_its_name() {
    let d = ConfigDir::new();
    d.write("jobs.d/fulfil.yaml", JOBS);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = d.run(&["run", "--listen", "127.0.0.1:0", "--inbound-listen", &addr]);
    out.assert_code(1).assert_stderr_has(&format!(
        "listening for inbound hooks on {addr} (--inbound-listen)"
    ));
    let out = d.run(&["run", "--listen", "127.0.0.1:0", "--inbound-behind-proxy"]);
    out.assert_code(1)
        .assert_stderr_has("--inbound-listen <ADDR>");
}

/// Twilio signs the URL it requested: behind a proxy that is the one the
/// proxy forwarded; without `--inbound-behind-proxy` forwarded headers are
/// not believed. A trigger added to git answers without a restart.
fn twilio_behind(proxy: bool) {
    let d = ConfigDir::new();
    d.write("jobs.d/fulfil.yaml", JOBS);
    let addr = free_addr();
    let daemon = start(
        &d,
        &addr,
        if proxy {
            &["--inbound-behind-proxy"]
        } else {
            &[]
        },
    );
    let form = "MessageSid=SM9&From=%2B14155550100&Body=hi";
    let signed = multijob::signature::twilio::sign(
        SECRET,
        "https://hooks.example.com/hooks/sms",
        form.as_bytes(),
    );
    let headers = vec![
        ("X-Twilio-Signature", signed),
        ("X-Forwarded-Proto", "https".to_string()),
        ("X-Forwarded-Host", "hooks.example.com".to_string()),
    ];
    let send = || request(&addr, "POST", "/hooks/sms", &headers, form.as_bytes());
    assert_eq!(send().code, 404);
    d.write(
        "jobs.d/sms.yaml",
        &mapped("sms", "sms", r#"{body: "{{ payload.Body }}"}"#),
    );
    let reply = (0..400)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            send()
        })
        .find(|r| r.code != 404)
        .expect("the trigger applied without a restart");
    if proxy {
        assert_eq!(accepted_inputs(&daemon, &reply), json!({"body": "hi"}));
    } else {
        assert_eq!(reply.code, 401, "{}", reply.body);
        assert_eq!(reply.json()["reason"], "bad_signature");
    }
}

#[test]
fn twilio_urls_come_from_forwarded_headers_only_behind_a_proxy() {
    twilio_behind(true);
    twilio_behind(false);
}
