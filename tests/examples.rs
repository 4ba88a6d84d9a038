//! The seeds' workloads from `examples/` run end to end against a local
//! fake world: every connector's base_url points at one loopback server
//! that plays the social API, the model, Telegram, WhatsApp and the SMS
//! gateway, and records what it was sent.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

/// One request the fake world received.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    auth: Option<String>,
    body: Value,
    at: Instant,
}

impl Call {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// One loopback server for every peer: records each request, then answers
/// with `reply` (status, JSON body).
fn world(reply: impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let state = calls.clone();
    let reply = Arc::new(reply);
    let app = axum::Router::new().fallback(move |req: Request| {
        let (calls, reply) = (state.clone(), reply.clone());
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query =
                reqwest::Url::parse(&format!("http://x/?{}", req.uri().query().unwrap_or("")))
                    .map(|u| {
                        u.query_pairs()
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = axum::body::to_bytes(req.into_body(), 1 << 22)
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let call = Call {
                method,
                path,
                query,
                auth,
                body,
                at: Instant::now(),
            };
            calls.lock().unwrap().push(call.clone());
            let (code, body) = reply(&call);
            (
                StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                Json(body),
            )
        }
    });
    (common::serve(app), calls)
}

/// The recorded requests whose path starts with `prefix`.
fn to(calls: &Calls, prefix: &str) -> Vec<Call> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.path.starts_with(prefix))
        .cloned()
        .collect()
}

/// The crisis monitor's fake world (social API, model, Telegram, WhatsApp, SMS).
fn start_world() -> (String, Calls) {
    world(|c| {
        let path = c.path.as_str();
        (
            200,
            if path.starts_with("/social/mentions/search") {
                json!({"posts": [{"id": "p1", "platform": "twitter", "author": "@angry",
                              "text": "this is a scam", "url": "https://x.example/p1", "shares": 150}],
                   "baseline_volume": 1})
            } else if path.starts_with("/openai/chat/completions") {
                crisis_reply()
            } else {
                provider_ok(path)
            },
        )
    })
}

fn crisis_reply() -> Value {
    let verdict = json!({
        "negative": [{"id": "p1", "platform": "twitter", "author": "@angry", "text": "this is a scam",
                      "url": "https://x.example/p1", "score": 0.05}],
        "negative_ratio": 0.9,
        "crisis": true,
        "crisis_reason": "a spike of scam reports",
        "recommended_action": "post a statement",
    });
    completion(&verdict.to_string())
}

/// What a messaging provider answers when it accepts a message.
fn provider_ok(path: &str) -> Value {
    if path.starts_with("/telegram/") {
        json!({"ok": true, "result": {"message_id": 7}})
    } else if path.starts_with("/whatsapp/") {
        json!({"messages": [{"id": "wamid.1"}]})
    } else {
        json!({"ok": true})
    }
}

/// A chat completion whose reply is `content`.
fn completion(content: &str) -> Value {
    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80}})
}

/// A chat completion asking for tool calls `(name, arguments)`.
fn tool_calls(calls: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({"id": format!("call_{i}"), "type": "function",
            "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls},
                        "finish_reason": "tool_calls"}],
           "usage": {"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80}})
}

/// A chat request's messages of `role`, their content as text.
fn said(body: &Value, role: &str) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == role)
                .map(|m| m["content"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// E-mails received: (recipients, raw message).
type Mails = Arc<Mutex<Vec<(String, String)>>>;

/// A fake SMTP server (AUTH PLAIN, no TLS); records (recipients, raw message).
fn smtp_server() -> (u16, Mails) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the SMTP fake");
    let port = listener.local_addr().expect("its address").port();
    let mails: Mails = Arc::default();
    let record = mails.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || smtp_session(conn, &record));
        }
    });
    (port, mails)
}

fn smtp_session(conn: std::net::TcpStream, mails: &Mutex<Vec<(String, String)>>) {
    use std::io::{BufRead, Write};
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut input = std::io::BufReader::new(conn);
    let _ = out.write_all(b"220 fake ESMTP\r\n");
    let (mut rcpt, mut line) = (Vec::new(), String::new());
    loop {
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-fake\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
        } else if cmd.starts_with("AUTH") {
            b"235 ok\r\n"
        } else if cmd.starts_with("MAIL") {
            rcpt.clear();
            b"250 ok\r\n"
        } else if cmd.starts_with("RCPT") {
            let addr = line.split(['<', '>']).nth(1).unwrap_or("").to_string();
            rcpt.push(addr);
            b"250 ok\r\n"
        } else if cmd == "DATA" {
            let _ = out.write_all(b"354 go on\r\n");
            let mut data = String::new();
            loop {
                line.clear();
                if input.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                    break;
                }
                data.push_str(&line);
            }
            mails.lock().unwrap().push((rcpt.join(","), data));
            b"250 queued\r\n"
        } else if cmd == "QUIT" {
            let _ = out.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        if out.write_all(reply).is_err() {
            return;
        }
    }
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

// Realistic values: resolved secrets are scrubbed from every response body
// (values under 8 characters only as whole words, under 4 refused).
const SECRETS: [(&str, &str); 12] = [
    ("SLACK_BOT_TOKEN", "xoxb-test"),
    ("SOCIAL_API_TOKEN", "social-token-9e0f"),
    ("OPENAI_API_KEY", "sk-test"),
    ("TELEGRAM_BOT_TOKEN", "123:abc"),
    ("WHATSAPP_ACCESS_TOKEN", "wa-token"),
    ("SMTP_USERNAME", "smtp-user-41"),
    ("SMTP_PASSWORD", "smtp-pass-8c2e"),
    ("SMS_API_KEY", "sms-key"),
    ("SHOP_API_TOKEN", "shop-token-5f2a"),
    ("CRM_API_TOKEN", "crm-token-77b1"),
    ("BI_API_TOKEN", "bi-token-c3d9"),
    ("SOCIAL_TOKEN", "social-token-9e0f"),
];

