//! Agent memory end to end: a real daemon, a loopback fake OpenAI that
//! records what it was asked, and a loopback site whose `/x` fails until
//! told otherwise. Failures of `http:GET /x` put it on the avoid list the
//! next run's model sees; a success takes it off; `memory show` lists it;
//! `memory reset` forgets it. On the embedded store and on Redis. And
//! prompt experiments (`variants`), which the same fake model observes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

/// A loopback fake OpenAI that records each request and answers with
/// the message `answer` makes of it.
fn fake_openai(answer: fn(&Value) -> Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(
                move |State(seen): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                    seen.lock().unwrap().push(body.clone());
                    Json(json!({"choices": [{"index": 0, "message": answer(&body), "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
                },
            ),
        )
        .with_state(seen.clone());
    (format!("{}/v1", common::serve(app)), seen)
}

/// A model that asks for `GET /x` once per run, then answers "done".
fn start_llm() -> (String, Arc<Mutex<Vec<Value>>>) {
    fake_openai(|body| {
        let after_tool = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool");
        if after_tool {
            json!({"role": "assistant", "content": "done"})
        } else {
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "http",
                    "arguments": "{\"connector\": \"site\", \"path\": \"/x?try=1\"}"}}
            ]})
        }
    })
}

/// `/x`: 404 while `failing`, else 200.
fn start_site(failing: Arc<AtomicBool>) -> String {
    let app = axum::Router::new()
        .route(
            "/x",
            get(|State(failing): State<Arc<AtomicBool>>| async move {
                if failing.load(Ordering::SeqCst) {
                    (StatusCode::NOT_FOUND, "Not Found")
                } else {
                    (StatusCode::OK, "ok")
                }
            }),
        )
        .with_state(failing);
    common::serve(app)
}

