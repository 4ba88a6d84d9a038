//! The status surface through the real binary: the SSE event stream,
//! Prometheus metrics and the OpenAPI document.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon, SseEnd, SseMessage, SseStream};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn noop_dir(jobs: &[&str]) -> ConfigDir {
    let d = ConfigDir::new();
    for job in jobs {
        d.write(
            &format!("jobs.d/{job}.yaml"),
            &format!("id: {job}\ntype: noop\n"),
        );
    }
    d
}

fn start(d: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    let daemon = Daemon::start_env(d.path(), extra, env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon
}

fn trigger(d: &ConfigDir, job: &str, count: u32) {
    d.run(&["trigger", job, "--count", &count.to_string()])
        .assert_code(0);
}

/// Every stored event after `after` (paging the JSON list).
fn stored_events(daemon: &Daemon, after: i64, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let (code, page) = daemon.get(&format!("/api/v1/events?limit=1000&after={after}{query}"));
        assert_eq!(code, 200, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        out.extend(items);
        match page["next_cursor"].as_i64() {
            Some(c) => after = c,
            None => return out,
        }
    }
}

fn last_event_id(daemon: &Daemon) -> i64 {
    stored_events(daemon, 0, "")
        .last()
        .and_then(|e| e["id"].as_i64())
        .unwrap_or(0)
}

fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

/// Read events until `done` holds for the list so far.
#[track_caller]
fn read_until(sse: &mut SseStream, done: impl Fn(&[SseMessage]) -> bool) -> Vec<SseMessage> {
    let start = Instant::now();
    let mut got = Vec::new();
    while !done(&got) {
        assert!(
            start.elapsed() < WAIT,
            "stream stalled after {} events; last: {:?}",
            got.len(),
            got.last()
        );
        got.push(sse.next_event(WAIT));
    }
    got
}

fn count_type(got: &[SseMessage], t: &str) -> usize {
    got.iter().filter(|m| m.event.as_deref() == Some(t)).count()
}

#[track_caller]
fn assert_well_formed(got: &[SseMessage]) {
    let mut last = 0;
    for m in got {
        let id = m.id();
        assert!(id > last, "ids not strictly increasing: {last} then {id}");
        last = id;
        let e = m.json();
        assert_eq!(e["id"].as_i64(), Some(id), "{m:?}");
        assert_eq!(e["type"].as_str(), m.event.as_deref(), "{m:?}");
        for field in ["at", "job_id", "run_id", "data"] {
            assert!(e.get(field).is_some(), "event lacks {field}: {m:?}");
        }
    }
}

#[test]
fn sse_delivers_live_events_in_order_with_ids() {
    let d = noop_dir(&["a"]);
    let daemon = start(&d, &[], &[]);
    let before = last_event_id(&daemon);
    let mut sse = SseStream::open(&daemon.url, "/api/v1/events", &[]);
    assert_eq!(sse.status, 200, "{}", sse.head);
    assert!(
        sse.head.to_ascii_lowercase().contains("text/event-stream"),
        "{}",
        sse.head
    );
    trigger(&d, "a", 3);
    let got = read_until(&mut sse, |g| count_type(g, "run.completed") == 3);
    assert_well_formed(&got);
    // From now: nothing that happened before the connection.
    assert!(got[0].id() > before, "{:?}", got[0]);
    assert_eq!(got[0].event.as_deref(), Some("run.queued"));
    // Exactly what the store holds, in the same order.
    let stored = stored_events(&daemon, before, "");
    let received: Vec<i64> = got.iter().map(SseMessage::id).collect();
    assert_eq!(received, ids(&stored)[..received.len()]);
}

#[test]
fn resume_with_last_event_id_gets_exactly_the_missed_events() {
    let d = noop_dir(&["a"]);
    let daemon = start(&d, &[], &[]);
    let mut sse = SseStream::open(&daemon.url, "/api/v1/events", &[]);
    trigger(&d, "a", 1);
    let first = read_until(&mut sse, |g| count_type(g, "run.completed") == 1);
    let seen = first.last().unwrap().id();
    drop(sse);

    // Missed while disconnected.
    trigger(&d, "a", 2);
    daemon.wait_until("/api/v1/runs?status=succeeded", "3 runs done", |v| {
        v["items"].as_array().map_or(0, Vec::len) == 3
    });
    let missed = ids(&stored_events(&daemon, seen, ""));
    assert!(!missed.is_empty());

    // Last-Event-ID wins over ?after=.
    let header = seen.to_string();
    let mut sse = SseStream::open(
        &daemon.url,
        "/api/v1/events?after=0",
        &[("Last-Event-ID", &header)],
    );
    let backfill = read_until(&mut sse, |g| g.len() == missed.len());
    assert_well_formed(&backfill);
    assert_eq!(
        backfill.iter().map(SseMessage::id).collect::<Vec<_>>(),
        missed
    );
    // Then live, without repeating the backfill.
    trigger(&d, "a", 1);
    let live = read_until(&mut sse, |g| count_type(g, "run.completed") == 1);
    assert!(live[0].id() > *missed.last().unwrap(), "{:?}", live[0]);
    assert_well_formed(&live);

    // ?after= alone resumes the same way.
    let mut sse = SseStream::open(&daemon.url, &format!("/api/v1/events?after={seen}"), &[]);
    let again = read_until(&mut sse, |g| g.len() == missed.len());
    assert_eq!(again.iter().map(SseMessage::id).collect::<Vec<_>>(), missed);

    // A Last-Event-ID that is not an id is refused, as JSON.
    let (code, body) = common::http(
        &daemon.url,
        "GET",
        "/api/v1/events",
        &[("Accept", "text/event-stream"), ("Last-Event-ID", "x")],
    );
    assert_eq!(code, 400);
    assert!(body["error"].is_string(), "{body}");
}

#[test]
fn type_and_job_filters_apply_to_the_stream() {
    let d = noop_dir(&["a", "b"]);
    let daemon = start(&d, &[], &[]);
    let mut exact = SseStream::open(&daemon.url, "/api/v1/events?type=run.completed", &[]);
    let mut prefix = SseStream::open(&daemon.url, "/api/v1/events?type=run.*&job=b", &[]);
    // Filters apply to the backfill too.
    let mut history = SseStream::open(&daemon.url, "/api/v1/events?after=0&type=reconcile.*", &[]);
    trigger(&d, "a", 2);
    trigger(&d, "b", 1);

    let got = read_until(&mut exact, |g| g.len() == 3);
    assert_well_formed(&got);
    assert!(
        got.iter()
            .all(|m| m.event.as_deref() == Some("run.completed")),
        "{got:?}"
    );
    let by_job = got.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e.json()["job_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        m
    });
    assert_eq!(by_job, BTreeMap::from([("a".into(), 2), ("b".into(), 1)]));

    let got = read_until(&mut prefix, |g| count_type(g, "run.completed") == 1);
    assert_well_formed(&got);
    for m in &got {
        let e = m.json();
        assert!(e["type"].as_str().unwrap().starts_with("run."), "{m:?}");
        assert_eq!(e["job_id"], "b", "{m:?}");
    }
    let kinds: Vec<&str> = got.iter().filter_map(|m| m.event.as_deref()).collect();
    assert_eq!(kinds, ["run.queued", "run.started", "run.completed"]);

    let got = history.next_event(WAIT);
    assert_eq!(got.event.as_deref(), Some("reconcile.applied"), "{got:?}");
    assert!(
        matches!(
            history.next(Duration::from_millis(500)),
            Err(SseEnd::Timeout)
        ),
        "only the one reconcile event"
    );
}

