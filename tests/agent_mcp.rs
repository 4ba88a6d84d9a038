//! Agent tools end to end through the real binary: a real stdio MCP
//! server (tests/fixtures/mcp/fs_server.py, logging the calls it gets)
//! and skills, offered to an agent driven by a loopback fake OpenAI that
//! scripts its tool calls and records every request.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

/// What the fake model answers a request with (an assistant message).
type Script = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// Requests the model got, with when each arrived and was answered.
#[derive(Default)]
struct Seen {
    requests: Vec<(Value, Instant, Instant)>,
}

type SeenRef = Arc<Mutex<Seen>>;

/// The request bodies the model got, in order.
fn bodies(seen: &SeenRef) -> Vec<Value> {
    let seen = seen.lock().expect("seen");
    seen.requests.iter().map(|r| r.0.clone()).collect()
}

fn start_model(script: Script) -> (String, SeenRef) {
    let seen: SeenRef = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State((seen, script)): State<(SeenRef, Script)>, Json(body): Json<Value>| async move {
                    let arrived = Instant::now();
                    let message = script(&body);
                    let mut seen = seen.lock().expect("seen");
                    seen.requests.push((body, arrived, Instant::now()));
                    Json(json!({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
                },
            ),
        )
        .with_state((seen.clone(), script));
    (format!("{}/v1", common::serve(app)), seen)
}

/// A message asking for these calls (function name, arguments).
fn calls(list: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({"id": format!("c{i}"), "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    json!({"role": "assistant", "content": null, "tool_calls": calls})
}

fn answer(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

/// The tool results a request carries, in order.
fn tool_results(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn goal(body: &Value) -> String {
    body["messages"][1]["content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn offered(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A config dir with the model connector `ai`, the MCP connector `fs`
/// (logging its calls to `calls.log` in the data dir) and `rest`; and the
/// data dir with `work/notes.txt`.
struct Setup {
    d: ConfigDir,
    data: tempfile::TempDir,
    redis: Option<String>,
}

fn setup(model: &str, rest: &str) -> Setup {
    let data = tempfile::tempdir().expect("data dir");
    std::fs::create_dir_all(data.path().join("work")).expect("work dir");
    std::fs::write(data.path().join("work/notes.txt"), "hello from notes\n").expect("notes");
    let server = common::repo().join("tests/fixtures/mcp/fs_server.py");
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        &format!(
            "kind: Connector\nid: ai\nprovider: openai\nbase_url: {model}\nsecrets: {{api_key: \"${{env:AI_TEST_KEY}}\"}}\n---\n\
             kind: Connector\nid: fs\nprovider: mcp\ntransport: stdio\ncwd: work\n\
             command: [python3, {}, --log, {}]\n---\n{rest}",
            server.display(),
            data.path().join("calls.log").display()
        ),
    );
    Setup {
        d,
        data,
        redis: None,
    }
}

const AI_KEY: &str = "sk-test-agent-mcp-0123456789";

impl Setup {
    fn daemon(&mut self, redis: Option<&str>) -> Daemon {
        self.redis = redis.map(str::to_string);
        let data = self.data.path().display().to_string();
        let mut args = vec!["--data-dir", data.as_str()];
        if let Some(url) = redis {
            args.extend(["--redis", url]);
        }
        let daemon = Daemon::start_env(self.d.path(), &args, &[("AI_TEST_KEY", AI_KEY)]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        daemon
    }

    fn run(&self, daemon: &Daemon, job: &str) -> Value {
        let id = match &self.redis {
            Some(url) => self.d.trigger(job, &["--redis", url]),
            None => self.d.trigger(job, &[]),
        };
        daemon.run_ended(&id)
    }

    fn logged_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.data.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn pgid(call: &Value) -> i32 {
    let text = call["output"].as_str().expect("pid output");
    let v: Value = serde_json::from_str(text).expect("pid json");
    v["pgid"].as_i64().expect("pgid") as i32
}

/// Round 1: the server's pid and a file; round 2: a denied tool, a
/// malformed call (the server dies on it) and one the model made up;
/// round 3: pid again (a fresh server) and arguments that are not an
/// object (refused before the server sees them); then the answer.
fn reading_script() -> Script {
    Arc::new(|body: &Value| match tool_results(body).len() {
        0 => calls(&[
            ("mcp__fs__pid", json!({})),
            (
                "mcp__fs__read_file",
                json!({"path": "notes.txt", "note": AI_KEY}),
            ),
        ]),
        2 => calls(&[
            ("mcp__fs__environ", json!({})),
            ("mcp__fs__read_file", json!({})),
            ("mcp__nowhere__x", json!({})),
        ]),
        5 => calls(&[
            ("mcp__fs__pid", json!({})),
            ("mcp__fs__echo", json!("not an object")),
        ]),
        _ => answer("read it"),
    })
}

fn an_agent_reads_a_file_over_mcp_and_a_denied_tool_is_refused(redis: Option<&str>) {
    let (model, seen) = start_model(reading_script());
    let mut s = setup(
        &model,
        "id: reader\ntype: agent.workflow\ntools: {deny: [\"mcp:fs.environ\", \"mcp:fs.write*\"]}\n\
         steps:\n  - id: read\n    agent: {connector: ai, goal: read, tools: [\"mcp:fs.*\"], max_steps: 5}\n",
    );
    let daemon = s.daemon(redis);
    let run = s.run(&daemon, "reader");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log());
    assert_eq!(run["output"]["answer"], "read it");
    let calls = run["output"]["calls"].as_array().expect("calls").clone();
    assert_eq!(calls.len(), 7, "{calls:#?}");

    let requests = bodies(&seen);
    let tools = offered(&requests[0]);
    assert!(
        tools.contains(&"mcp__fs__read_file".to_string()),
        "{tools:?}"
    );
    assert!(
        !tools.contains(&"mcp__fs__environ".to_string()),
        "denied, so not offered: {tools:?}"
    );
    // The server's answer is in the next request; the call is recorded.
    assert!(
        tool_results(&requests[1])[1].contains("hello from notes"),
        "{:#}",
        requests[1]
    );
    assert_eq!(calls[1]["tool"], "mcp:fs.read_file");
    assert_eq!(calls[1]["outcome"], "ok");
    assert!(
        calls[1]["excerpt"]
            .as_str()
            .unwrap_or("")
            .contains("hello from notes")
    );
    assert!(calls[1]["duration_ms"].is_u64());
    assert_eq!(
        calls[1]["args"]["note"], "***",
        "secrets are redacted: {:#}",
        calls[1]
    );
    assert!(!run.to_string().contains(AI_KEY));
    // Refused, reported back, never executed.
    assert_eq!(calls[2]["tool"], "mcp:fs.environ");
    assert_eq!(calls[2]["outcome"], "refused");
    assert_eq!(calls[4]["tool"], "mcp:nowhere.x");
    assert_eq!(calls[4]["outcome"], "refused");
    let results = tool_results(&requests[2]);
    assert!(results[2].contains("not allowed"), "{results:?}");
    // A malformed call the server dies on is an error the model reads.
    assert_eq!(calls[3]["outcome"], "error", "{:#}", calls[3]);
    assert!(results[3].contains("MCP server `fs`"), "{results:?}");
    assert_eq!(calls[6]["outcome"], "error");
    let text = calls[6]["output"]["error"].as_str().unwrap_or("");
    assert!(text.contains("must be a JSON object"), "{text}");
    let logged = s.logged_calls();
    assert!(!logged.contains(&"environ".to_string()), "{logged:?}");
    assert_eq!(logged, ["pid", "read_file", "read_file", "pid"]);
    // The next call opened a fresh server; after the run none is left.
    let (first, second) = (pgid(&calls[0]), pgid(&calls[5]));
    assert_ne!(first, second);
    common::procs::assert_group_gone(first);
    common::procs::assert_group_gone(second);
    let (status, _) = daemon.get("/healthz");
    assert_eq!(status, 200, "the daemon keeps serving");
    // Two opens and three calls went well, the malformed call did not.
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    for (status, n) in [("ok", "5"), ("error", "1")] {
        let name =
            format!("multijob_connector_requests_total{{connector=\"fs\",status=\"{status}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&name));
        assert_eq!(
            line.and_then(|l| l.rsplit(' ').next()),
            Some(n),
            "{metrics}"
        );
    }
}

#[test]
fn an_agent_reads_a_file_over_mcp_and_a_denied_tool_is_refused_embedded() {
    an_agent_reads_a_file_over_mcp_and_a_denied_tool_is_refused(None);
}

#[test]
fn an_agent_reads_a_file_over_mcp_and_a_denied_tool_is_refused_redis() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    an_agent_reads_a_file_over_mcp_and_a_denied_tool_is_refused(Some(&server.url()));
}

/// A server that hangs (and left a grandchild `sleep`) when the run's
/// timeout ends it: its whole process group is gone.
#[test]
fn a_timed_out_run_leaves_no_server_process() {
    let script: Script = Arc::new(|body: &Value| match tool_results(body).len() {
        0 => calls(&[("mcp__fs__pid", json!({}))]),
        1 => calls(&[("mcp__fs__hang", json!({}))]),
        _ => answer("unreachable"),
    });
    let (model, seen) = start_model(script);
    let mut s = setup(
        &model,
        "id: hangs\ntype: agent.workflow\ntimeout_ms: 3000\n\
         steps:\n  - id: wait\n    agent: {connector: ai, goal: wait, tools: [\"mcp:fs.*\"]}\n",
    );
    let daemon = s.daemon(None);
    let run = s.run(&daemon, "hangs");
    assert_eq!(run["status"], "timed_out", "{run:#}");
    let requests = seen.lock().expect("seen").requests.len();
    assert_eq!(requests, 2, "the model was asked twice before the hang");
    let text = tool_results(&seen.lock().expect("seen").requests[1].0)[0].clone();
    let v: Value = serde_json::from_str(&serde_json::from_str::<String>(&text).expect("string"))
        .expect("pid json");
    common::procs::assert_group_gone(v["pgid"].as_i64().expect("pgid") as i32);
    assert_eq!(s.logged_calls(), ["pid", "hang"]);
}

/// The first agent step makes the server add a tool (it announces
/// `tools/list_changed`); the run's second agent step, on the same
/// session, is offered it.
#[test]
fn tools_list_changed_is_honoured_between_two_agent_steps() {
    let script: Script = Arc::new(|body: &Value| {
        if goal(body) == "add" && tool_results(body).is_empty() {
            calls(&[("mcp__fs__add_tool", json!({"name": "fresh"}))])
        } else {
            answer("ok")
        }
    });
    let (model, seen) = start_model(script);
    let mut s = setup(
        &model,
        "id: grows\ntype: agent.workflow\nsteps:\n\
         \x20 - id: add\n    agent: {connector: ai, goal: add, tools: [\"mcp:fs.*\"]}\n\
         \x20 - id: look\n    agent: {connector: ai, goal: look, tools: [\"mcp:fs.*\"]}\n",
    );
    let daemon = s.daemon(None);
    let run = s.run(&daemon, "grows");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let requests = bodies(&seen);
    let fresh = "mcp__fs__fresh".to_string();
    assert!(!offered(&requests[0]).contains(&fresh));
    let look = requests
        .iter()
        .find(|r| goal(r) == "look")
        .expect("the second step asked");
    assert!(offered(look).contains(&fresh), "{:?}", offered(look));
}

/// `skill:greet` runs the skill with the model's arguments (checked
/// against its params); `skill:deep`, whose own agent calls itself, stops
/// at the depth limit with an error the model reads.
#[test]
fn a_skill_tool_runs_the_skill_and_the_depth_limit_holds() {
    let script: Script = Arc::new(|body: &Value| {
        let results = tool_results(body);
        match (goal(body).as_str(), results.len()) {
            ("greet", 0) => calls(&[
                ("skill__greet", json!({"name": "Ann"})),
                ("skill__greet", json!({"name": 7})),
            ]),
            ("greet", 2) => calls(&[("skill__deep", json!({}))]),
            ("deeper", 0) => calls(&[("skill__deep", json!({}))]),
            (_, _) => answer(&format!("saw: {}", results.join(" | "))),
        }
    });
    let (model, seen) = start_model(script);
    let mut s = setup(
        &model,
        "kind: Skill\nid: greet\nparams: {type: object, required: [name], properties: {name: {type: string}}}\n\
         steps:\n  - id: say\n    set: {greeting: \"hi {{ inputs.name }}\"}\n---\n\
         kind: Skill\nid: deep\nsteps:\n  - id: again\n    agent: {connector: ai, goal: deeper, tools: [\"skill:deep\"]}\n---\n\
         id: asks\ntype: agent.workflow\nsteps:\n  - id: go\n    agent: {connector: ai, goal: greet, tools: [\"skill:*\"]}\n",
    );
    let daemon = s.daemon(None);
    let run = s.run(&daemon, "asks");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let calls = run["output"]["calls"].as_array().expect("calls").clone();
    assert_eq!(calls[0]["tool"], "skill:greet");
    assert_eq!(calls[0]["output"]["greeting"], "hi Ann", "{calls:#?}");
    assert_eq!(calls[1]["outcome"], "error");
    assert!(
        calls[1]["output"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("params"),
        "{:#}",
        calls[1]
    );
    let requests = seen.lock().expect("seen").requests.len();
    assert_eq!(
        requests,
        2 + 2 * 2 + 1,
        "the outer agent three times, each deeper agent twice"
    );
    let deep = calls[2]["output"].to_string();
    assert!(deep.contains("levels deep"), "{deep}");
}

/// A step naming an MCP tool of a connector that is not an MCP server, or
/// a skill that does not exist, fails validation at its line.
#[test]
fn unknown_mcp_connectors_and_skills_fail_validation_at_their_line() {
    let s = setup(
        "http://127.0.0.1:9/v1",
        "id: bad\ntype: agent.workflow\nsteps:\n  - id: go\n    agent:\n      connector: ai\n      goal: g\n      tools:\n\
         \x20       - \"mcp:ai.*\"\n        - \"mcp:nope.read\"\n        - \"skill:missing\"\n        - \"mcp:*\"\n        - \"skill:*\"\n",
    );
    let run = s.d.run(&["validate"]);
    run.assert_code(1);
    let out = run.stdout() + &run.stderr();
    for (line, text) in [
        (22, "connector `ai` is not an MCP server"),
        (23, "no Connector `nope`"),
        (24, "no Skill `missing`"),
    ] {
        let at = format!("a.yaml:{line}:");
        assert!(
            out.lines().any(|l| l.contains(&at) && l.contains(text)),
            "{at} {text}: {out}"
        );
    }
    assert!(
        !out.contains("a.yaml:25:") && !out.contains("a.yaml:26:"),
        "globs pass: {out}"
    );
}

/// The figure: the agent loop's own time per tool call, from the model's
/// answer to its next request, less the call's own duration (the MCP round
/// trip), over 20 rounds of `echo`.
#[test]
fn agent_loop_overhead_per_tool_call() {
    let script: Script = Arc::new(|body: &Value| match tool_results(body).len() {
        n if n < 20 => calls(&[("mcp__fs__echo", json!({"text": format!("round {n}")}))]),
        _ => answer("done"),
    });
    let (model, seen) = start_model(script);
    let mut s = setup(
        &model,
        "id: loop\ntype: agent.workflow\nsteps:\n  - id: go\n    agent: {connector: ai, goal: loop, tools: [\"mcp:fs.echo\"], max_steps: 25}\n",
    );
    let daemon = s.daemon(None);
    let run = s.run(&daemon, "loop");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let calls = run["output"]["calls"].as_array().expect("calls").clone();
    assert_eq!(calls.len(), 20);
    let seen = seen.lock().expect("seen");
    let mut gaps: Vec<Duration> = seen
        .requests
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].2))
        .collect();
    let in_tools: u64 = calls.iter().filter_map(|c| c["duration_ms"].as_u64()).sum();
    let total: Duration = gaps.iter().sum();
    gaps.sort();
    let per_call = total.saturating_sub(Duration::from_millis(in_tools)) / 20;
    println!(
        "agent loop per tool call: gap p50 {:?}, p99 {:?}; MCP calls {in_tools} ms in all; \
         overhead ≈ {per_call:?} per call",
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
    assert!(per_call < Duration::from_millis(200), "{per_call:?}");
}
