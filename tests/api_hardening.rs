//! The status API against hostile clients, through the real binary.

mod common;

use common::{ConfigDir, Daemon};

fn noop_dir() -> ConfigDir {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    d
}

fn start(d: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    let daemon = Daemon::start_env(d.path(), extra, env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon
}

#[test]
fn a_repeated_access_token_is_refused() {
    let d = noop_dir();
    let daemon = start(&d, &[], &[("MULTIJOB_API_TOKEN", "s3cret")]);
    let get =
        |query: &str| common::http_raw(&daemon.url, "GET", &format!("/api/v1/events{query}"), &[]);
    assert_eq!(get("?access_token=s3cret").0, 200);
    for smuggled in [
        "?access_token=s3cret&access_token=wrong",
        "?access_token=wrong&access_token=s3cret",
        "?access_token=s3cret&access_token=s3cret",
    ] {
        let (code, body) = get(smuggled);
        assert_eq!(code, 400, "{smuggled}: {body}");
        assert!(body.contains("access_token is given 2 times"), "{body}");
    }
    assert_eq!(get("?access_token=wrong").0, 401);
}
