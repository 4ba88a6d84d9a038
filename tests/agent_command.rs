//! The agent's `command` tool with the real binary and a loopback fake
//! OpenAI that scripts the tool calls (issue #24, "the command tool"):
//! allowed argv prefixes run without a shell (`&` is an argument), others
//! are refused and nothing runs, an `approve` prefix parks the run and runs
//! once after approval across a retry (embedded store and Redis), the child
//! sees none of the daemon's environment, a timeout leaves no process, and
//! without `--allow-command` every call is refused naming the flag.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

/// The fake model's state: each goal's scripted tool arguments, the
/// requests seen, and whether the first answer after a tool result in a
/// goal named `*-fail-once` has failed yet.
#[derive(Clone, Default)]
struct Fake {
    scripts: Arc<HashMap<String, Vec<Value>>>,
    seen: Arc<Mutex<Vec<Value>>>,
    failed: Arc<AtomicBool>,
}

/// Stateless per conversation: with n tool results so far it asks for
/// the goal's call n, then answers "done". A run resumed or retried from
/// the start of the step gets the same calls again.
async fn complete(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    fake.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(body.clone());
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let goal = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    let done = messages.iter().filter(|m| m["role"] == "tool").count();
    if done > 0 && goal.ends_with("-fail-once") && !fake.failed.swap(true, Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
    }
    let script = fake.scripts.get(&goal).cloned().unwrap_or_default();
    let message = match script.get(done) {
        Some(args) => json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("c{done}"), "type": "function",
             "function": {"name": "command", "arguments": args.to_string()}}]}),
        None => json!({"role": "assistant", "content": "done"}),
    };
    Json(
        json!({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
    )
    .into_response()
}

fn start_fake() -> (String, Fake) {
    let argv = |a: &[&str]| json!({"argv": a});
    let scripts = HashMap::from([
        (
            "tools".to_string(),
            vec![
                argv(&["echo", "hi"]),
                argv(&["sh", "-c", "touch owned"]),
                argv(&["echo", "-q", "&", "rm", "x"]),
                argv(&["env"]),
                json!({"argv": "echo hi"}),
                json!({"argv": ["echo", "hi"], "shell": true}),
                argv(&["seq", "100000"]),
            ],
        ),
        ("slow".to_string(), vec![argv(&["sleep", "30"])]),
        (
            "gate".to_string(),
            vec![argv(&["mktemp", "-p", ".", "gated.XXXXXX"])],
        ),
        (
            "push-fail-once".to_string(),
            vec![argv(&["mktemp", "-p", ".", "pushed.XXXXXX"])],
        ),
    ]);
    let fake = Fake {
        scripts: Arc::new(scripts),
        ..Fake::default()
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(fake.clone());
    (format!("{}/v1", common::serve(app)), fake)
}

fn config(d: &ConfigDir, base: &str) {
    d.write(
        "jobs.d/agents.yaml",
        &format!(
            r#"kind: Connector
id: ai
provider: openai
base_url: {base}
secrets: {{api_key: "${{env:AI_TEST_KEY}}"}}
---
id: tools
type: agent.workflow
commands:
  allow: [[echo], [env], [seq]]
  env: {{GREETING: "${{env:CMD_TEST_GREETING}}"}}
steps:
  - id: work
    agent: {{connector: ai, goal: tools, tools: [command], max_steps: 9}}
---
id: slow
type: agent.workflow
commands: {{allow: [[sleep]], timeout_ms: 500}}
steps:
  - id: work
    agent: {{connector: ai, goal: slow, tools: [command], max_steps: 3}}
---
id: push
type: agent.workflow
retry_policy: {{max_retry: 2, backoff_sec: [0]}}
commands:
  allow: [[echo]]
  approve: [[mktemp, -p, ., pushed.XXXXXX]]
steps:
  - id: work
    agent: {{connector: ai, goal: push-fail-once, tools: [command], max_steps: 3}}
---
id: gate
type: agent.workflow
commands: {{approve: [[mktemp]]}}
steps:
  - id: work
    agent: {{connector: ai, goal: gate, tools: [command], max_steps: 3}}
"#
        ),
    );
}

const ENV: [(&str, &str); 3] = [
    ("AI_TEST_KEY", "sk-test-123"),
    ("CMD_TEST_GREETING", "hello-from-a-reference"),
    ("MULTIJOB_TEST_MARKER", "leak"),
];

fn calls(run: &Value) -> Vec<Value> {
    run["output"]["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn allowed_commands_run_without_a_shell_or_the_daemons_environment() {
    let (base, _fake) = start_fake();
    let d = ConfigDir::new();
    config(&d, &base);
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start_env(d.path(), &["--allow-command"], &ENV);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let run = daemon.run_ended(&d.trigger("tools", &[]));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let calls = calls(&run);
    assert_eq!(calls.len(), 7, "{run:#}");
    let out = |i: usize| calls[i]["output"].clone();
    assert_eq!(out(0)["stdout"], "hi\n", "{run:#}");
    assert_eq!(out(0)["exit_code"], 0);
    assert_eq!(out(0)["argv"], json!(["echo", "hi"]));
    assert!(out(0)["duration_ms"].is_u64(), "{run:#}");
    // A shell is not on the list: refused, and nothing ran.
    assert_eq!(out(1)["refused"], true, "{run:#}");
    assert!(out(1).get("exit_code").is_none(), "{run:#}");
    let owned = walk(d.path()).into_iter().find(|p| p.ends_with("owned"));
    assert!(owned.is_none(), "sh ran: {owned:?}");
    // `&` and `rm` are arguments to echo.
    assert_eq!(out(2)["stdout"], "-q & rm x\n", "{run:#}");
    // Only PATH and the declared variable, whose value is masked.
    let env = out(3)["stdout"].as_str().unwrap_or_default().to_string();
    assert!(
        !env.contains("MULTIJOB_TEST_MARKER") && !env.contains("leak"),
        "{env}"
    );
    assert!(
        !env.contains("AI_TEST_KEY") && !env.contains("HOME="),
        "{env}"
    );
    assert!(env.contains("PATH=/usr/local/bin:/usr/bin:/bin\n"), "{env}");
    assert!(env.contains("GREETING="), "{env}");
    assert!(
        !env.contains("hello-from-a-reference"),
        "a secret in the output: {env}"
    );
    // Hostile shapes: a shell line, an extra field.
    assert!(
        out(4)["error"].as_str().is_some_and(|e| e.contains("argv")),
        "{run:#}"
    );
    assert!(
        out(5)["error"]
            .as_str()
            .is_some_and(|e| e.contains("`shell`")),
        "{run:#}"
    );
    // Output past max_output_bytes (default 256 KiB) is cut with a marker.
    let seq = out(6)["stdout"].as_str().unwrap_or_default().to_string();
    assert_eq!(out(6)["truncated"], true);
    assert!(seq.starts_with("1\n2\n") && seq.ends_with("[output cut at 262144 bytes]"));
    assert!(seq.len() < 262144 + 64, "{}", seq.len());
    // The daemon keeps serving.
    assert_eq!(daemon.get("/api/v1/status").0, 200);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn a_timed_out_command_leaves_no_process() {
    let (base, _fake) = start_fake();
    let d = ConfigDir::new();
    config(&d, &base);
    let daemon = Daemon::start_env(d.path(), &["--allow-command"], &ENV);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let started = std::time::Instant::now();
    let run = daemon.run_ended(&d.trigger("slow", &[]));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let out = calls(&run)[0]["output"].clone();
    assert_eq!(out["timed_out"], true, "{run:#}");
    assert!(
        out["error"].as_str().is_some_and(|e| e.contains("500 ms")),
        "{run:#}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let root = std::fs::canonicalize(d.path()).unwrap_or(d.path().to_path_buf());
    assert_eq!(
        sleepers_in(&root),
        Vec::<String>::new(),
        "a sleep outlived its timeout"
    );
}

/// Live `sleep 30` processes working inside `root`.
fn sleepers_in(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if cmdline == b"sleep\x0030\x00" && !zombie && cwd.starts_with(root) {
            found.push(pid);
        }
    }
    found
}

/// Approve, run once, fail after, retry: the recorded result comes back
/// and `mktemp` made one file.
fn an_approved_command_runs_once_across_a_retry(redis: Option<&str>) {
    let (base, fake) = start_fake();
    let d = ConfigDir::new();
    config(&d, &base);
    let extra: Vec<&str> = redis.map(|url| vec!["--redis", url]).unwrap_or_default();
    let mut flags = vec!["--allow-command"];
    flags.extend_from_slice(&extra);
    let daemon = Daemon::start_env(d.path(), &flags, &ENV);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let mut args = vec!["push"];
    args.extend_from_slice(&extra);
    let id = d.trigger(args[0], &args[1..]);
    daemon.wait_until(&format!("/api/v1/runs/{id}"), "the pause", |v| {
        v["status"] == "awaiting_approval"
    });
    let pushed = || {
        walk(d.path())
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("pushed."))
            })
            .count()
    };
    assert_eq!(pushed(), 0, "ran before approval");
    let mut list = vec!["approvals", "list"];
    list.extend_from_slice(&extra);
    let listed = d.run(&list);
    listed.assert_code(0);
    assert!(
        listed
            .stdout()
            .contains(r#"["mktemp", "-p", ".", "pushed.XXXXXX"]"#),
        "{}",
        listed.explain()
    );
    let (_, approvals) = daemon.get("/api/v1/approvals");
    let ap = approvals["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut approve = vec!["approvals", "approve", ap.as_str()];
    approve.extend_from_slice(&extra);
    d.run(&approve).assert_code(0);
    let run = daemon.run_ended(&id);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log());
    assert!(fake.failed.load(Ordering::SeqCst), "the model never failed");
    assert!(run["attempt"].as_u64() >= Some(2), "no retry: {run:#}");
    assert_eq!(pushed(), 1, "mktemp ran {} times: {run:#}", pushed());
    let out = calls(&run)[0]["output"].clone();
    assert_eq!(out["exit_code"], 0, "{run:#}");
    // Replaying the decision changes nothing.
    d.run(&approve);
    assert_eq!(pushed(), 1);
}

#[test]
fn an_approved_command_runs_once_across_a_retry_embedded() {
    an_approved_command_runs_once_across_a_retry(None);
}

#[test]
fn an_approved_command_runs_once_across_a_retry_redis() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    an_approved_command_runs_once_across_a_retry(Some(&server.url()));
}

#[test]
fn without_allow_command_the_tool_is_not_offered_and_calls_are_refused() {
    let (base, fake) = start_fake();
    let d = ConfigDir::new();
    config(&d, &base);
    let daemon = Daemon::start_env(d.path(), &[], &ENV);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let run = daemon.run_ended(&d.trigger("tools", &[]));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for call in calls(&run) {
        let error = call["output"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("--allow-command"), "{run:#}");
        assert!(call["output"].get("stdout").is_none(), "{run:#}");
    }
    let seen = fake.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(!seen.is_empty());
    for request in seen {
        let offered = request["tools"].as_array().cloned().unwrap_or_default();
        assert!(
            offered.iter().all(|t| t["function"]["name"] != "command"),
            "offered: {request}"
        );
    }
}

#[test]
fn a_bad_commands_policy_is_refused_with_its_line_and_no_value() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/bad.yaml",
        "id: bad\ntype: agent.workflow\ncommands:\n  allow: [[git, push]]\n  approve: [[git, push]]\n  env: {TOKEN: sk-literal-value}\n  cwd: ../outside\nsteps:\n  - id: s\n    set: {a: 1}\n---\nid: nopolicy\ntype: agent.workflow\nsteps:\n  - id: s\n    agent: {connector: x, goal: g, tools: [command]}\n",
    );
    let r = d.run(&["validate"]);
    let all = format!("{}{}", r.stdout(), r.stderr());
    assert_ne!(r.code(), Some(0), "{}", r.explain());
    assert!(all.contains("bad.yaml:5"), "both lists: {all}");
    assert!(
        all.contains("bad.yaml:6") && all.contains("literal value"),
        "{all}"
    );
    assert!(
        !all.contains("sk-literal-value"),
        "the value was echoed: {all}"
    );
    assert!(all.contains("bad.yaml:7") && all.contains("`..`"), "{all}");
    assert!(all.contains("needs the job's `commands` policy"), "{all}");
}

/// A rejection ends the run as failed (the approval mechanism's rule for
/// every approval), and the command never ran.
#[test]
fn a_rejected_command_fails_the_run_and_never_runs() {
    let (base, _fake) = start_fake();
    let d = ConfigDir::new();
    config(&d, &base);
    let daemon = Daemon::start_env(d.path(), &["--allow-command"], &ENV);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = d.trigger("gate", &[]);
    daemon.wait_until(&format!("/api/v1/runs/{id}"), "the pause", |v| {
        v["status"] == "awaiting_approval"
    });
    let (_, approvals) = daemon.get("/api/v1/approvals");
    let ap = approvals["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    d.run(&["approvals", "reject", &ap]).assert_code(0);
    let run = daemon.run_ended(&id);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("rejected")),
        "{run:#}"
    );
    let gated = walk(d.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("gated."))
        .count();
    assert_eq!(gated, 0, "a rejected command ran");
    assert_eq!(daemon.get("/api/v1/status").0, 200);
}
