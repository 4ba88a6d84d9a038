//! agent.workflow runs end to end: real local HTTP peers, the store's kv,
//! the data dir, a webhook message sent once across attempts, a follow-up.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

#[derive(Default)]
struct Peer {
    hooks: Mutex<Vec<(Option<String>, Value)>>,
    flaky_calls: AtomicUsize,
    price_calls: AtomicUsize,
    slow_calls: AtomicUsize,
}

/// A shop API and a webhook sink on 127.0.0.1:0, recording what they got.
fn start_peer() -> (String, Arc<Peer>) {
    let peer = Arc::new(Peer::default());
    let state = peer.clone();
    let app = axum::Router::new()
                .route(
                    "/prices/{sku}",
                    get(|State(p): State<Arc<Peer>>, Path(sku): Path<String>| async move {
                        p.price_calls.fetch_add(1, Ordering::SeqCst);
                        let price = match sku.as_str() {
                            "A" => 10,
                            "B" => 20,
                            _ => 30,
                        };
                        Json(json!({"sku": sku, "price": price}))
                    }),
                )
                .route(
                    "/slow",
                    get(|State(p): State<Arc<Peer>>| async move {
                        // The first call takes long enough to be interrupted.
                        if p.slow_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                        }
                        Json(json!({"ok": true}))
                    }),
                )
                .route(
                    "/flaky",
                    get(|State(p): State<Arc<Peer>>| async move {
                        // The first call fails: the run's first attempt fails.
                        if p.flaky_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                Json(json!({"error": "try again"})),
                            )
                        } else {
                            (StatusCode::OK, Json(json!({"ok": true})))
                        }
                    }),
                )
                .route(
                    "/hook",
                    post(
                        |State(p): State<Arc<Peer>>,
                         headers: HeaderMap,
                         Json(body): Json<Value>| async move {
                            let key = headers
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            p.hooks.lock().unwrap().push((key, body));
                            Json(json!({"ok": true}))
                        },
                    ),
                )
                .with_state(state);
    let addr = common::serve(app);
    (addr, peer)
}

#[test]
fn a_workflow_runs_its_steps_and_sends_its_message_once_across_attempts() {
    let (base, peer) = start_peer();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/flow.yaml",
        &format!(
            r#"kind: Connector
id: shop
provider: http
base_url: {base}
---
kind: Connector
id: hook
provider: webhook
base_url: {base}/hook
---
id: followup
type: noop
---
id: flow
type: agent.workflow
retry_policy: {{max_retry: 1, backoff_sec: [0.1]}}
inputs: {{skus: [A, B, C]}}
steps:
  - id: prices
    foreach: "{{{{ inputs.skus }}}}"
    concurrency: 2
    http: {{connector: shop, path: "/prices/{{{{ item }}}}"}}
  - id: total
    set:
      sum: "{{{{ steps.prices.output | map(attribute='body') | map(attribute='price') | sum }}}}"
      first: "{{{{ steps.prices.output[0].body.sku }}}}"
  - id: remember
    kv: {{set: last_total, value: "{{{{ steps.total.output.sum }}}}"}}
  - id: recall
    kv: {{get: last_total}}
  - id: write
    files: {{write: reports/total.txt, content: "total={{{{ steps.recall.output }}}}"}}
  - id: notify
    message: {{connector: hook, text: "total is {{{{ steps.total.output.sum }}}}"}}
  - id: later
    schedule_job: {{job: followup, delay_sec: 0}}
  - id: gauge
    metric: {{name: basket_total, value: "{{{{ steps.total.output.sum }}}}", labels: {{shop: demo}}}}
  - id: check
    http: {{connector: shop, path: /flaky}}
"#
        ),
    );
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let r = d.run(&["trigger", "flow"]);
    r.assert_code(0);
    let id = r.stdout().split_whitespace().nth(2).unwrap().to_string();
    let run = daemon.wait_until(
        &format!("/api/v1/runs/{id}"),
        "the workflow to succeed",
        |v| v["status"] == "succeeded" || v["status"] == "failed",
    );
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log());
    // The first attempt failed at the last step; the second passed.
    assert_eq!(run["attempt"], 2, "{run:#}");
    let steps = run["steps"].as_array().unwrap();
    let output = |id: &str| {
        steps
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["output"].clone())
            .unwrap_or(Value::Null)
    };
    // foreach outputs in item order, typed template values.
    let prices = output("prices");
    let skus: Vec<&str> = prices
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"]["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["A", "B", "C"]);
    assert_eq!(output("total")["sum"], 60);
    assert_eq!(output("recall"), 60);
    assert_eq!(output("write")["path"], "reports/total.txt");
    let file = std::fs::read_to_string(d.path().join(".multijob/data/reports/total.txt")).unwrap();
    assert_eq!(file, "total=60");
    // The message went out once, with its idempotency key, even though
    // the run ran its steps twice.
    let hooks = peer.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    assert_eq!(hooks[0].1["text"], "total is 60");
    assert_eq!(hooks[0].0.as_deref(), Some(format!("{id}:notify").as_str()));
    // One follow-up run, despite two attempts.
    let followups = daemon.wait_until("/api/v1/runs?job=followup", "the follow-up", |v| {
        v["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["status"] == "succeeded"))
    });
    let items = followups["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{followups:#}");
    assert_eq!(items[0]["trigger"], "workflow");
    // The metric step's value is on /metrics.
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("multijob_workflow_metric{")
                && l.contains("name=\"basket_total\"")
                && l.contains("shop=\"demo\"")
                && l.ends_with(" 60.0")),
        "{metrics}"
    );
}

