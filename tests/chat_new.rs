//! `/new <sentence>` and `/apply` through the Telegram bridge, with the
//! real daemon, the fake Bot API and a real git repository: the reply
//! shows the YAML and the plan and writes nothing; `/apply` makes one
//! commit of exactly the new files, authored by the chat user, with the
//! sentence as message, and the daemon applies it (both stores). Hostile
//! uses (twice, another chat, nothing pending, expired, a chat not
//! allowed, too long, a taken id, an invalid result) are refused with
//! nothing written, and the daemon keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::fake_telegram::{FakeTelegram, Seen};
use common::{ConfigDir, Daemon, git};
use multijob::testkit::RedisServer;
use serde_json::Value;

const ALLOWED: i64 = 1001;
const OTHER: i64 = 1002;
const STRANGER: i64 = 2002;
const WAIT: Duration = Duration::from_secs(20);
const SEED: &str = "Pantau telegram akun bot_a01 tiap 30 detik dan buat laporan harian jam 07:00";
const NEW_FILES: [&str; 2] = [
    "jobs.d/laporan-harian-0700.yaml",
    "jobs.d/monitor-telegram-bot-a01.yaml",
];

/// A git repository holding a config dir whose `telegram` connector is a
/// bridge (taking /new and /apply) to `fake`, answering two chats.
fn repo(fake: &FakeTelegram) -> ConfigDir {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/telegram.yaml",
        &format!(
            "kind: Connector\nid: telegram\nprovider: telegram\nbase_url: {}\nsecrets: {{bot_token: \"${{env:MJ_TG_CHAT}}\"}}\nbridge: {{allowed_chat_ids: [{ALLOWED}, {OTHER}], commands: [help, jobs, new, apply]}}\n",
            fake.url
        ),
    );
    d.write(".gitignore", ".multijob/\n");
    git(d.path(), &["init", "-q"]);
    git(d.path(), &["config", "user.name", "Repo Owner"]);
    git(d.path(), &["config", "user.email", "owner@example.test"]);
    git(d.path(), &["add", "."]);
    git(d.path(), &["commit", "-q", "-m", "start"]);
    d
}

fn start(d: &ConfigDir, redis: Option<&str>, token: &str, ttl: &str) -> Daemon {
    let extra: Vec<&str> = redis.map(|u| vec!["--redis", u]).unwrap_or_default();
    let env = [
        ("MJ_TG_CHAT", token),
        ("MULTIJOB_TZ", "Asia/Jakarta"),
        ("MULTIJOB_BRIDGE_DRAFT_TTL_SEC", ttl),
    ];
    let daemon = Daemon::start_env(d.path(), &extra, &env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon
}

/// Send `text` from `chat` and wait for the bot's next reply to it.
fn ask(fake: &FakeTelegram, token: &str, chat: i64, text: &str) -> String {
    let before = fake.sent(token).len();
    fake.message(token, chat, "ana", text);
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() > before);
    let (to, reply) = sent[before].clone();
    assert_eq!(to, chat, "the reply goes to the asking chat: {reply}");
    reply
}

fn commits(d: &ConfigDir) -> usize {
    git(d.path(), &["rev-list", "--count", "HEAD"])
        .parse()
        .expect("a count")
}

fn events(daemon: &Daemon, kind: &str) -> Vec<Value> {
    let (_, body) = daemon.get(&format!("/api/v1/events?type={kind}&limit=100"));
    body["items"].as_array().cloned().unwrap_or_default()
}

