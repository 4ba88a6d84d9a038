//! A host that cannot give the daemon what it needs (here: no CA
//! certificates) must not stop it: runs that need the missing part fail
//! with the cause and the fix, everything else goes on, no worker slot is
//! lost, `/readyz` says why, and a stop does not wait for ghosts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};
use serde_json::Value;

fn trigger(d: &ConfigDir, job: &str) -> String {
    let run = d.run(&["trigger", job]);
    run.assert_code(0);
    run.stdout()
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no run id in {}", run.stdout()))
        .to_string()
}

fn wait_ended(daemon: &Daemon, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (_, run) = daemon.get(&format!("/api/v1/runs/{id}"));
        if matches!(run["status"].as_str(), Some("succeeded" | "failed")) {
            return run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "run {id} did not end: {run:#}\n--- daemon log ---\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn without_ca_certificates_https_runs_fail_clearly_and_nothing_else_stops() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let shop = common::serve(axum::Router::new().route(
        "/ping",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "pong" }
        }),
    ));
    let d = ConfigDir::new();
    let empty = d.path().join("no-certs");
    std::fs::create_dir_all(&empty).expect("empty cert dir");
    let empty_pem = d.path().join("empty.pem");
    std::fs::write(&empty_pem, "").expect("empty CA bundle");
    d.write(
        "jobs.d/jobs.yaml",
        &format!(
            "kind: Connector\nid: secure\nprovider: http\nbase_url: https://127.0.0.1:9\n---\n\
             kind: Connector\nid: plain\nprovider: http\nbase_url: {shop}\n---\n\
             id: tls-call\ntype: agent.workflow\n\
             steps:\n  - id: call\n    http: {{connector: secure, path: /x}}\n---\n\
             id: plain-call\ntype: agent.workflow\n\
             steps:\n  - id: call\n    http: {{connector: plain, path: /ping}}\n---\n\
             id: nothing\ntype: noop\n"
        ),
    );
    let certs_file = empty_pem.to_string_lossy().to_string();
    let certs_dir = empty.to_string_lossy().to_string();
    let mut daemon = Daemon::start_env(
        d.path(),
        &["--workers", "2"],
        &[
            ("SSL_CERT_FILE", certs_file.as_str()),
            ("SSL_CERT_DIR", certs_dir.as_str()),
        ],
    );
    daemon.wait_until("/api/v1/status", "a revision", |v| {
        v["revision"].is_string()
    });

    // More HTTPS runs than workers: before, each one that panicked kept its
    // slot, so the pool was gone after two.
    let tls_runs: Vec<String> = (0..6).map(|_| trigger(&d, "tls-call")).collect();
    for id in &tls_runs {
        let run = wait_ended(&daemon, id);
        assert_eq!(run["status"], "failed", "{run:#}");
        let error = run["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("TLS is unavailable") && error.contains("ca-certificates"),
            "the error names the cause and the fix: {error}"
        );
    }
    // Plain HTTP and noop runs go on.
    let plain = wait_ended(&daemon, &trigger(&d, "plain-call"));
    assert_eq!(plain["status"], "succeeded", "{plain:#}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the shop got the plain call"
    );
    let noop = wait_ended(&daemon, &trigger(&d, "nothing"));
    assert_eq!(noop["status"], "succeeded", "{noop:#}");

    let (_, status) = daemon.get("/api/v1/status");
    assert_eq!(status["workers"]["busy"], 0, "no slot lost: {status:#}");

    let (code, ready) = daemon.get("/readyz");
    assert_eq!(code, 503, "{ready:#}");
    assert_eq!(ready["http_client"], false);
    let reason = ready["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("TLS is unavailable"), "{reason}");
    assert_eq!(daemon.get("/healthz").0, 200);

    // Nothing is left running, so a stop is prompt.
    let stop = Instant::now();
    daemon.signal("TERM");
    while daemon.is_running() {
        assert!(
            stop.elapsed() < Duration::from_secs(10),
            "the daemon did not stop\n--- daemon log ---\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !daemon.log().contains("panicked"),
        "no panic: {}",
        daemon.log()
    );
}
