use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::clock::Clock;
use crate::run::RunError;
use crate::spec::model::{Skill, Step};
use crate::spec::snapshot::Resource;
use crate::store::runs::StepRecord;

/// In-process side effects: only `kv` does anything, which is all these
/// tests need (no HTTP peer is involved).
#[derive(Default)]
struct Stub {
    finished: Mutex<Vec<i64>>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
    flaky_calls: AtomicU32,
}

fn refuse<'a>(what: &'static str) -> ActionFuture<'a> {
    Box::pin(async move { Err(RunError::Permanent(format!("{what} is not stubbed"))) })
}

/// The [`Actions`] a stub does not do: each refuses, naming itself.
macro_rules! refused {
    ($($action:ident),*) => {$(
        fn $action<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
            refuse(stringify!($action))
        }
    )*};
}

impl Actions for Stub {
    refused!(http, llm, agent);
    /// Delivery is recorded in process; no peer is involved.
    fn message<'a>(&'a self, call: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
        Box::pin(async move {
            Ok(json!({"delivered": true, "provider_message_id": call.idempotency_key}))
        })
    }
    refused!(schedule_job, approval, metric);

    /// `get: N` sleeps (10 - N) * 10 ms and returns N * 10; `incr:
    /// flaky` fails twice, retryably; `get: slow` sleeps an hour;
    /// `get: key` returns the idempotency key.
    fn kv<'a>(&'a self, call: &'a ActionCall<'a>, args: Value) -> ActionFuture<'a> {
        Box::pin(async move {
            if args["incr"] == "flaky" {
                let n = self.flaky_calls.fetch_add(1, Ordering::SeqCst) + 1;
                return if n < 3 {
                    Err(RunError::retryable(format!("flaky call {n}")))
                } else {
                    Ok(json!(n))
                };
            }
            match &args["get"] {
                Value::Number(n) => {
                    let n = n.as_i64().unwrap();
                    let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis((10 - n as u64) * 10)).await;
                    self.in_flight.fetch_sub(1, Ordering::SeqCst);
                    self.finished.lock().unwrap().push(n);
                    Ok(json!(n * 10))
                }
                Value::String(s) if s == "slow" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(json!("late"))
                }
                Value::String(s) if s == "key" => Ok(json!(call.idempotency_key)),
                other => Err(RunError::Permanent(format!("unknown key {other}"))),
            }
        })
    }
}

fn steps(v: Value) -> Vec<Step> {
    serde_json::from_value(v).expect("steps deserialize")
}

fn run_info() -> RunInfo {
    RunInfo {
        id: "run-1".into(),
        job_id: "job-a".into(),
        job_type: "agent.workflow".into(),
        attempt: 2,
        scheduled_at: Some("2026-11-24T07:00:00Z".into()),
        run_key: "job-a@2026-11-24T07:00:00Z".into(),
    }
}

fn skills(list: Value) -> BTreeMap<String, Resource<Skill>> {
    let list: Vec<Skill> = serde_json::from_value(list).expect("skills deserialize");
    list.into_iter()
        .map(|s| {
            (
                s.id.clone(),
                Resource::new(s, "skills.d/s.yaml".into(), 1, 1),
            )
        })
        .collect()
}

async fn run_with(
    skills: &BTreeMap<String, Resource<Skill>>,
    data_dir: &std::path::Path,
    list: Value,
    inputs: Value,
    stub: &Stub,
) -> (Result<Value, RunError>, Vec<StepRecord>) {
    let engine = Engine::new(skills, data_dir, Clock::Wall);
    let token = CancellationToken::new();
    engine
        .run(&steps(list), inputs, run_info(), stub, &token)
        .await
}

async fn run(
    list: Value,
    inputs: Value,
    stub: &Stub,
) -> (Result<Value, RunError>, Vec<StepRecord>) {
    run_with(&BTreeMap::new(), &std::env::temp_dir(), list, inputs, stub).await
}

