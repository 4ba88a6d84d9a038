//! `notify:` notices, end to end: the real daemon, a loopback webhook
//! sink as the connector (an axum server recording posts, which can be
//! made to answer 503), on the embedded store and on Redis.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;
use serde_json::Value;

/// The webhook sink: what it accepted, and whether it accepts.
#[derive(Clone, Default)]
struct Sink {
    posts: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
}

impl Sink {
    fn start() -> (Sink, String) {
        let sink = Sink::default();
        let app = axum::Router::new()
            .route("/hook", post(record))
            .with_state(sink.clone());
        (sink, common::serve(app))
    }

    fn texts(&self) -> Vec<String> {
        let posts = self.posts.lock().map(|p| p.clone()).unwrap_or_default();
        posts
            .iter()
            .map(|p| p["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Wait until `n` posts arrived, then a little longer for extra ones.
    #[track_caller]
    fn wait_for(&self, n: usize, d: &Daemon) -> Vec<String> {
        let start = Instant::now();
        while self.texts().len() < n && start.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let texts = self.texts();
        assert_eq!(
            texts.len(),
            n,
            "posts: {texts:#?}\n--- log ---\n{}",
            d.log()
        );
        texts
    }
}

async fn record(State(sink): State<Sink>, Json(body): Json<Value>) -> StatusCode {
    if sink.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Ok(mut p) = sink.posts.lock() {
        p.push(body);
    }
    StatusCode::OK
}

fn connector(base: &str) -> String {
    format!("kind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n---\n")
}

/// A job that fails when triggered with `-i fail_attempts=1`.
fn flaky(base: &str, retries: u32) -> String {
    format!(
        "{}id: flaky\ntype: simulation.heavy\nfailure_memory: {{enabled: false}}\n\
         retry_policy: {{max_retry: {retries}, backoff_sec: [0.2]}}\n\
         notify:\n  - connector: hook\n    on: [failure, recovery]\n",
        connector(base)
    )
}

fn events(d: &Daemon, kind: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/api/v1/events?limit=1000&type={kind}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

fn trigger_and_wait(dir: &ConfigDir, d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["trigger", "flaky"];
    all.extend_from_slice(args);
    let run = dir.run(&all);
    run.assert_code(0);
    d.run_ended(&run.queued_run_id())
}

#[test]
fn three_failures_then_two_successes_send_one_failure_and_one_recovery() {
    let (sink, base) = Sink::start();
    let dir = ConfigDir::new();
    dir.write("jobs.d/flaky.yaml", &flaky(&base, 0));
    dir.run(&["validate"]).assert_code(0);
    let d = Daemon::start(dir.path(), &[]);
    d.wait_until("/api/v1/jobs/flaky", "job flaky", |v| v["id"] == "flaky");
    for _ in 0..3 {
        let run = trigger_and_wait(&dir, &d, &["-i", "fail_attempts=1"]);
        assert_eq!(run["status"], "failed", "{run:#}");
    }
    for _ in 0..2 {
        let run = trigger_and_wait(&dir, &d, &[]);
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let texts = sink.wait_for(2, &d);
    assert!(texts[0].starts_with("flaky: failure — "), "{texts:?}");
    assert!(texts[0].contains("simulated"), "{texts:?}");
    assert!(texts[1].starts_with("flaky: recovery"), "{texts:?}");
    let sent = events(&d, "notice.sent");
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0]["data"]["connector"], "hook");
}

#[test]
fn a_retried_run_does_not_repeat_a_notice() {
    let (sink, base) = Sink::start();
    let dir = ConfigDir::new();
    dir.write("jobs.d/flaky.yaml", &flaky(&base, 2));
    let d = Daemon::start(dir.path(), &[]);
    d.wait_until("/api/v1/jobs/flaky", "job flaky", |v| v["id"] == "flaky");
    // Fails every attempt: three attempts, one failed run, one notice.
    let run = trigger_and_wait(&dir, &d, &["-i", "fail_attempts=9"]);
    assert_eq!(run["status"], "failed", "{run:#}");
    // Two failed attempts, then success: a recovery, and no failure again.
    let run = trigger_and_wait(&dir, &d, &["-i", "fail_attempts=2"]);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let texts = sink.wait_for(2, &d);
    assert!(texts[0].starts_with("flaky: failure"), "{texts:?}");
    assert!(texts[1].starts_with("flaky: recovery"), "{texts:?}");
}

#[test]
fn slots_skipped_by_a_full_lane_send_one_missed_notice_with_the_count() {
    let (sink, base) = Sink::start();
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/lane.yaml",
        &format!(
            "{}kind: Flow\nid: lane\nmax_active_runs: 1\n---\n\
             id: blocker\ntype: simulation.heavy\nflow: lane\ninputs: {{work_ms: 10000}}\ntimeout_ms: 30000\n---\n\
             id: tick\ntype: noop\nflow: lane\nschedule: {{every: 1s}}\n\
             notify:\n  - connector: hook\n    on: [missed]\n",
            connector(&base)
        ),
    );
    dir.run(&["validate"]).assert_code(0);
    let d = Daemon::start(dir.path(), &[]);
    d.wait_until("/api/v1/jobs/tick", "job tick", |v| v["id"] == "tick");
    let run = dir.trigger("blocker", &[]);
    d.run_ended(&run);
    let texts = sink.wait_for(1, &d);
    let skipped = events(&d, "scheduler.dispatch_skipped_flow_limit")
        .iter()
        .filter(|e| e["job_id"] == "tick")
        .count();
    assert!(skipped >= 5, "{skipped} skips\n{}", d.log());
    assert_eq!(
        texts[0],
        format!("tick: missed — {skipped} slot(s) skipped (flow_limit × {skipped})")
    );
}

/// The notice is pending (the sink answers 503) when the daemon is
/// killed; after a restart with the sink up it is sent, once.
fn killed_before_the_send_sends_once_after_restart(extra: &[&str]) {
    let (sink, base) = Sink::start();
    sink.down.store(true, Ordering::SeqCst);
    let dir = ConfigDir::new();
    dir.write("jobs.d/flaky.yaml", &flaky(&base, 0));
    let mut d = Daemon::start(dir.path(), extra);
    d.wait_until("/api/v1/jobs/flaky", "job flaky", |v| v["id"] == "flaky");
    let mut args = vec!["-i", "fail_attempts=1"];
    args.extend_from_slice(extra);
    let run = trigger_and_wait(&dir, &d, &args);
    assert_eq!(run["status"], "failed", "{run:#}");
    let start = Instant::now();
    while events(&d, "notice.failed").is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!events(&d, "notice.failed").is_empty(), "{}", d.log());
    d.signal("KILL");
    let _ = d.child.wait();
    assert!(!d.is_running());
    sink.down.store(false, Ordering::SeqCst);
    let d = Daemon::start(dir.path(), extra);
    let texts = sink.wait_for(1, &d);
    assert!(texts[0].starts_with("flaky: failure"), "{texts:?}");
    d.wait_until("/api/v1/events?type=notice.sent", "notice.sent", |v| {
        v["items"].as_array().is_some_and(|a| a.len() == 1)
    });
}

#[test]
fn killed_before_the_send_sqlite() {
    killed_before_the_send_sends_once_after_restart(&[]);
}

#[test]
fn killed_before_the_send_redis() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    killed_before_the_send_sends_once_after_restart(&["--redis", &url]);
}

