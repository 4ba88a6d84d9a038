//! A GitHub trigger with `action: sync`: a signed `push` delivery to the
//! inbound listener makes `run --git` fetch at once (the interval is an
//! hour here, so only the hook can cause a fetch), on the embedded store
//! and with Redis (the replica asks the leader through the inbox). Real
//! binary, real bare repository, real signed HTTP; fetches are counted
//! with `multijob_git_fetch_total`.

mod common;

use std::time::{Duration, Instant};

use common::hooks::{Reply, free_addr, hmac_hex, request};
use common::origin::{Origin, applied};
use common::{ConfigDir, Daemon};
use serde_json::json;

const SECRET: &str = "s3cret-push-key";
const JOB: &str = "id: tick\ntype: noop\nschedule: {every: 1h}\n";
const SYNC: &str =
    "kind: Trigger\nid: push\nsource: github\naction: sync\nsecret: ${env:HOOK_SECRET}\n";

/// A GitHub delivery to `/hooks/push`, signed with `secret`.
fn deliver(addr: &str, event: &str, body: &[u8], delivery: &str, secret: &str) -> Reply {
    let headers = vec![
        (
            "X-Hub-Signature-256",
            format!("sha256={}", hmac_hex(secret, &[body])),
        ),
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Delivery", delivery.to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    request(addr, "POST", "/hooks/push", &headers, body)
}

fn push_to(branch: &str) -> Vec<u8> {
    json!({"ref": format!("refs/heads/{branch}"), "repository": {"full_name": "acme/config"}})
        .to_string()
        .into_bytes()
}

/// Every fetch so far: `multijob_git_fetch_total` over its results.
fn fetches(d: &Daemon) -> u64 {
    let (_, metrics) = common::http_raw(&d.url, "GET", "/metrics", &[]);
    metrics
        .lines()
        .filter(|l| l.starts_with("multijob_git_fetch_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

/// Waits until at least `n` fetches were made; the count.
#[track_caller]
fn fetched_at_least(d: &Daemon, n: u64) -> u64 {
    let start = Instant::now();
    loop {
        let now = fetches(d);
        if now >= n {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{now} fetches, waited for {n}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No fetch follows: the count stays `n` for a while.
#[track_caller]
fn no_fetch_after(d: &Daemon, n: u64, what: &str) {
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fetches(d), n, "{what} caused a fetch\n{}", d.log());
}

/// The whole surface of one daemon, on sqlite or Redis.
fn a_signed_push_fetches_at_once(redis: Option<&str>) {
    let origin = Origin::new();
    let first = origin.push(
        &[("jobs.d/tick.yaml", JOB), ("jobs.d/push.yaml", SYNC)],
        "first",
    );
    let cfg = tempfile::tempdir().expect("dir");
    let (url, addr) = (origin.file_url(), free_addr());
    let mut args = vec![
        "--git",
        &url,
        "--git-interval",
        "1h",
        "--inbound-listen",
        &addr,
    ];
    if let Some(r) = redis {
        args.extend(["--redis", r]);
    }
    let d = Daemon::start_env(cfg.path(), &args, &[("HOOK_SECRET", SECRET)]);
    applied(&d, &first);
    let base = fetched_at_least(&d, 1);
    let next = origin.push(&[("jobs.d/more.yaml", "id: more\ntype: noop\n")], "next");

    // Hostile first: none of these fetches.
    let forged = deliver(&addr, "push", &push_to("main"), "d-forged", "wrong-key");
    assert_eq!(forged.code, 401, "{}", forged.body);
    let other = deliver(&addr, "push", &push_to("feature"), "d-other", SECRET);
    assert_eq!(other.code, 202, "{}", other.body);
    assert_eq!(other.json()["status"], "ignored", "{}", other.body);
    let ping = deliver(&addr, "ping", br#"{"zen":"hi"}"#, "d-ping", SECRET);
    assert_eq!(
        (ping.code, ping.json()["status"].clone()),
        (200, json!("pong"))
    );
    let huge = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(deliver(&addr, "push", &huge, "d-huge", SECRET).code, 413);
    no_fetch_after(
        &d,
        base,
        "a forged, other-branch, ping or oversized delivery",
    );

    // A signed push to the pulled branch: one fetch, the commit applied.
    let started = Instant::now();
    let ok = deliver(&addr, "push", &push_to("main"), "d-1", SECRET);
    assert_eq!(ok.code, 202, "{}", ok.body);
    assert_eq!(ok.json()["status"], "sync_requested", "{}", ok.body);
    let status = applied(&d, &next);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status["git"]["commit"], next.as_str(), "{status:#}");
    let after = fetched_at_least(&d, base + 1);

    // The same delivery again: refused as a duplicate, nothing fetched.
    let replay = deliver(&addr, "push", &push_to("main"), "d-1", SECRET);
    assert_eq!(replay.code, 202, "{}", replay.body);
    assert_eq!(replay.json()["duplicate"], true, "{}", replay.body);
    no_fetch_after(&d, after, "a replayed delivery");

    // A burst of new deliveries coalesces: at most the fetch in progress
    // and one more.
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                deliver(&addr, "push", &push_to("main"), &format!("b-{i}"), SECRET).code
            })
        })
        .collect();
    for t in burst {
        assert_eq!(t.join().expect("thread"), 202);
    }
    let burst_fetches = fetched_at_least(&d, after + 1);
    std::thread::sleep(Duration::from_millis(1500));
    let total = fetches(&d);
    assert!(
        total - after <= 2,
        "8 deliveries caused {} fetches ({burst_fetches} seen first)",
        total - after
    );

    let (_, metrics) = common::http_raw(&d.url, "GET", "/metrics", &[]);
    for result in ["sync_requested", "ignored", "duplicate", "ping"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("multijob_inbound_requests_total")
                    && l.contains("trigger=\"push\"")
                    && l.contains(&format!("result=\"{result}\""))),
            "no {result} count\n{metrics}"
        );
    }
    let (code, runs) = d.get("/api/v1/runs?limit=50");
    assert_eq!(code, 200);
    assert_eq!(runs["items"], json!([]), "a sync trigger made a run");
}

