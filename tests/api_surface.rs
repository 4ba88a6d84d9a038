//! Every path of the status API: auth on and off, 405 and 404, and no
//! secret value anywhere (every path and the daemon's log crawled).

mod common;

use common::{ConfigDir, Daemon, http, http_raw};

const SECRET: &str = "tg-secret-value-4242-do-not-leak";

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
    d
}

/// Every route with its placeholders filled in.
fn paths(run_id: &str) -> Vec<String> {
    multijob::status::api::ROUTES
        .iter()
        .map(|r| {
            r.replace(
                "{id}",
                if r.starts_with("/api/v1/runs") {
                    run_id
                } else {
                    "a"
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
    for path in paths(&run) {
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
    for path in paths(&run) {
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

#[test]
fn a_secret_value_appears_nowhere() {
    let d = config();
    let daemon = Daemon::start_env(
        d.path(),
        &[],
        &[("TG_TOKEN", SECRET), ("RUST_LOG", "debug")],
    );
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let run = first_run(&daemon);
    let mut crawled = 0;
    for path in paths(&run) {
        let (code, body) = http_raw(&daemon.url, "GET", &path, &[]);
        assert_eq!(code, 200, "{path}");
        assert!(!body.contains(SECRET), "{path} leaks the secret");
        crawled += 1;
    }
    assert!(crawled >= 15);
    let (_, connectors) = http(&daemon.url, "GET", "/api/v1/connectors", &[]);
    assert_eq!(
        connectors["items"][0]["spec"]["secrets"]["bot_token"],
        "***"
    );
    assert!(!daemon.log().contains(SECRET), "the log leaks the secret");
    let plan = d.run(&["plan", "--server", &daemon.url]);
    plan.assert_stdout_lacks(SECRET);
}
