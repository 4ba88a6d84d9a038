//! Prompt experiments end to end: an `llm` step with two variants, a
//! loopback fake OpenAI recording the prompts it got; each run records the
//! variant it used (the one whose prompt the model saw), and `/metrics`
//! counts the outcome per variant. Duplicate ids are refused at validation.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

fn start_llm() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State(seen): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                    seen.lock().unwrap().push(body);
                    Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop"}], "usage": {"total_tokens": 2}}))
                },
            ),
        )
        .with_state(seen.clone());
    (format!("{}/v1", common::serve(app)), seen)
}

#[test]
fn each_run_uses_one_variant_records_it_and_counts_it() {
    let (llm, seen) = start_llm();
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
