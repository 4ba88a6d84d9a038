//! Traces over OTLP/HTTP protobuf (`MULTIJOB_OTLP_ENDPOINT`), with the real
//! binary, a real OTLP receiver (protobuf decoded with the
//! `opentelemetry-proto` types) and a real HTTP peer: one trace per run
//! whose id is the run record's `trace_id`, a span per step, `traceparent`
//! sent to the peer, an inbound webhook's trace continued, and a dead
//! collector costing nothing but dropped (counted) spans.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use common::hooks::{free_addr, request};
use common::{ConfigDir, Daemon};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

/// One exported span, ids as hex.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let got = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let got = got.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut got = got.lock().unwrap_or_else(|p| p.into_inner());
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            got.push(Got {
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                name: s.name,
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    (common::serve(app), spans)
}

/// A peer that keeps every `traceparent` it is sent.
fn peer() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/echo",
        get(move |headers: HeaderMap| {
            let keep = keep.clone();
            async move {
                if let Some(v) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
                    keep.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(v.to_string());
                }
                "ok"
            }
        }),
    );
    (common::serve(app), seen)
}

fn workflow(peer: &str) -> String {
    format!(
        "kind: Connector\nid: peer\nprovider: http\nbase_url: {peer}\n---\n\
         id: three\ntype: agent.workflow\nsteps:\n  - id: call\n    http: {{connector: peer, path: /echo}}\n  \
         - id: add\n    set: {{x: 1}}\n  - id: done\n    set: {{y: 2}}\n---\nid: fulfil\ntype: noop\n"
    )
}

/// The spans of trace `trace_id`, once its root span (`run …`) arrived.
fn trace_of(spans: &Spans, trace_id: &str) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got: Vec<Got> = spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        if got.iter().any(|s| s.name.starts_with("run ")) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn one<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    let found: Vec<&Got> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in {spans:#?}");
    found[0]
}

/// A 3-step workflow run is one trace: its root, one attempt, one span per
/// step, the request under its step; the peer saw the run's trace id.
fn one_trace_per_run(redis: Option<&str>) {
    let (otlp, spans) = receiver();
    let (peer_url, seen) = peer();
    let d = ConfigDir::new();
    d.write("jobs.d/jobs.yaml", &workflow(&peer_url));
    let mut extra = vec![];
    if let Some(url) = redis {
        extra.extend(["--redis", url]);
    }
    let daemon = Daemon::start_env(d.path(), &extra, &[("MULTIJOB_OTLP_ENDPOINT", &otlp)]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let mut args = vec![];
    if let Some(url) = redis {
        args.extend(["--redis", url]);
    }
    let id = d.trigger("three", &args);
    let run = daemon.run_ended(&id);
    assert_eq!(run["status"], "succeeded", "{run}");
    let trace_id = run["trace_id"]
        .as_str()
        .expect("trace_id in the API")
        .to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    let trace = trace_of(&spans, &trace_id);
    let root = one(&trace, "run three");
    assert!(root.parent.is_empty(), "{root:?}");
    let attempt = one(&trace, "attempt 1");
    assert_eq!(attempt.parent, root.span_id);
    for step in ["call", "add", "done"] {
        assert_eq!(one(&trace, &format!("step {step}")).parent, attempt.span_id);
    }
    let request = one(&trace, &format!("GET {peer_url}/echo"));
    assert_eq!(request.parent, one(&trace, "step call").span_id);
    assert_eq!(trace.len(), 6, "{trace:#?}");
    // Every root span exported is its own run's: one trace per run.
    let roots: Vec<Got> = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == "run three")
        .cloned()
        .collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0], format!("00-{trace_id}-{}-01", request.span_id));
    assert!(
        daemon.log().contains(&trace_id),
        "the run's log line names its trace id"
    );
}

#[test]
fn one_trace_per_run_embedded() {
    one_trace_per_run(None);
}

