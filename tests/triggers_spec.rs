//! `kind: Trigger` as a first-class document, with the real binary:
//! `validate` prints each bad trigger's finding at file:line:column and
//! exits 1 (a literal secret without echoing it); `plan` names a trigger's
//! change and what it does; a running daemon's `/api/v1/triggers` lists a
//! trigger added by hot reload, never with its secret's value, and answers
//! hostile ids with a clear 404 while it keeps serving. The daemon part
//! runs on the embedded store and on Redis.

mod common;

use common::{ConfigDir, Daemon, http_raw};
use multijob::testkit::RedisServer;

const JOBS: &str = "\
id: fulfil-order
type: noop
---
id: fulfil-v2
type: noop
---
id: paused
type: noop
enabled: false
";

const SKILLS: &str = "\
id: brief
channel: slack
command_prefix: /brief
steps: [{id: s, set: {}}]
";

/// A value the daemon's environment holds for the secret reference: it
/// must never appear in any answer.
const SECRET_VALUE: &str = "whsec-7c1d-NEVER-SHOWN-4e2a";

/// A trigger document `id` running `job`, with its secret in `var`.
fn trigger(id: &str, job: &str, var: &str) -> String {
    format!(
        "kind: Trigger\nid: {id}\nsource: webhook\njob: {job}\nsecret: ${{env:{var}}}\ninputs:\n  order_id: \"{{{{ payload.id }}}}\"\nrate_limit: {{per_minute: 60, burst: 10}}\n"
    )
}

fn config() -> ConfigDir {
    let d = ConfigDir::new();
    d.write("jobs.d/jobs.yaml", JOBS);
    d.write("skills.d/brief.yaml", SKILLS);
    d
}

#[test]
fn a_good_trigger_validates() {
    let d = config();
    d.write(
        "jobs.d/t.yaml",
        &trigger("shop-paid", "fulfil-order", "SHOP_SECRET"),
    );
    d.run(&["validate"])
        .assert_code(0)
        .assert_line("valid:", "1 skill, 1 trigger in 3 files, 0 warnings");
}

#[test]
fn each_bad_trigger_is_a_finding_at_its_place() {
    let good = trigger("t", "fulfil-order", "S");
    // (what to replace in the good trigger, by what, the finding's start, its message)
    let cases = [
        (
            "job: fulfil-order",
            "job: fulfil-ordr",
            "4:6: error[reference]",
            "no Job `fulfil-ordr` (did you mean `fulfil-order`?)",
        ),
        (
            "job: fulfil-order",
            "skill: breif",
            "4:8: error[reference]",
            "no Skill `breif` (did you mean `brief`?)",
        ),
        (
            "${env:S}",
            "hunter2-literal",
            "5:9: error[literal-secret]",
            "secrets never live in git",
        ),
        (
            "payload.id",
            "env.HOME",
            "7:13: error[template]",
            "`env` cannot be read here: these templates read only payload, headers, source, now",
        ),
        (
            "per_minute: 60",
            "per_minute: 0",
            "8:26: error[schema]",
            "0 is less than the minimum of 1",
        ),
        (
            "source: webhook\njob: fulfil-order",
            "source: telegram\nskill: brief",
            "4:8: error[channel]",
            "skill `brief` listens on slack",
        ),
    ];
    for (from, to, at, message) in cases {
        let d = config();
        d.write("jobs.d/t.yaml", &good.replace(from, to));
        let run = d.run(&["validate"]);
        run.assert_code(1)
            .assert_line(&format!("jobs.d/t.yaml:{at} Trigger t:"), message);
        run.assert_stdout_lacks("hunter2-literal");
        assert!(
            !run.stderr().contains("hunter2-literal"),
            "{}",
            run.explain()
        );
    }
    // A disabled target is a warning: valid, exit 0.
    let d = config();
    d.write("jobs.d/t.yaml", &good.replace("fulfil-order", "paused"));
    d.run(&["validate"]).assert_code(0).assert_line(
        "jobs.d/t.yaml:4:1: warning[disabled] Trigger t:",
        "queue no run",
    );
    // Two triggers with one id, and a trigger in skills.d/.
    let d = config();
    d.write("jobs.d/t.yaml", &format!("{good}---\n{good}"));
    d.write("skills.d/t2.yaml", &trigger("t2", "fulfil-order", "S"));
    d.run(&["validate"])
        .assert_code(1)
        .assert_line(
            "jobs.d/t.yaml:11:5: error[duplicate-id] Trigger t:",
            "already defined at jobs.d/t.yaml:1",
        )
        .assert_line(
            "skills.d/t2.yaml:1:1: warning[placement] Trigger t2:",
            "belong in jobs.d/",
        );
}

#[test]
fn a_bad_command_prefix_is_a_finding() {
    let d = config();
    d.write(
        "skills.d/help.yaml",
        "id: helper\ncommand_prefix: /help\nsteps: [{id: s, set: {}}]\n",
    );
    d.write(
        "skills.d/other.yaml",
        "id: other-brief\nchannel: slack\ncommand_prefix: /brief\nsteps: [{id: s, set: {}}]\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line(
            "skills.d/help.yaml:2:17: error[command] Skill helper:",
            "one of the chat bridge's own commands",
        )
        .assert_line(
            "skills.d/other.yaml:3:17: error[command] Skill other-brief:",
            "`/brief` on slack already runs skill `brief` (skills.d/brief.yaml:1)",
        );
}

enum Backend {
    Sqlite,
    Redis(RedisServer),
}

impl Backend {
    fn args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite => vec![],
            Backend::Redis(r) => vec!["--redis".into(), r.url()],
        }
    }
}

