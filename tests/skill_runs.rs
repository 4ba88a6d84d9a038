//! A skill runs as a one-off run: `trigger skill:<id>` queues a run of the
//! skill's derived job, whose inputs are the skill's `with` (checked by its
//! `params` before any step runs), gated by its `requires_approval`, and
//! whose inputs never change its policy. One body over the embedded store
//! and over Redis with a separate worker process.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use common::worker::{FAST, WorkerProc};
use common::{ConfigDir, Daemon, Run};
use multijob::testkit::RedisServer;
use serde_json::{Value, json};

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An HTTP peer recording each POST's path and JSON body.
fn sink() -> (String, Received) {
    let received: Received = Arc::default();
    let record = |State(rx): State<Received>, Path(path): Path<String>, Json(body): Json<Value>| async move {
        rx.lock()
            .expect("sink lock")
            .push((format!("/{path}"), body));
        Json(json!({"ok": true}))
    };
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::post(record))
        .with_state(received.clone());
    (common::serve(app), received)
}

fn received_on(received: &Received, path: &str) -> Vec<Value> {
    let all = received.lock().expect("sink lock");
    all.iter()
        .filter(|(p, _)| p == path)
        .map(|(_, b)| b.clone())
        .collect()
}

fn write_config(d: &ConfigDir, peer: &str) {
    d.write(
        "jobs.d/peer.yaml",
        &format!("kind: Connector\nid: peer\nprovider: http\nbase_url: {peer}\n"),
    );
    d.write(
        "skills.d/brief.yaml",
        r#"kind: Skill
id: brief
description: Draft a brief
default_inputs: {tone: friendly}
params: {type: object, required: [topic], properties: {topic: {type: string}}}
steps:
  - id: post
    http: {connector: peer, method: POST, path: /brief, json: {topic: "{{ inputs.topic }}", tone: "{{ inputs.tone }}"}}
  - id: out
    set: {topic: "{{ inputs.topic }}", tone: "{{ inputs.tone }}", job: "{{ job.id }}"}
"#,
    );
    d.write(
        "skills.d/gated.yaml",
        r#"kind: Skill
id: gated
requires_approval: true
steps:
  - id: post
    http: {connector: peer, method: POST, path: /gated, json: {topic: "{{ inputs.topic }}"}}
  - id: out
    set: {topic: "{{ inputs.topic }}"}
"#,
    );
}

/// The daemon and, on Redis, the store's URL and a worker process that
/// executes every run (the daemon runs none itself).
struct Setup {
    daemon: Daemon,
    redis_url: Option<String>,
    _worker: Option<WorkerProc>,
}

impl Setup {
    fn start(d: &ConfigDir, redis: Option<&RedisServer>) -> Setup {
        let redis_url = redis.map(RedisServer::url);
        let mut args = vec!["--no-watch"];
        if let Some(url) = &redis_url {
            args.extend(["--redis", url.as_str(), "--workers", "0"]);
        }
        let daemon = Daemon::start_env(d.path(), &args, &FAST);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        let worker = redis.map(|r| WorkerProc::start(r, 2));
        Setup {
            daemon,
            redis_url,
            _worker: worker,
        }
    }

    /// `multijob ARGS --dir D` (plus `--redis URL` on Redis).
    fn cli(&self, d: &ConfigDir, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        if let Some(url) = &self.redis_url {
            all.extend(["--redis", url.as_str()]);
        }
        d.run(&all)
    }

    /// `trigger JOB ARGS`: the queued run's id.
    fn trigger(&self, d: &ConfigDir, job: &str, args: &[&str]) -> String {
        let mut all = vec!["trigger", job];
        all.extend_from_slice(args);
        let out = self.cli(d, &all);
        out.assert_code(0);
        out.queued_run_id()
    }

    fn run_in(&self, id: &str, status: &str) -> Value {
        self.daemon
            .wait_until(&format!("/api/v1/runs/{id}"), status, |v| {
                v["status"] == status
            })
    }
}

/// `trigger skill:brief -i topic=x`: the skill's steps run with `topic`
/// over its default inputs; the run is listed under its job; the
/// directory's jobs do not grow a derived one.
fn a_skill_runs_once_with_its_inputs(redis: Option<&RedisServer>) {
    let (peer, received) = sink();
    let d = ConfigDir::new();
    write_config(&d, &peer);
    let s = Setup::start(&d, redis);
    let id = s.trigger(&d, "skill:brief", &["-i", "topic=pricing"]);
    let run = s.run_in(&id, "succeeded");
    assert_eq!(run["job_id"], "skill:brief", "{run:#}");
    assert_eq!(run["trigger"], "manual", "{run:#}");
    assert_eq!(run["inputs"], json!({"topic": "pricing"}), "{run:#}");
    assert_eq!(run["steps"][0]["id"], "brief", "{run:#}");
    assert_eq!(
        run["steps"][0]["output"],
        json!({"topic": "pricing", "tone": "friendly", "job": "skill:brief"}),
        "{run:#}"
    );
    assert_eq!(
        received_on(&received, "/brief"),
        [json!({"topic": "pricing", "tone": "friendly"})]
    );
    let (_, listed) = s.daemon.get("/api/v1/runs?job=skill:brief");
    assert_eq!(listed["items"][0]["id"], id.as_str(), "{listed:#}");
    let (_, jobs) = s.daemon.get("/api/v1/jobs");
    let ids: Vec<&str> = jobs["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|j| j["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(ids.iter().all(|i| !i.starts_with("skill:")), "{jobs:#}");
    let (_, metrics) = common::http_raw(&s.daemon.url, "GET", "/metrics", &[]);
    let series = r#"multijob_runs_total{job="skill:brief",status="succeeded"} 1"#;
    assert!(metrics.lines().any(|l| l == series), "{metrics}");

    // Inputs that fail `params`: the run fails naming the field, and the
    // skill's first step never ran.
    let id = s.trigger(&d, "skill:brief", &["--inputs", r#"{"topic": 5}"#]);
    let run = s.run_in(&id, "failed");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the run's inputs do not match skill `brief` params: /topic:"),
        "{run:#}"
    );
    let id = s.trigger(&d, "skill:brief", &[]);
    let run = s.run_in(&id, "failed");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"topic\" is a required property"),
        "{run:#}"
    );
    assert_eq!(received_on(&received, "/brief").len(), 1);

    // A caller's `{{ }}` is data, not a template.
    let id = s.trigger(&d, "skill:brief", &["-i", "topic={{ run.id }}"]);
    let run = s.run_in(&id, "succeeded");
    assert_eq!(
        run["steps"][0]["output"]["topic"], "{{ run.id }}",
        "{run:#}"
    );
}