/// `example_against`, keeping only the `jobs.d` files in `keep` and without
/// the kept jobs' schedules, so runs happen only when a test triggers them.
fn example(name: &str, world: &str, keep: &[&str], rewrite: &[(&str, &str)]) -> ConfigDir {
    let d = example_against(name, world, rewrite);
    for e in std::fs::read_dir(d.path().join("jobs.d"))
        .expect("jobs.d")
        .flatten()
    {
        let file = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&file.as_str()) {
            d.remove(&format!("jobs.d/{file}"));
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("read the copy");
        let mut out = String::new();
        let mut in_schedule = false;
        for line in text.lines() {
            if line == "schedule:" {
                in_schedule = true;
                continue;
            }
            if in_schedule && line.starts_with("  ") {
                continue;
            }
            in_schedule = false;
            out.push_str(line);
            out.push('\n');
        }
        d.write(&format!("jobs.d/{file}"), &out);
    }
    d
}

fn start(d: &ConfigDir) -> Daemon {
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start_env(d.path(), &["--workers", "4"], &SECRETS);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon
}

/// Queue a run with `multijob trigger`; its id.
fn trigger(d: &ConfigDir, job: &str, inputs: Option<&Value>) -> String {
    let inputs = inputs.map(Value::to_string);
    let mut args = vec!["trigger", job];
    if let Some(i) = &inputs {
        args.extend(["--inputs", i.as_str()]);
    }
    let r = d.run(&args);
    r.assert_code(0);
    r.stdout()
        .split_whitespace()
        .nth(2)
        .expect("trigger prints the run id")
        .to_string()
}

/// The run once it reached a final status.
#[track_caller]
fn finished(daemon: &Daemon, run: &str) -> Value {
    daemon.wait_until(&format!("/api/v1/runs/{run}"), "the run to finish", |v| {
        ["succeeded", "failed", "timed_out", "cancelled"]
            .contains(&v["status"].as_str().unwrap_or(""))
    })
}

#[track_caller]
fn succeeded(daemon: &Daemon, run: &str) -> Value {
    let r = finished(daemon, run);
    assert_eq!(r["status"], "succeeded", "{r:#}\n{}", daemon.log());
    r
}