#[test]
fn a_workflow_step_error_names_the_step_and_egress_is_refused() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/bad.yaml",
        "kind: Connector\nid: api\nprovider: http\nbase_url: http://127.0.0.1:9\n---\nid: bad\ntype: agent.workflow\nsteps:\n  - id: steal\n    http: {connector: api, url: \"http://169.254.169.254/latest/meta-data\"}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let r = d.run(&["trigger", "bad"]);
    let id = r.stdout().split_whitespace().nth(2).unwrap().to_string();
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the failure", |v| {
        v["status"] == "failed"
    });
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("step `steal`"), "{error}");
    assert_eq!(run["steps"][0]["status"], "failed", "{run:#}");
}

#[test]
fn report_daily_summarises_runs_into_files_and_delivers_once() {
    let (base, peer) = start_peer();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/r.yaml",
        &format!(
            "kind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n---\nid: ok\ntype: noop\n---\nid: broken\ntype: simulation.heavy\ninputs: {{fail_attempts: 5}}\n---\nid: report\ntype: report.daily\ninputs: {{period: 1h, deliver_to: [hook], title: Ops report}}\n"
        ),
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    for job in ["ok", "ok", "broken"] {
        d.run(&["trigger", job]).assert_code(0);
    }
    daemon.wait_until("/api/v1/runs?job=broken", "the failure", |v| {
        v["items"][0]["status"] == "failed"
    });
    daemon.wait_until("/api/v1/runs?job=ok&status=succeeded", "two runs", |v| {
        v["items"].as_array().is_some_and(|a| a.len() == 2)
    });
    let r = d.run(&["trigger", "report"]);
    let id = r.stdout().split_whitespace().nth(2).unwrap().to_string();
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the report", |v| {
        v["status"] == "succeeded" || v["status"] == "failed"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let out = &run["output"];
    assert_eq!(out["runs"]["by_status"]["succeeded"], 2, "{out:#}");
    assert_eq!(out["runs"]["by_status"]["failed"], 1, "{out:#}");
    assert_eq!(out["delivered"], json!(["hook"]));
    let files: Vec<String> = out["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 2);
    let md_path = files.iter().find(|f| f.ends_with(".md")).unwrap();
    let md = std::fs::read_to_string(d.path().join(".multijob/data").join(md_path)).unwrap();
    assert!(md.starts_with("# Ops report"), "{md}");
    assert!(
        md.contains("| broken | 1 | 0 | 1 | simulated failure"),
        "{md}"
    );
    let json_path = files.iter().find(|f| f.ends_with(".json")).unwrap();
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join(".multijob/data").join(json_path)).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["jobs"]["ok"]["runs"], 2);
    let hooks = peer.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].1["subject"], "Ops report");
    assert!(
        hooks[0].1["text"]
            .as_str()
            .unwrap()
            .contains("| ok | 2 | 2 | 0 |")
    );
}