fn statuses(records: &[StepRecord]) -> Vec<(&str, &str)> {
    records
        .iter()
        .map(|r| (r.id.as_str(), r.status.as_str()))
        .collect()
}

#[tokio::test]
async fn set_and_templates_across_steps() {
    let (result, records) = run(
        json!([
            {"id": "a", "set": {"n": "{{ inputs.n }}", "label": "n is {{ inputs.n }}"}},
            {"id": "b", "set": {
                "double": "{{ steps.a.output.n * 2 }}",
                "who": "{{ run.id }}/{{ run.job_id }}/{{ job.type }}/{{ run.attempt }}",
                "at": "{{ run.scheduled_at }}",
                "has_now": "{{ now | length > 10 }}",
            }},
        ]),
        json!({"n": 21}),
        &Stub::default(),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        json!({"double": 42, "who": "run-1/job-a/agent.workflow/2",
               "at": "2026-11-24T07:00:00Z", "has_now": true})
    );
    assert_eq!(statuses(&records), [("a", "succeeded"), ("b", "succeeded")]);
    assert_eq!(records[0].output, json!({"n": 21, "label": "n is 21"}));
}

#[tokio::test]
async fn a_false_condition_skips_the_step() {
    let (result, records) = run(
        json!([
            {"id": "a", "when": "inputs.n > 5", "set": {"x": 1}},
            {"id": "b", "when": "{{ inputs.n < 5 }}", "set": {"skipped_a": "{{ steps.a.output is none }}"}},
            {"id": "c", "when": false, "set": {"x": 3}},
        ]),
        json!({"n": 2}),
        &Stub::default(),
    )
    .await;
    // The last step was skipped: its output, null, is the run's.
    assert_eq!(result.unwrap(), Value::Null);
    assert_eq!(
        statuses(&records),
        [("a", "skipped"), ("b", "succeeded"), ("c", "skipped")]
    );
    assert_eq!(records[0].output, Value::Null);
    assert_eq!(records[1].output, json!({"skipped_a": true}));
}