#[test]
fn keep_alive_comments_arrive_on_a_quiet_stream() {
    let d = noop_dir(&["a"]);
    let daemon = start(&d, &[], &[("MULTIJOB_SSE_KEEPALIVE_MS", "200")]);
    let mut sse = SseStream::open(&daemon.url, "/api/v1/events", &[]);
    let started = Instant::now();
    for _ in 0..2 {
        let m = sse.next(Duration::from_secs(3)).expect("a keep-alive");
        assert_eq!(m.comment.as_deref(), Some("keep-alive"), "{m:?}");
        assert_eq!(m.event, None);
    }
    assert!(started.elapsed() >= Duration::from_millis(350));
}

#[test]
fn a_reader_that_keeps_up_gets_every_event_of_a_burst() {
    let d = noop_dir(&["burst"]);
    let daemon = start(&d, &["--workers", "4"], &[]);
    let before = last_event_id(&daemon);
    let mut sse = SseStream::open(&daemon.url, "/api/v1/events", &[]);
    trigger(&d, "burst", 3000);
    let start = Instant::now();
    let mut got = Vec::new();
    let mut completed = 0;
    while completed < 3000 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {completed} runs completed on the stream"
        );
        let m = sse.next_event(WAIT);
        assert_ne!(m.event.as_deref(), Some("lagged"), "a reader that keeps up");
        if m.event.as_deref() == Some("run.completed") {
            completed += 1;
        }
        got.push(m);
    }
    assert_well_formed(&got);
    let received: Vec<i64> = got.iter().map(SseMessage::id).collect();
    let stored = ids(&stored_events(&daemon, before, ""));
    assert!(stored.len() >= received.len());
    assert_eq!(received, stored[..received.len()], "complete and in order");
}