/// Requests a peer saw: (Authorization header, JSON body).
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// An OpenAI-compatible peer: asks for two tool calls (kv, message), then,
/// once it sees tool results, answers "done". Records every request.
fn start_llm() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new()
                .route(
                    "/v1/chat/completions",
                    post(
                        |State(seen): State<Seen>,
                         headers: HeaderMap,
                         Json(body): Json<Value>| async move {
                            let auth = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            seen.lock().unwrap().push((auth, body.clone()));
                            let last_role = body["messages"]
                                .as_array()
                                .and_then(|m| m.last())
                                .map(|m| m["role"].clone())
                                .unwrap_or(Value::Null);
                            let message = if last_role == "tool" {
                                json!({"role": "assistant", "content": "done"})
                            } else {
                                json!({"role": "assistant", "content": null, "tool_calls": [
                                    {"id": "c1", "type": "function", "function": {"name": "kv",
                                        "arguments": "{\"set\": \"agent_note\", \"value\": \"hello\"}"}},
                                    {"id": "c2", "type": "function", "function": {"name": "message",
                                        "arguments": "{\"connector\": \"nowhere\", \"text\": \"hi\"}"}}
                                ]})
                            };
                            Json(json!({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}))
                        },
                    ),
                )
                .with_state(state);
    let addr = common::serve(app);
    (format!("{addr}/v1"), seen)
}

#[test]
fn an_agent_calls_an_allowed_tool_is_refused_another_and_finishes() {
    let (base, seen) = start_llm();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        &format!(
            "kind: Connector\nid: ai\nprovider: openai\nbase_url: {base}\nsecrets: {{api_key: \"${{env:AI_TEST_KEY}}\"}}\n---\nid: agentjob\ntype: agent.workflow\nlimits: {{llm_tokens: 1000}}\nsteps:\n  - id: think\n    agent: {{connector: ai, goal: Note it down, tools: [kv], max_steps: 3}}\n---\nid: seed\ntype: agent.workflow\ninputs: {{prompt: Check the shop}}\n"
        ),
    );
    let daemon = Daemon::start_env(d.path(), &[], &[("AI_TEST_KEY", "sk-test-123")]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let r = d.run(&["trigger", "agentjob"]);
    let id = r.stdout().split_whitespace().nth(2).unwrap().to_string();
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the agent", |v| {
        v["status"] == "succeeded" || v["status"] == "failed"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let out = &run["output"];
    assert_eq!(out["answer"], "done");
    let calls = out["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{out:#}");
    assert_eq!(calls[0]["tool"], "kv");
    assert_eq!(calls[0]["output"], "hello");
    assert_eq!(calls[1]["tool"], "message");
    assert!(
        calls[1]["output"]["error"]
            .as_str()
            .unwrap()
            .contains("not allowed"),
        "{out:#}"
    );
    // Two model calls of 7 tokens each, recorded on the run.
    assert_eq!(run["usage"]["llm_tokens"], 14, "{run:#}");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests[0].0.as_deref(), Some("Bearer sk-test-123"));
    let offered: Vec<&str> = requests[0].1["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(offered, ["kv"], "only the allowed tool is offered");
    let refusal = requests[1].1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| {
            m["role"] == "tool" && m["content"].as_str().unwrap_or("").contains("not allowed")
        });
    assert!(refusal, "the refusal is reported to the model");

    // A seed-style job with only inputs.prompt runs as an implicit agent.
    let r = d.run(&["trigger", "seed"]);
    let id = r.stdout().split_whitespace().nth(2).unwrap().to_string();
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the implicit agent", |v| {
        v["status"] == "succeeded" || v["status"] == "failed"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["output"]["answer"], "done");
    assert_eq!(run["steps"][0]["id"], "agent");
    // Both agents' model calls are counted per connector.
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    let line = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    };
    assert_eq!(
        line("multijob_llm_tokens_total{connector=\"ai\"}").as_deref(),
        Some("28"),
        "{metrics}"
    );
    assert_eq!(
        line("multijob_connector_requests_total{connector=\"ai\",status=\"ok\"}").as_deref(),
        Some("4"),
        "{metrics}"
    );
}