#[tokio::test(start_paused = true)]
async fn foreach_outputs_follow_item_order_whatever_finishes_first() {
    let stub = Stub::default();
    let (result, records) = run(
        json!([
            {"id": "list", "set": {"items": [1, 2, 3, 4, 5, 6, 7, 8]}},
            {"id": "each", "foreach": "{{ steps.list.output.items }}", "concurrency": 4,
             "kv": {"get": "{{ item }}"}},
            {"id": "loops", "foreach": ["a", "b", "c"],
             "set": {"v": "{{ item }}{{ loop.index }}/{{ loop.length }}", "first": "{{ loop.first }}",
                     "last": "{{ loop.last }}", "i0": "{{ loop.index0 }}"}},
            {"id": "keys", "foreach": [1, 2], "kv": {"get": "key"}},
        ]),
        json!({}),
        &stub,
    )
    .await;
    result.unwrap();
    assert_eq!(records[1].output, json!([10, 20, 30, 40, 50, 60, 70, 80]));
    // Later items sleep less, so completion order is not item order.
    let finished = stub.finished.lock().unwrap().clone();
    assert_ne!(finished, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(stub.max_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(
        records[2].output,
        json!([
            {"v": "a1/3", "first": true, "last": false, "i0": 0},
            {"v": "b2/3", "first": false, "last": false, "i0": 1},
            {"v": "c3/3", "first": false, "last": true, "i0": 2},
        ])
    );
    assert_eq!(records[3].output, json!(["run-1:keys:0", "run-1:keys:1"]));
}

#[tokio::test]
async fn foreach_needs_a_list() {
    let (result, _) = run(
        json!([{"id": "each", "foreach": "{{ inputs.n }}", "set": {}}]),
        json!({"n": 3}),
        &Stub::default(),
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("step `each`: foreach must yield a list, got a number"),
        "{message}"
    );
}

#[tokio::test]
async fn continue_on_error_records_the_error_and_goes_on() {
    let (result, records) = run(
        json!([
            {"id": "bad", "continue_on_error": true, "kv": {"get": "nothing"}},
            {"id": "after", "set": {"bad_output": "{{ steps.bad.output }}"}},
        ]),
        json!({}),
        &Stub::default(),
    )
    .await;
    assert_eq!(result.unwrap(), json!({"bad_output": null}));
    assert_eq!(
        statuses(&records),
        [("bad", "failed"), ("after", "succeeded")]
    );
    let error = records[0].error.as_deref().unwrap();
    assert!(
        error.contains("step `bad`") && error.contains("unknown key"),
        "{error}"
    );
}

#[tokio::test]
async fn continue_on_error_in_a_foreach_keeps_the_other_items() {
    let (result, records) = run(
        json!([
            {"id": "each", "foreach": [1, "missing", 2], "continue_on_error": true,
             "kv": {"get": "{{ item }}"}},
        ]),
        json!({}),
        &Stub::default(),
    )
    .await;
    assert_eq!(result.unwrap(), json!([10, null, 20]));
    assert_eq!(statuses(&records), [("each", "succeeded")]);
    // The failed item is on the step's record, not only in the log.
    let error = records[0].error.as_deref().unwrap_or("");
    assert!(error.starts_with("1 of 3 items failed"), "{error}");
    assert!(error.contains("item 1:"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_step_retries_retryable_errors() {
    let stub = Stub::default();
    let (result, records) = run(
        json!([{"id": "flaky", "retry": {"max_retry": 2, "backoff_sec": [1]}, "kv": {"incr": "flaky"}}]),
        json!({}),
        &stub,
    )
    .await;
    assert_eq!(result.unwrap(), json!(3));
    assert_eq!(statuses(&records), [("flaky", "succeeded")]);

    // One retry is not enough: the retryable error fails the run as retryable.
    let stub = Stub::default();
    let (result, _) = run(
        json!([{"id": "flaky", "retry": {"max_retry": 1}, "kv": {"incr": "flaky"}}]),
        json!({}),
        &stub,
    )
    .await;
    assert_eq!(
        result,
        Err(RunError::retryable("step `flaky`: flaky call 2"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_times_out() {
    let (result, records) = run(
        json!([
            {"id": "slow", "timeout_ms": 50, "kv": {"get": "slow"}},
            {"id": "never", "set": {}},
        ]),
        json!({}),
        &Stub::default(),
    )
    .await;
    assert_eq!(
        result,
        Err(RunError::retryable("step `slow`: timed out after 50 ms"))
    );
    assert_eq!(statuses(&records), [("slow", "failed")]);
}

#[tokio::test]
async fn cancellation_aborts_the_current_action() {
    let engine_skills = BTreeMap::new();
    let engine = Engine::new(&engine_skills, std::env::temp_dir(), Clock::Wall);
    let token = CancellationToken::new();
    let list = steps(json!([{"id": "slow", "kv": {"get": "slow"}}, {"id": "never", "set": {}}]));
    let stub = Stub::default();
    let canceller = {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            token.cancel();
        })
    };
    let (result, records) = engine
        .run(&list, json!({}), run_info(), &stub, &token)
        .await;
    canceller.await.unwrap();
    assert_eq!(result, Err(RunError::Cancelled));
    assert_eq!(statuses(&records), [("slow", "cancelled")]);

    // A cancelled token stops before the first step, which is
    // recorded as cancelled (an interrupted run goes on from there).
    let (result, records) = engine
        .run(&list, json!({}), run_info(), &stub, &token)
        .await;
    assert_eq!(result, Err(RunError::Cancelled));
    assert_eq!(statuses(&records), [("slow", "cancelled")]);
    assert_eq!(records[0].duration_ms, 0);
}

#[tokio::test]
async fn files_write_and_read_inside_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (result, records) = run_with(
        &BTreeMap::new(),
        dir.path(),
        json!([
            {"id": "w", "files": {"write": "out/{{ inputs.name }}.txt", "content": "hi {{ inputs.name }}"}},
            {"id": "j", "files": {"write": "data.json", "content": {"n": "{{ inputs.n }}"}}},
            {"id": "r", "files": {"read": "{{ steps.w.output.path }}"}},
        ]),
        json!({"name": "ada", "n": 1}),
        &Stub::default(),
    )
    .await;
    assert_eq!(result.unwrap(), json!("hi ada"));
    assert_eq!(
        records[0].output,
        json!({"path": "out/ada.txt", "bytes": 6})
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data.json")).unwrap(),
        r#"{"n":1}"#
    );

    let (result, _) = run_with(
        &BTreeMap::new(),
        dir.path(),
        json!([{"id": "escape", "files": {"write": "../{{ inputs.name }}", "content": "x"}}]),
        json!({"name": "evil"}),
        &Stub::default(),
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("step `escape`") && message.contains("../evil"),
        "{message}"
    );
    assert!(!dir.path().parent().unwrap().join("evil").exists());
}

/// `c00` uses `c01` ... uses the last, whose one step is `last`.
fn uses_chain(n: usize, uses_per_skill: usize, last: Value) -> BTreeMap<String, Resource<Skill>> {
    skills(Value::Array(
        (0..n)
            .map(|i| {
                let steps: Vec<Value> = if i + 1 < n {
                    (0..uses_per_skill)
                        .map(|k| json!({"id": format!("u{k}"), "uses": format!("c{:02}", i + 1)}))
                        .collect()
                } else {
                    vec![last.clone()]
                };
                json!({"id": format!("c{i:02}"), "steps": steps})
            })
            .collect(),
    ))
}

#[tokio::test]
async fn validate_rejects_exactly_the_uses_chains_a_run_cannot_nest() {
    let dir = std::env::temp_dir();
    let call = json!([{"id": "call", "uses": "c00"}]);
    let end = json!({"id": "end", "set": {"end": true}});
    let ok = uses_chain(MAX_USES_DEPTH, 1, end.clone());
    assert!(crate::spec::uses::check(&ok).is_empty());
    let (result, _) = run_with(&ok, &dir, call.clone(), json!({}), &Stub::default()).await;
    assert_eq!(result.unwrap(), json!({"end": true}));

    let deep = uses_chain(MAX_USES_DEPTH + 1, 1, end);
    assert_eq!(crate::spec::uses::check(&deep)[0].code, "uses-depth");
    let (result, _) = run_with(&deep, &dir, call, json!({}), &Stub::default()).await;
    let message = result.unwrap_err().to_string();
    assert!(message.contains("nests deeper than 10"), "{message}");
}

#[test]
fn a_skill_used_by_many_steps_is_looked_into_once_before_a_run() {
    // 10 levels of 12 `uses` steps each: 12^9 paths to the last skill.
    // Looking for an approval step walked each path before the run
    // started, on the runtime's thread. The last skill fails, so the
    // run itself ends at the first path.
    let fail = json!({"id": "fail", "kv": {"get": "nope"}});
    let skills = uses_chain(MAX_USES_DEPTH, 12, fail);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let call = json!([{"id": "call", "uses": "c00"}]);
        let (result, _) = runtime.block_on(run_with(
            &skills,
            &std::env::temp_dir(),
            call,
            json!({}),
            &Stub::default(),
        ));
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run did not end within 60 s");
    assert!(result.unwrap_err().contains("unknown key"));
}

#[tokio::test]
async fn uses_overlays_default_inputs_and_nests() {
    let skills = skills(json!([
        {"id": "greet", "default_inputs": {"tone": "friendly", "name": "you"},
         "steps": [
            {"id": "inner", "uses": "shout", "with": {"text": "{{ inputs.tone }} hello {{ inputs.name }}"}},
            {"id": "done", "set": {"said": "{{ steps.inner.output }}", "tone": "{{ inputs.tone }}"}},
         ]},
        {"id": "shout", "steps": [{"id": "up", "set": {"v": "{{ inputs.text | upper }}"}},
                                  {"id": "last", "set": {"text": "{{ steps.up.output.v }}!"}}]},
        {"id": "loop", "steps": [{"id": "again", "uses": "loop"}]},
        {"id": "broken", "steps": [{"id": "oops", "set": {"x": "{{ inputs.nothing }}"}}]},
        {"id": "typed", "params": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
         "steps": [{"id": "n", "set": {"n": "{{ inputs.n }}"}}]},
    ]));
    let dir = std::env::temp_dir();
    let (result, records) = run_with(
        &skills,
        &dir,
        json!([{"id": "call", "uses": "greet", "with": {"name": "{{ inputs.who }}"}}]),
        json!({"who": "ada"}),
        &Stub::default(),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        json!({"said": {"text": "FRIENDLY HELLO ADA!"}, "tone": "friendly"})
    );
    assert_eq!(statuses(&records), [("call", "succeeded")]);

    let (result, _) = run_with(
        &skills,
        &dir,
        json!([{"id": "call", "uses": "loop"}]),
        json!({}),
        &Stub::default(),
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(message.contains("nests deeper than 10"), "{message}");

    let (result, _) = run_with(
        &skills,
        &dir,
        json!([{"id": "call", "uses": "broken"}]),
        json!({}),
        &Stub::default(),
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.starts_with("step `call`: skill `broken`: step `oops`:")
            && message.contains("inputs.nothing"),
        "{message}"
    );

    let (result, _) = run_with(
        &skills,
        &dir,
        json!([{"id": "call", "uses": "absent"}]),
        json!({}),
        &Stub::default(),
    )
    .await;
    assert_eq!(
        result,
        Err(RunError::Permanent("step `call`: no skill `absent`".into()))
    );

    // A templated `with` is checked against params once rendered.
    let call = |n: &str| json!([{"id": "call", "uses": "typed", "with": {"n": n}}]);
    let (result, _) = run_with(
        &skills,
        &dir,
        call("{{ inputs.n }}"),
        json!({"n": 4}),
        &Stub::default(),
    )
    .await;
    assert_eq!(result.unwrap(), json!({"n": 4}));
    let (result, _) = run_with(
        &skills,
        &dir,
        call("{{ inputs.n }}"),
        json!({"n": "four"}),
        &Stub::default(),
    )
    .await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("does not match skill `typed` params: /n:"),
        "{message}"
    );
}

/// The call of skill `brief` a derived job makes, with `inputs` as a run's.
async fn call_brief(
    skills: &BTreeMap<String, Resource<Skill>>,
    inputs: Value,
    skill_call: bool,
) -> (Result<Value, RunError>, Vec<StepRecord>) {
    let mut engine = Engine::new(skills, std::env::temp_dir(), Clock::Wall);
    if skill_call {
        engine = engine.with_skill_call(inputs.clone());
    }
    let call = steps(json!([{"id": "brief", "uses": "brief"}]));
    let token = CancellationToken::new();
    engine
        .run(&call, inputs, run_info(), &Stub::default(), &token)
        .await
}

/// A skill's one-off run: the run's inputs are its `with` as given (a
/// caller's `{{ }}` is data, never a template) and its params check them
/// before any step runs.
#[tokio::test]
async fn a_skill_call_takes_the_run_s_inputs_as_its_with_unrendered() {
    let skills = skills(
        json!([{"id": "brief", "default_inputs": {"tone": "dry", "topic": "x"},
        "params": {"type": "object", "required": ["topic"], "properties": {"topic": {"type": "string"}}},
        "steps": [{"id": "first", "kv": {"get": "key"}},
                  {"id": "out", "set": {"t": "{{ inputs.topic }}", "tone": "{{ inputs.tone }}"}}]}]),
    );
    let (result, records) = call_brief(&skills, json!({"topic": "{{ run.id }}"}), true).await;
    assert_eq!(result.unwrap(), json!({"t": "{{ run.id }}", "tone": "dry"}));
    assert_eq!(statuses(&records), [("brief", "succeeded")]);
    let (result, records) = call_brief(&skills, json!({"topic": 5}), true).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("the run's inputs do not match skill `brief` params: /topic:"),
        "{message}"
    );
    // Failed before its first step: the records hold the call only.
    assert_eq!(statuses(&records), [("brief", "failed")]);
    // Without the skill call, a bare `uses` gets no `with`: the job's
    // inputs never leak into it.
    let (result, _) = call_brief(&skills, json!({"topic": "mine"}), false).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("`with` does not match skill `brief` params: \"topic\" is a required"),
        "{message}"
    );
}

#[tokio::test]
async fn limits_bound_messages_per_run() {
    let no_skills = BTreeMap::new();
    let engine = Engine::new(&no_skills, std::env::temp_dir(), Clock::Wall).with_limits(Limits {
        messages: Some(2),
        ..Limits::default()
    });
    let list = steps(json!([
        {"id": "send", "foreach": [1, 2], "message": {"connector": "c", "text": "{{ item }}"}},
        {"id": "more", "message": {"connector": "c", "text": "three"}},
    ]));
    let token = CancellationToken::new();
    let (result, records) = engine
        .run(&list, json!({}), run_info(), &Stub::default(), &token)
        .await;
    assert_eq!(records[0].output[1]["provider_message_id"], "run-1:send:1");
    assert_eq!(
        result,
        Err(RunError::Permanent(
            "step `more`: the run reached its limit of 2 messages (limits.messages)".into()
        ))
    );
}

#[tokio::test]
async fn idempotency_keys_keep_skill_calls_apart() {
    let skills = skills(json!([
        {"id": "notify", "steps": [{"id": "send", "message": {"connector": "c", "text": "x"}}]},
    ]));
    let (result, records) = run_with(
        &skills,
        &std::env::temp_dir(),
        json!([
            {"id": "a", "uses": "notify"},
            {"id": "b", "foreach": [1, 2], "uses": "notify"},
        ]),
        json!({}),
        &Stub::default(),
    )
    .await;
    result.unwrap();
    assert_eq!(records[0].output["provider_message_id"], "run-1:a/send");
    assert_eq!(
        records[1].output[1]["provider_message_id"],
        "run-1:b:1/send"
    );
}

#[tokio::test]
async fn an_undefined_name_fails_the_step_by_id() {
    let (result, records) = run(
        json!([
            {"id": "ok", "set": {"a": 1}},
            {"id": "typo", "set": {"b": "{{ steps.ok.output.nope }}"}},
            {"id": "never", "set": {}},
        ]),
        json!({}),
        &Stub::default(),
    )
    .await;
    let Err(RunError::Permanent(message)) = result else {
        panic!("{result:?}")
    };
    assert!(
        message.starts_with("step `typo`: template `{{ steps.ok.output.nope }}`"),
        "{message}"
    );
    assert_eq!(
        statuses(&records),
        [("ok", "succeeded"), ("typo", "failed")]
    );
}

/// Side effects of a workflow with approvals: `kv incr` counts calls,
/// `approval` pauses until its key is in `approved`.
#[derive(Default)]
struct Gates {
    bumps: AtomicU32,
    approved: Mutex<Vec<String>>,
}

impl Actions for Gates {
    refused!(http, llm, agent, message, schedule_job, metric);
    fn kv<'a>(&'a self, _: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
        let n = self.bumps.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { Ok(json!(n)) })
    }
    fn approval<'a>(&'a self, call: &'a ActionCall<'a>, _: Value) -> ActionFuture<'a> {
        let key = call.idempotency_key.clone();
        let approved = self.approved.lock().unwrap().contains(&key);
        Box::pin(async move {
            if approved {
                Ok(json!({"decision": "approved"}))
            } else {
                Err(RunError::AwaitingApproval {
                    approval_id: format!("ap-{key}"),
                    key,
                    reason: "why".into(),
                })
            }
        })
    }
}