/// GET `path` on the daemon: status and raw body.
fn get(daemon: &Daemon, path: &str) -> (u16, String) {
    http_raw(&daemon.url, "GET", path, &[])
}

fn ids(list: &serde_json::Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["id"].as_str()).collect())
        .unwrap_or_default()
}

fn triggers_are_served_and_hot_reloaded(backend: Backend) {
    let d = config();
    d.write(
        "jobs.d/t.yaml",
        &trigger("shop-paid", "fulfil-order", "SHOP_SECRET"),
    );
    let args = backend.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [("SHOP_SECRET", SECRET_VALUE), ("GH_SECRET", SECRET_VALUE)];
    let daemon = Daemon::start_env(d.path(), &args, &env);
    daemon.wait_until("/api/v1/triggers", "the trigger applied", |v| {
        ids(v) == ["shop-paid"]
    });
    // Added while it runs: the watcher applies it.
    d.write(
        "jobs.d/gh.yaml",
        &trigger("gh-push", "fulfil-v2", "GH_SECRET").replace("webhook", "github"),
    );
    let list = daemon.wait_until("/api/v1/triggers", "the new trigger", |v| {
        ids(v) == ["gh-push", "shop-paid"]
    });
    let gh = &list["items"][0];
    assert_eq!(gh["source"], "github", "{list:#}");
    assert_eq!(gh["job"], "fulfil-v2", "{list:#}");
    assert_eq!(gh["skill"], serde_json::Value::Null, "{list:#}");
    assert_eq!(gh["url_path"], "/hooks/gh-push", "{list:#}");
    assert_eq!(gh["requires_approval"], false, "{list:#}");
    assert_eq!(gh["enabled"], true, "{list:#}");
    assert_eq!(gh["file"], "jobs.d/gh.yaml", "{list:#}");
    assert_eq!(gh["line"], 1, "{list:#}");
    assert_eq!(
        gh["rate_limit"],
        serde_json::json!({"per_minute": 60, "burst": 10}),
        "{list:#}"
    );
    assert_eq!(gh["spec"]["secret"], "***", "{list:#}");
    let (_, status) = daemon.get("/api/v1/status");
    assert_eq!(status["counts"]["triggers"], 2, "{status:#}");

    // Never the secret's value, on any path that shows triggers.
    for path in [
        "/api/v1/triggers",
        "/api/v1/triggers/shop-paid",
        "/api/v1/snapshot",
        "/api/v1/status",
    ] {
        let (code, body) = get(&daemon, path);
        assert_eq!(code, 200, "{path}: {body}");
        assert!(
            !body.contains(SECRET_VALUE),
            "{path} shows the secret: {body}"
        );
    }

    // Hostile ids: a clear 404 naming the closest, and the daemon serves on.
    let (code, body) = daemon.get("/api/v1/triggers/shop-payd");
    assert_eq!(code, 404);
    assert_eq!(
        body["error"],
        "no trigger `shop-payd` (did you mean `shop-paid`?) in the applied revision: GET /api/v1/triggers lists them"
    );
    let long = "x".repeat(10_000);
    for path in [
        "/api/v1/triggers/%00%ff",
        "/api/v1/triggers/..%2f..%2fetc%2fpasswd",
        &format!("/api/v1/triggers/{long}"),
    ] {
        let (code, body) = get(&daemon, path);
        assert!(
            code == 404 || code == 400 || code == 414 || code == 431,
            "{path}: {code} {body}"
        );
        assert!(!body.contains(SECRET_VALUE));
    }
    let (code, _) = http_raw(&daemon.url, "POST", "/api/v1/triggers/shop-paid", &[]);
    assert_eq!(code, 405, "the status API stays read-only");
    let (code, one) = daemon.get("/api/v1/triggers/shop-paid");
    assert_eq!(
        (code, one["url_path"].as_str()),
        (200, Some("/hooks/shop-paid"))
    );

    // Removed while it runs: gone from the list.
    d.remove("jobs.d/gh.yaml");
    daemon.wait_until("/api/v1/triggers", "the trigger removed", |v| {
        ids(v) == ["shop-paid"]
    });
    drop(daemon);

    // `plan` against what ran: the trigger's change and what it does.
    d.write(
        "jobs.d/t.yaml",
        &trigger("shop-paid", "fulfil-v2", "SHOP_SECRET_2"),
    );
    let mut plan_args = vec!["plan"];
    plan_args.extend(args.iter().copied());
    let plan = d.run(&plan_args);
    plan.assert_code(0)
        .assert_line("~ Trigger shop-paid (jobs.d/t.yaml:1)", "")
        .assert_line("    job: ", "\"fulfil-order\" → \"fulfil-v2\"")
        .assert_line(
            "    secret: ",
            "\"${env:SHOP_SECRET}\" → \"${env:SHOP_SECRET_2}\"",
        )
        .assert_line(
            "    note: ",
            "now runs job fulfil-v2 (was job fulfil-order)",
        )
        .assert_line(
            "    note: ",
            "its secret reference changed: requests signed with the old secret will be refused",
        );
    plan_args.extend(["--output", "json"]);
    let json = d.run(&plan_args).json();
    let change = json["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["kind"] == "Trigger"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(change["action"], "update", "{json:#}");
    assert_eq!(change["id"], "shop-paid", "{json:#}");
    assert_eq!(
        change["notes"][0], "now runs job fulfil-v2 (was job fulfil-order)",
        "{json:#}"
    );
}

#[test]
fn triggers_on_the_embedded_store() {
    triggers_are_served_and_hot_reloaded(Backend::Sqlite);
}

#[test]
fn triggers_on_redis() {
    triggers_are_served_and_hot_reloaded(Backend::Redis(
        RedisServer::start().expect("redis-server"),
    ));
}
