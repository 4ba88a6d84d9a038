//! Every path of the status API: auth on and off, 405 and 404, and no
//! secret anywhere in any form it takes on the wire (every path, the event
//! stream, the daemon's log, the store's files, backups and reports crawled).

mod common;

use common::secrets::{credential_forms, found_in, found_in_files, wire_forms};
use common::{ConfigDir, Daemon, SseStream, http, http_raw};

fn config() -> ConfigDir {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "kind: Flow\nid: lane\nmax_active_runs: 2\n---\nkind: Connector\nid: tg\nprovider: telegram\nbase_url: http://127.0.0.1:9\nsecrets: {bot_token: \"${env:TG_TOKEN}\"}\nconfig: {chat_id: \"-100\"}\n---\nid: a\ntype: noop\nflow: lane\nschedule: {every: 1s}\n",
    );
    d.write(
        "skills.d/s.yaml",
        "kind: Skill\nid: s\nsteps:\n  - id: x\n    set: {y: 1}\n",
    );
    // `/api/v1/triggers/{id}` is filled with the job's id (`a`, or
    // `leaky` in the leaky config): a trigger of each name, its secret
    // one the leaky config checks for.
    let trigger = |id: &str| {
        format!("kind: Trigger\nid: {id}\nsource: webhook\njob: a\nsecret: ${{env:API_TOKEN}}\n")
    };
    d.write(
        "jobs.d/triggers.yaml",
        &format!("{}---\n{}", trigger("a"), trigger("leaky")),
    );
    d
}

/// Every route with its placeholders filled in.
fn paths(run_id: &str, job_id: &str) -> Vec<String> {
    multijob::status::api::ROUTES
        .iter()
        .map(|r| {
            r.replace(
                "{id}",
                if r.starts_with("/api/v1/runs") {
                    run_id
                } else {
                    job_id
                },
            )
        })
        .collect()
}

fn first_run(d: &Daemon) -> String {
    let v = d.wait_until("/api/v1/runs", "a run", |v| {
        v["items"].as_array().is_some_and(|a| !a.is_empty())
    });
    v["items"][0]["id"].as_str().unwrap().to_string()
}

#[test]
fn without_a_token_every_path_answers() {
    let d = config();
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let run = first_run(&daemon);
    for path in paths(&run, "a") {
        let (code, body) = http_raw(&daemon.url, "GET", &path, &[]);
        assert_eq!(code, 200, "GET {path}: {body}");
    }
}