#[test]
fn http_request_and_monitor_channel_jobs() {
    let (base, peer) = start_peer();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/m.yaml",
        &format!(
            "kind: Connector\nid: shop\nprovider: http\nbase_url: {base}\nrate_limit: {{per_minute: 60, burst: 1}}\n---\nkind: Connector\nid: dead\nprovider: http\nbase_url: http://127.0.0.1:9\n---\nkind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n---\nid: price\ntype: http.request\ninputs: {{connector: shop, path: \"/prices/{{{{ inputs.sku }}}}\", sku: B}}\n---\nid: watch\ntype: monitor.channel\nretry_policy: {{max_retry: 1, backoff_sec: [0.1]}}\ninputs: {{connectors: [shop, dead], alert_connector: hook, timeout_ms: 2000}}\n"
        ),
    );
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let trigger = |job: &str| {
        let r = d.run(&["trigger", job]);
        r.assert_code(0);
        r.stdout().split_whitespace().nth(2).unwrap().to_string()
    };
    let id = trigger("price");
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the request", |v| {
        v["status"] == "succeeded"
    });
    assert_eq!(run["output"]["status"], 200);
    assert_eq!(run["output"]["body"]["price"], 20, "{run:#}");

    let id = trigger("watch");
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the monitor to fail", |v| {
        v["status"] == "failed"
    });
    assert_eq!(run["attempt"], 2, "retried once: {run:#}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("1 of 2 connectors down: dead"),
        "{run:#}"
    );
    let hooks = peer.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1, "one alert across both attempts: {hooks:#?}");
    assert!(hooks[0].1["text"].as_str().unwrap().contains("dead"));
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    let up = |connector: &str| {
        metrics
            .lines()
            .find(|l| {
                l.contains("name=\"connector_up\"")
                    && l.contains(&format!("connector=\"{connector}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    };
    assert_eq!(up("shop").as_deref(), Some("1.0"), "{metrics}");
    assert_eq!(up("dead").as_deref(), Some("0.0"), "{metrics}");
    let count = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count("multijob_connector_requests_total{connector=\"dead\",status=\"error\"}"),
        2,
        "{metrics}"
    );
    // The price request (200) and the two checks of `/`, which this peer
    // answers with 404: reachable, so up.
    assert_eq!(
        count("multijob_connector_requests_total{connector=\"shop\",status=\"404\"}"),
        2,
        "{metrics}"
    );
    assert_eq!(
        count("multijob_connector_requests_total{connector=\"shop\",status=\"200\"}"),
        1,
        "{metrics}"
    );
    // shop allows one call a second: the monitor's checks waited for it.
    assert!(
        count("multijob_rate_limited_total{connector=\"shop\"}") >= 1,
        "{metrics}"
    );
}

#[test]
fn a_message_is_sent_once_across_kill_9_and_restart() {
    let (base, peer) = start_peer();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/k.yaml",
        &format!(
            "kind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n---\nid: slow\ntype: simulation.heavy\ninputs: {{work_ms: 100}}\n---\nid: notify\ntype: agent.workflow\nretry_policy: {{max_retry: 2, backoff_sec: [0.1]}}\nsteps:\n  - id: tell\n    message: {{connector: hook, text: before the crash}}\n  - id: wait\n    kv: {{set: marker, value: 1}}\n  - id: sleep\n    schedule_job: {{job: slow, delay_sec: 0}}\n  - id: pause\n    http: {{url: \"{base}/flaky\", connector: hook}}\n"
        ),
    );
    // The last step reaches the peer through the hook connector's host.
    let id;
    {
        let daemon = Daemon::start(d.path(), &[]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        let r = d.run(&["trigger", "notify"]);
        id = r.stdout().split_whitespace().nth(2).unwrap().to_string();
        // The first attempt sends, then fails at /flaky (503) and waits for
        // its retry: kill the daemon during that wait.
        let start = std::time::Instant::now();
        while peer.hooks.lock().unwrap().is_empty() {
            assert!(
                start.elapsed().as_secs() < 20,
                "no message\n{}",
                daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The first attempt ended: the message went out and its key was
        // recorded (a kill between the two sends again: at-least-once).
        daemon.wait_until(
            &format!("/api/v1/runs/{id}"),
            "the first attempt to end",
            |v| v["attempts"][0]["finished_at"].is_string(),
        );
        daemon.signal("KILL");
    }
    let daemon = Daemon::start(d.path(), &[]);
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the run to finish", |v| {
        v["status"] == "succeeded" || v["status"] == "failed"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log());
    assert!(run["attempt"].as_u64().unwrap() >= 2, "{run:#}");
    let hooks = peer.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1, "sent once across the crash: {hooks:#?}");
}

/// A run interrupted by a shutdown goes on after the restart from the step
/// that was cut short: the steps it completed are not done again.
#[test]
fn an_interrupted_run_goes_on_from_the_step_cut_short() {
    let (base, peer) = start_peer();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/i.yaml",
        &format!(
            "kind: Connector\nid: shop\nprovider: http\nbase_url: {base}\n---\nid: order\ntype: agent.workflow\nsteps:\n  - id: price\n    http: {{connector: shop, path: /prices/A}}\n  - id: wait\n    http: {{connector: shop, path: /slow, timeout_ms: 20000}}\n  - id: done\n    set: {{price: \"{{{{ steps.price.output.body.price }}}}\"}}\n"
        ),
    );
    let id;
    {
        let mut daemon = Daemon::start(d.path(), &["--grace", "0.2"]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        let r = d.run(&["trigger", "order"]);
        id = r.stdout().split_whitespace().nth(2).unwrap().to_string();
        let start = std::time::Instant::now();
        while peer.slow_calls.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed().as_secs() < 20, "{}", daemon.log());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        daemon.signal("TERM");
        let start = std::time::Instant::now();
        while daemon.is_running() {
            assert!(start.elapsed().as_secs() < 20, "{}", daemon.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let daemon = Daemon::start(d.path(), &[]);
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the run to finish", |v| {
        v["status"] == "succeeded" || v["status"] == "failed"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log());
    assert_eq!(peer.price_calls.load(Ordering::SeqCst), 1, "{run:#}");
    assert_eq!(peer.slow_calls.load(Ordering::SeqCst), 2, "{run:#}");
    assert_eq!(run["output"]["price"], 10, "{run:#}");
    // One attempt, interrupted and taken up again: not a retry.
    assert_eq!(run["attempt"], 1, "{run:#}");
}

#[test]
fn an_approval_step_pauses_the_run_until_approved_or_rejected() {
    let (base, peer) = start_peer();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/g.yaml",
        &format!(
            "kind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n---\nid: gated\ntype: agent.workflow\nsteps:\n  - id: draft\n    set: {{text: \"price cut for {{{{ inputs.sku }}}}\"}}\n  - id: tell_before\n    message: {{connector: hook, text: \"asking: {{{{ steps.draft.output.text }}}}\"}}\n  - id: gate\n    approval: {{reason: \"cut the price of {{{{ inputs.sku }}}}?\"}}\n  - id: publish\n    message: {{connector: hook, text: \"published after {{{{ steps.gate.output.decision }}}}\"}}\n"
        ),
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let trigger = |sku: &str| {
        let r = d.run(&[
            "trigger",
            "gated",
            "--inputs",
            &format!("{{\"sku\": \"{sku}\"}}"),
        ]);
        r.assert_code(0);
        r.stdout().split_whitespace().nth(2).unwrap().to_string()
    };
    let id = trigger("A1");
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the pause", |v| {
        v["status"] == "awaiting_approval"
    });
    assert_eq!(run["steps"][2]["status"], "awaiting_approval", "{run:#}");
    let (_, approvals) = daemon.get("/api/v1/approvals");
    let ap = approvals["items"][0].clone();
    assert_eq!(ap["status"], "pending");
    assert_eq!(ap["reason"], "cut the price of A1?");
    assert_eq!(ap["run_id"], id.as_str());
    // The worker is free while the run waits: other runs go on.
    let status = daemon.get("/api/v1/status").1;
    assert_eq!(status["workers"]["busy"], 0, "{status:#}");
    d.run(&["approvals", "approve", ap["id"].as_str().unwrap()])
        .assert_code(0);
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the resume", |v| {
        v["status"] == "succeeded"
    });
    let gate = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "gate")
        .unwrap()
        .clone();
    assert_eq!(gate["output"]["decision"], "approved", "{run:#}");
    let hooks = peer.hooks.lock().unwrap().clone();
    let texts: Vec<&str> = hooks
        .iter()
        .filter_map(|(_, b)| b["text"].as_str())
        .collect();
    // The steps before the gate ran once: the run resumed after it.
    assert_eq!(
        texts,
        ["asking: price cut for A1", "published after approved"],
        "{texts:?}"
    );

    let id = trigger("B2");
    daemon.wait_until(&format!("/api/v1/runs/{id}"), "the second pause", |v| {
        v["status"] == "awaiting_approval"
    });
    let (_, approvals) = daemon.get("/api/v1/approvals");
    let pending = approvals["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["status"] == "pending")
        .unwrap()
        .clone();
    d.run(&["approvals", "reject", pending["id"].as_str().unwrap()])
        .assert_code(0);
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the rejection", |v| {
        v["status"] == "failed"
    });
    assert!(
        run["error"].as_str().unwrap().contains("rejected"),
        "{run:#}"
    );
    let published = peer
        .hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| b["text"].as_str().unwrap_or("").starts_with("published"))
        .count();
    assert_eq!(published, 1, "a rejected run does not publish");
}

