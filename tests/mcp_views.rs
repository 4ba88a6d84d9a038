//! MCP connectors through the real binary: `validate` reports bad settings
//! at file:line without echoing a literal secret, and no view of the daemon
//! (every API path, `plan`, the log, the store's files) shows the values
//! behind an MCP server's `env`, `headers` or `token`, on the embedded store
//! and on Redis.

mod common;

use common::secrets::{found_in, found_in_files, wire_forms};
use common::{ConfigDir, Daemon, http, http_raw};
use multijob::testkit::RedisServer;

const GH_VALUE: &str = "ghp_McpEnvValueNeverShown4242";
const TOKEN_VALUE: &str = "mcp_BearerValueNeverShown77";
const HEADER_VALUE: &str = "hdr_ApiKeyValueNeverShown99";
const LITERAL: &str = "ghp_LiteralInGitValue31337";

#[test]
fn validate_reports_bad_mcp_settings_at_file_and_line() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/mcp.yaml",
        &format!(
            "kind: Connector\nid: pipe\nprovider: mcp\ntransport: pipe\ncommand: [srv]\n---\n\
             kind: Connector\nid: empty\nprovider: mcp\ntransport: stdio\ncommand: []\n---\n\
             kind: Connector\nid: abs\nprovider: mcp\ntransport: stdio\ncommand: [srv]\ncwd: /etc\n---\n\
             kind: Connector\nid: up\nprovider: mcp\ntransport: stdio\ncommand: [srv]\ncwd: mcp/../../x\nenv:\n  BAD=NAME: ${{env:X}}\n---\n\
             kind: Connector\nid: plain\nprovider: mcp\ntransport: stdio\ncommand: [srv]\nenv:\n  GITHUB_TOKEN: {LITERAL}\n---\n\
             kind: Connector\nid: web\nprovider: mcp\ntransport: http\ncommand: [srv]\n---\n\
             kind: Connector\nid: none\nprovider: mcp\ncommand: [srv]\n---\n\
             kind: Connector\nid: notmcp\nprovider: http\nbase_url: http://x.test\ncommand: [srv]\n"
        ),
    );
    let run = d.run(&["validate"]);
    run.assert_code(1);
    let out = run.stdout() + &run.stderr();
    for (line, text) in [
        (4, "Connector pipe: \"pipe\" is not one of: stdio, http"),
        (11, "Connector empty: [] has less than 1 item"),
        (18, "Connector abs: cwd `/etc` is absolute"),
        (
            27,
            "Connector up: env name `BAD=NAME` is not a variable name",
        ),
        (25, "Connector up: cwd `mcp/../../x` climbs out with `..`"),
        (
            35,
            "Connector plain: env `GITHUB_TOKEN` holds a literal value",
        ),
        (40, "Connector web: an http MCP server needs `base_url`"),
        (41, "Connector web: `command` is for `transport: stdio`"),
        (
            45,
            "Connector none: an MCP connector needs `transport: stdio`",
        ),
        (52, "Connector notmcp: `command` belongs to MCP connectors"),
    ] {
        let at = format!("jobs.d/mcp.yaml:{line}:");
        assert!(
            out.lines().any(|l| l.starts_with(&at) && l.contains(text)),
            "no `{at} … {text}` in\n{out}"
        );
    }
    assert!(
        !out.contains(LITERAL),
        "the literal secret is echoed:\n{out}"
    );
}

fn config() -> ConfigDir {
    let d = ConfigDir::new();
    let key_file = d.path().join("mcp_key.secret");
    std::fs::write(&key_file, HEADER_VALUE).expect("key file");
    d.write(
        "jobs.d/a.yaml",
        &format!(
            "kind: Connector\nid: fs\nprovider: mcp\ntransport: stdio\ncommand: [python3, fs.py]\n\
             cwd: mcp/fs\nenv:\n  GITHUB_TOKEN: ${{env:GITHUB_TOKEN}}\n---\n\
             kind: Connector\nid: web\nprovider: mcp\ntransport: http\n\
             base_url: http://127.0.0.1:9/mcp\ntoken: ${{env:MCP_TOKEN}}\n\
             headers:\n  X-Api-Key: ${{file:{}}}\ntimeout_ms: 5000\n---\n\
             id: a\ntype: noop\nschedule: {{every: 1s}}\n",
            key_file.display()
        ),
    );
    d
}

fn no_mcp_secret_is_shown(redis: Option<&RedisServer>) {
    let d = config();
    let url = redis.map(RedisServer::url);
    let args: Vec<&str> = url.iter().flat_map(|u| ["--redis", u.as_str()]).collect();
    let env = [("GITHUB_TOKEN", GH_VALUE), ("MCP_TOKEN", TOKEN_VALUE)];
    let daemon = Daemon::start_env(d.path(), &args, &env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let runs = daemon.wait_until("/api/v1/runs", "a run", |v| {
        v["items"].as_array().is_some_and(|a| !a.is_empty())
    });
    let run_id = runs["items"][0]["id"].as_str().expect("run id").to_string();

    let forms: Vec<String> = [GH_VALUE, TOKEN_VALUE, HEADER_VALUE]
        .iter()
        .flat_map(|v| wire_forms(v))
        .collect();
    let mut leaks = Vec::new();
    for route in multijob::status::api::ROUTES {
        let id = if route.starts_with("/api/v1/runs") {
            run_id.as_str()
        } else {
            "a"
        };
        let path = route.replace("{id}", id);
        let (_, body) = http_raw(&daemon.url, "GET", &path, &[]);
        for form in found_in(&body, &forms) {
            leaks.push(format!("GET {path}: {form}"));
        }
    }
    let mut plan_args = vec!["plan", "-o", "json"];
    plan_args.extend(args.iter());
    for out in [d.run(&plan_args), d.run(&["plan"])] {
        let text = out.stdout() + &out.stderr();
        assert!(text.contains("fs") || text.contains("unchanged"), "{text}");
        for form in found_in(&text, &forms) {
            leaks.push(format!("plan: {form}"));
        }
    }
    for form in found_in(&daemon.log(), &forms) {
        leaks.push(format!("daemon log: {form}"));
    }
    for (file, form) in found_in_files(d.path(), &forms) {
        // The header's own secret file holds its value, as it must.
        if !file.ends_with("mcp_key.secret") {
            leaks.push(format!("{}: {form}", file.display()));
        }
    }
    assert!(leaks.is_empty(), "MCP secrets leak:\n{}", leaks.join("\n"));

    // The connector view masks the references too, like `secrets`.
    let (_, connectors) = http(&daemon.url, "GET", "/api/v1/connectors", &[]);
    let items = connectors["items"].as_array().expect("connectors");
    let spec = |id: &str| {
        items
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["spec"].clone())
            .unwrap_or_else(|| panic!("no connector {id} in {connectors:#}"))
    };
    assert_eq!(spec("fs")["env"]["GITHUB_TOKEN"], "***", "{connectors:#}");
    assert_eq!(spec("fs")["command"][0], "python3", "{connectors:#}");
    assert_eq!(spec("web")["headers"]["X-Api-Key"], "***", "{connectors:#}");
    assert_eq!(spec("web")["token"], "***", "{connectors:#}");
    assert_eq!(spec("web")["transport"], "http", "{connectors:#}");
}

#[test]
fn no_mcp_secret_is_shown_on_the_embedded_store() {
    no_mcp_secret_is_shown(None);
}

#[test]
fn no_mcp_secret_is_shown_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    no_mcp_secret_is_shown(Some(&redis));
}
