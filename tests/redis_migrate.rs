//! A deployment written by the release before key layout 5 migrates in
//! place: killed midway and started again, it loses nothing and runs what
//! was pending once; while a process of layout 4 is connected, it is
//! refused with the reason, and nothing changes.
//!
//! The fixture (`tests/fixtures/redis-layout4/dump.rdb`) is a Redis
//! snapshot that release wrote (commit 1ece110, `make.sh` beside it says
//! how): three `noop` runs finished, a `gated` run awaiting its approval,
//! a `slow` command running on a worker that was killed, three `noop`
//! runs dispatched to the `ready` stream and never read, two `later` runs
//! queued for a worker group nobody serves.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::worker::{FAST, WorkerProc};
use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;
use serde_json::Value;

const FIXTURE: &str = "tests/fixtures/redis-layout4";
/// Finished runs added beside the fixture's, so that the migration has
/// pages enough to be killed between two.
const PADDING: usize = 20_000;
/// Of those, how many hold a run key of their own (as a slot's run does).
const KEYED: usize = 100;

fn fixture_redis() -> RedisServer {
    RedisServer::start_from_snapshot(&common::repo().join(FIXTURE).join("dump.rdb"))
        .expect("redis-server with the layout 4 snapshot")
}

fn conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connect to redis")
}

fn key(name: &str) -> String {
    format!("{{mj}}:{name}")
}

/// The stored records, by run id.
fn records(c: &mut redis::Connection) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(key("runs:rec"))
        .query(c)
        .expect("HGETALL runs:rec")
}