#[tokio::test]
async fn an_approved_run_resumes_after_what_completed_before_its_pause() {
    let skills = skills(json!([
        {"id": "ask", "steps": [{"id": "bump", "kv": {"incr": "n"}},
                                {"id": "gate", "approval": {"reason": "x"}},
                                {"id": "said", "set": {"bump": "{{ steps.bump.output }}"}}]},
    ]));
    let list = steps(json!([
        {"id": "count", "kv": {"incr": "n"}},
        {"id": "gate", "approval": {"reason": "x"}},
        {"id": "after", "set": {"count": "{{ steps.count.output }}"}},
        {"id": "nested", "uses": "ask"},
        {"id": "each", "foreach": [0, 1], "uses": "ask"},
    ]));
    let engine = Engine::new(&skills, std::env::temp_dir(), Clock::Wall);
    let gates = Gates::default();
    let token = CancellationToken::new();
    let mut records = Vec::new();
    // Each pause is approved in turn; the last execution finishes.
    let mut pauses = Vec::new();
    let result = loop {
        let resume = Resume::from_records(&records);
        let (result, recs) = engine
            .resume(&list, json!({}), run_info(), resume, &gates, &token)
            .await;
        records = recs;
        match result {
            Err(RunError::AwaitingApproval { key, .. }) => {
                assert!(pauses.len() < 10, "{pauses:?}");
                pauses.push(key.clone());
                gates.approved.lock().unwrap().push(key);
            }
            other => break other,
        }
    };
    assert_eq!(
        pauses,
        [
            "run-1:gate",
            "run-1:nested/gate",
            "run-1:each:0/gate",
            "run-1:each:1/gate"
        ]
    );
    // Each `kv incr` ran once: top level, in a skill, in foreach items.
    assert_eq!(gates.bumps.load(Ordering::SeqCst), 4);
    assert_eq!(result.unwrap(), json!([{"bump": 3}, {"bump": 4}]));
    assert_eq!(records[0].output, json!(1));
    assert_eq!(records[2].output, json!({"count": 1}));
    assert_eq!(records[3].output, json!({"bump": 2}));
    assert!(
        records.iter().all(|r| r.status.as_str() == "succeeded"),
        "{records:?}"
    );
    assert!(
        records.iter().all(|r| r.completed.is_empty()),
        "{records:?}"
    );
}

#[test]
fn a_pause_or_an_interruption_resumes() {
    let rec = |id: &str, status: &str| StepRecord {
        id: id.into(),
        status: serde_json::from_value(json!(status)).expect("a step status"),
        output: json!(id),
        error: None,
        duration_ms: 0,
        variant: None,
        completed: BTreeMap::from([(format!("{id}/x"), json!(1))]),
    };
    let paused = Resume::from_records(&[rec("a", "succeeded"), rec("b", "awaiting_approval")]);
    assert_eq!(paused.top.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(
        paused.inner,
        BTreeMap::from([("b/x".to_string(), json!(1))])
    );
    let interrupted = Resume::from_records(&[rec("a", "succeeded"), rec("b", "interrupted")]);
    assert_eq!(interrupted.top.keys().collect::<Vec<_>>(), ["a"]);
    // A failed or cancelled execution runs again from its first step.
    for last in ["failed", "cancelled", "succeeded"] {
        let r = Resume::from_records(&[rec("a", "succeeded"), rec("b", last)]);
        assert!(r.top.is_empty() && r.inner.is_empty(), "{last}");
    }
    assert!(Resume::from_records(&[]).top.is_empty());
}