/// A shop that counts the orders it is asked to create.
fn start_order_peer() -> (String, Arc<AtomicUsize>) {
    let orders = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/create-order",
            post(|State(n): State<Arc<AtomicUsize>>| async move {
                let id = n.fetch_add(1, Ordering::SeqCst) + 1;
                Json(json!({"order_id": format!("o-{id}")}))
            }),
        )
        .with_state(orders.clone());
    (common::serve(app), orders)
}

/// Approve the run's pending approval and wait until the run leaves
/// `awaiting_approval` for `next` (the next pause, or the end).
fn approve_pending(
    d: &ConfigDir,
    daemon: &Daemon,
    run_id: &str,
    next: &str,
    extra: &[&str],
) -> Value {
    let (_, approvals) = daemon.get("/api/v1/approvals");
    let ap = approvals["items"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["status"] == "pending" && a["run_id"] == run_id)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no pending approval for {run_id}: {approvals:#}"));
    let mut args = vec![
        "approvals",
        "approve",
        ap["id"].as_str().unwrap_or_default(),
    ];
    args.extend_from_slice(extra);
    d.run(&args).assert_code(0);
    daemon.wait_until(&format!("/api/v1/runs/{run_id}"), next, |v| {
        v["status"] == next
            && (next != "awaiting_approval"
                || v["steps"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["id"] == "nested")))
    })
}

