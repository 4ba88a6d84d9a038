//! The seeds' workloads from `examples/` run end to end against a local
//! fake world: every connector's base_url points at one loopback server
//! that plays the social API, the model, Telegram, WhatsApp and the SMS
//! gateway, and records what it was sent.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::Method;
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

type Calls = Arc<Mutex<Vec<(Method, String, Value)>>>;

fn crisis_reply() -> Value {
    let verdict = json!({
        "negative": [{"id": "p1", "platform": "twitter", "author": "@angry", "text": "this is a scam",
                      "url": "https://x.example/p1", "score": 0.05}],
        "negative_ratio": 0.9,
        "crisis": true,
        "crisis_reason": "a spike of scam reports",
        "recommended_action": "post a statement",
    });
    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": verdict.to_string()},
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80}})
}

/// One loopback server for every peer; answers by path prefix.
fn start_world() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let state = calls.clone();
    let app = axum::Router::new()
                .fallback(|State(calls): State<Calls>, req: Request| async move {
                    let method = req.method().clone();
                    let path = req.uri().path().to_string();
                    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    calls.lock().unwrap().push((method, path.clone(), body));
                    Json(if path.starts_with("/social/mentions/search") {
                        json!({"posts": [{"id": "p1", "platform": "twitter", "author": "@angry",
                                          "text": "this is a scam", "url": "https://x.example/p1", "shares": 150}],
                               "baseline_volume": 1})
                    } else if path.starts_with("/openai/chat/completions") {
                        crisis_reply()
                    } else if path.starts_with("/telegram/") {
                        json!({"ok": true, "result": {"message_id": 7}})
                    } else if path.starts_with("/whatsapp/") {
                        json!({"messages": [{"id": "wamid.1"}]})
                    } else {
                        json!({"ok": true})
                    })
                })
                .with_state(state);
    let addr = common::serve(app);
    (addr, calls)
}

/// Copy an example, pointing every connector at `world` (each under its
/// own path prefix) and replacing file secrets with env ones.
fn example_against(name: &str, world: &str, rewrite: &[(&str, &str)]) -> ConfigDir {
    let d = ConfigDir::new();
    let src = common::repo().join("examples").join(name);
    for folder in ["jobs.d", "skills.d"] {
        let Ok(entries) = std::fs::read_dir(src.join(folder)) else {
            continue;
        };
        for e in entries.flatten() {
            let mut text = std::fs::read_to_string(e.path()).unwrap();
            let mut out = String::new();
            let mut id = String::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.split_whitespace().next().unwrap_or("").to_string();
                }
                if line.starts_with("base_url:") {
                    out.push_str(&format!("base_url: {world}/{id}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            text = out
                .replace(
                    "${file:/run/secrets/social_listening_token}",
                    "${env:SOCIAL_TOKEN}",
                )
                // SMTP is not HTTP: the example tested here sends no e-mail.
                .replace(
                    &format!("base_url: {world}/email"),
                    "base_url: smtp://127.0.0.1:9",
                );
            for (from, to) in rewrite {
                text = text.replace(from, to);
            }
            d.write(
                &format!("{folder}/{}", e.file_name().to_string_lossy()),
                &text,
            );
        }
    }
    d
}

const SECRETS: [(&str, &str); 10] = [
    ("OPENAI_API_KEY", "sk-test"),
    ("TELEGRAM_BOT_TOKEN", "123:abc"),
    ("WHATSAPP_ACCESS_TOKEN", "wa-token"),
    ("SMTP_USERNAME", "u"),
    ("SMTP_PASSWORD", "p"),
    ("SMS_API_KEY", "sms-key"),
    ("SHOP_API_TOKEN", "shop"),
    ("CRM_API_TOKEN", "crm"),
    ("BI_API_TOKEN", "bi"),
    ("SOCIAL_TOKEN", "social"),
];

#[test]
fn the_crisis_monitor_alerts_rechecks_and_escalates() {
    let (world, calls) = start_world();
    // Scaled down: the re-check comes after 1 s instead of 2 min.
    let d = example_against("heavy", &world, &[("delay_sec: 120", "delay_sec: 1")]);
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start_env(d.path(), &["--workers", "4"], &SECRETS);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let r = d.run(&["trigger", "social-media-crisis-monitor"]);
    r.assert_code(0);
    let first = r.stdout().split_whitespace().nth(2).unwrap().to_string();
    let run = daemon.wait_until(&format!("/api/v1/runs/{first}"), "the first check", |v| {
        v["status"] == "succeeded" || v["status"] == "failed"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log());
    assert!(run["usage"]["llm_tokens"].as_u64().unwrap() >= 80);
    // The re-check follow-up ran with recheck: true and escalated by SMS.
    daemon.wait_until(
        "/api/v1/runs?job=social-media-crisis-monitor&limit=50",
        "the re-check",
        |v| {
            v["items"].as_array().is_some_and(|a| {
                a.iter().any(|r| {
                    r["trigger"] == "workflow"
                        && r["inputs"]["recheck"] == true
                        && r["status"] == "succeeded"
                })
            })
        },
    );
    let seen = calls.lock().unwrap().clone();
    let to = |prefix: &str| {
        seen.iter()
            .filter(|(_, p, _)| p.starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    // Mentions were searched per keyword (3), with the accounts.
    assert!(to("/social/mentions/search").len() >= 3);
    // Telegram got the negative mentions, with the bot token in the path.
    let telegram = to("/telegram/bot123:abc/sendMessage");
    assert!(!telegram.is_empty(), "{seen:#?}");
    assert!(
        telegram[0].2["text"].as_str().unwrap().contains("@angry"),
        "{:?}",
        telegram[0]
    );
    assert_eq!(telegram[0].2["chat_id"], "-1001234567890");
    // WhatsApp got the crisis alert in the Cloud API shape.
    let whatsapp = to("/whatsapp/109876543210987/messages");
    assert!(!whatsapp.is_empty(), "{seen:#?}");
    assert_eq!(whatsapp[0].2["messaging_product"], "whatsapp");
    assert!(
        whatsapp[0].2["text"]["body"]
            .as_str()
            .unwrap()
            .contains("CRISIS: a spike of scam reports")
    );
    // Only the re-check escalates by SMS.
    let sms = to("/sms");
    assert!(!sms.is_empty(), "the re-check escalates by SMS: {seen:#?}");
    assert!(
        sms[0].2["text"]
            .as_str()
            .unwrap()
            .contains("Crisis persists")
    );
    // The chain of re-checks stops at limits.chain_depth (3).
    let chain = daemon.wait_until(
        "/api/v1/runs?job=social-media-crisis-monitor&status=failed",
        "the chain's end",
        |v| v["items"].as_array().is_some_and(|a| !a.is_empty()),
    );
    assert!(
        chain["items"][0]["error"]
            .as_str()
            .unwrap()
            .contains("limits.chain_depth"),
        "{chain:#}"
    );
}