#[test]
fn a_run_past_its_deadline_sends_one_deadline_notice() {
    let (sink, base) = Sink::start();
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/slow.yaml",
        &format!(
            "{}id: slow\ntype: simulation.heavy\ninputs: {{work_ms: 4000}}\ndeadline_sec: 1\n\
             notify:\n  - connector: hook\n    on: [deadline]\n",
            connector(&base)
        ),
    );
    dir.run(&["validate"]).assert_code(0);
    let d = Daemon::start(dir.path(), &[]);
    d.wait_until("/api/v1/jobs/slow", "job slow", |v| v["id"] == "slow");
    let run = dir.trigger("slow", &[]);
    assert_eq!(d.run_ended(&run)["status"], "succeeded");
    let texts = sink.wait_for(1, &d);
    assert!(
        texts[0].starts_with("slow: deadline — not finished")
            && texts[0].contains("deadline_sec 1"),
        "{texts:?}"
    );
}

#[test]
fn validate_refuses_bad_notify_rules_with_file_and_line() {
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/a.yaml",
        "kind: Connector\nid: api\nprovider: http\nbase_url: http://127.0.0.1:9\n---\n\
         kind: Connector\nid: hook\nprovider: webhook\nbase_url: http://127.0.0.1:9/hook\n---\n\
         kind: Flow\nid: lane\nnotify:\n  - connector: nope\n    on: [failure]\n---\n\
         id: a\ntype: noop\nnotify:\n  - connector: api\n    on: [failure]\n  \
         - connector: hokk\n    on: [recovery]\n  - connector: hook\n    on: [deadline]\n    \
         template: \"{{ steps.x.output }}\"\n",
    );
    dir.write(
        "jobs.d/b.yaml",
        "id: b\ntype: noop\nnotify:\n  - connector: hook\n    on: [sometimes]\n",
    );
    let run = dir.run(&["validate"]);
    run.assert_code(1);
    let all = format!("{}{}", run.stdout(), run.stderr());
    for want in [
        "jobs.d/a.yaml:14:16: error[reference] Flow lane: no Connector `nope`",
        "jobs.d/a.yaml:20:16: error[reference] Job a: connector `api` (jobs.d/a.yaml:1) does not deliver messages",
        "jobs.d/a.yaml:22:16: error[reference] Job a: no Connector `hokk` (did you mean `hook`?)",
        "jobs.d/a.yaml:25:9: error[notify] Job a: `deadline` needs the job's `deadline_sec`",
        "jobs.d/a.yaml:26:15: error[template] Job a: `steps` cannot be read here",
        "jobs.d/b.yaml:5:10: error[schema] Job b: \"sometimes\" is not one of",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

/// A job with no `notify:` and no flow sends its notices through the
/// directory's `kind: Defaults` rule; a job with its own list does not.
fn the_defaults_document_carries_notices_of_jobs_without_their_own(store: &[&str]) {
    let (sink, base) = Sink::start();
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/jobs.yaml",
        &format!(
            "{}kind: Defaults\nnotify:\n  - connector: hook\n    on: [failure, recovery]\n    \
             template: \"defaults {{{{ job.id }}}}: {{{{ event }}}}\"\n---\n\
             id: bare\ntype: simulation.heavy\nfailure_memory: {{enabled: false}}\n---\n\
             id: own\ntype: simulation.heavy\nfailure_memory: {{enabled: false}}\n\
             notify:\n  - connector: hook\n    on: [failure]\n    \
             template: \"own {{{{ job.id }}}}: {{{{ event }}}}\"\n",
            connector(&base)
        ),
    );
    dir.run(&["validate"]).assert_code(0);
    let d = Daemon::start(dir.path(), store);
    d.wait_until("/api/v1/status", "the Defaults document", |v| {
        v["counts"]["defaults"] == 1
    });
    for job in ["bare", "own"] {
        for args in [&["-i", "fail_attempts=1"][..], &[]] {
            let run = d.run_ended(&dir.trigger(job, &[args, store].concat()));
            assert!(
                run["status"] == "failed" || run["status"] == "succeeded",
                "{run:#}"
            );
        }
    }
    let mut texts = sink.wait_for(3, &d);
    texts.sort();
    assert_eq!(
        texts,
        [
            "defaults bare: failure",
            "defaults bare: recovery",
            "own own: failure"
        ]
    );
}