/// Defect: approving re-ran the whole workflow from its first step, so the
/// order was created twice and the counter ended at 2. The run resumes
/// after the approval step with the recorded outputs of the steps before
/// it, at the top level and inside a skill, in both stores.
fn an_approved_run_resumes_after_its_approval_step(redis: Option<&str>) {
    let (base, orders) = start_order_peer();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/order.yaml",
        &format!(
            r#"kind: Connector
id: shop
provider: http
base_url: {base}
---
id: order
type: agent.workflow
steps:
  - id: create
    http: {{connector: shop, method: POST, path: /create-order, json: {{sku: A}}}}
  - id: count
    kv: {{incr: orders}}
  - id: gate
    approval: {{reason: "ship {{{{ steps.create.output.body.order_id }}}}?"}}
  - id: after
    set: {{order: "{{{{ steps.create.output.body.order_id }}}}", count: "{{{{ steps.count.output }}}}"}}
  - id: nested
    uses: order-and-ask
  - id: check
    kv: {{get: orders}}
"#
        ),
    );
    d.write(
        "skills.d/ask.yaml",
        r#"kind: Skill
id: order-and-ask
steps:
  - id: create
    http: {connector: shop, method: POST, path: /create-order, json: {sku: B}}
  - id: gate
    approval: {reason: "ship {{ steps.create.output.body.order_id }} too?"}
  - id: done
    set: {order: "{{ steps.create.output.body.order_id }}"}
"#,
    );
    d.run(&["validate"]).assert_code(0);
    let extra: Vec<&str> = redis.map(|url| vec!["--redis", url]).unwrap_or_default();
    let daemon = Daemon::start(d.path(), &extra);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let mut args = vec!["trigger", "order"];
    args.extend_from_slice(&extra);
    let r = d.run(&args);
    r.assert_code(0);
    let id = r
        .stdout()
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    daemon.wait_until(&format!("/api/v1/runs/{id}"), "the first pause", |v| {
        v["status"] == "awaiting_approval"
    });
    assert_eq!(orders.load(Ordering::SeqCst), 1);
    // The top-level gate: the skill's order is created, then its gate waits.
    approve_pending(&d, &daemon, &id, "awaiting_approval", &extra);
    assert_eq!(orders.load(Ordering::SeqCst), 2, "{}", daemon.log());
    let run = approve_pending(&d, &daemon, &id, "succeeded", &extra);
    assert_eq!(
        orders.load(Ordering::SeqCst),
        2,
        "each order created once: {run:#}"
    );
    let output = |step: &str| {
        run["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == step))
            .map(|s| s["output"].clone())
            .unwrap_or(Value::Null)
    };
    // Outputs recorded before the pause are still there for templates.
    assert_eq!(
        output("after"),
        json!({"order": "o-1", "count": 1}),
        "{run:#}"
    );
    assert_eq!(output("nested"), json!({"order": "o-2"}), "{run:#}");
    assert_eq!(output("check"), json!(1), "the counter ran once: {run:#}");
    assert_eq!(output("gate")["decision"], "approved", "{run:#}");
    // Two pauses, one attempt.
    assert_eq!(run["attempt"], 1, "{run:#}");
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(1), "{run:#}");
}