/// The system prompt of each run's first model request, in order.
fn first_system_prompts(seen: &Mutex<Vec<Value>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|b| b["messages"].as_array().map(Vec::len) == Some(2))
        .map(|b| {
            b["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn memory_remembers_failures_and_forgets_on_success_and_reset(redis: Option<&str>) {
    let (llm, seen) = start_llm();
    let failing = Arc::new(AtomicBool::new(true));
    let site = start_site(failing.clone());
    let d = ConfigDir::new();
    d.write(
        "jobs.d/probe.yaml",
        &format!(
            "kind: Connector\nid: ai\nprovider: openai\nbase_url: {llm}\nsecrets: {{api_key: \"${{env:AI_TEST_KEY}}\"}}\n---\nkind: Connector\nid: site\nprovider: http\nbase_url: {site}\n---\nid: probe\ntype: agent.workflow\nsteps:\n  - id: look\n    agent: {{connector: ai, goal: Fetch x, tools: [http], max_steps: 3}}\n"
        ),
    );
    let store: Vec<&str> = redis.map(|url| vec!["--redis", url]).unwrap_or_default();
    let daemon = Daemon::start_env(d.path(), &store, &[("AI_TEST_KEY", "sk-test")]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let cli = |args: &[&str]| d.run(&[args, &store[..]].concat());
    let run_once = || {
        let id = cli(&["trigger", "probe"]).queued_run_id();
        let run = daemon.run_ended(&id);
        assert_eq!(run["status"], "succeeded", "{run:#}");
    };
    run_once();
    run_once();
    failing.store(false, Ordering::SeqCst);
    run_once();
    run_once();
    let prompts = first_system_prompts(&seen);
    assert_eq!(prompts.len(), 4, "{prompts:#?}");
    assert!(!prompts[0].contains("Avoid these"), "{}", prompts[0]);
    assert!(
        !prompts[1].contains("Avoid these"),
        "one failure is not a streak: {}",
        prompts[1]
    );
    assert!(
        prompts[2].contains("Avoid these; they failed recently: http:GET /x (2 failures: "),
        "the third run is told: {}",
        prompts[2]
    );
    assert!(prompts[2].contains("404"), "{}", prompts[2]);
    assert!(
        !prompts[3].contains("Avoid these"),
        "a success clears it: {}",
        prompts[3]
    );

    let shown = cli(&["memory", "show", "probe", "-o", "json"]);
    shown.assert_code(0);
    let entry = &shown.json()["signatures"]["http:GET /x"];
    assert_eq!(
        (entry["failures"].clone(), entry["successes"].clone()),
        (json!(2), json!(2)),
        "{}",
        shown.stdout()
    );
    assert_eq!(entry["consecutive_failures"], 0);
    cli(&["memory", "show", "probe"]).assert_line("http:GET /x", "2");
    let (_, job) = daemon.get("/api/v1/jobs/probe");
    assert_eq!(job["memory"]["http:GET /x"]["failures"], 2, "{job:#}");

    // Two failures again, then a reset: the next run sees no avoid list.
    failing.store(true, Ordering::SeqCst);
    run_once();
    run_once();
    let reset = cli(&["memory", "reset", "probe"]);
    reset.assert_code(0);
    assert!(
        reset.stdout().contains("reset memory probe"),
        "{}",
        reset.explain()
    );
    run_once();
    let prompts = first_system_prompts(&seen);
    assert!(
        !prompts[6].contains("Avoid these"),
        "reset forgets: {}",
        prompts[6]
    );
    let after = cli(&["memory", "show", "probe", "-o", "json"]).json();
    assert_eq!(
        after["signatures"]["http:GET /x"]["failures"], 1,
        "{after:#}"
    );

    // Hostile: unknown names and odd keys are refused; the daemon goes on.
    let unknown = cli(&["memory", "reset", "no-such-job"]);
    unknown
        .assert_code(1)
        .assert_stderr_has("no job and no agent memory named \"no-such-job\"");
    cli(&["memory", "show", "../x"])
        .assert_code(1)
        .assert_stderr_has("memory key");
    run_once();
}

#[test]
fn memory_remembers_failures_and_forgets_on_success_and_reset_embedded() {
    memory_remembers_failures_and_forgets_on_success_and_reset(None);
}

#[test]
fn memory_remembers_failures_and_forgets_on_success_and_reset_redis() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    memory_remembers_failures_and_forgets_on_success_and_reset(Some(&server.url()));
}

/// A memory key that could climb out of its prefix, or fill the store, is
/// refused by `validate` with the file and line.
#[test]
fn odd_memory_keys_are_refused_at_validation() {
    let d = ConfigDir::new();
    let big = "k".repeat(10 * 1024);
    d.write(
        "jobs.d/a.yaml",
        &format!(
            "kind: Connector\nid: ai\nprovider: openai\nbase_url: http://127.0.0.1:9/v1\n---\nid: a\ntype: agent.workflow\nsteps:\n  - id: one\n    agent: {{connector: ai, goal: g, memory: ../x}}\n  - id: two\n    agent: {{connector: ai, goal: g, memory: {big}}}\n"
        ),
    );
    let r = d.run(&["validate"]);
    r.assert_code(1);
    let out = format!("{}{}", r.stdout(), r.stderr());
    assert!(
        out.contains("jobs.d/a.yaml:10:45: error[schema]"),
        "{}",
        r.explain()
    );
    assert!(
        out.contains("jobs.d/a.yaml:12:45: error[schema]"),
        "{}",
        r.explain()
    );
}

// Prompt experiments: an `llm` step with two variants; each run records
// the variant it used (the one whose prompt the model saw), and `/metrics`
// counts the outcome per variant. Duplicate ids are refused at validation.

#[test]
fn each_run_uses_one_variant_records_it_and_counts_it() {
    let (llm, seen) = fake_openai(|_| json!({"role": "assistant", "content": "ok"}));
    let d = ConfigDir::new();
    d.write(
        "jobs.d/ask.yaml",
        &format!(
            "kind: Connector\nid: ai\nprovider: openai\nbase_url: {llm}\nsecrets: {{api_key: \"${{env:AI_TEST_KEY}}\"}}\n---\nid: ask\ntype: agent.workflow\nsteps:\n  - id: q\n    llm:\n      connector: ai\n      prompt: base prompt\n      variants:\n        - {{id: terse, weight: 1, prompt: say it short}}\n        - {{id: chatty, weight: 1, prompt: say it long, model: big-model}}\n"
        ),
    );
    let daemon = Daemon::start_env(d.path(), &[], &[("AI_TEST_KEY", "sk-test")]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let mut used = Vec::new();
    for i in 0..6 {
        let id = d.trigger("ask", &[]);
        let run = daemon.run_ended(&id);
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let variant = run["steps"][0]["variant"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let body = seen.lock().unwrap()[i].clone();
        let prompt = body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match variant.as_str() {
            "terse" => assert_eq!(prompt, "say it short"),
            "chatty" => {
                assert_eq!(prompt, "say it long");
                assert_eq!(body["model"], "big-model");
            }
            other => panic!("no variant recorded ({other:?}): {run:#}"),
        }
        used.push(variant);
    }
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    for v in ["terse", "chatty"] {
        let n = used.iter().filter(|u| *u == v).count();
        let line = format!(
            "multijob_variant_runs_total{{job=\"ask\",step=\"q\",variant=\"{v}\",status=\"succeeded\"}} {n}"
        );
        assert!(n == 0 || metrics.contains(&line), "{line} in\n{metrics}");
    }
}

/// Cross checks run once the schema passes, so one case per file.
#[test]
fn duplicate_variant_ids_and_zero_weights_are_refused_at_validation() {
    let d = ConfigDir::new();
    let job = |variants: &str| {
        format!(
            "kind: Connector\nid: ai\nprovider: openai\nbase_url: http://127.0.0.1:9/v1\n---\nid: a\ntype: agent.workflow\nsteps:\n  - id: q\n    llm:\n      connector: ai\n      prompt: p\n      variants:\n{variants}"
        )
    };
    d.write(
        "jobs.d/a.yaml",
        &job("        - {id: x, prompt: one}\n        - {id: x, prompt: two}\n"),
    );
    let r = d.run(&["validate"]);
    r.assert_code(1);
    r.assert_line("jobs.d/a.yaml:15:", "variant id `x` is used twice");
    d.write(
        "jobs.d/a.yaml",
        &job("        - {id: x, prompt: one}\n        - {id: y, weight: 0}\n"),
    );
    let r = d.run(&["validate"]);
    r.assert_code(1);
    r.assert_line(
        "jobs.d/a.yaml:15:",
        "less than or equal to the minimum of 0",
    );
}
