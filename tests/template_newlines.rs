//! What a template ends with is what is written, against the real binary:
//! minijinja drops one trailing newline by default, and the workflow
//! engine's templates must not (#21).

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

/// Regression (#21): `content: "{{ run.id }} {{ now }}\n"` in a `files`
/// write wrote the text without its newline.
#[test]
fn a_files_write_keeps_the_trailing_newlines_its_content_ends_with() {
    let d = ConfigDir::new();
    // Text with a newline, one `{{ expr }}` with two, and a YAML block
    // scalar (which ends in one).
    d.write(
        "jobs.d/stamp.yaml",
        "id: stamp\ntype: agent.workflow\nsteps:\n  \
         - id: one\n    files: {write: one.txt, content: \"{{ run.id }} {{ now }}\\n\"}\n  \
         - id: two\n    files: {write: two.txt, content: \"{{ run.id }}\\n\\n\"}\n  \
         - id: three\n    files:\n      write: three.txt\n      content: |\n        \
         run {{ run.id }}\n        {% if true %}done{% endif %}\n",
    );
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon.wait_until("/api/v1/jobs/stamp", "job stamp", |v| v["id"] == "stamp");

    let id = d.trigger("stamp", &[]);
    let run = daemon.run_ended(&id);
    assert_eq!(run["status"], "succeeded", "{run:#}");

    let data = d.path().join(".multijob/data");
    let read = |name: &str| {
        std::fs::read_to_string(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", d.listing()))
    };
    let one = read("one.txt");
    assert!(
        one.starts_with(&format!("{id} ")) && one.ends_with('\n') && !one.ends_with("\n\n"),
        "one.txt: {one:?}"
    );
    assert_eq!(one.matches('\n').count(), 1, "one.txt: {one:?}");
    assert_eq!(read("two.txt"), format!("{id}\n\n"));
    assert_eq!(read("three.txt"), format!("run {id}\ndone\n"));
}

/// The path and body of each request a peer got.
type Requests = Arc<Mutex<Vec<(String, String)>>>;

/// A peer on 127.0.0.1:0 recording the path and body of every request.
fn start_recorder() -> (String, Requests) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .fallback(
            |State(got): State<Requests>, uri: Uri, body: Bytes| async move {
                let body = String::from_utf8_lossy(&body).into_owned();
                if let Ok(mut got) = got.lock() {
                    got.push((uri.path().to_string(), body));
                }
                Json(json!({"ok": true}))
            },
        )
        .with_state(got.clone());
    (common::serve(app), got)
}

/// The same for what is sent: a message's text and an http step's text
/// body end with the newlines written.
#[test]
fn a_message_text_and_an_http_body_keep_their_trailing_newlines() {
    let (base, got) = start_recorder();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/send.yaml",
        &format!(
            "kind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n---\n\
             kind: Connector\nid: api\nprovider: http\nbase_url: {base}\n---\n\
             id: send\ntype: agent.workflow\nsteps:\n  \
             - id: tell\n    message: {{connector: hook, text: \"run {{{{ run.id }}}}\\n\"}}\n  \
             - id: post\n    http: {{connector: api, method: POST, path: /body, \
             body: \"{{{{ run.id }}}} {{{{ job.id }}}}\\n\\n\"}}\n"
        ),
    );
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon.wait_until("/api/v1/jobs/send", "job send", |v| v["id"] == "send");

    let id = d.trigger("send", &[]);
    let run = daemon.run_ended(&id);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let got = got.lock().map(|g| g.clone()).unwrap_or_default();
    let hook = got.iter().find(|(path, _)| path == "/hook");
    let text = hook.and_then(|(_, body)| {
        let body: Value = serde_json::from_str(body).ok()?;
        body["text"].as_str().map(str::to_string)
    });
    assert_eq!(text, Some(format!("run {id}\n")), "{got:#?}");
    let body = got.iter().find(|(path, _)| path == "/body").map(|(_, b)| b);
    assert_eq!(body, Some(&format!("{id} send\n\n")), "{got:#?}");
}