/// Whether a record is stored as layout 5 writes it (`run_key` after
/// `status`) rather than as layout 4 did (`trigger` after it).
fn is_layout_5(text: &str) -> bool {
    let Some(at) = text.find(r#","status":""#) else {
        return false;
    };
    let rest = &text[at + r#","status":""#.len()..];
    rest.split_once('"')
        .is_some_and(|(_, tail)| tail.starts_with(r#","run_key":""#))
}

/// (job, status) of every stored run, by id.
fn summary(c: &mut redis::Connection) -> BTreeMap<String, (String, String)> {
    records(c)
        .into_iter()
        .filter(|(id, _)| !id.starts_with("pad-"))
        .map(|(id, text)| {
            let v: Value = serde_json::from_str(&text).expect("a record is JSON");
            let job = v["job_id"].as_str().unwrap_or_default().to_string();
            let status = v["status"].as_str().unwrap_or_default().to_string();
            (id, (job, status))
        })
        .collect()
}

/// Add `PADDING` finished runs of a job `bulk`, each a copy of one of the
/// fixture's finished `noop` records with its own id (the first `KEYED`
/// with a slot's run key), indexed as layout 4 indexes a run.
fn pad(c: &mut redis::Connection) {
    let (id, text) = records(c)
        .into_iter()
        .find(|(_, t)| t.contains(r#""job_id":"noop","status":"succeeded""#))
        .expect("a finished noop run in the fixture");
    let base: i64 = redis::cmd("GET")
        .arg(key("run_seq"))
        .query(c)
        .expect("run_seq");
    for chunk in (0..PADDING).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            let new_id = format!("pad-{i:05}");
            let mut copy = text
                .replace(&id, &new_id)
                .replace(r#""job_id":"noop""#, r#""job_id":"bulk""#);
            if *i < KEYED {
                // A slot's run: its run key held in `runkey:<key>`.
                let slot = format!("bulk@slot-{i:05}");
                copy = copy.replace(&format!("manual:{new_id}"), &slot);
                p.cmd("SET")
                    .arg(key(&format!("runkey:{slot}")))
                    .arg(&new_id)
                    .ignore();
            }
            let seq = base + 1 + *i as i64;
            p.cmd("HSET")
                .arg(key("runs:rec"))
                .arg(&new_id)
                .arg(copy)
                .ignore();
            for index in ["runs", "runs:job:bulk", "runs:status:succeeded"] {
                p.cmd("ZADD").arg(key(index)).arg(seq).arg(&new_id).ignore();
            }
        }
        p.query::<()>(c).expect("pad the fixture");
    }
    redis::pipe()
        .cmd("SET")
        .arg(key("run_seq"))
        .arg(base + PADDING as i64)
        .ignore()
        .cmd("HINCRBY")
        .arg(key("run_counts"))
        .arg("bulk\nsucceeded")
        .arg(PADDING)
        .ignore()
        .query::<()>(c)
        .expect("count the padding");
}

/// The fixture's jobs, in a config directory of the test's own.
fn config() -> ConfigDir {
    let dir = ConfigDir::new();
    let jobs = std::fs::read_to_string(common::repo().join(FIXTURE).join("jobs.d/fixture.yaml"))
        .expect("the fixture's jobs");
    dir.write("jobs.d/fixture.yaml", &jobs);
    dir
}

/// `multijob ARGS` (`migrate` reads no config directory).
fn migrate_cli(args: &[&str]) -> common::Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    common::run(&args, None)
}

fn get(c: &mut redis::Connection, name: &str) -> Option<String> {
    redis::cmd("GET").arg(key(name)).query(c).expect("GET")
}

fn runs_of(d: &Daemon, job: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/api/v1/runs?limit=100&job={job}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_migration_killed_midway_is_finished_by_the_leader_and_loses_nothing() {
    let redis = fixture_redis();
    let url = redis.url();
    let mut c = conn(&redis);
    let before = summary(&mut c);
    let count = |job: &str, status: &str| {
        before
            .values()
            .filter(|(j, s)| j == job && s == status)
            .count()
    };
    assert_eq!(
        [
            count("noop", "succeeded"),
            count("noop", "running"),
            count("slow", "running"),
            count("gated", "awaiting_approval"),
            count("later", "queued"),
        ],
        [3, 3, 1, 1, 2],
        "the fixture: {before:?}"
    );
    assert_eq!(get(&mut c, "layout").as_deref(), Some("4"));
    pad(&mut c);
    let dir = config();

    // The dry run says what it would do and writes nothing.
    let dry = migrate_cli(&["migrate", "--redis", &url, "--dry-run"]);
    dry.assert_code(0);
    let out = dry.stdout();
    assert!(out.contains(": layout 4\nmigrating to layout 5:"), "{out}");
    assert!(
        out.contains(&format!("re-encodes {} run records", PADDING + 10)),
        "{out}"
    );
    assert!(
        out.contains("processes of layout 4 connected: none"),
        "{out}"
    );
    assert_eq!(get(&mut c, "layout").as_deref(), Some("4"));
    assert!(records(&mut c).values().all(|t| !is_layout_5(t)));

    // Killed once it has written a page, before the last.
    let mut migrate = Command::new(common::bin())
        .args(["migrate", "--redis", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn migrate");
    let start = Instant::now();
    loop {
        let cursor = get(&mut c, "layout:migration");
        if cursor.as_deref().is_some_and(|s| s != "0") {
            break;
        }
        assert!(
            matches!(migrate.try_wait(), Ok(None)),
            "the migration ended before it was seen midway"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no page written in 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    migrate.kill().expect("kill -9 the migration");
    let _ = migrate.wait();
    let halfway = records(&mut c);
    let done = halfway.values().filter(|t| is_layout_5(t)).count();
    assert!(
        done > 0 && done < halfway.len(),
        "killed midway: {done} of {} records migrated",
        halfway.len()
    );
    assert_eq!(get(&mut c, "layout").as_deref(), Some("5"));
    assert_eq!(
        get(&mut c, "leader").as_deref(),
        Some(multijob::store::redis::RETIRED_LEADER)
    );
    assert!(get(&mut c, "layout:migration").is_some());

    // The leader goes on from there, then runs what was pending.
    let leader = Daemon::start_env(
        dir.path(),
        &["--redis", &url, "--workers", "0", "--keep-runs", "100000"],
        &FAST,
    );
    let _worker = WorkerProc::start_with(&redis, 2, &["--allow-command"]);
    let log = || leader.log();
    let deadline = Instant::now() + Duration::from_secs(30);
    let noop = loop {
        let noop = runs_of(&leader, "noop");
        let slow = runs_of(&leader, "slow");
        if noop.len() == 6
            && noop.iter().all(|r| r["status"] == "succeeded")
            && slow.first().is_some_and(|r| r["status"] == "succeeded")
        {
            break noop;
        }
        assert!(
            Instant::now() < deadline,
            "pending runs did not finish\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let l = log();
    assert!(l.contains("keys migrated to layout 5"), "{l}");
    assert!(l.contains("resumed=true"), "{l}");
    // Every pending noop ran once: one attempt each.
    for r in &noop {
        assert_eq!(
            (
                r["attempt"].as_u64(),
                r["attempts"].as_array().map(Vec::len)
            ),
            (Some(1), Some(1)),
            "{r:#}"
        );
    }
    // The slow run's attempt on the killed worker counts as lost; it ran again.
    let slow = &runs_of(&leader, "slow")[0];
    let attempts: Vec<&str> = slow["attempts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(attempts, ["failed", "succeeded"], "{slow:#}");
    // Queued and awaiting runs wait as they did.
    let later = runs_of(&leader, "later");
    assert!(
        later.len() == 2 && later.iter().all(|r| r["status"] == "queued"),
        "{later:?}"
    );
    let gated = runs_of(&leader, "gated");
    assert_eq!(gated.len(), 1);
    assert_eq!(gated[0]["status"], "awaiting_approval");

    // Nothing lost: every run the fixture held is there, all records are
    // layout 5, and the migration's cursor is gone.
    let after = summary(&mut c);
    for (id, (job, _)) in &before {
        assert_eq!(after.get(id).map(|(j, _)| j), Some(job), "run {id}");
    }
    let stored = records(&mut c);
    assert_eq!(stored.len(), PADDING + before.len());
    assert!(stored.values().all(|t| is_layout_5(t)));
    assert_eq!(get(&mut c, "layout:migration"), None);
    // Keyed runs have their run key where pruning looks for it.
    let noted: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(key("runs:key"))
        .query(&mut c)
        .expect("HGETALL runs:key");
    assert_eq!(noted.len(), KEYED);
    assert_eq!(
        noted.get("pad-00042").map(String::as_str),
        Some("bulk@slot-00042")
    );
    let (_, bulk) = leader.get("/api/v1/runs?limit=5&job=bulk");
    assert_eq!(bulk["items"].as_array().map(Vec::len), Some(5), "{bulk:#}");

    // The approval still decides the run.
    let (_, approvals) = leader.get("/api/v1/approvals");
    let approval = approvals["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    dir.run(&["approvals", "approve", &approval, "--redis", &url])
        .assert_code(0);
    leader.wait_until(
        &format!(
            "/api/v1/runs/{}",
            gated[0]["id"].as_str().unwrap_or_default()
        ),
        "the approved run to succeed",
        |v| v["status"] == "succeeded",
    );

    // Done: a dry run says so.
    let again = migrate_cli(&["migrate", "--redis", &url, "--dry-run"]);
    again.assert_code(0);
    assert!(
        again.stdout().contains("layout 5; nothing to migrate"),
        "{}",
        again.stdout()
    );
}

#[test]
fn a_connected_layout_4_process_stops_the_migration_and_nothing_changes() {
    let redis = fixture_redis();
    let url = redis.url();
    let mut c = conn(&redis);
    let before = records(&mut c);
    let dir = config();
    // A worker of the release before, as its heartbeat says (no layout).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    redis::cmd("HSET")
        .arg(key("workers"))
        .arg("old-worker")
        .arg(format!("2 {now} 0.1.0 - 0"))
        .query::<()>(&mut c)
        .expect("a layout 4 heartbeat");

    let dry = migrate_cli(&["migrate", "--redis", &url, "--dry-run"]);
    dry.assert_code(1);
    assert!(
        dry.stdout().contains("  - worker old-worker (heartbeat"),
        "{}",
        dry.stdout()
    );
    let run = migrate_cli(&["migrate", "--redis", &url]);
    run.assert_code(1);
    run.assert_stderr_has("stop the processes of layout 4 first");

    // The leader refuses too, and says why.
    let mut leader = Daemon::start_env(dir.path(), &["--redis", &url, "--workers", "0"], &FAST);
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader.is_running() {
        assert!(
            Instant::now() < deadline,
            "the leader did not refuse\n{}",
            leader.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let l = leader.log();
    assert!(
        l.contains("cannot migrate the keys under {mj}: from layout 4 to 5: processes of layout 4 are still connected: worker old-worker"),
        "{l}"
    );
    assert_eq!(leader.child.wait().ok().and_then(|s| s.code()), Some(1));

    // A layout 4 leader holding its key stops it as well.
    redis::pipe()
        .cmd("HDEL")
        .arg(key("workers"))
        .arg("old-worker")
        .ignore()
        .cmd("SET")
        .arg(key("leader"))
        .arg("old-leader")
        .arg("PX")
        .arg(60_000)
        .ignore()
        .query::<()>(&mut c)
        .expect("a layout 4 leader");
    let run = migrate_cli(&["migrate", "--redis", &url]);
    run.assert_code(1);
    assert!(
        run.stdout().contains("  - leader old-leader"),
        "{}",
        run.stdout()
    );

    assert_eq!(get(&mut c, "layout").as_deref(), Some("4"));
    assert_eq!(get(&mut c, "layout:migration"), None);
    assert_eq!(records(&mut c), before);
}
