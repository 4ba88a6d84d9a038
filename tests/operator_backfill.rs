//! `multijob backfill` with the real binary, on the embedded store beside
//! a running daemon and on Redis: a window's slots are queued once, keyed
//! `job@slot`, whatever how often it is asked.

mod common;

use common::deployment::{Deployment, events, runs, wait_for};
use multijob::store::paused::reply_key;
use multijob::store::runs::InboxCommand;
use multijob::store::{KvOp, Store};
use serde_json::Value;

const SYNC: &str = "id: sync\ntype: noop\nschedule: {every: 1m}\n";

/// `[from, to)`: twenty whole minutes ending ten minutes ago.
fn window() -> (String, String) {
    let now = jiff::Timestamp::now().as_second();
    let to = (now - 600).div_euclid(60) * 60;
    // As the store writes times, so they compare as text.
    let t = |s: i64| {
        jiff::Timestamp::from_second(s)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    (t(to - 20 * 60), t(to))
}

fn backfill_twice_queues_once(redis: bool) {
    let dep = Deployment::new(redis, &[("sync.yaml", SYNC)]);
    let daemon = dep.daemon();
    let (from, to) = window();
    let args = |extra: &[&'static str]| {
        let mut a = vec!["backfill", "sync", "--from", &from, "--to", &to];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let cli = |a: Vec<String>| dep.cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // A dry run lists the slots and queues nothing.
    let dry = cli(args(&["--dry-run"]));
    dry.assert_code(0).assert_line(&from, "").assert_line(
        "dry run: job sync",
        "has 20 slots; would queue 20, already recorded 0",
    );
    assert_eq!(dry.stdout().lines().count(), 21, "{}", dry.explain());
    let in_window = || -> Vec<Value> {
        runs(&daemon, "sync")
            .into_iter()
            .filter(|r| {
                r["scheduled_at"]
                    .as_str()
                    .is_some_and(|s| s >= from.as_str() && s < to.as_str())
            })
            .collect()
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(in_window().is_empty(), "a dry run queued runs");
    // The first backfill queues every slot, one at a time (overlap: forbid).
    cli(args(&["--by", "ann"])).assert_code(0).assert_line(
        "backfill of job sync",
        "20 slots, queued 20, already recorded 0",
    );
    let done = wait_for("twenty backfilled runs to succeed", &daemon, || {
        let r = in_window();
        (r.len() == 20 && r.iter().all(|r| r["status"] == "succeeded")).then_some(r)
    });
    let (_, one) = daemon.get(&format!(
        "/api/v1/runs/{}",
        done[0]["id"].as_str().unwrap_or("")
    ));
    let key = one["run_key"].as_str().unwrap_or("");
    assert!(
        key.starts_with("sync@") && key.ends_with(".000Z"),
        "{one:#}"
    );
    assert_eq!(one["trigger"], "schedule");
    // The second queues nothing: every run key is recorded.
    let again = cli(args(&["-o", "json"]));
    let reply = again.assert_code(0).json();
    assert_eq!(
        (reply["queued"].clone(), reply["already_recorded"].clone()),
        (0.into(), 20.into()),
        "{reply:#}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(in_window().len(), 20, "the second backfill queued runs");
    let recorded = cli(args(&["--dry-run"]));
    recorded
        .assert_code(0)
        .assert_line(&from, "(already recorded)");
    let logged = events(&daemon, "job.backfill", "sync");
    assert_eq!(logged.len(), 2, "{logged:#?}");
    assert_eq!(logged[0]["data"]["by"], "ann");
    // --max refuses a window with more slots.
    let capped = cli(args(&["--max", "5"]));
    capped.assert_code(1);
    assert!(
        capped
            .stderr()
            .contains("the window holds 20 slots of job `sync`, more than --max 5"),
        "{}",
        capped.explain()
    );
    hostile(&dep, &daemon, &from, &to);
}

/// Unknown jobs, empty or malformed windows and a ten-year window fail
/// clearly, and the daemon keeps serving.
fn hostile(dep: &Deployment, daemon: &common::Daemon, from: &str, to: &str) {
    let cases: [(&[&str], &str); 5] = [
        (
            &["backfill", "synk", "--from", from, "--to", to],
            "did you mean `sync`?",
        ),
        (
            &["backfill", "sync", "--from", to, "--to", from],
            "is not before --to",
        ),
        (
            &["backfill", "sync", "--from", "yesterday", "--to", to],
            "--from `yesterday` is neither an RFC 3339 time",
        ),
        (
            &[
                "backfill",
                "sync",
                "--from",
                from,
                "--to",
                "2026-02-30T00:00:00Z",
            ],
            "--to `2026-02-30T00:00:00Z` is neither",
        ),
        (
            &["backfill", "sync", "--from", "87600h", "--to", "0s"],
            "more than --max 1000",
        ),
    ];
    for (args, expected) in cases {
        let out = dep.cli(args);
        out.assert_code(1);
        assert!(
            out.stderr().contains(expected),
            "expected {expected:?}\n{}",
            out.explain()
        );
    }
    forged(dep, daemon);
    let (code, _) = daemon.get("/readyz");
    assert_eq!(code, 200, "the daemon stopped serving\n{}", daemon.log());
}

/// Commands the CLI would refuse, written to the inbox directly: the
/// daemon checks them again and answers with the reason.
fn forged(dep: &Deployment, daemon: &common::Daemon) {
    let backfill = |from: &str, to: &str, max: u64| InboxCommand::Backfill {
        job_id: "sync".into(),
        from: from.into(),
        to: to.into(),
        max,
        by: "mallory".into(),
    };
    let cases = [
        (
            backfill("garbage", "2026-01-01T00:00:00Z", 10),
            "from `garbage` is not an RFC 3339 time",
        ),
        (
            backfill("2000-01-01T00:00:00Z", "2026-01-01T00:00:00Z", u64::MAX),
            "slots of job `sync`, more than --max 100000",
        ),
        (
            backfill("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", 10),
            "the window [from, to) is empty",
        ),
        (
            InboxCommand::Pause {
                job_id: "nope".into(),
                note: None,
                by: "mallory".into(),
            },
            "no such job",
        ),
    ];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (command, expected) in cases {
        let reply = rt.block_on(post_and_read_reply(dep, &command));
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{command:?}: {reply:#}\n{}",
            daemon.log()
        );
    }
}

/// Post `command` to the deployment's inbox and wait for the daemon's reply.
async fn post_and_read_reply(dep: &Deployment, command: &InboxCommand) -> Value {
    let store = match &dep.redis {
        Some(r) => Store::open_redis(&r.url()).await.expect("open redis"),
        None => {
            let path = dep.dir.path().join(".multijob/state.db");
            let id = multijob::store::sqlite::post_to_inbox(&path, command).expect("post");
            return read_reply(
                |key| {
                    let conn =
                        multijob::store::sqlite::SqliteStore::open_read_only(&path).expect("open");
                    multijob::store::sqlite::read_kv(&conn, &path, key).expect("read")
                },
                id,
            )
            .await;
        }
    };
    let id = store.post_to_inbox(command).await.expect("post");
    let mut reply = None;
    for _ in 0..100 {
        reply = store.kv(&reply_key(id), KvOp::Get).await.expect("kv");
        if reply.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    reply.unwrap_or_else(|| panic!("no reply to inbox command {id}"))
}

async fn read_reply(read: impl Fn(&str) -> Option<Value>, id: i64) -> Value {
    for _ in 0..100 {
        if let Some(v) = read(&reply_key(id)) {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no reply to inbox command {id}")
}

/// A lane of one: the backfill's runs (overlap: allow, all queued at
/// once) start one after another, never together.
const LANE: &str = "kind: Flow\nid: lane\nmax_active_runs: 1\n---\nid: slow\ntype: simulation.heavy\n\
flow: lane\noverlap: allow\nschedule: {every: 1m}\ninputs: {work_ms: 150}\n";

fn backfill_honours_the_lane(redis: bool) {
    let dep = Deployment::new(redis, &[("lane.yaml", LANE)]);
    let daemon = dep.daemon();
    let (from, to) = window();
    dep.cli(&["backfill", "slow", "--from", &from, "--to", &to])
        .assert_code(0)
        .assert_line("backfill of job slow", "queued 20");
    let done = wait_for("the backfilled runs to end", &daemon, || {
        let r = runs(&daemon, "slow");
        (r.len() >= 20 && r.iter().all(|r| r["status"] == "succeeded")).then_some(r)
    });
    let mut spans: Vec<(String, String)> = done
        .iter()
        .map(|r| {
            let s = |f: &str| r[f].as_str().unwrap_or_default().to_string();
            (s("started_at"), s("finished_at"))
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two runs of a lane of one overlapped: {pair:?}"
        );
    }
}

#[test]
fn backfill_honours_the_lane_on_the_embedded_store() {
    backfill_honours_the_lane(false);
}

#[test]
fn backfill_honours_the_lane_on_redis() {
    backfill_honours_the_lane(true);
}

#[test]
fn backfill_twice_queues_once_on_the_embedded_store() {
    backfill_twice_queues_once(false);
}

#[test]
fn backfill_twice_queues_once_on_redis() {
    backfill_twice_queues_once(true);
}
