//! The CLI against a Redis deployment: `plan`, `trigger` and `approvals`
//! with `--redis` read what a daemon applied and post to its inbox.

mod common;

use common::ConfigDir;
use multijob::spec::snapshot::Snapshot;
use multijob::spec::{SourceFile, build};
use multijob::store::runs::{Approval, ApprovalStatus, InboxCommand};
use multijob::store::{Mutation, ResourceWrites, RevisionStatus, Store};
use multijob::testkit::RedisServer;
use serde_json::json;

const JOB: &str = "id: nightly\ntype: noop\nschedule:\n  every: 1h\n";

/// A config dir and a Redis holding its applied snapshot and one pending
/// approval, as a daemon would leave them.
fn deployment(rt: &tokio::runtime::Runtime) -> (ConfigDir, RedisServer, Store) {
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", JOB);
    let server = RedisServer::start().expect("redis-server");
    let loaded = build(&[SourceFile {
        path: "jobs.d/a.yaml".into(),
        text: JOB.into(),
    }]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let store = rt.block_on(async {
        let store = Store::open_redis(&server.url()).await.expect("open");
        store
            .apply_revision(
                multijob::testkit::revision_record("nogit+h", RevisionStatus::Applied),
                ResourceWrites::between(&Snapshot::default(), &loaded.snapshot),
                vec![],
            )
            .await
            .expect("apply");
        store
            .submit(vec![Mutation::PutApproval(Approval {
                id: "ap-1".into(),
                run_id: "run-1".into(),
                job_id: "nightly".into(),
                step_id: None,
                reason: Some("deploy to prod".into()),
                status: ApprovalStatus::Pending,
                requested_at: multijob::store::now_rfc3339(),
                decided_at: None,
                decided_by: None,
                note: None,
            })])
            .expect("submit");
        store.flush().await.expect("flush");
        store
    });
    (dir, server, store)
}

#[test]
fn trigger_and_approvals_post_to_the_redis_inbox() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, server, store) = deployment(&rt);
    let url = server.url();
    let out = dir.run(&[
        "trigger",
        "nightly",
        "--inputs",
        "{\"k\": 1}",
        "--redis",
        &url,
    ]);
    out.assert_code(0)
        .assert_line("queued run", "of job nightly");
    let out = dir.run(&["approvals", "list", "--redis", &url]);
    out.assert_code(0).assert_line("ap-1", "deploy to prod");
    dir.run(&["approvals", "approve", "ap-1", "--redis", &url])
        .assert_code(0)
        .assert_line("approved ap-1", "run run-1");
    let inbox = rt.block_on(store.inbox(0)).expect("inbox");
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    assert!(
        matches!(&inbox[0].1, InboxCommand::Trigger { job_id, inputs, .. }
            if job_id == "nightly" && inputs == &json!({"k": 1})),
        "{inbox:?}"
    );
    assert!(
        matches!(&inbox[1].1, InboxCommand::Decide { approval_id, approve: true, .. }
            if approval_id == "ap-1"),
        "{inbox:?}"
    );
    let unknown = dir.run(&["trigger", "nope", "--redis", &url]);
    unknown.assert_code(1);
    assert!(
        unknown.stderr().contains("no job `nope`"),
        "{}",
        unknown.explain()
    );
}

#[test]
fn plan_diffs_against_the_snapshot_in_redis() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, server, _store) = deployment(&rt);
    let url = server.url();
    dir.run(&["plan", "--redis", &url, "--detailed-exitcode"])
        .assert_code(0);
    dir.write("jobs.d/b.yaml", "id: other\ntype: noop\n");
    dir.run(&["plan", "--redis", &url, "--detailed-exitcode"])
        .assert_code(2)
        .assert_line("+", "other");
}

#[test]
fn an_unreachable_redis_is_named_in_the_error() {
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", JOB);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    for args in [
        vec!["trigger", "nightly", "--redis", &url],
        vec!["approvals", "list", "--redis", &url],
        vec!["plan", "--redis", &url],
    ] {
        let out = dir.run(&args);
        out.assert_code(1);
        assert!(
            out.stderr()
                .contains(&format!("cannot reach Redis at {url}")),
            "{}",
            out.explain()
        );
    }
    // A password in the URL is never printed, by a worker or a replica.
    let secret_url = format!("redis://:s3cretpw@127.0.0.1:{port}/");
    let dir_arg = dir.path().display().to_string();
    for args in [
        vec!["worker".to_string(), "--redis".into(), secret_url.clone()],
        vec![
            "run".to_string(),
            "--redis".into(),
            secret_url.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--dir".into(),
            dir_arg.clone(),
        ],
    ] {
        let out = common::run(&args, None);
        out.assert_code(1);
        let all = format!("{}{}", out.stdout(), out.stderr());
        assert!(!all.contains("s3cretpw"), "{}", out.explain());
        assert!(all.contains("***"), "{}", out.explain());
    }
}