/// The text of each Telegram message sent to `chat`.
fn telegram_to(calls: &Calls, chat: &str) -> Vec<String> {
    to(calls, "/telegram/bot123:abc/sendMessage")
        .iter()
        .filter(|c| c.body["chat_id"] == chat)
        .map(|c| c.body["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Calls spread at most `per_sec` after a burst of `burst`.
#[track_caller]
fn assert_paced(calls: &[Call], burst: usize, per_sec: f64) {
    let (Some(first), Some(last)) = (calls.first(), calls.last()) else {
        return;
    };
    let span = last.at.duration_since(first.at).as_secs_f64();
    let floor = (calls.len().saturating_sub(burst + 1)) as f64 / per_sec;
    assert!(
        span >= floor * 0.9,
        "{} calls in {span:.2} s: faster than {per_sec}/s after a burst of {burst}",
        calls.len()
    );
}

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
    let to = |prefix: &str| to(&calls, prefix);
    // Mentions were searched per keyword (3), with the accounts.
    assert!(to("/social/mentions/search").len() >= 3);
    // Telegram got the negative mentions, with the bot token in the path.
    let telegram = to("/telegram/bot123:abc/sendMessage");
    assert!(!telegram.is_empty(), "{seen:#?}");
    assert!(
        telegram[0].body["text"]
            .as_str()
            .unwrap()
            .contains("@angry"),
        "{:?}",
        telegram[0]
    );
    assert_eq!(telegram[0].body["chat_id"], "-1001234567890");
    // WhatsApp got the crisis alert in the Cloud API shape.
    let whatsapp = to("/whatsapp/109876543210987/messages");
    assert!(!whatsapp.is_empty(), "{seen:#?}");
    assert_eq!(whatsapp[0].body["messaging_product"], "whatsapp");
    assert!(
        whatsapp[0].body["text"]["body"]
            .as_str()
            .unwrap()
            .contains("CRISIS: a spike of scam reports")
    );
    // Only the re-check escalates by SMS.
    let sms = to("/sms");
    assert!(!sms.is_empty(), "the re-check escalates by SMS: {seen:#?}");
    assert!(
        sms[0].body["text"]
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

// ---------------------------------------------------------------- heavy

/// Our price of product `n` (PROD001..).
fn my_price(n: u64) -> u64 {
    100_000 + n * 1_000
}

/// Which products a competitor undercuts, and where: 5 within the rules,
/// PROD015 so deep that following it would break the discount rule.
const CHEAPER: [(u64, &str); 5] = [
    (3, "lazada"),
    (7, "shopee"),
    (12, "tokopedia"),
    (20, "tiktok"),
    (28, "blibli"),
];

/// The pricing analyst: reads the offers out of the prompt and proposes
/// 95% of the cheapest competitor wherever one is cheaper, rules or not.
fn price_analyst(prompt: &str) -> Value {
    let data = prompt
        .split("per marketplace:\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the prompt carries the offers");
    let products: Value = serde_json::from_str(data).expect("the offers are JSON");
    let (mut adjustments, mut review) = (Vec::new(), Vec::new());
    for p in products.as_array().expect("a list of products") {
        let (mine, cost) = (p["my_price"].as_f64().unwrap(), p["cost"].as_f64().unwrap());
        for m in p["marketplaces"]
            .as_array()
            .expect("offers per marketplace")
        {
            let lowest = m["offers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|o| o["price"].as_f64())
                .fold(f64::MAX, f64::min);
            if lowest >= mine {
                continue;
            }
            let new = (lowest * 0.95).round();
            let discount = (mine - new) / mine * 100.0;
            adjustments.push(
                json!({"sku": p["sku"], "marketplace": m["marketplace"], "my_price": mine,
                "competitor_price": lowest, "new_price": new, "discount_percent": discount,
                "margin_percent": (new - cost) / cost * 100.0, "reason": "competitor cheaper"}),
            );
            if discount > 20.0 {
                review.push(json!({"sku": p["sku"], "reason": "competitor far below our floor"}));
            }
        }
    }
    json!({"adjustments": adjustments, "flag_for_review": review,
           "summary": format!("{} price proposals.", adjustments.len())})
}

#[test]
fn price_intelligence_reprices_only_the_undercut_products() {
    let (world, calls) = world(|c| {
        let path = c.path.as_str();
        if let Some(rest) = path.strip_prefix("/shop/marketplaces/") {
            // /shop/marketplaces/<m>/products/<sku>/offers
            let parts: Vec<&str> = rest.split('/').collect();
            let (market, sku) = (parts[0], parts[2]);
            let n: u64 = sku.trim_start_matches("PROD").parse().unwrap_or(0);
            if c.method == "PUT" {
                return (200, json!({"sku": sku, "updated": true}));
            }
            let mut price = my_price(n) + 5_000;
            if CHEAPER.contains(&(n, market)) {
                price = my_price(n) - 10_000;
            }
            if (n, market) == (15, "lazada") {
                price = my_price(n) / 2;
            }
            return (
                200,
                json!({"marketplace": market, "sku": sku,
                "offers": [{"seller": "competitor_b", "price": price, "stock": 4},
                           {"seller": "competitor_a", "price": price + 2_000, "stock": 9}]}),
            );
        }
        if path.starts_with("/openai/") {
            let prompt = said(&c.body, "user").concat();
            return (200, completion(&price_analyst(&prompt).to_string()));
        }
        (200, provider_ok(path))
    });
    let d = example(
        "heavy",
        &world,
        &["connectors.yaml", "flows.yaml", "price-intelligence.yaml"],
        // Fast: the shop's 1200/min would stretch 150 reads over 5 s.
        &[(
            "rate_limit: {per_minute: 1200, burst: 50}",
            "rate_limit: {per_minute: 60000, burst: 50}",
        )],
    );
    let daemon = start(&d);
    // Scaled down from 100 products to 30, on the 5 marketplaces.
    let products: Vec<Value> = (1..=30)
        .map(|n| {
            json!({"sku": format!("PROD{n:03}"), "name": format!("Produk {n}"),
                        "my_price": my_price(n), "cost": 70_000})
        })
        .collect();
    let run = trigger(
        &d,
        "ecommerce-price-intelligence",
        Some(&json!({"products": products})),
    );
    let r = succeeded(&daemon, &run);
    assert!(r["usage"]["llm_tokens"].as_u64().unwrap() >= 80, "{r:#}");

    // Every product on every marketplace, asking for the competitors.
    let offers: Vec<Call> = to(&calls, "/shop/marketplaces/")
        .into_iter()
        .filter(|c| c.method == "GET")
        .collect();
    assert_eq!(offers.len(), 30 * 5);
    assert!(
        offers.iter().all(
            |c| c.q("sellers") == Some("competitor_a,competitor_b,competitor_c")
                && c.q("sort") == Some("price_asc")
                && c.auth.as_deref() == Some("Bearer shop-token-5f2a")
        ),
        "{:?}",
        offers[0]
    );

    // Prices change exactly where a competitor is cheaper within the rules:
    // PROD015's proposal breaks the 20% discount cap and is dropped.
    let mut puts: Vec<(String, Value)> = to(&calls, "/shop/marketplaces/")
        .into_iter()
        .filter(|c| c.method == "PUT")
        .map(|c| (c.path, c.body))
        .collect();
    puts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<String> = CHEAPER
        .iter()
        .map(|(n, m)| format!("/shop/marketplaces/{m}/products/PROD{n:03}/price"))
        .collect();
    expected.sort();
    assert_eq!(
        puts.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
        expected
    );
    for (path, body) in &puts {
        let n: u64 = path.split("PROD").nth(1).unwrap()[..3].parse().unwrap();
        let want = ((my_price(n) - 10_000) as f64 * 0.95).round();
        assert_eq!(body["price"].as_f64(), Some(want), "{path}: {body}");
        assert_eq!(body["source_run"], run.as_str());
    }

    // One report to the management chat, listing the changes and the review.
    let report = telegram_to(&calls, "-1001234567890");
    assert_eq!(report.len(), 1, "{report:?}");
    let text = &report[0];
    assert!(text.contains("(30 products x 5 marketplaces)"), "{text}");
    assert!(text.contains("Adjusted: 5"), "{text}");
    for (n, m) in CHEAPER {
        assert!(text.contains(&format!("PROD{n:03} @ {m}:")), "{text}");
    }
    assert!(!text.contains("PROD015 @"), "{text}");
    assert!(text.contains("Needs review:\n- PROD015"), "{text}");
}

/// 201 opted-in customers: 41 VIP (the last with a number WhatsApp
/// refuses), 100 regular, 60 new.
fn customers() -> Vec<Value> {
    (1..=201)
        .map(|id| {
            let segment = match id {
                1..=41 => "vip",
                42..=141 => "regular",
                _ => "new",
            };
            let phone = if id == 41 {
                "+62000".to_string()
            } else {
                format!("+62812{id:06}")
            };
            json!({"id": id, "name": format!("Pelanggan {id}"), "segment": segment, "phone": phone,
                   "telegram_chat_id": 500_000 + id, "email": format!("c{id}@example.com"),
                   "favourite_category": "fashion"})
        })
        .collect()
}

#[test]
fn black_friday_delivers_200_messages_once_each_even_across_a_retry() {
    let report_failed_once = Arc::new(AtomicBool::new(false));
    let flag = report_failed_once.clone();
    let (world, calls) = world(move |c| {
        let path = c.path.as_str();
        if path.starts_with("/crm/customers") {
            return (200, json!({"customers": customers()}));
        }
        if path.starts_with("/openai/") {
            // The copywriter echoes the customer and the personal code.
            let prompt = said(&c.body, "user").concat();
            let field = |p: &str| {
                prompt
                    .split(p)
                    .nth(1)
                    .and_then(|r| r.lines().next())
                    .unwrap_or("")
                    .to_string()
            };
            let name = field("Customer: ");
            let name = name.split(';').next().unwrap_or("");
            return (
                200,
                completion(&format!(
                    "Halo {name}! Kode kamu {}",
                    field("Personal code: ")
                )),
            );
        }
        if path.starts_with("/whatsapp/") && c.body["to"] == "+62000" {
            return (400, json!({"error": {"message": "invalid recipient"}}));
        }
        // The campaign report fails once: the run is retried after sending.
        if path.starts_with("/telegram/")
            && c.body["chat_id"] == "-1001234567890"
            && !flag.swap(true, Ordering::SeqCst)
        {
            return (502, json!({"ok": false}));
        }
        (200, provider_ok(path))
    });
    let (smtp, mails) = smtp_server();
    let d = example(
        "heavy",
        &world,
        &[
            "connectors.yaml",
            "flows.yaml",
            "black-friday-campaign.yaml",
        ],
        &[
            (
                "base_url: smtp://127.0.0.1:9",
                &format!("base_url: smtp://127.0.0.1:{smtp}"),
            ),
            // Scaled with the list: 100/min would take 2 minutes; 3000/min
            // still paces 100 messages over ~2 s.
            (
                "rate_limit: {per_minute: 100, burst: 10}",
                "rate_limit: {per_minute: 3000, burst: 10}",
            ),
            (
                "rate_limit: {per_minute: 300, burst: 20}",
                "rate_limit: {per_minute: 30000, burst: 20}",
            ),
            ("backoff_sec: [300]", "backoff_sec: [1]"),
        ],
    );
    let daemon = start(&d);
    let run = trigger(
        &d,
        "black-friday-campaign-2026",
        Some(&json!({"max_customers": 201})),
    );
    let r = succeeded(&daemon, &run);
    assert_eq!(r["attempt"], 2, "the failed report retries the run: {r:#}");
    assert_eq!(to(&calls, "/crm/customers")[0].q("limit"), Some("201"));

    // VIPs: one personal WhatsApp message each, the refused number aside.
    let whatsapp: Vec<Call> = to(&calls, "/whatsapp/109876543210987/messages")
        .into_iter()
        .filter(|c| c.body["to"] != "+62000")
        .collect();
    let mut phones: Vec<String> = whatsapp
        .iter()
        .map(|c| c.body["to"].as_str().unwrap().to_string())
        .collect();
    phones.sort();
    phones.dedup();
    assert_eq!(
        (whatsapp.len(), phones.len()),
        (40, 40),
        "one message per VIP, none twice"
    );
    let first = whatsapp
        .iter()
        .find(|c| c.body["to"] == "+62812000001")
        .expect("VIP 1");
    assert_eq!(
        first.body["text"]["body"],
        "Halo Pelanggan 1! Kode kamu BF2026-1"
    );

    // Regular customers: the Telegram template, once per chat.
    let regular: Vec<Call> = to(&calls, "/telegram/")
        .into_iter()
        .filter(|c| c.body["chat_id"] != "-1001234567890")
        .collect();
    let mut chats: Vec<String> = regular
        .iter()
        .map(|c| c.body["chat_id"].as_str().unwrap().to_string())
        .collect();
    chats.sort();
    chats.dedup();
    assert_eq!(
        (regular.len(), chats.len()),
        (100, 100),
        "one message per regular customer, none twice"
    );
    let one = regular
        .iter()
        .find(|c| c.body["chat_id"] == "500042")
        .expect("customer 42");
    assert!(
        one.body["text"]
            .as_str()
            .unwrap()
            .contains("Kode pribadi kamu: BF2026-42"),
        "{:?}",
        one.body
    );

    // New customers: one e-mail each.
    let mails = mails.lock().unwrap().clone();
    let mut addresses: Vec<&str> = mails.iter().map(|(to, _)| to.as_str()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(
        (mails.len(), addresses.len()),
        (60, 60),
        "one e-mail per new customer, none twice"
    );
    assert!(mails.iter().any(|(to, data)| to == "c150@example.com"
        && data.contains("Subject: Black Friday 2026: hadiah selamat datang untukmu")
        && data.contains("BF2026-150")));
    assert_eq!(whatsapp.len() + regular.len() + mails.len(), 200);

    // The connectors' rate limits paced the sending.
    assert_paced(&regular, 10, 50.0);
    assert_paced(&whatsapp, 10, 50.0);

    // The report went out once it could, with the tally of both attempts.
    let report = telegram_to(&calls, "-1001234567890");
    assert_eq!(report.len(), 2, "failed once, then delivered: {report:?}");
    let text = &report[1];
    for line in [
        "Customers targeted: 201",
        "WhatsApp (VIP): 40/41",
        "Telegram (regular): 100/100",
        "E-mail (new): 60/60",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

#[test]
fn the_bi_report_survives_a_missing_source_and_reaches_every_recipient() {
    let (world, calls) = world(|c| {
        let path = c.path.as_str();
        if let Some(rest) = path.strip_prefix("/bi/sources/") {
            let platform = rest.split('/').next().unwrap_or("");
            if platform == "tiktok" {
                return (404, json!({"error": "no data for yesterday"}));
            }
            return (
                200,
                json!({"platform": platform, "date": c.q("date"), "sales": 1_000_000}),
            );
        }
        if path.starts_with("/openai/") {
            let analysis = json!({"headline": "Sales up 12% on Shopee",
                "kpis": {"total_sales": 9_000_000, "orders": 420, "roas": 3.5},
                "anomalies": ["TikTok data missing"], "trends": ["Shopee growing"],
                "recommendations": ["raise Shopee ads", "fix the TikTok feed", "restock SKU 7", "fourth idea"]});
            return (200, completion(&analysis.to_string()));
        }
        (200, provider_ok(path))
    });
    let (smtp, mails) = smtp_server();
    let d = example(
        "heavy",
        &world,
        &["connectors.yaml", "daily-bi-report.yaml"],
        &[(
            "base_url: smtp://127.0.0.1:9",
            &format!("base_url: smtp://127.0.0.1:{smtp}"),
        )],
    );
    let daemon = start(&d);
    let run = trigger(&d, "daily-bi-report", None);
    succeeded(&daemon, &run);

    // Ten sources asked for yesterday, compared with three periods.
    let fetched = to(&calls, "/bi/sources/");
    assert_eq!(fetched.len(), 10);
    assert!(fetched.iter().all(|c| c.q("date") == Some("yesterday")
        && c.q("compare") == Some("yesterday,last_week,last_month")));
    // The model saw nine sources' data and `{}` for the missing one.
    let llm = to(&calls, "/openai/");
    let prompt = said(&llm[0].body, "user").concat();
    let data = prompt
        .split("({} = source unavailable): ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .expect("the data in the prompt");
    let data: Value = serde_json::from_str(data).expect("JSON data");
    assert_eq!(data.as_array().map(Vec::len), Some(10));
    assert_eq!(data[7], json!({}), "tiktok is missing: {data}");
    assert_eq!(data[0]["platform"], "shopee");

    // Both files in the data dir.
    let dir = d.path().join(".multijob/data/reports/bi");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{run}.json"))).expect("the JSON report"),
    )
    .expect("JSON");
    assert_eq!(saved["analysis"]["headline"], "Sales up 12% on Shopee");
    let md = std::fs::read_to_string(dir.join("latest.md")).expect("the Markdown report");
    assert!(
        md.contains("# BI report yesterday") && md.contains("| total_sales | 9000000 |"),
        "{md}"
    );
    assert!(md.contains("Sources: 10, missing: 1."), "{md}");

    // Each recipient on its channel.
    let telegram = telegram_to(&calls, "-1001234567890");
    assert_eq!(telegram.len(), 1);
    assert!(
        telegram[0].contains("**Sales up 12% on Shopee**"),
        "{}",
        telegram[0]
    );
    let whatsapp = to(&calls, "/whatsapp/");
    assert_eq!(whatsapp.len(), 1);
    assert_eq!(whatsapp[0].body["to"], "+6281234567890");
    let text = whatsapp[0].body["text"]["body"].as_str().unwrap();
    assert!(
        text.contains("- restock SKU 7") && !text.contains("fourth idea"),
        "top 3 only: {text}"
    );
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].0, "ceo@company.com");
    assert!(
        mails[0]
            .1
            .contains("Subject: BI report yesterday: Sales up 12% on Shopee"),
        "{}",
        mails[0].1
    );
}

#[test]
fn the_catalog_sync_moves_its_sync_point_only_after_a_complete_sync() {
    let idealo_down = Arc::new(AtomicBool::new(true));
    let down = idealo_down.clone();
    let (world, calls) = world(move |c| {
        let path = c.path.as_str();
        if path == "/shop/catalog/products" {
            let products: Vec<Value> = (1..=5)
                .map(|n| {
                    json!({"sku": format!("PROD{n:03}"), "name": format!("Produk {n}"),
                    "description": "lama", "price": 100_000 + n, "stock": n,
                    "images": [format!("https://img.example/PROD{n:03}.jpg")]})
                })
                .collect();
            return (200, json!({"products": products}));
        }
        if path == "/shop/media/optimize" {
            return (
                200,
                json!({"images": [format!("https://cdn.example/{}.webp", c.body["sku"].as_str().unwrap_or(""))]}),
            );
        }
        if path.starts_with("/shop/platforms/idealo/products/PROD003")
            && down.load(Ordering::SeqCst)
        {
            return (422, json!({"error": "category mapping missing"}));
        }
        if path.starts_with("/shop/platforms/") {
            return (200, json!({"ok": true}));
        }
        if path.starts_with("/openai/") {
            let prompt = said(&c.body, "user").concat();
            let platforms = prompt
                .split("Platforms: ")
                .nth(1)
                .and_then(|r| r.lines().next())
                .unwrap_or("");
            let titles: serde_json::Map<String, Value> = platforms
                .split(", ")
                .map(|p| (p.to_string(), json!(format!("Judul SEO {p}"))))
                .collect();
            return (
                200,
                completion(
                    &json!({"titles": titles, "descriptions": {}, "tags": ["promo"]}).to_string(),
                ),
            );
        }
        (200, provider_ok(path))
    });
    let d = example(
        "heavy",
        &world,
        &["connectors.yaml", "flows.yaml", "product-catalog-sync.yaml"],
        &[(
            "rate_limit: {per_minute: 1200, burst: 50}",
            "rate_limit: {per_minute: 60000, burst: 50}",
        )],
    );
    let daemon = start(&d);
    let puts = || {
        to(&calls, "/shop/platforms/")
            .into_iter()
            .filter(|c| c.method == "PUT")
            .collect::<Vec<_>>()
    };

    // 1. One push fails: the others go through, the sync point stays.
    succeeded(&daemon, &trigger(&d, "product-catalog-sync", None));
    assert_eq!(
        to(&calls, "/shop/catalog/products")[0].q("updated_since"),
        Some("1970-01-01T00:00:00Z")
    );
    assert_eq!(to(&calls, "/shop/media/optimize").len(), 5);
    let first = puts();
    assert_eq!(first.len(), 5 * 10, "every product to every platform");
    let shopee = first
        .iter()
        .find(|c| c.path == "/shop/platforms/shopee/products/PROD002")
        .expect("PROD002 on shopee");
    assert_eq!(shopee.body["title"], "Judul SEO shopee");
    assert_eq!(
        shopee.body["images"],
        json!(["https://cdn.example/PROD002.webp"])
    );
    assert_eq!(shopee.body["price"], 100_002);
    let report = telegram_to(&calls, "-1001234567890");
    assert!(
        report[0].contains("5 changed product(s) x 10 platforms"),
        "{}",
        report[0]
    );
    assert!(
        report[0].contains("platform pushes failed: 1") && report[0].contains("not advanced"),
        "{}",
        report[0]
    );

    // 2. Everything goes through: the same window again, then it advances.
    idealo_down.store(false, Ordering::SeqCst);
    succeeded(&daemon, &trigger(&d, "product-catalog-sync", None));
    assert_eq!(
        to(&calls, "/shop/catalog/products")[1].q("updated_since"),
        Some("1970-01-01T00:00:00Z")
    );
    assert!(telegram_to(&calls, "-1001234567890")[1].contains("All synced."));

    // 3. The next run asks only for what changed since the complete sync.
    succeeded(&daemon, &trigger(&d, "product-catalog-sync", None));
    let since = to(&calls, "/shop/catalog/products")[2]
        .q("updated_since")
        .map(str::to_string);
    let since = since.expect("updated_since");
    assert!(
        since.starts_with("20"),
        "a recent timestamp, not the epoch: {since}"
    );
}

// ---------------------------------------------------------------- ops-247

#[test]
fn ops_monitors_alert_elsewhere_once_per_run_and_the_reports_summarise_them() {
    let telegram_down = Arc::new(AtomicBool::new(true));
    let down = telegram_down.clone();
    let (world, calls) = world(move |c| {
        let path = c.path.as_str();
        if path == "/telegram/" && down.load(Ordering::SeqCst) {
            return (502, json!({"ok": false}));
        }
        if path.starts_with("/social/mentions/search") {
            return (
                200,
                json!({"posts": [{"platform": "instagram", "text": "penipuan!", "url": "https://ig.example/1"}]}),
            );
        }
        if path.starts_with("/openai/") {
            let verdict = json!({"negative": [{"platform": "instagram", "text": "penipuan!",
                "url": "https://ig.example/1", "score": 0.02}], "crisis": true, "reason": "viral scam claim"});
            return (200, completion(&verdict.to_string()));
        }
        (200, provider_ok(path))
    });
    let (smtp, mails) = smtp_server();
    let d = example(
        "ops-247",
        &world,
        &[
            "connectors.yaml",
            "monitor-telegram-a01.yaml",
            "monitor-247.yaml",
            "instagram-monitor-247.yaml",
            "social-media-crisis-monitor.yaml",
            "crisis-monitor-247.yaml",
            "daily-report.yaml",
            "hourly-metrics-report.yaml",
        ],
        &[
            (
                "base_url: smtp://127.0.0.1:9",
                &format!("base_url: smtp://127.0.0.1:{smtp}"),
            ),
            ("backoff_sec: [5, 10, 20]", "backoff_sec: [1, 1, 1]"),
        ],
    );
    let daemon = start(&d);
    let slack = || to(&calls, "/slack");

    // The bot is down: the a01 monitor fails and says so on Slack, not Telegram.
    let a01 = finished(&daemon, &trigger(&d, "monitor-telegram-a01", None));
    assert_eq!(a01["status"], "failed", "{a01:#}");
    assert!(
        a01["error"]
            .as_str()
            .unwrap()
            .contains("1 of 1 connectors down"),
        "{a01:#}"
    );
    assert_eq!(slack().len(), 1);
    assert_eq!(slack()[0].body["channel"], "#ops-alerts");
    assert!(
        slack()[0].body["text"]
            .as_str()
            .unwrap()
            .starts_with("[monitor-telegram-a01] 1 down")
    );
    assert!(
        to(&calls, "/telegram/bot").is_empty(),
        "no alert through the broken channel"
    );

    // monitor-247 retries 3 times (backoff scaled to 1 s) and alerts once.
    let m247 = finished(&daemon, &trigger(&d, "monitor-247", None));
    assert_eq!(m247["status"], "failed", "{m247:#}");
    assert_eq!(
        m247["attempts"].as_array().map(Vec::len),
        Some(4),
        "{m247:#}"
    );
    let alerts: Vec<Call> = slack()
        .into_iter()
        .filter(|c| {
            c.body["text"]
                .as_str()
                .unwrap_or("")
                .starts_with("[monitor-247]")
        })
        .collect();
    assert_eq!(alerts.len(), 1, "one alert per run, not per attempt");
    assert_eq!(
        to(&calls, "/telegram/")
            .iter()
            .filter(|c| c.path == "/telegram/")
            .count(),
        1 + 4
    );

    // The social listening feed is up: its monitors pass without alerts.
    for job in ["instagram-monitor-247", "social-media-crisis-monitor"] {
        let r = succeeded(&daemon, &trigger(&d, job, None));
        assert_eq!(r["output"]["checks"][0]["connector"], "social", "{r:#}");
        assert_eq!(r["output"]["down"], 0);
    }

    // The bot is back: the check passes and nobody is alerted.
    telegram_down.store(false, Ordering::SeqCst);
    succeeded(&daemon, &trigger(&d, "monitor-telegram-a01", None));
    assert_eq!(slack().len(), 2);

    // Crisis detection: every keyword searched, Telegram for the negative
    // mention, WhatsApp for the crisis.
    succeeded(&daemon, &trigger(&d, "crisis-monitor-247", None));
    let searched: Vec<String> = to(&calls, "/social/mentions/search")
        .iter()
        .map(|c| c.q("q").unwrap_or("").to_string())
        .collect();
    assert_eq!(searched.len(), 3);
    for k in ["brand_name", "scam", "complaint"] {
        assert!(searched.iter().any(|q| q == k), "{searched:?}");
    }
    let negative = telegram_to(&calls, "-1001122334455");
    assert!(
        negative[0].starts_with("Negative mentions (1):")
            && negative[0].contains("[instagram] penipuan!"),
        "{negative:?}"
    );
    let whatsapp = to(&calls, "/whatsapp/109876543210987/messages");
    assert_eq!(
        whatsapp[0].body["text"]["body"],
        "URGENT, brand crisis: viral scam claim"
    );

    // The reports summarise those runs, as files and on Telegram and e-mail.
    let daily = succeeded(&daemon, &trigger(&d, "daily-report", None));
    assert_eq!(daily["output"]["delivered"], json!(["telegram", "email"]));
    let files: Vec<String> = daily["output"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 2, "md and json: {files:?}");
    for f in &files {
        assert!(d.path().join(".multijob/data").join(f).is_file(), "{f}");
    }
    let report = telegram_to(&calls, "-1001122334455")
        .into_iter()
        .find(|t| t.starts_with("# multijob report (daily-report)"))
        .expect("the daily report on Telegram");
    assert!(
        report.contains("| monitor-telegram-a01 | 2 | 1 | 1 |"),
        "{report}"
    );
    assert!(report.contains("| monitor-247 | 1 | 0 | 1 |"), "{report}");
    let hourly = succeeded(&daemon, &trigger(&d, "hourly-metrics-report", None));
    assert_eq!(
        hourly["output"]["files"].as_array().map(Vec::len),
        Some(1),
        "md only: {hourly:#}"
    );
    let mails = mails.lock().unwrap().clone();
    let subjects: Vec<bool> = ["daily-report", "hourly-metrics-report"]
        .iter()
        .map(|job| {
            mails.iter().any(|(to, data)| {
                to == "management@company.example"
                    && data.contains(&format!("Subject: multijob report ({job})"))
            })
        })
        .collect();
    assert_eq!(subjects, [true, true], "{mails:?}");
}

/// The tool results an agent's request carries, parsed.
fn tool_results(body: &Value) -> Vec<Value> {
    said(body, "tool")
        .iter()
        .map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
        .collect()
}

#[test]
fn the_price_agent_reprices_through_its_tools_and_remembers_what_it_saw() {
    let (world, calls) = world(|c| {
        let path = c.path.as_str();
        if path == "/shop/products" {
            return (
                200,
                json!({"products": [{"sku": "P1", "price": 120_000, "cost": 80_000}]}),
            );
        }
        if path.ends_with("/offers") {
            return (
                200,
                json!({"offers": [{"seller": "competitor_a", "price": 100_000}]}),
            );
        }
        if path.starts_with("/shop/") {
            return (200, json!({"ok": true}));
        }
        if path.starts_with("/openai/") {
            let results = tool_results(&c.body);
            return (
                200,
                match results.len() {
                    0 => tool_calls(&[("kv", json!({"get": "price-monitor/last"}))]),
                    // A remembered price: nothing new to do.
                    1 if !results[0].is_null() => completion("NO CHANGES"),
                    1 => tool_calls(&[
                        ("http", json!({"connector": "shop", "path": "/products"})),
                        (
                            "http",
                            json!({"connector": "shop", "path": "/marketplaces/shopee/products/P1/offers"}),
                        ),
                    ]),
                    3 => tool_calls(&[
                        (
                            "http",
                            json!({"connector": "shop", "method": "PUT",
                                    "path": "/marketplaces/shopee/products/P1/price", "json": {"price": 95_000}}),
                        ),
                        (
                            "kv",
                            json!({"set": "price-monitor/last", "value": {"P1": {"shopee": 95_000}}}),
                        ),
                    ]),
                    _ => completion("P1 on shopee: 120000 -> 95000 (competitor_a at 100000)"),
                },
            );
        }
        (200, provider_ok(path))
    });
    let d = example(
        "ops-247",
        &world,
        &["connectors.yaml", "price-monitor-247.yaml"],
        &[],
    );
    let daemon = start(&d);

    let first = succeeded(&daemon, &trigger(&d, "price-monitor-247", None));
    assert_eq!(first["usage"]["llm_tokens"], 4 * 80, "{first:#}");
    let llm = to(&calls, "/openai/");
    let offered: Vec<&str> = llm[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["http", "kv"], "only the step's tools");
    assert!(
        said(&llm[0].body, "user")[0]
            .contains("Marketplaces: shopee, tokopedia, lazada, tiktok, blibli")
    );
    // The model's reads reached the shop and came back to it.
    let after_reads = tool_results(&llm[2].body);
    assert_eq!(
        after_reads[2]["body"]["offers"][0]["price"], 100_000,
        "{after_reads:?}"
    );
    let put: Vec<Call> = to(&calls, "/shop/marketplaces/shopee/products/P1/price");
    assert_eq!(put.len(), 1);
    assert_eq!(
        (put[0].method.as_str(), put[0].body["price"].as_u64()),
        ("PUT", Some(95_000))
    );
    assert_eq!(
        telegram_to(&calls, "-1001122334455"),
        ["Price monitor: P1 on shopee: 120000 -> 95000 (competitor_a at 100000)"]
    );

    // The next run reads what the first remembered, changes nothing and
    // reports nothing.
    succeeded(&daemon, &trigger(&d, "price-monitor-247", None));
    let llm = to(&calls, "/openai/");
    let remembered = tool_results(&llm[llm.len() - 1].body);
    assert_eq!(remembered[0], json!({"P1": {"shopee": 95_000}}));
    assert_eq!(
        to(&calls, "/shop/marketplaces/shopee/products/P1/price").len(),
        1
    );
    assert_eq!(telegram_to(&calls, "-1001122334455").len(), 1);
}

#[test]
fn the_ceo_agent_schedules_follow_ups_and_its_sensitive_action_waits_for_approval() {
    let (world, calls) = world(|c| {
        let path = c.path.as_str();
        if path == "/bi/branches/metrics" {
            return (
                200,
                json!({"branches": [{"id": "JKT-02", "ad_budget": 0, "orders": 3}]}),
            );
        }
        if path.starts_with("/bi/") {
            return (200, json!({"ok": true}));
        }
        if path.starts_with("/openai/") {
            let system = said(&c.body, "system").concat();
            let n = tool_results(&c.body).len();
            let reply = if system.contains("`proactive-ceo`") {
                match n {
                    0 => tool_calls(&[
                        (
                            "schedule_job",
                            json!({"job": "ceo-sensitive-action", "delay_sec": 0,
                            "inputs": {"action": "set the JKT-02 ad budget to 5000000",
                                       "reason": "JKT-02 has NO AMMO", "requires_approval": false}}),
                        ),
                        (
                            "schedule_job",
                            json!({"job": "monitor-telegram-a01", "delay_sec": 0}),
                        ),
                        (
                            "kv",
                            json!({"set": "ceo/notes", "value": "asked to fund JKT-02"}),
                        ),
                    ]),
                    _ => completion(
                        "JKT-02 has no ad budget. Health check scheduled. Awaiting approval: JKT-02 budget.",
                    ),
                }
            } else {
                match n {
                    0 => tool_calls(&[(
                        "http",
                        json!({"connector": "bi", "method": "PUT",
                        "path": "/branches/JKT-02/budget", "json": {"amount": 5_000_000}}),
                    )]),
                    _ => completion("JKT-02 ad budget set to 5000000."),
                }
            };
            return (200, reply);
        }
        (200, provider_ok(path))
    });
    let d = example(
        "ops-247",
        &world,
        &[
            "connectors.yaml",
            "proactive-ceo.yaml",
            "monitor-telegram-a01.yaml",
        ],
        &[],
    );
    let daemon = start(&d);
    succeeded(&daemon, &trigger(&d, "proactive-ceo", None));
    let goal = said(&to(&calls, "/openai/")[0].body, "user").concat();
    assert!(
        goal.contains("JKT-02") && goal.contains("Notes from earlier runs: null"),
        "{goal}"
    );
    let boardroom = telegram_to(&calls, "-1009988776655");
    assert_eq!(boardroom.len(), 1);
    assert!(
        boardroom[0].starts_with("CEO update (")
            && boardroom[0].contains("Awaiting approval: JKT-02 budget.")
    );
    assert!(
        boardroom[0].contains("(3 tool call(s))"),
        "{}",
        boardroom[0]
    );

    // The safe follow-up ran by itself.
    daemon.wait_until(
        "/api/v1/runs?job=monitor-telegram-a01",
        "the health check follow-up",
        |v| {
            v["items"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["trigger"] == "workflow" && r["status"] == "succeeded")
            })
        },
    );
    // The sensitive one waits for a human, whatever its inputs say.
    let waiting = daemon.wait_until(
        "/api/v1/runs?job=ceo-sensitive-action",
        "the sensitive action",
        |v| {
            v["items"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["status"] == "awaiting_approval"))
        },
    );
    let action = &waiting["items"][0];
    assert_eq!(action["trigger"], "workflow");
    assert_eq!(
        action["inputs"]["action"],
        "set the JKT-02 ad budget to 5000000"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        to(&calls, "/bi/branches/JKT-02").is_empty(),
        "nothing happens before the approval"
    );

    let pending = d.run(&["approvals", "list", "--output", "json"]);
    pending.assert_code(0);
    let pending = pending.json();
    let approval = pending
        .as_array()
        .and_then(|a| a.iter().find(|p| p["job_id"] == "ceo-sensitive-action"))
        .expect("a pending approval");
    assert_eq!(approval["run_id"], action["id"]);
    d.run(&["approvals", "approve", approval["id"].as_str().unwrap()])
        .assert_code(0);
    succeeded(&daemon, action["id"].as_str().unwrap());
    let budget = to(&calls, "/bi/branches/JKT-02/budget");
    assert_eq!(budget.len(), 1);
    assert_eq!(
        (budget[0].method.as_str(), &budget[0].body),
        ("PUT", &json!({"amount": 5_000_000}))
    );
    assert!(telegram_to(&calls, "-1009988776655").iter().any(|t| t
        == "Approved action done: set the JKT-02 ad budget to 5000000 => JKT-02 ad budget set to 5000000."));
}