#[test]
fn one_trace_per_run_redis() {
    let redis = multijob::testkit::RedisServer::start().expect("redis-server");
    one_trace_per_run(Some(&redis.url()));
}

const SECRET: &str = "s3cret-hook-key";

fn signed(addr: &str, traceparent: &str, delivery: &str) -> common::hooks::Reply {
    let body = b"{}";
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let headers = vec![
        (
            "X-Multijob-Signature",
            multijob::signature::multijob_header(SECRET, t, body),
        ),
        ("Content-Type", "application/json".to_string()),
        ("X-Multijob-Delivery", delivery.to_string()),
        ("traceparent", traceparent.to_string()),
    ];
    request(addr, "POST", "/hooks/shop", &headers, body)
}

/// A webhook with a `traceparent` starts a run in that trace, its root a
/// child of the caller's span; a malformed one starts a trace of its own.
#[test]
fn a_webhook_run_continues_the_callers_trace() {
    let (otlp, spans) = receiver();
    let d = ConfigDir::new();
    d.write("jobs.d/jobs.yaml", &workflow("http://127.0.0.1:9"));
    d.write(
        "jobs.d/hooks.yaml",
        "kind: Trigger\nid: shop\nsource: webhook\njob: fulfil\nsecret: ${env:HOOK_SECRET}\n",
    );
    let addr = free_addr();
    let daemon = Daemon::start_env(
        d.path(),
        &["--inbound-listen", &addr],
        &[("HOOK_SECRET", SECRET), ("MULTIJOB_OTLP_ENDPOINT", &otlp)],
    );
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = signed(&addr, &format!("00-{caller}-00f067aa0ba902b7-01"), "d1");
    let body: Value = serde_json::from_str(&reply.body).expect("json reply");
    let run = daemon.run_ended(body["run_id"].as_str().expect("run_id"));
    assert_eq!(run["trace_id"], caller, "{run}");
    let trace = trace_of(&spans, caller);
    assert_eq!(one(&trace, "run fulfil").parent, "00f067aa0ba902b7");

    for (i, bad) in [
        "00-zz-00f067aa0ba902b7-01",
        &"x".repeat(4000),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    ]
    .iter()
    .enumerate()
    {
        let reply = signed(&addr, bad, &format!("bad{i}"));
        let body: Value = serde_json::from_str(&reply.body).expect("json reply");
        let run = daemon.run_ended(body["run_id"].as_str().expect("run_id"));
        let own = run["trace_id"].as_str().expect("trace_id");
        assert!(
            own.len() == 32 && own != caller && own != "0".repeat(32),
            "{run}"
        );
    }
}

/// A collector on a closed port: runs succeed as fast, and the spans that
/// could not be sent are counted on `/metrics`.
#[test]
fn a_dead_collector_drops_spans_not_runs() {
    let d = ConfigDir::new();
    d.write("jobs.d/jobs.yaml", &workflow("http://127.0.0.1:9"));
    let dead = format!("http://{}", free_addr());
    let daemon = Daemon::start_env(d.path(), &[], &[("MULTIJOB_OTLP_ENDPOINT", &dead)]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let started = Instant::now();
    let ids: Vec<String> = (0..5).map(|_| d.trigger("fulfil", &[])).collect();
    for id in &ids {
        assert_eq!(daemon.run_ended(id)["status"], "succeeded");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
        assert_eq!(code, 200);
        let dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("multijob_trace_spans_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dropped spans counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(daemon.get("/healthz").0, 200);
}

/// A malformed endpoint stops the daemon at start with the fix.
#[test]
fn a_malformed_endpoint_is_refused_at_start() {
    let d = ConfigDir::new();
    d.write("jobs.d/jobs.yaml", "id: fulfil\ntype: noop\n");
    let out = std::process::Command::new(common::bin())
        .args(["run", "-d"])
        .arg(d.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("MULTIJOB_OTLP_ENDPOINT", "not a url")
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MULTIJOB_OTLP_ENDPOINT") && stderr.contains("/v1/traces"),
        "{stderr}"
    );
}
