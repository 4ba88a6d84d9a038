//! The `kind: Defaults` document through the real binary: `validate`
//! counts it and rejects a second one, `plan` shows its create, update and
//! delete with the jobs whose notices it carries, the daemon applies it to
//! the embedded store and to Redis (read back by `plan --state/--redis`
//! and `--server`), and a broken edit is rejected while it keeps serving.

mod common;

use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;

const HOOK: &str =
    "kind: Connector\nid: hook\nprovider: webhook\nbase_url: http://127.0.0.1:9/hook\n";

const JOBS: &str = "id: bare\ntype: noop\n---\n\
     id: own\ntype: noop\nnotify:\n  - connector: hook\n    on: [failure]\n";

fn defaults(on: &str) -> String {
    format!("kind: Defaults\nnotify:\n  - connector: hook\n    on: [{on}]\n")
}

fn config() -> ConfigDir {
    let dir = ConfigDir::new();
    dir.write("jobs.d/hook.yaml", HOOK);
    dir.write("jobs.d/jobs.yaml", JOBS);
    dir.write("jobs.d/defaults.yaml", &defaults("failure"));
    dir
}

#[test]
fn validate_counts_the_defaults_document_and_refuses_a_second() {
    let dir = config();
    dir.run(&["validate"]).assert_code(0).assert_line(
        "valid: ",
        "2 jobs, 0 flows, 1 connector, 0 skills, 0 triggers, 1 defaults document in 3 files",
    );
    dir.write("jobs.d/more.yaml", "kind: Defaults\nid: more\nnotify: []\n");
    dir.write("jobs.d/typo.yaml", "kind: Defaults\nid: typo\nnotfy: []\n");
    let run = dir.run(&["validate"]);
    run.assert_code(1)
        .assert_line(
            "jobs.d/more.yaml:1:1: error[duplicate-defaults] Defaults more: ",
            "one Defaults document, and jobs.d/defaults.yaml:1 already is it",
        )
        .assert_line(
            "jobs.d/typo.yaml:3:1: error[schema] Defaults typo: ",
            "did you mean `notify`",
        );
}

/// `plan` against the store the daemon started with `store` wrote.
fn defaults_through_plan_and_the_daemon(store: &[&str]) {
    let dir = config();
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "--detailed-exitcode"];
        args.extend_from_slice(extra);
        dir.run(&args)
    };
    plan(store)
        .assert_code(2)
        .assert_line("+ Defaults defaults (jobs.d/defaults.yaml:1)", "")
        .assert_line(
            "    note: jobs that take their notices from it (1): bare",
            "",
        );
    let mut args = vec!["--no-watch"];
    args.extend_from_slice(store);
    let d = Daemon::start(dir.path(), &args);
    d.wait_until("/api/v1/status", "the Defaults document applied", |v| {
        v["counts"]["defaults"] == 1
    });
    plan(store).assert_code(0).assert_line("No changes.", "");

    dir.write("jobs.d/defaults.yaml", &defaults("failure, recovery"));
    for extra in [store, &["--server", d.url.as_str()]] {
        plan(extra)
            .assert_code(2)
            .assert_line("0 to create, 1 to update, 0 to delete, 3 unchanged", "")
            .assert_line("~ Defaults defaults (jobs.d/defaults.yaml:1)", "")
            .assert_line("    notify[0].on[1]: (none) → \"recovery\"", "")
            .assert_line(
                "    note: jobs that take their notices from it (1): bare",
                "",
            );
    }

    // Hostile: a second Defaults document is rejected; the daemon keeps
    // serving the last good revision.
    dir.write("jobs.d/more.yaml", "kind: Defaults\nid: more\n");
    d.signal("HUP");
    d.wait_until("/api/v1/status", "the revision rejected", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    let (code, status) = d.get("/api/v1/status");
    assert_eq!(code, 200);
    assert_eq!(status["counts"]["defaults"], 1, "{status:#}");
    dir.remove("jobs.d/more.yaml");

    dir.remove("jobs.d/defaults.yaml");
    plan(store)
        .assert_code(2)
        .assert_line("- Defaults defaults (jobs.d/defaults.yaml:1)", "")
        .assert_line("    note: jobs left without notices (1): bare", "");
    d.signal("HUP");
    d.wait_until("/api/v1/status", "the Defaults document deleted", |v| {
        v["counts"]["defaults"] == 0
    });
    plan(store).assert_code(0);
}

#[test]
fn plan_shows_the_defaults_document_sqlite() {
    defaults_through_plan_and_the_daemon(&[]);
}

#[test]
fn plan_shows_the_defaults_document_redis() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    defaults_through_plan_and_the_daemon(&["--redis", &url]);
}