#[test]
fn a_signed_push_fetches_at_once_on_sqlite() {
    a_signed_push_fetches_at_once(None);
}

#[test]
fn a_signed_push_fetches_at_once_on_redis() {
    let redis = multijob::testkit::RedisServer::start().expect("redis-server");
    a_signed_push_fetches_at_once(Some(&redis.url()));
}

/// Two Redis replicas: a push delivered to either one makes the leader,
/// the process that pulls, fetch.
#[test]
fn a_push_to_either_redis_replica_makes_the_leader_fetch() {
    let redis = multijob::testkit::RedisServer::start().expect("redis-server");
    let origin = Origin::new();
    let first = origin.push(
        &[("jobs.d/tick.yaml", JOB), ("jobs.d/push.yaml", SYNC)],
        "first",
    );
    let url = origin.file_url();
    let replica = |addr: &str| {
        let cfg = tempfile::tempdir().expect("dir");
        let args = [
            "--git",
            &url,
            "--git-interval",
            "1h",
            "--inbound-listen",
            addr,
            "--redis",
            &redis.url(),
        ];
        let d = Daemon::start_env(cfg.path(), &args, &[("HOOK_SECRET", SECRET)]);
        (cfg, d)
    };
    let (a, b) = (free_addr(), free_addr());
    let (_cfg_a, first_d) = replica(&a);
    applied(&first_d, &first);
    let (_cfg_b, second_d) = replica(&b);
    applied(&second_d, &first);
    for (round, addr) in [&b, &a].into_iter().enumerate() {
        let next = origin.push(
            &[(
                "jobs.d/more.yaml",
                &format!("id: more\ntype: noop\ndescription: r{round}\n"),
            )],
            &format!("round {round}"),
        );
        let reply = deliver(
            addr,
            "push",
            &push_to("main"),
            &format!("r-{round}"),
            SECRET,
        );
        assert_eq!(reply.code, 202, "{}", reply.body);
        assert_eq!(reply.json()["status"], "sync_requested", "{}", reply.body);
        let started = Instant::now();
        applied(&first_d, &next);
        applied(&second_d, &next);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_daemon_without_git_answers_409_and_keeps_serving() {
    let d = ConfigDir::new();
    d.write("jobs.d/tick.yaml", JOB)
        .write("jobs.d/push.yaml", SYNC);
    let addr = free_addr();
    let daemon = Daemon::start_env(
        d.path(),
        &["--inbound-listen", &addr],
        &[("HOOK_SECRET", SECRET)],
    );
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    for i in 0..3 {
        let reply = deliver(&addr, "push", &push_to("main"), &format!("d-{i}"), SECRET);
        assert_eq!(reply.code, 409, "{}", reply.body);
        assert!(
            reply.json()["error"]
                .as_str()
                .is_some_and(|e| e
                    .contains("this daemon does not pull from git: start it with run --git URL")),
            "{}",
            reply.body
        );
    }
    // Still unsigned is 401 before anything else.
    assert_eq!(
        deliver(&addr, "push", &push_to("main"), "x", "wrong").code,
        401
    );
    let (code, _) = daemon.get("/healthz");
    assert_eq!(code, 200);
    let log = daemon.log();
    assert_eq!(
        log.matches("this daemon does not pull from git").count(),
        1,
        "warned once at apply\n{log}"
    );
}

#[test]
fn a_sync_trigger_of_another_source_does_not_validate() {
    let d = ConfigDir::new();
    d.write("jobs.d/tick.yaml", JOB)
        .write("jobs.d/push.yaml", &SYNC.replace("github", "webhook"));
    let out = d.run(&["validate"]);
    assert_ne!(out.code(), Some(0), "{}", out.explain());
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(
        text.contains("jobs.d/push.yaml:4:9: error[action]")
            && text.contains("set `source: github`"),
        "{}",
        out.explain()
    );
}