/// The value of one sample line (`name{labels} value`) of the exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[track_caller]
fn assert_sample(text: &str, series: &str, want: f64) {
    assert_eq!(sample(text, series), Some(want), "{series}\n{text}");
}

/// Scrape until `settled` holds (or give up and return the last scrape).
fn scrape_until(daemon: &Daemon, settled: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(daemon);
        if settled(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape(daemon: &Daemon) -> String {
    let (code, text) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    assert_eq!(code, 200, "{text}");
    text
}

#[test]
fn metrics_count_runs_skips_reconciles_and_resources() {
    let d = ConfigDir::new();
    d.write("jobs.d/ok.yaml", "id: ok\ntype: noop\n");
    d.write("jobs.d/gone.yaml", "id: gone\ntype: noop\n");
    d.write(
        "jobs.d/bad.yaml",
        "id: bad\ntype: simulation.heavy\nretry_policy: {max_retry: 0}\nfailure_memory: {enabled: false}\ninputs: {fail_rate: 1}\n",
    );
    d.write(
        "jobs.d/slow.yaml",
        "id: slow\ntype: simulation.heavy\nschedule: {every: 1s}\ninputs: {work_ms: 2500}\n",
    );
    d.write(
        "jobs.d/lane.yaml",
        "kind: Flow\nid: lane\nmax_active_runs: 2\n",
    );
    let daemon = start(&d, &["--workers", "3"], &[]);

    // The content type and every metric, before any run.
    let head = {
        use std::io::{Read, Write};
        let host = daemon.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );

    trigger(&d, "ok", 2);
    trigger(&d, "bad", 1);
    trigger(&d, "gone", 1);
    daemon.wait_until(
        "/api/v1/events?type=scheduler.dispatch_skipped_overlap",
        "an overlap skip",
        |v| !v["items"].as_array().unwrap().is_empty(),
    );
    daemon.wait_until("/api/v1/runs?limit=1000", "manual runs finished", |v| {
        let runs = v["items"].as_array().unwrap();
        let done = |job: &str| {
            runs.iter()
                .filter(|r| {
                    r["job_id"] == job && (r["status"] == "succeeded" || r["status"] == "failed")
                })
                .count()
        };
        done("ok") == 2 && done("bad") == 1 && done("gone") == 1
    });
    // The metrics task follows the event feed asynchronously.
    let series = r#"multijob_runs_total{job="gone",status="succeeded"}"#;
    let text = scrape_until(&daemon, |t| sample(t, series).is_some());
    assert_sample(&text, series, 1.0);

    // Stop the slots (no more skips), delete `gone`, then a rejected revision.
    d.write(
        "jobs.d/slow.yaml",
        "id: slow\ntype: simulation.heavy\nenabled: false\nschedule: {every: 1s}\ninputs: {work_ms: 2500}\n",
    );
    d.remove("jobs.d/gone.yaml");
    daemon.wait_until("/api/v1/status", "the new revision", |v| {
        v["counts"]["enabled_jobs"] == 2 && v["counts"]["jobs"] == 3
    });
    d.write("jobs.d/broken.yaml", "id: broken\ntype: nope\n");
    daemon.wait_until("/api/v1/status", "a rejected revision", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    daemon.wait_until("/api/v1/status", "an idle daemon", |v| {
        v["queue_depth"] == 0 && v["running"] == 0 && v["workers"]["busy"] == 0
    });

    let count = |t: &str| stored_events(&daemon, 0, &format!("&type={t}")).len() as f64;
    let text = scrape_until(&daemon, |t| {
        sample(t, "multijob_run_duration_seconds_count") == Some(count("run.completed"))
            && sample(t, r#"multijob_reconcile_total{result="rejected"}"#)
                == Some(count("reconcile.rejected"))
    });
    assert_sample(
        &text,
        r#"multijob_runs_total{job="ok",status="succeeded"}"#,
        2.0,
    );
    assert_sample(
        &text,
        r#"multijob_runs_total{job="bad",status="failed"}"#,
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            r#"multijob_runs_total{job="gone",status="succeeded"}"#
        ),
        None,
        "a deleted job's series are dropped\n{text}"
    );
    let overlap = count("scheduler.dispatch_skipped_overlap");
    assert!(overlap >= 1.0);
    assert_sample(
        &text,
        r#"multijob_dispatch_skipped_total{reason="overlap"}"#,
        overlap,
    );
    assert_sample(
        &text,
        r#"multijob_reconcile_total{result="applied"}"#,
        count("reconcile.applied"),
    );
    let rejected = count("reconcile.rejected");
    assert!(rejected >= 1.0);
    assert_sample(
        &text,
        r#"multijob_reconcile_total{result="rejected"}"#,
        rejected,
    );
    assert_sample(
        &text,
        "multijob_run_duration_seconds_count",
        count("run.completed"),
    );
    let scheduled = stored_events(&daemon, 0, "&type=run.queued")
        .iter()
        .filter(|e| e["data"]["trigger"] == "schedule")
        .inspect(|e| assert!(e["data"]["late_ms"].is_number(), "{e}"))
        .count() as f64;
    assert!(scheduled >= 1.0);
    assert_sample(&text, "multijob_schedule_lateness_seconds_count", scheduled);
    assert_sample(&text, r#"multijob_resources{kind="job"}"#, 3.0);
    assert_sample(&text, r#"multijob_resources{kind="flow"}"#, 1.0);
    assert_sample(&text, r#"multijob_resources{kind="connector"}"#, 0.0);
    assert_sample(&text, r#"multijob_resources{kind="skill"}"#, 0.0);
    assert_sample(&text, "multijob_queue_depth", 0.0);
    assert_sample(&text, "multijob_runs_running", 0.0);
    assert_sample(&text, "multijob_pressure_mode", 0.0);
    assert_sample(&text, "multijob_workers_busy", 0.0);
    assert_sample(&text, "multijob_workers_total", 3.0);
}

#[test]
fn the_openapi_document_lists_every_route() {
    let d = noop_dir(&["a"]);
    // `/api/v1/triggers/{id}` needs a trigger `a` to answer 200.
    d.write(
        "jobs.d/hook.yaml",
        "kind: Trigger\nid: a\nsource: webhook\njob: a\nsecret: ${env:HOOK_SECRET}\n",
    );
    let daemon = start(&d, &[], &[]);
    let (code, doc) = daemon.get("/api/v1/openapi.json");
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for route in multijob::status::api::ROUTES {
        assert!(paths.contains_key(*route), "{route} undocumented");
        // Served: a concrete path for each route answers, never 404/405.
        let concrete = route.replace("{id}", "a");
        let (code, _) = common::http_raw(&daemon.url, "GET", &concrete, &[]);
        assert!(
            code == 200 || (concrete.starts_with("/api/v1/runs/") && code == 404),
            "{concrete}: {code}"
        );
    }
}

#[test]
fn an_open_stream_does_not_hold_up_shutdown() {
    let d = noop_dir(&["a"]);
    let mut daemon = start(&d, &[], &[]);
    let mut sse = SseStream::open(&daemon.url, "/api/v1/events", &[]);
    daemon.signal("TERM");
    let started = Instant::now();
    while daemon.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the daemon did not stop with a stream open\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sse.next(Duration::from_secs(5)), Err(SseEnd::Closed));
}