#[test]
fn with_a_token_every_path_but_the_probes_needs_it() {
    let d = config();
    let daemon = Daemon::start_env(d.path(), &[], &[("MULTIJOB_API_TOKEN", "t0ken")]);
    let start = std::time::Instant::now();
    while http(&daemon.url, "GET", "/readyz", &[]).1["ready"] != true {
        assert!(
            start.elapsed().as_secs() < 20,
            "never ready\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let good = [("Authorization", "Bearer t0ken")];
    let run = loop {
        let (_, v) = http(&daemon.url, "GET", "/api/v1/runs", &good);
        if let Some(id) = v["items"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(start.elapsed().as_secs() < 20);
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for path in paths(&run, "a") {
        let probe = path == "/healthz" || path == "/readyz";
        let (code, body) = http(&daemon.url, "GET", &path, &[]);
        if probe {
            assert_eq!(code, 200, "{path} is open");
            continue;
        }
        assert_eq!(code, 401, "GET {path} without a token: {body}");
        assert!(body["error"].is_string());
        let (code, _) = http(
            &daemon.url,
            "GET",
            &path,
            &[("Authorization", "Bearer wrong")],
        );
        assert_eq!(code, 401, "GET {path} with a wrong token");
        let (code, _) = http(
            &daemon.url,
            "GET",
            &path,
            &[("Authorization", "Basic t0ken")],
        );
        assert_eq!(code, 401, "GET {path} with another scheme");
        let (code, body) = http_raw(&daemon.url, "GET", &path, &good);
        assert_eq!(code, 200, "GET {path} with the token: {body}");
    }
    // `multijob status` shows the API's own error, which says what to set
    // (it showed "401 Unauthorized" alone).
    let status = common::run(
        &["status".into(), "--server".into(), daemon.url.clone()],
        None,
    );
    status.assert_code(1);
    assert!(
        status.stderr().contains("MULTIJOB_API_TOKEN"),
        "{}",
        status.explain()
    );
}

#[test]
fn other_methods_get_405_and_unknown_paths_404() {
    let d = config();
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    for path in [
        "/api/v1/jobs",
        "/api/v1/status",
        "/api/v1/runs",
        "/healthz",
        "/api/v1/jobs/a",
    ] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let (code, body) = http(&daemon.url, method, path, &[]);
            assert_eq!(code, 405, "{method} {path}");
            assert!(
                body["error"].as_str().unwrap_or("").contains("read-only"),
                "{body}"
            );
        }
    }
    for path in ["/nope", "/api/v1", "/api/v2/jobs", "/api/v1/jobs/a/b/c"] {
        let (code, body) = http(&daemon.url, "GET", path, &[]);
        assert_eq!(code, 404, "GET {path}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (code, body) = http(&daemon.url, "GET", "/api/v1/jobs/missing", &[]);
    assert_eq!(code, 404);
    assert!(body["error"].as_str().unwrap().contains("missing"));
    let (code, _) = http(&daemon.url, "GET", "/api/v1/runs?status=bogus", &[]);
    assert_eq!(code, 400);
    // A malformed parameter is a JSON error that names it, on every list.
    for (path, name) in [
        ("/api/v1/runs?limit=abc", "limit"),
        ("/api/v1/runs?limit=-1", "limit"),
        ("/api/v1/jobs/a/runs?cursor=garbage", "cursor"),
        ("/api/v1/events?after=abc", "after"),
        ("/api/v1/jobs?enabled=maybe", "enabled"),
        ("/api/v1/revisions?limit=x", "limit"),
    ] {
        let (code, body) = http(&daemon.url, "GET", path, &[]);
        assert_eq!(code, 400, "GET {path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(name), "GET {path}: {body}");
    }
}

/// Secrets the leaky config's connectors use: characters encoders change
/// (a space, `+`, `/`, `"`), a webhook URL that `url` normalises, basic
/// auth, and a short one.
const TG_TOKEN: &str = "123456:tg secret+part/\"4242";
const SLACK_HOOK: &str = "HTTP://127.0.0.1:80/services/T0/B0/hook-secret-4242";
const API_TOKEN: &str = "api tok+en/\"4242-secret";
const API_USER: &str = "alice-ops";
const API_PASS: &str = "pa ss>>~~?/+4242";
const SHORT_TOKEN: &str = "shop";

/// Connectors that fail with their secrets in URLs and echoes, a workflow
/// using them all, a backup and a report that delivers through one.
fn leaky_config(echo: &str, closed: u16) -> ConfigDir {
    let d = config();
    let connector = |id: &str, provider: &str, base: &str, secrets: &str| {
        format!(
            "kind: Connector\nid: {id}\nprovider: {provider}\nbase_url: {base}\nsecrets: {secrets}\n\
             config: {{chat_id: \"-100\"}}\n---\n"
        )
    };
    let mut yaml = String::new();
    yaml += &connector(
        "tg-echo",
        "telegram",
        echo,
        r#"{bot_token: "${env:TG_TOKEN}"}"#,
    );
    let down = format!("http://127.0.0.1:{closed}");
    yaml += &connector(
        "tg-down",
        "telegram",
        &down,
        r#"{bot_token: "${env:TG_TOKEN}"}"#,
    );
    yaml += &connector(
        "hook",
        "slack",
        &down,
        r#"{webhook_url: "${env:SLACK_HOOK}"}"#,
    );
    yaml += &connector("api", "http", echo, r#"{bearer_token: "${env:API_TOKEN}"}"#);
    let basic = r#"{username: "${env:API_USER}", password: "${env:API_PASS}"}"#;
    yaml += &connector("basic", "http", echo, basic);
    yaml += &connector(
        "store",
        "http",
        echo,
        r#"{bearer_token: "${env:SHORT_TOKEN}"}"#,
    );
    yaml += "id: leaky\ntype: agent.workflow\nretry_policy: {max_retry: 0}\nsteps:\n";
    for (id, action) in [
        ("json", "http: {connector: api, path: /json}"),
        ("encoded", "http: {connector: api, path: /encoded}"),
        ("basic", "http: {connector: basic, path: /deny}"),
        ("words", "http: {connector: store, path: /plain}"),
        ("tg", "message: {connector: tg-echo, text: hi}"),
        ("hook", "message: {connector: hook, text: hi}"),
    ] {
        yaml += &format!("  - id: {id}\n    continue_on_error: true\n    {action}\n");
    }
    yaml += "  - id: down\n    message: {connector: tg-down, text: hi}\n---\n";
    yaml += "id: backup\ntype: backup.export\n---\n";
    yaml += "id: report\ntype: report.daily\nretry_policy: {max_retry: 0}\n\
             inputs: {deliver_to: [tg-down]}\n";
    d.write("jobs.d/leaky.yaml", &yaml);
    d
}

/// Every form of every secret of [`leaky_config`] (the short one aside:
/// only whole words of it are masked, checked on its own).
fn leaked_forms() -> Vec<String> {
    let mut forms = Vec::new();
    for value in [TG_TOKEN, SLACK_HOOK, API_TOKEN, API_USER, API_PASS] {
        forms.extend(wire_forms(value));
    }
    forms.extend(credential_forms(API_USER, API_PASS));
    forms
}

fn trigger(d: &ConfigDir, job: &str) -> String {
    let r = d.run(&["trigger", job]);
    r.assert_code(0);
    let id = r.stdout().split_whitespace().nth(2).map(str::to_string);
    id.unwrap_or_else(|| panic!("trigger prints the run id\n{}", r.explain()))
}

#[track_caller]
fn finished(daemon: &Daemon, run: &str, status: &str) -> serde_json::Value {
    let path = format!("/api/v1/runs/{run}");
    let r = daemon.wait_until(&path, "the run to finish", |v| {
        ["succeeded", "failed"].contains(&v["status"].as_str().unwrap_or(""))
    });
    assert_eq!(r["status"], status, "{r:#}\n{}", daemon.log());
    r
}

#[test]
fn no_form_of_a_secret_appears_anywhere() {
    let echo = common::secrets::echo_peer();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let d = leaky_config(&echo, closed);
    d.run(&["validate"]).assert_code(0);
    let env = [
        ("TG_TOKEN", TG_TOKEN),
        ("SLACK_HOOK", SLACK_HOOK),
        ("API_TOKEN", API_TOKEN),
        ("API_USER", API_USER),
        ("API_PASS", API_PASS),
        ("SHORT_TOKEN", SHORT_TOKEN),
        ("RUST_LOG", "debug"),
    ];
    let daemon = Daemon::start_env(d.path(), &[], &env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let mut sse = SseStream::open(&daemon.url, "/api/v1/events", &[]);
    let leaky = trigger(&d, "leaky");
    let run = finished(&daemon, &leaky, "failed");
    finished(&daemon, &trigger(&d, "backup"), "succeeded");
    finished(&daemon, &trigger(&d, "report"), "failed");

    // Every surface is searched before any fails, so a failure lists them all.
    let forms = leaked_forms();
    let mut leaks = Vec::new();
    let mut check = |surface: &str, text: &str| {
        let found = found_in(text, &forms);
        if !found.is_empty() {
            leaks.push(format!("{surface}: {found:?}"));
        }
    };
    let routes = paths(&leaky, "leaky");
    for path in &routes {
        let (code, body) = http_raw(&daemon.url, "GET", path, &[]);
        assert_eq!(code, 200, "{path}");
        check(path, &body);
    }
    assert!(routes.len() >= 15);
    let mut events = String::new();
    while let Ok(m) = sse.next(std::time::Duration::from_millis(500)) {
        events.push_str(&m.data);
        events.push('\n');
    }
    assert!(
        events.contains("run.failed"),
        "the stream saw the runs: {events}"
    );
    check("the event stream", &events);
    let plan = d.run(&["plan", "--server", &daemon.url]);
    check(
        "plan --server",
        &format!("{}{}", plan.stdout(), plan.stderr()),
    );
    check("the daemon's log", &daemon.log());
    // The store (database, WAL), backups and reports: every file.
    let files = common::secrets::files_under(d.path());
    for kind in ["state.db", "-wal", "/backups/", "/reports/"] {
        let seen = files.iter().any(|f| f.to_string_lossy().contains(kind));
        assert!(seen, "no {kind} file to crawl\n{}", d.listing());
    }
    for (file, form) in found_in_files(d.path(), &forms) {
        leaks.push(format!("{}: {form:?}", file.display()));
    }
    assert!(leaks.is_empty(), "secrets leak:\n{}", leaks.join("\n"));

    // Each connector did fail with its secret in what came back, masked.
    let shown = run.to_string();
    for masked in [
        "/bot***/sendMessage",
        "rejected: ***",
        "denied: Basic ***",
        "Bearer ***",
        "error sending request for url (***)",
        // The short token is masked as a word, never inside one.
        "shopee *** shopping",
    ] {
        assert!(shown.contains(masked), "no {masked:?} in {run:#}");
    }
    let (_, connectors) = http(&daemon.url, "GET", "/api/v1/connectors", &[]);
    let items = connectors["items"].as_array().expect("connectors");
    assert_eq!(items.len(), 7, "{connectors:#}");
    for c in items {
        let secrets = c["spec"]["secrets"].as_object().expect("secrets");
        assert!(secrets.values().all(|v| v == "***"), "{c:#}");
    }
}
