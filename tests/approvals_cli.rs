//! `approvals approve|reject` with a note and a deciding operator, and
//! ids given by prefix: on the embedded store beside a running daemon and
//! on Redis, with the same test.

mod common;

use common::{ConfigDir, Daemon, Run};
use multijob::store::runs::InboxCommand;
use serde_json::Value;

const GATED: &str = "id: gated\ntype: noop\nrequires_approval: true\n";

/// `multijob ARGS --dir D` plus `--redis URL` on Redis.
fn cli(d: &ConfigDir, redis: Option<&str>, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    if let Some(url) = redis {
        all.extend(["--redis", url]);
    }
    d.run(&all)
}

fn run_status(daemon: &Daemon, id: &str, status: &str) -> Value {
    daemon.wait_until(&format!("/api/v1/runs/{id}"), status, |v| {
        v["status"] == status
    })
}

/// A decision with `note`, posted as another program could, not the CLI.
fn post_to_inbox(d: &ConfigDir, redis: Option<&str>, approval_id: &str, note: &str) {
    let command = InboxCommand::Decide {
        approval_id: approval_id.into(),
        approve: true,
        by: "script".into(),
        note: Some(note.into()),
    };
    match redis {
        None => {
            let state = d.path().join(".multijob/state.db");
            multijob::store::sqlite::post_to_inbox(&state, &command).expect("post");
        }
        Some(url) => {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let store = multijob::store::redis::RedisStore::open(url).await?;
                store.post_to_inbox(&command).await
            })
            .expect("post");
        }
    }
}

fn approvals_keep_notes_and_deciders(redis: Option<&str>) {
    let d = ConfigDir::new();
    d.write("jobs.d/gated.yaml", GATED);
    let extra: Vec<&str> = redis.map(|url| vec!["--redis", url]).unwrap_or_default();
    let daemon = Daemon::start(d.path(), &extra);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let first = d.trigger("gated", &extra);
    let second = d.trigger("gated", &extra);
    run_status(&daemon, &first, "awaiting_approval");
    run_status(&daemon, &second, "awaiting_approval");
    let (ap1, ap2) = (format!("ap-{first}"), format!("ap-{second}"));

    // Hostile input: refused with the limit, nothing posted, daemon serving.
    let huge = "x".repeat(100 * 1024);
    let out = cli(&d, redis, &["approvals", "approve", &ap1, "--note", &huge]);
    out.assert_code(1);
    out.assert_stderr_has("--note is 102400 bytes; a note holds at most 2048 (2 KiB)");
    let out = cli(&d, redis, &["approvals", "approve", "ap-"]);
    out.assert_code(1);
    out.assert_stderr_has("a prefix needs at least 8 characters");
    let out = cli(&d, redis, &["approvals", "reject", "ap-00000000-nope"]);
    out.assert_code(1);
    out.assert_stderr_has("no approval `ap-00000000-nope`");
    let common = ap1
        .chars()
        .zip(ap2.chars())
        .take_while(|(a, b)| a == b)
        .count();
    if common >= 8 {
        let out = cli(&d, redis, &["approvals", "approve", &ap1[..common]]);
        out.assert_code(1);
        out.assert_stderr_has("fits 2 approvals");
    }
    // Past the CLI, straight into the inbox: the daemon refuses it too.
    post_to_inbox(&d, redis, &ap1, &"y".repeat(3000));
    daemon.wait_until(
        "/api/v1/events?limit=10&type=approval.failed",
        "the oversized note refused",
        |v| {
            v["items"][0]["data"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the note is 3000 bytes, more than the 2048"))
        },
    );
    daemon.wait_until("/readyz", "still ready", |v| v["ready"] == true);
    run_status(&daemon, &first, "awaiting_approval");

    // A unique prefix of the approval id, a note with control characters
    // and an explicit operator.
    let note = "ship it \u{1b}[31mnow\nline two";
    let prefix = &ap1[..ap1.len() - 6];
    let out = cli(
        &d,
        redis,
        &[
            "approvals",
            "approve",
            prefix,
            "--note",
            note,
            "--by",
            "alice@ops",
        ],
    );
    out.assert_code(0)
        .assert_line(&format!("approved {ap1}"), "as alice@ops");
    run_status(&daemon, &first, "succeeded");
    // The run id's prefix names its approval too; `$USER@host` decides.
    let out = cli(
        &d,
        redis,
        &["approvals", "reject", &second[..12], "--note", "not today"],
    );
    out.assert_code(0)
        .assert_line(&format!("rejected {ap2}"), "@");
    let failed = run_status(&daemon, &second, "failed");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.ends_with(": not today")),
        "{failed:#}"
    );

    // Kept in the record: the CLI's JSON, its text (escaped), the API.
    let list = cli(&d, redis, &["approvals", "list", "--all", "-o", "json"]);
    list.assert_code(0);
    let items = list.json();
    let item = |id: &str| -> Value {
        items
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no {id}\n{}", list.explain()))
    };
    assert_eq!(item(&ap1)["note"], note);
    assert_eq!(item(&ap1)["decided_by"], "alice@ops");
    assert_eq!(item(&ap2)["note"], "not today");
    assert!(
        item(&ap2)["decided_by"]
            .as_str()
            .is_some_and(|b| b.contains('@'))
    );
    let text = cli(&d, redis, &["approvals", "list", "--all"]);
    text.assert_code(0)
        .assert_line(
            &ap1,
            "by alice@ops  note: ship it \\u{1b}[31mnow\\nline two",
        )
        .assert_stdout_lacks("\u{1b}");
    let (_, api) = daemon.get("/api/v1/approvals");
    let from_api = api["items"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == ap1.as_str()).cloned())
        .unwrap_or_default();
    assert_eq!(from_api["note"], note, "{api:#}");
    assert_eq!(from_api["decided_by"], "alice@ops", "{api:#}");
    // And in the decision's event.
    let (_, events) = daemon.get("/api/v1/events?limit=100&type=approval.approved");
    let event = events["items"]
        .as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or_default();
    assert_eq!(event["data"]["note"], note, "{events:#}");
    assert_eq!(event["data"]["by"], "alice@ops", "{events:#}");

    // Replayed: deciding again is refused and names who decided.
    let again = cli(&d, redis, &["approvals", "reject", &ap1]);
    again.assert_code(1);
    again.assert_stderr_has("already approved by alice@ops");
}

#[test]
fn approvals_keep_notes_and_deciders_embedded() {
    approvals_keep_notes_and_deciders(None);
}

#[test]
fn approvals_keep_notes_and_deciders_redis() {
    let server = multijob::testkit::RedisServer::start().expect("redis-server");
    approvals_keep_notes_and_deciders(Some(&server.url()));
}