#[test]
fn the_defaults_document_carries_notices_sqlite() {
    the_defaults_document_carries_notices_of_jobs_without_their_own(&[]);
}

#[test]
fn the_defaults_document_carries_notices_redis() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    the_defaults_document_carries_notices_of_jobs_without_their_own(&["--redis", &url]);
}

fn watched(base: &str, inputs: &str) -> String {
    format!(
        "{}id: watched\ntype: simulation.heavy\nschedule: {{every: 1s}}\n\
         expect: {{success_within: 3s}}\nfailure_memory: {{enabled: false}}\ninputs: {inputs}\n\
         notify:\n  - connector: hook\n    on: [expect]\n",
        connector(base)
    )
}

/// `expect: {success_within: 3s}` holds while the job succeeds (no
/// notice); once it fails, one `expect` notice arrives within a few
/// seconds of the break (the check runs every 2 s), and no more follow
/// however many checks find it still broken.
fn a_broken_expectation_sends_one_expect_notice(store: &[&str]) {
    let (sink, base) = Sink::start();
    let dir = ConfigDir::new();
    dir.write("jobs.d/watched.yaml", &watched(&base, "{work_ms: 10}"));
    let d = Daemon::start(dir.path(), store);
    d.wait_until("/api/v1/expectations", "a success", |v| {
        v["items"][0]["last_success"].is_string()
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(sink.texts(), Vec::<String>::new(), "{}", d.log());

    dir.write(
        "jobs.d/watched.yaml",
        &watched(&base, "{work_ms: 10, fail_rate: 1}"),
    );
    let failing = Instant::now();
    while sink.texts().is_empty() && failing.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The last success is at most ~1 s before the edit is applied; broken
    // 3 s later, seen by the next 2 s check: well within 10 s.
    assert!(
        failing.elapsed() < Duration::from_secs(10),
        "{:?}: {:?}\n{}",
        failing.elapsed(),
        sink.texts(),
        d.log()
    );
    // Three more checks find it still broken: still one notice.
    std::thread::sleep(Duration::from_secs(6));
    let texts = sink.texts();
    assert_eq!(texts.len(), 1, "{texts:#?}\n{}", d.log());
    assert!(texts[0].starts_with("watched: expect — "), "{texts:?}");
    assert_eq!(events(&d, "expectation.broken").len(), 1);
}

#[test]
fn a_broken_expectation_sends_one_expect_notice_sqlite() {
    a_broken_expectation_sends_one_expect_notice(&[]);
}

#[test]
fn a_broken_expectation_sends_one_expect_notice_redis() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    a_broken_expectation_sends_one_expect_notice(&["--redis", &url]);
}