#[test]
fn an_approved_run_resumes_after_its_approval_step_embedded() {
    an_approved_run_resumes_after_its_approval_step(None);
}

#[test]
fn an_approved_run_resumes_after_its_approval_step_redis() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    an_approved_run_resumes_after_its_approval_step(Some(&server.url()));
}

/// Defect: while a run waited for approval it showed `attempt: 0`; after
/// approval its attempts list had two entries numbered 1; after rejection
/// the run was failed while its attempt and approval step still said
/// `awaiting_approval`. A pause keeps attempt 1 open, the resume continues
/// it, and a rejection closes it and the step as failed.
#[test]
fn an_approval_keeps_one_attempt_and_a_rejection_closes_it() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/g.yaml",
        "id: gated\ntype: agent.workflow\nsteps:\n  - id: draft\n    set: {a: 1}\n  - id: gate\n    approval: {reason: ok?}\n  - id: after\n    set: {b: 2}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let trigger = || {
        let r = d.run(&["trigger", "gated"]);
        r.assert_code(0);
        r.stdout()
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    let pause = |id: &str| {
        daemon.wait_until(&format!("/api/v1/runs/{id}"), "the pause", |v| {
            v["status"] == "awaiting_approval"
        })
    };
    let step = |run: &Value, id: &str| {
        run["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id).cloned())
            .unwrap_or(Value::Null)
    };

    let id = trigger();
    let run = pause(&id);
    assert_eq!(run["attempt"], 1, "{run:#}");
    let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1, "{run:#}");
    assert_eq!(attempts[0]["n"], 1, "{run:#}");
    assert_eq!(attempts[0]["status"], "awaiting_approval", "{run:#}");
    assert!(attempts[0]["finished_at"].is_null(), "{run:#}");
    d.run(&["approvals", "approve", &format!("ap-{id}-gate")])
        .assert_code(0);
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the end", |v| {
        v["status"] == "succeeded"
    });
    assert_eq!(run["attempt"], 1, "{run:#}");
    let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1, "one attempt, resumed: {run:#}");
    assert_eq!(attempts[0]["n"], 1, "{run:#}");
    assert_eq!(attempts[0]["status"], "succeeded", "{run:#}");
    assert!(attempts[0]["resumed_at"].is_string(), "{run:#}");
    assert_eq!(step(&run, "gate")["status"], "succeeded", "{run:#}");

    let id = trigger();
    pause(&id);
    d.run(&["approvals", "reject", &format!("ap-{id}-gate")])
        .assert_code(0);
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the rejection", |v| {
        v["status"] == "failed"
    });
    assert_eq!(run["attempt"], 1, "{run:#}");
    let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1, "{run:#}");
    assert_eq!(attempts[0]["status"], "failed", "{run:#}");
    assert!(attempts[0]["finished_at"].is_string(), "{run:#}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rejected"),
        "{run:#}"
    );
    let gate = step(&run, "gate");
    assert_eq!(gate["status"], "failed", "{run:#}");
    assert!(
        gate["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rejected"),
        "{run:#}"
    );
    assert_eq!(step(&run, "after"), Value::Null, "{run:#}");
}
