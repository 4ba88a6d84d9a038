//! The Redis inbox: the leader waits on it with a blocking read (a posted
//! command wakes it at once) and queues a page of small triggers and
//! follow-ups together. Real `redis-server`, real processes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::worker::{FAST, WorkerProc};
use common::{ConfigDir, Daemon};
use multijob::store::Store;
use multijob::store::runs::InboxCommand;
use multijob::testkit::RedisServer;
use serde_json::Value;

fn trigger(run_id: &str, job: &str, count: u32) -> InboxCommand {
    InboxCommand::Trigger {
        run_id: run_id.into(),
        job_id: job.into(),
        inputs: Value::Null,
        count,
    }
}

#[test]
fn a_posted_command_wakes_the_waiting_reader() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = RedisServer::start().expect("redis-server");
    rt.block_on(async {
        let store = Store::open_redis(&server.url()).await.expect("open");
        let first = store
            .post_to_inbox(&trigger("r-0", "a", 1))
            .await
            .expect("post");
        // A command after `after` is there already: no wait, and its seq.
        let start = Instant::now();
        let seen = store
            .wait_for_inbox(first - 1, Duration::from_secs(60))
            .await
            .expect("wait");
        assert_eq!(seen, Some(first));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "it waited for the timeout"
        );
        // Nothing after `first`: the wait ends at its timeout.
        let start = Instant::now();
        let seen = store
            .wait_for_inbox(first, Duration::from_millis(300))
            .await
            .expect("wait");
        assert_eq!(seen, None);
        assert!(start.elapsed() >= Duration::from_millis(250));
        // A command posted while it waits wakes it before the timeout.
        let poster = store.clone();
        let post = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            poster.post_to_inbox(&trigger("r-1", "a", 1)).await
        });
        let start = Instant::now();
        let seen = store
            .wait_for_inbox(first, Duration::from_secs(60))
            .await
            .expect("wait");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the post did not wake it"
        );
        let second = post.await.expect("join").expect("post");
        assert_eq!(seen, Some(second));
        let read = store.inbox(first).await.expect("inbox");
        assert_eq!(read.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [second]);
    });
}

#[test]
fn a_wait_on_a_redis_that_went_away_fails_and_the_next_one_reconnects() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut server = RedisServer::start().expect("redis-server");
    let store = rt.block_on(Store::open_redis(&server.url())).expect("open");
    rt.block_on(store.wait_for_inbox(0, Duration::from_millis(50)))
        .expect("a first wait connects");
    server.kill();
    let start = Instant::now();
    let gone = rt.block_on(store.wait_for_inbox(0, Duration::from_secs(1)));
    let err = gone.expect_err("a wait on a stopped server must fail");
    assert!(err.to_string().contains("inbox"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20), "it hung");
    // Back on the same port: the next wait connects anew.
    server.restart().expect("restart");
    let posted = rt.block_on(async {
        let fresh = Store::open_redis(&server.url()).await.expect("open");
        fresh.post_to_inbox(&trigger("r-2", "a", 1)).await
    });
    let posted = posted.expect("post");
    let start = Instant::now();
    rt.block_on(store.wait_for_inbox(posted - 1, Duration::from_secs(60)))
        .expect("the next wait reconnects");
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// A page of small triggers (one posted twice), a burst among them and a
/// trigger of a job that does not exist: every run of the first three is
/// queued once and runs once; the last is told.
#[test]
fn small_triggers_read_together_each_run_once() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", "id: a\ntype: noop\noverlap: allow\n");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open_redis(&redis.url()).await.expect("open");
        for i in 0..40 {
            store
                .post_to_inbox(&trigger(&format!("small-{i:02}"), "a", 3))
                .await
                .expect("post");
            if i == 20 {
                store
                    .post_to_inbox(&trigger("burst", "a", 100))
                    .await
                    .expect("post");
                store
                    .post_to_inbox(&trigger("nobody", "ghost", 2))
                    .await
                    .expect("post");
            }
        }
        // The same command again (a CLI retry): its runs exist once.
        store
            .post_to_inbox(&trigger("small-07", "a", 3))
            .await
            .expect("post");
    });
    let url = redis.url();
    let leader = Daemon::start_env(dir.path(), &["--redis", &url, "--workers", "0"], &FAST);
    let _worker = WorkerProc::start(&redis, 8);
    let want = 40 * 3 + 100;
    let start = Instant::now();
    let ids = loop {
        let (_, v) = leader.get("/api/v1/runs?limit=1000&job=a&status=succeeded");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= want {
            break items;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {want} runs succeeded\n{}",
            items.len(),
            leader.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let ids: Vec<String> = ids
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), want, "a run twice: {ids:?}");
    assert!(unique.contains(&"small-07-2".to_string()));
    assert!(unique.contains(&"burst-99".to_string()));
    // Nothing more comes: the replayed command queued no second run.
    std::thread::sleep(Duration::from_millis(500));
    let (_, all) = leader.get("/api/v1/runs?limit=1000&job=a");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(want));
    let (_, events) = leader.get("/api/v1/events?limit=1000&type=trigger.rejected");
    let rejected = events["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["data"]["run_id"], "nobody");
}

/// Entries the daemon cannot parse (garbage written straight into the
/// stream, or a command of another version) are skipped, and
/// the command after them is handled: the blocking wait, which returns at
/// once while an entry is after the last one read, does not spin on them.
#[test]
fn unreadable_inbox_entries_do_not_spin_the_reader_and_the_next_command_runs() {
    let redis = RedisServer::start().expect("redis-server");
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", "id: a\ntype: noop\noverlap: allow\n");
    let url = redis.url();
    let leader = Daemon::start_env(dir.path(), &["--redis", &url, "--workers", "0"], &FAST);
    leader.wait_until("/readyz", "ready", |_| true);
    let _worker = WorkerProc::start(&redis, 2);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let inbox = format!("{}inbox", multijob::store::redis::DEFAULT_PREFIX);
    rt.block_on(async {
        let store = Store::open_redis(&url).await.expect("open");
        let Store::Redis(redis_store) = &store else {
            panic!("a Redis store");
        };
        let mut c = redis_store.connection();
        // What `post_to_inbox` writes, but not a command.
        for (i, body) in ["{not json", "{\"command\":\"launch_missiles\"}"]
            .iter()
            .enumerate()
        {
            let seq: i64 = redis::cmd("INCR")
                .arg(format!(
                    "{}inbox_seq",
                    multijob::store::redis::DEFAULT_PREFIX
                ))
                .query_async(&mut c)
                .await
                .expect("incr");
            let _: String = redis::cmd("XADD")
                .arg(&inbox)
                .arg(format!("{seq}-1"))
                .arg("at")
                .arg("now")
                .arg("cmd")
                .arg(*body)
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("xadd {i}: {e}"));
        }
    });
    // A while with nothing after them: each was reported once or twice (a
    // read can meet the second before the wait has moved past the first),
    // not in a loop.
    std::thread::sleep(Duration::from_millis(1000));
    let log = leader.log();
    let skipped = log.matches("unreadable inbox command skipped").count();
    assert!((2..=3).contains(&skipped), "{skipped} reports\n{log}");
    rt.block_on(async {
        let store = Store::open_redis(&url).await.expect("open");
        store
            .post_to_inbox(&trigger("after-garbage", "a", 1))
            .await
            .expect("post");
    });
    leader.wait_until("/api/v1/runs/after-garbage", "succeeded", |v| {
        v["status"] == "succeeded"
    });
    assert_eq!(leader.get("/healthz").0, 200);
}
