//! The bundled demo works on any `--listen`: its `self` connector reaches
//! the daemon's own API through `${env:MULTIJOB_API_URL}`, which the daemon
//! fills with the address it listens on; and a connector that reaches
//! nothing says why (connection refused, and where it tried).

mod common;

use common::{ConfigDir, Daemon};

/// A copy of the repository's `jobs.d/` and `skills.d/`.
fn bundled_demo() -> ConfigDir {
    let d = ConfigDir::new();
    for sub in ["jobs.d", "skills.d"] {
        let from = common::repo().join(sub);
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            d.write(
                &format!("{sub}/{name}"),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    d
}

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_self_check_succeeds_on_a_port_that_is_not_8080() {
    let d = bundled_demo();
    let listen = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::start_on(&listen, d.path(), &[], &[]);
    assert!(!daemon.url.ends_with(":8080"), "{}", daemon.url);
    let run = daemon.run_ended(&d.trigger("self-check", &[]));
    assert_eq!(
        run["status"],
        "succeeded",
        "{run:#}\n--- log ---\n{}",
        daemon.log()
    );
    // Its last step wrote the summary it built from the API's answer.
    let last = d.path().join(".multijob/data/self-check/last.txt");
    let text = std::fs::read_to_string(&last).unwrap_or_default();
    assert!(
        text.ends_with('\n') && text.len() > 20,
        "{last:?}: {text:?}"
    );
}

#[test]
fn a_connector_to_a_closed_port_fails_with_connection_refused() {
    let port = free_port();
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        &format!(
            "kind: Connector\nid: gone\nprovider: http\nbase_url: http://127.0.0.1:{port}\n---\n\
             id: probe\ntype: agent.workflow\nsteps:\n  - id: get\n    http: {{connector: gone, path: /health}}\n"
        ),
    );
    let daemon = Daemon::start(d.path(), &[]);
    let run = daemon.run_ended(&d.trigger("probe", &[]));
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("connection refused")
            && error.contains(&format!("is anything listening on 127.0.0.1:{port}?")),
        "{run:#}"
    );
}

#[test]
fn a_base_url_from_an_unset_variable_fails_the_run_and_says_which() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "kind: Connector\nid: api\nprovider: http\nbase_url: ${env:MJ_TEST_UNSET_API}/v1\n---\n\
         id: probe\ntype: agent.workflow\nsteps:\n  - id: get\n    http: {connector: api, path: /health}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    let run = daemon.run_ended(&d.trigger("probe", &[]));
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"].as_str().unwrap_or_default().contains(
            "base_url refers to ${env:MJ_TEST_UNSET_API}, but MJ_TEST_UNSET_API is not set"
        ),
        "{run:#}"
    );
    // The daemon keeps serving.
    let (code, _) = daemon.get("/api/v1/status");
    assert_eq!(code, 200);
}

#[test]
fn a_malformed_env_base_url_is_a_validation_error() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "kind: Connector\nid: api\nprovider: http\nbase_url: ${env:API}v1\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:4:11: error[url] Connector api:",
        "base_url `${env:API}v1`: write `${env:NAME}` alone or followed by a path",
    );
}