/// A gated skill parks its run until `approvals approve`; inputs that name
/// policy (`requires_approval`, `tools`, `limits`) only land in inputs.
fn a_gated_skill_waits_and_inputs_never_change_policy(redis: Option<&RedisServer>) {
    let (peer, received) = sink();
    let d = ConfigDir::new();
    write_config(&d, &peer);
    let s = Setup::start(&d, redis);
    let policy = json!({
        "topic": "t", "requires_approval": false, "allow_command": true,
        "tools": {"allow": ["command"]}, "limits": {"http_calls": 0},
    });
    let out = s.cli(
        &d,
        &["trigger", "skill:gated", "--inputs", &policy.to_string()],
    );
    out.assert_code(0)
        .assert_line("the job requires approval", "approvals list");
    let id = out.queued_run_id();
    s.run_in(&id, "awaiting_approval");
    assert!(received_on(&received, "/gated").is_empty());
    s.cli(&d, &["approvals", "approve", &format!("ap-{id}")])
        .assert_code(0);
    let run = s.run_in(&id, "succeeded");
    assert_eq!(run["inputs"], policy, "{run:#}");
    // `limits.http_calls: 0` in the inputs did not stop the http step.
    assert_eq!(received_on(&received, "/gated"), [json!({"topic": "t"})]);
    assert_eq!(run["steps"][0]["output"], json!({"topic": "t"}), "{run:#}");

    // A skill removed by a new revision: its parked run is handled like a
    // removed job's (approved, it does not start).
    let id = s.trigger(&d, "skill:gated", &["-i", "topic=late"]);
    s.run_in(&id, "awaiting_approval");
    d.remove("skills.d/gated.yaml");
    let (_, before) = s.daemon.get("/api/v1/status");
    s.daemon.signal("HUP");
    s.daemon
        .wait_until("/api/v1/status", "the new revision", |v| {
            v["revision"] != before["revision"]
        });
    s.cli(&d, &["approvals", "approve", &format!("ap-{id}")])
        .assert_code(0);
    let run = s.run_in(&id, "cancelled");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("deleted"), "{run:#}");
    assert_eq!(received_on(&received, "/gated").len(), 1);
    let out = s.cli(&d, &["trigger", "skill:gated"]);
    out.assert_code(1)
        .assert_stderr_has("no job `skill:gated` in the applied revision");
}

/// Typos and malformed inputs fail with what to do; the daemon serves on.
fn hostile_triggers_fail_clearly(redis: Option<&RedisServer>) {
    let (peer, _received) = sink();
    let d = ConfigDir::new();
    write_config(&d, &peer);
    let s = Setup::start(&d, redis);
    s.cli(&d, &["trigger", "skill:breif"])
        .assert_code(1)
        .assert_stderr_has("(did you mean `skill:brief`?)");
    s.cli(&d, &["trigger", "brief"])
        .assert_code(1)
        .assert_stderr_has("no job `brief` in the applied revision")
        .assert_stderr_has("(did you mean `skill:brief`?)");
    s.cli(&d, &["trigger", "skill:brief", "-i", "topic"])
        .assert_code(1)
        .assert_stderr_has("`topic` is not KEY=VALUE");
    s.cli(&d, &["trigger", "skill:", "-i", "topic=x"])
        .assert_code(1)
        .assert_stderr_has("no job `skill:`");
    let huge = format!("topic={}", "x".repeat(100_000));
    let id = s.trigger(&d, "skill:brief", &["-i", &huge]);
    let run = s.run_in(&id, "succeeded");
    assert_eq!(
        run["steps"][0]["output"]["topic"].as_str().map(str::len),
        Some(100_000)
    );
    s.daemon
        .wait_until("/readyz", "still ready", |v| v["ready"] == true);
}

/// A test on the embedded store and one on Redis, with the same body.
macro_rules! on_both_stores {
    ($($body:ident: $sqlite:ident, $redis:ident;)*) => {$(
        #[test]
        fn $sqlite() {
            $body(None);
        }

        #[test]
        fn $redis() {
            let redis = RedisServer::start().expect("redis-server");
            $body(Some(&redis));
        }
    )*};
}

on_both_stores! {
    a_skill_runs_once_with_its_inputs:
        a_skill_runs_once_with_its_inputs_on_sqlite,
        a_skill_runs_once_with_its_inputs_on_redis_with_a_worker_process;
    a_gated_skill_waits_and_inputs_never_change_policy:
        a_gated_skill_waits_and_inputs_never_change_policy_on_sqlite,
        a_gated_skill_waits_and_inputs_never_change_policy_on_redis;
    hostile_triggers_fail_clearly:
        hostile_triggers_fail_clearly_on_sqlite,
        hostile_triggers_fail_clearly_on_redis;
}