fn job_ids(daemon: &Daemon) -> Vec<String> {
    let (_, body) = daemon.get("/api/v1/jobs");
    let items = body["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect()
}

fn round_trip(redis: Option<&str>) {
    let fake = FakeTelegram::start();
    let token = "333:chat-token";
    let d = repo(&fake);
    let daemon = start(&d, redis, token, "600");

    let reply = ask(&fake, token, ALLOWED, &format!("/new {SEED}"));
    for part in [
        "--- jobs.d/monitor-telegram-bot-a01.yaml",
        "--- jobs.d/laporan-harian-0700.yaml",
        "every: \"30s\"",
        "cron: \"0 7 * * *\"",
        "timezone: \"Asia/Jakarta\"",
        "2 to create, 0 to update, 0 to delete",
        "/apply within 10 min",
    ] {
        assert!(reply.contains(part), "no {part:?} in {reply}");
    }
    for f in NEW_FILES {
        assert!(!d.path().join(f).exists(), "{f} written before /apply");
    }
    assert_eq!(commits(&d), 1);

    let reply = ask(&fake, token, ALLOWED, "/apply");
    assert!(reply.starts_with("committed "), "{reply}");
    assert_eq!(commits(&d), 2, "one new commit");
    let head = git(d.path(), &["rev-parse", "HEAD"]);
    assert!(reply.contains(&head), "the reply names {head}: {reply}");
    let author = git(d.path(), &["log", "-1", "--format=%an <%ae>"]);
    assert_eq!(author, "ana Tester <telegram-8001@users.noreply.telegram>");
    let committer = git(d.path(), &["log", "-1", "--format=%cn <%ce>"]);
    assert_eq!(committer, "Repo Owner <owner@example.test>");
    assert_eq!(git(d.path(), &["log", "-1", "--format=%B"]), SEED);
    let files = git(d.path(), &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files.lines().collect::<Vec<_>>(), NEW_FILES.to_vec());

    let start = Instant::now();
    while !NEW_FILES.iter().all(|f| {
        let id = f.trim_start_matches("jobs.d/").trim_end_matches(".yaml");
        job_ids(&daemon).iter().any(|j| j == id)
    }) {
        assert!(
            start.elapsed() < WAIT,
            "the daemon never applied the jobs: {:?}",
            job_ids(&daemon)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let applied = events(&daemon, "bridge.new_applied");
    assert_eq!(applied.len(), 1, "{applied:#?}");
    assert_eq!(applied[0]["data"]["commit"], head.as_str());
    assert_eq!(applied[0]["data"]["chat"], ALLOWED);
    assert_eq!(events(&daemon, "bridge.new_planned").len(), 1);

    let again = ask(&fake, token, ALLOWED, "/apply");
    assert!(again.contains("applied already"), "{again}");
    assert_eq!(commits(&d), 2, "a second /apply commits nothing");
}

#[test]
fn new_then_apply_commits_as_the_chat_user_and_the_daemon_applies_it() {
    round_trip(None);
}

#[test]
fn new_then_apply_with_redis() {
    let redis = RedisServer::start().expect("redis-server");
    round_trip(Some(&redis.url()));
}

/// Files under jobs.d/, sorted.
fn job_files(d: &ConfigDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.path().join("jobs.d"))
        .expect("jobs.d")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn hostile_new_and_apply_are_refused_and_nothing_is_written() {
    let fake = FakeTelegram::start();
    let token = "444:hostile-token";
    let d = repo(&fake);
    let daemon = start(&d, None, token, "600");
    let files = job_files(&d);

    let r = ask(&fake, token, ALLOWED, "/apply");
    assert!(r.contains("nothing pending in this chat"), "{r}");

    let r = ask(&fake, token, ALLOWED, &format!("/new {SEED}"));
    assert!(r.contains("2 to create"), "{r}");
    let r = ask(&fake, token, OTHER, "/apply");
    assert!(
        r.contains("nothing pending in this chat"),
        "another chat: {r}"
    );

    // A chat not allowed: no reply, nothing pending for it.
    let update = fake.message(token, STRANGER, "eve", &format!("/new {SEED}"));
    let r = ask(&fake, token, ALLOWED, "/help");
    assert!(r.contains("/new SENTENCE") && r.contains("/apply"), "{r}");
    assert!(update > 0);
    assert!(
        fake.sent(token).iter().all(|(c, _)| *c != STRANGER),
        "a stranger got a reply"
    );

    let long = format!("/new pantau telegram {}", "tiap 30 detik ".repeat(60));
    let r = ask(&fake, token, ALLOWED, &long);
    assert!(r.contains("at most 500"), "{r}");
    let r = ask(&fake, token, ALLOWED, "/apply");
    assert!(
        r.contains("nothing pending"),
        "a refused /new replaced the older draft: {r}"
    );

    let r = ask(&fake, token, ALLOWED, "/new pantau whatsapp tiap 30 detik");
    assert!(
        r.contains("/new refused") && r.contains("no Connector `whatsapp`"),
        "{r}"
    );
    let r = ask(&fake, token, ALLOWED, "/apply");
    assert!(
        r.contains("nothing pending"),
        "an invalid /new leaves nothing: {r}"
    );

    d.write(
        "jobs.d/mine.yaml",
        "kind: Job\nid: laporan-harian-0700\ntype: noop\n",
    );
    let r = ask(&fake, token, ALLOWED, &format!("/new {SEED}"));
    assert!(
        r.contains("already exists: jobs.d/mine.yaml:") && r.contains("nothing written"),
        "a taken id names its file: {r}"
    );
    std::fs::remove_file(d.path().join("jobs.d/mine.yaml")).expect("rm");

    // The directory changed between /new and /apply: checked again.
    let r = ask(&fake, token, ALLOWED, &format!("/new {SEED}"));
    assert!(r.contains("2 to create"), "{r}");
    d.write(
        "jobs.d/late.yaml",
        "kind: Job\nid: monitor-telegram-bot-a01\ntype: noop\n",
    );
    let r = ask(&fake, token, ALLOWED, "/apply");
    assert!(
        r.contains("/apply refused, nothing written") && r.contains("jobs.d/late.yaml"),
        "{r}"
    );
    std::fs::remove_file(d.path().join("jobs.d/late.yaml")).expect("rm");

    assert_eq!(job_files(&d), files, "nothing was written");
    assert_eq!(commits(&d), 1, "nothing was committed");
    assert!(events(&daemon, "bridge.new_applied").is_empty());
    let (status, _) = daemon.get("/readyz");
    assert_eq!(status, 200, "the daemon keeps serving");
}

#[test]
fn an_expired_draft_is_not_applied() {
    let fake = FakeTelegram::start();
    let token = "555:ttl-token";
    let d = repo(&fake);
    let _daemon = start(&d, None, token, "1");
    let r = ask(&fake, token, ALLOWED, &format!("/new {SEED}"));
    assert!(r.contains("/apply within 1 min"), "{r}");
    std::thread::sleep(Duration::from_millis(1500));
    let r = ask(&fake, token, ALLOWED, "/apply");
    assert!(r.contains("expired"), "{r}");
    assert_eq!(commits(&d), 1);
    assert!(!d.path().join(NEW_FILES[0]).exists());
}
