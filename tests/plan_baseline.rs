//! `plan` says what it compared with (the store and its last applied
//! revision, or that there is no state), prints an invalid directory's
//! findings as JSON with `-o json`, and warns when the config's peak of due
//! slots exceeds a tick cap that is set; the CLI's `--server` takes
//! `host:port` and shows the server's own message on a refusal. The tick
//! cap is off unless set: thousands of every-second jobs skip no slot for it.

mod common;

use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;

const JOBS: &str = "id: nightly\ntype: noop\nschedule: {every: 1h}\n";

/// Where the daemon keeps its state, and how `plan` is pointed at it.
enum Backend {
    Sqlite,
    Redis(RedisServer),
}

impl Backend {
    fn daemon_args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite => vec![],
            Backend::Redis(r) => vec!["--redis".into(), r.url()],
        }
    }

    /// What `plan` names as the state it compared with.
    fn source(&self, d: &ConfigDir) -> String {
        match self {
            Backend::Sqlite => d.path().join(".multijob/state.db").display().to_string(),
            Backend::Redis(r) => r.url(),
        }
    }
}

/// A directory of `n` noop jobs due every second.
fn every_second_jobs(n: usize) -> ConfigDir {
    let d = ConfigDir::new();
    let text: String = (0..n)
        .map(|i| format!("id: j{i:04}\ntype: noop\nschedule: {{every: 1s}}\n---\n"))
        .collect();
    d.write("jobs.d/many.yaml", &text);
    d
}

fn plan(d: &ConfigDir, backend: &Backend, extra: &[&str]) -> common::Run {
    let mut args: Vec<String> = vec![
        "plan".into(),
        "--dir".into(),
        d.path().display().to_string(),
    ];
    args.extend(backend.daemon_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    common::run(&args, Some(d.path()))
}

fn plan_compares_with_the_applied_revision(backend: Backend) {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", JOBS);
    let source = backend.source(&d);
    plan(&d, &backend, &[])
        .assert_code(0)
        .assert_line("no state found", ": everything below is new");
    let args = backend.daemon_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(d.path(), &args);
    let status = daemon.wait_until("/api/v1/status", "a revision applied", |s| {
        s["revision"].is_string()
    });
    let revision = status["revision"].as_str().unwrap_or_default().to_string();
    let run = plan(&d, &backend, &[]);
    run.assert_code(0).assert_line(
        &format!("comparing with {source}, revision {revision} applied at "),
        "Z",
    );
    let json = plan(&d, &backend, &["--output", "json"]).json();
    assert_eq!(json["compared_with"]["source"], source.as_str(), "{json:#}");
    assert_eq!(
        json["compared_with"]["revision"],
        revision.as_str(),
        "{json:#}"
    );
    assert!(json["compared_with"]["applied_at"].is_string(), "{json:#}");
    // Through the API (host:port, no scheme): the revision, no time.
    let host_port = daemon.url.trim_start_matches("http://").to_string();
    let d2 = common::run(
        &[
            "plan".into(),
            "--dir".into(),
            d.path().display().to_string(),
            "--server".into(),
            host_port.clone(),
        ],
        Some(d.path()),
    );
    d2.assert_code(0).assert_line(
        &format!("comparing with http://{host_port}, revision {revision}"),
        "",
    );
}

#[test]
fn plan_compares_with_the_embedded_store() {
    plan_compares_with_the_applied_revision(Backend::Sqlite);
}

#[test]
fn plan_compares_with_redis() {
    plan_compares_with_the_applied_revision(Backend::Redis(
        RedisServer::start().expect("redis-server"),
    ));
}

#[test]
fn plan_json_on_an_invalid_directory_prints_the_findings() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule: {every: 5x}\n",
    );
    let plan = d.run(&["plan", "--output", "json"]);
    plan.assert_code(1);
    let validate = d.run(&["validate", "--output", "json"]);
    assert_eq!(plan.json(), validate.json(), "{}", plan.explain());
    assert_eq!(plan.json()[0]["code"], "schema", "{}", plan.explain());
}

/// `plan` on `d` under `SCHEDULER_MAX_DISPATCH_PER_TICK=cap` (unset for
/// `None`): exit code, stdout, stderr.
fn plan_with_cap(d: &ConfigDir, cap: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = std::process::Command::new(common::bin());
    cmd.args(["plan", "--dir"]).arg(d.path());
    match cap {
        Some(c) => cmd.env("SCHEDULER_MAX_DISPATCH_PER_TICK", c),
        None => cmd.env_remove("SCHEDULER_MAX_DISPATCH_PER_TICK"),
    };
    let out = cmd.output().expect("spawn multijob plan");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_warns_when_peak_slots_exceed_a_set_tick_cap() {
    let d = every_second_jobs(120);
    let warning = "warning: 120 slots a second are due at peak, above SCHEDULER_MAX_DISPATCH_PER_TICK=80 a tick: some slots will be skipped (tick_limit)";
    let (code, out, _) = plan_with_cap(&d, Some("80"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.lines().any(|l| l == warning), "{out}");
    // No cap, or one above the peak: nothing to warn about.
    for cap in [None, Some("500")] {
        let (code, out, _) = plan_with_cap(&d, cap);
        assert_eq!(code, Some(0), "{out}");
        assert!(!out.contains("warning:"), "{cap:?}: {out}");
    }
    // A cap that is not a number is refused with what to write.
    let (code, _, err) = plan_with_cap(&d, Some("lots"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\"lots\" is not a whole number"), "{err}");
}

#[test]
fn the_cli_shows_the_servers_message_on_401() {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", JOBS);
    let daemon = Daemon::start_env(d.path(), &[], &[("MULTIJOB_API_TOKEN", "s3cret")]);
    let host_port = daemon.url.trim_start_matches("http://").to_string();
    for args in [
        vec!["status", "--server", &host_port],
        vec!["plan", "--server", &host_port],
    ] {
        let out = std::process::Command::new(common::bin())
            .args(&args)
            .current_dir(d.path())
            .env_remove("MULTIJOB_DIR")
            .env("MULTIJOB_API_TOKEN", "wrong")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("401 Unauthorized: ") && stderr.contains("MULTIJOB_API_TOKEN"),
            "{args:?}: {stderr}"
        );
    }
    // A scheme it cannot speak is refused before any request.
    let out = std::process::Command::new(common::bin())
        .args(["status", "--server", "ftp://127.0.0.1:21"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not ftp://"));
    // The daemon keeps serving.
    assert_eq!(common::http(&daemon.url, "GET", "/healthz", &[]).0, 200);
}

#[test]
fn two_thousand_every_second_jobs_skip_no_slot_for_a_tick_cap_by_default() {
    let d = every_second_jobs(2000);
    let daemon = Daemon::start(d.path(), &["--workers", "4"]);
    // Three seconds' worth of slots, each dispatched or skipped.
    let status = daemon.wait_until("/api/v1/status", "6,000 slots decided", |s| {
        let scheduler = &s["scheduler"];
        let skipped: u64 = scheduler["skipped"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        scheduler["dispatched"].as_u64().unwrap_or(0) + skipped >= 6000
    });
    assert_eq!(
        status["scheduler"]["skipped"]["tick_limit"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{:#}",
        status["scheduler"]
    );
}
