//! The Telegram bridge against a loopback fake Bot API
//! (`common::fake_telegram`) with the real daemon: `/run` from an allowed
//! chat (on both stores), chats that are not allowed, a crash between the
//! run and the reply, a slow bot beside a fast one, `/approve` of a gated
//! run, and a bridge with no allowed chat.

mod common;

use std::time::{Duration, Instant};

use common::fake_telegram::{FakeTelegram, Seen};
use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;
use serde_json::Value;

const ALLOWED: i64 = 1001;
const STRANGER: i64 = 2002;
const WAIT: Duration = Duration::from_secs(20);

/// A telegram connector `id` polling `fake` with the token in env `env`,
/// and `bridge` as its bridge block (YAML flow form).
fn bridge_connector(d: &ConfigDir, id: &str, fake: &FakeTelegram, env: &str, bridge: &str) {
    d.write(
        &format!("jobs.d/{id}.yaml"),
        &format!(
            "kind: Connector\nid: {id}\nprovider: telegram\nbase_url: {}\nsecrets: {{bot_token: \"${{env:{env}}}\"}}\nbridge: {bridge}\n",
            fake.url
        ),
    );
}

/// A fake Bot API, and a config dir with job `job` (`yaml`) and the
/// connector `ops-bot` reading its token from `env` and answering chat
/// [`ALLOWED`].
fn one_bot(job: &str, yaml: &str, env: &str) -> (FakeTelegram, ConfigDir) {
    let fake = FakeTelegram::start();
    let d = ConfigDir::new();
    d.write(&format!("jobs.d/{job}.yaml"), yaml);
    let allow = format!("{{allowed_chat_ids: [{ALLOWED}]}}");
    bridge_connector(&d, "ops-bot", &fake, env, &allow);
    (fake, d)
}

fn start(d: &ConfigDir, redis: Option<&str>, env: &[(&str, &str)]) -> Daemon {
    let extra: Vec<&str> = redis.map(|u| vec!["--redis", u]).unwrap_or_default();
    let daemon = Daemon::start_env(d.path(), &extra, env);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon
}

fn runs(daemon: &Daemon, job: &str) -> Vec<Value> {
    let (_, body) = daemon.get(&format!("/api/v1/runs?job={job}&limit=100"));
    body["items"].as_array().cloned().unwrap_or_default()
}

fn events(daemon: &Daemon, kind: &str) -> Vec<Value> {
    let (_, body) = daemon.get(&format!("/api/v1/events?type={kind}&limit=500"));
    body["items"].as_array().cloned().unwrap_or_default()
}

/// The run id a "run <id> of <job> ..." reply names.
fn run_id_in(reply: &str) -> String {
    reply
        .strip_prefix("run ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {reply:?}"))
        .to_string()
}

/// Texts the bot sent to `chat`.
fn texts_to(sent: &[(i64, String)], chat: i64) -> Vec<String> {
    sent.iter()
        .filter(|(c, _)| *c == chat)
        .map(|(_, t)| t.clone())
        .collect()
}

/// Wait until the bridge has confirmed `update` to Telegram (it polled
/// again from a later offset): it is done with it.
#[track_caller]
fn wait_handled(fake: &FakeTelegram, token: &str, update: i64) {
    let start = Instant::now();
    while fake.offset(token).is_none_or(|o| o <= update) {
        assert!(
            start.elapsed() < WAIT,
            "the bridge never confirmed update {update} (offset {:?}, {} polls)",
            fake.offset(token),
            fake.polls(token)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_from_an_allowed_chat(redis: Option<&str>) {
    let (fake, d) = one_bot("hello", "id: hello\ntype: noop\n", "MJ_TG_RUN");
    let token = "111:run-token";
    let daemon = start(&d, redis, &[("MJ_TG_RUN", token)]);

    fake.message(token, ALLOWED, "ana", r#"/run hello k=v topic="a b""#);
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() >= 2);
    let replies = texts_to(&sent, ALLOWED);
    assert!(replies[0].ends_with("of hello queued"), "{replies:?}");
    let id = run_id_in(&replies[0]);
    assert!(
        replies[1].starts_with(&format!("run {id} of hello succeeded")),
        "{replies:?}"
    );
    let all = runs(&daemon, "hello");
    assert_eq!(all.len(), 1, "{all:#?}");
    let run = daemon.run_ended(&id);
    assert_eq!(
        (run["inputs"]["k"].as_str(), run["inputs"]["topic"].as_str()),
        (Some("v"), Some("a b"))
    );
    assert_eq!(run["trigger"], "telegram");
    let command = events(&daemon, "inbound.command");
    assert!(
        command.iter().any(|e| e["run_id"] == id.as_str()
            && e["data"]["user"] == "telegram:ana"
            && e["data"]["command"] == "run"),
        "{command:#?}"
    );

    // Another chat: no run, no reply, an inbound.rejected event.
    let update = fake.message(token, STRANGER, "eve", "/run hello k=evil");
    wait_handled(&fake, token, update);
    assert!(texts_to(&fake.attempts(token), STRANGER).is_empty());
    assert_eq!(runs(&daemon, "hello").len(), 1);
    let rejected = events(&daemon, "inbound.rejected");
    assert!(
        rejected.iter().any(|e| e["data"]["chat_id"] == STRANGER
            && e["data"]["reason"] == "chat_not_allowed"
            && e["data"]["connector"] == "ops-bot"),
        "{rejected:#?}"
    );
    assert!(
        !rejected.iter().any(|e| e.to_string().contains("evil")),
        "an event carried the text: {rejected:#?}"
    );

    // `/status` of a misspelt job names the right one; hostile input gets
    // a reply and the bridge keeps answering.
    fake.message(token, ALLOWED, "ana", "/status helo");
    fake.message(
        token,
        ALLOWED,
        "ana",
        &format!("/run hello k={}", "x".repeat(100 * 1024)),
    );
    fake.message(token, ALLOWED, "ana", "/frobnicate");
    fake.message(token, ALLOWED, "ana", "/run hello k=\"open");
    fake.message(token, ALLOWED, "ana", "/jobs@other_bot");
    fake.message(token, ALLOWED, "ana", "/status@ops_bot hello");
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() >= 7);
    let replies = texts_to(&sent, ALLOWED);
    assert!(
        replies[2].contains("no job `helo` (did you mean `hello`?)"),
        "{replies:?}"
    );
    assert!(
        replies[3].contains("is 102413 bytes; a command is at most 8192"),
        "{replies:?}"
    );
    assert!(
        replies[4].starts_with("unknown command /frobnicate. Commands: /help, /jobs"),
        "{replies:?}"
    );
    assert!(replies[5].contains("quote is not closed"), "{replies:?}");
    assert!(
        replies[6].starts_with("hello, last 1 run(s):") && replies[6].contains(&id),
        "{replies:?}"
    );
    assert_eq!(runs(&daemon, "hello").len(), 1);
    let (code, _) = daemon.get("/api/v1/status");
    assert_eq!(code, 200);
    // Counted like the inbound listener's requests, by outcome: the four
    // commands answered (an `inbound.command` each: the run, both
    // `/status`, the unclosed quote), the unknown command, the stranger,
    // the 100 KiB message; `/jobs@other_bot` is not ours.
    let (_, metrics) = common::http_raw(&daemon.url, "GET", "/metrics", &[]);
    for (result, n) in [
        ("accepted", 4),
        ("invalid", 1),
        ("unauthorized", 1),
        ("too_large", 1),
    ] {
        let line = format!(
            "multijob_inbound_requests_total{{trigger=\"ops-bot\",source=\"telegram\",result=\"{result}\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
}

#[test]
fn run_from_an_allowed_chat_on_the_embedded_store() {
    run_from_an_allowed_chat(None);
}

#[test]
fn run_from_an_allowed_chat_on_redis_the_leader_polls() {
    let redis = RedisServer::start().expect("redis-server");
    run_from_an_allowed_chat(Some(&redis.url()));
}

#[test]
fn a_crash_between_the_run_and_its_reply_queues_the_update_once() {
    let (fake, d) = one_bot("hello", "id: hello\ntype: noop\n", "MJ_TG_CRASH");
    let token = "222:crash-token";
    let env = [("MJ_TG_CRASH", token)];
    let mut daemon = start(&d, None, &env);
    fake.hold_sends(token, true);
    let update = fake.message(token, ALLOWED, "ana", "/run hello k=v");
    let held = fake.wait_for(token, Seen::Attempts, WAIT, |a| !a.is_empty());
    let first = run_id_in(&held[0].1);
    daemon.signal("KILL");
    let _ = daemon.child.wait();
    assert!(!daemon.is_running());
    assert_eq!(
        fake.offset(token),
        None,
        "the update was confirmed before its reply"
    );
    fake.hold_sends(token, false);

    let daemon = start(&d, None, &env);
    wait_handled(&fake, token, update);
    let all = runs(&daemon, "hello");
    assert_eq!(all.len(), 1, "one run for update {update}: {all:#?}");
    assert_eq!(all[0]["id"], first.as_str());
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| {
        s.iter().any(|(_, t)| t.contains("was queued already"))
    });
    assert!(
        sent.iter()
            .any(|(_, t)| *t == format!("run {first} of hello was queued already")),
        "{sent:?}"
    );
    daemon.run_ended(&first);
}

#[test]
fn a_slow_bot_does_not_stall_another() {
    let fake = FakeTelegram::start();
    let d = ConfigDir::new();
    let allow = format!("{{allowed_chat_ids: [{ALLOWED}]}}");
    bridge_connector(&d, "slow-bot", &fake, "MJ_TG_SLOW", &allow);
    bridge_connector(&d, "fast-bot", &fake, "MJ_TG_FAST", &allow);
    let (slow, fast) = ("333:slow-token", "444:fast-token");
    let _daemon = start(&d, None, &[("MJ_TG_SLOW", slow), ("MJ_TG_FAST", fast)]);
    fake.set_send_delay(slow, Duration::from_secs(5));
    fake.message(slow, ALLOWED, "ana", "/help");
    fake.wait_for(slow, Seen::Attempts, WAIT, |a| !a.is_empty());

    let asked = Instant::now();
    fake.message(fast, ALLOWED, "ana", "/help");
    let sent = fake.wait_for(fast, Seen::Sent, WAIT, |s| !s.is_empty());
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the fast bot answered after {took:?}"
    );
    assert!(sent[0].1.contains("/run JOB key=value"), "{sent:?}");
    assert!(fake.sent(slow).is_empty(), "the slow reply was not slow");
}

#[test]
fn approve_releases_a_gated_run_once() {
    let gated = "id: gated\ntype: noop\nrequires_approval: true\n";
    let (fake, d) = one_bot("gated", gated, "MJ_TG_APPROVE");
    let token = "555:approve-token";
    let daemon = start(&d, None, &[("MJ_TG_APPROVE", token)]);

    fake.message(token, ALLOWED, "ana", "/run gated");
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| !s.is_empty());
    let id = run_id_in(&sent[0].1);
    daemon.wait_until(&format!("/api/v1/runs/{id}"), "awaiting approval", |v| {
        v["status"] == "awaiting_approval"
    });
    fake.message(token, ALLOWED, "ana", "/reject ap-nope");
    fake.message(token, ALLOWED, "ana", &format!("/approve ap-{id}"));
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() >= 3);
    assert!(sent[1].1.starts_with("no approval `ap-nope`"), "{sent:?}");
    assert_eq!(sent[2].1, format!("approved ap-{id} (run {id} of gated)"));
    let run = daemon.run_ended(&id);
    assert_eq!(run["status"], "succeeded");

    fake.message(token, ALLOWED, "bob", &format!("/approve {}", &id[..12]));
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| {
        s.iter().any(|(_, t)| t.contains("already"))
    });
    assert!(
        sent.iter().any(|(_, t)| *t
            == format!(
                "approval ap-{id} is already approved by telegram:ana; this approve was not applied"
            )),
        "{sent:?}"
    );
    let (_, approvals) = daemon.get("/api/v1/approvals");
    assert_eq!(approvals["items"][0]["decided_by"], "telegram:ana");
    assert_eq!(runs(&daemon, "gated").len(), 1);
}

#[test]
fn a_bridge_with_no_allowed_chat_answers_nobody() {
    let fake = FakeTelegram::start();
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", "id: hello\ntype: noop\n");
    bridge_connector(&d, "open-bot", &fake, "MJ_TG_EMPTY", "{}");
    let out = d.run(&["validate"]);
    out.assert_code(0)
        .assert_line("jobs.d/open-bot.yaml:", "warning[bridge-nobody]");
    assert!(
        out.stdout().contains("the bridge answers no one"),
        "{}",
        out.explain()
    );
    let token = "666:empty-token";
    let daemon = start(&d, None, &[("MJ_TG_EMPTY", token)]);
    let update = fake.message(token, ALLOWED, "ana", "/run hello");
    wait_handled(&fake, token, update);
    assert!(fake.attempts(token).is_empty());
    assert!(runs(&daemon, "hello").is_empty());
    let rejected = events(&daemon, "inbound.rejected");
    assert!(
        rejected.iter().any(|e| e["data"]["chat_id"] == ALLOWED),
        "{rejected:#?}"
    );
}

#[test]
fn validate_refuses_a_bridge_it_could_not_poll() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/hook.yaml",
        "kind: Connector\nid: hook\nprovider: webhook\nbase_url: http://127.0.0.1:9\nbridge: {allowed_chat_ids: [\"-100123\"]}\n",
    );
    d.write(
        "jobs.d/tg.yaml",
        "kind: Connector\nid: tg\nprovider: telegram\nbridge: {allowed_chat_ids: [1]}\n",
    );
    let out = d.run(&["validate"]);
    out.assert_code(1)
        .assert_line(
            "jobs.d/hook.yaml:",
            "reads chat commands from Telegram only",
        )
        .assert_line("jobs.d/tg.yaml:", "a bridge polls with the bot's token")
        .assert_line("jobs.d/tg.yaml:", "a bridge needs `base_url` to poll");
}

/// With Redis only the leader polls (a follower or a worker polling the
/// same bot would get 409 from Telegram); when it dies, the next leader
/// polls and answers.
#[test]
fn on_redis_only_the_leader_polls_and_the_next_leader_takes_over() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    let (fake, d) = one_bot("hello", "id: hello\ntype: noop\n", "MJ_TG_LEAD");
    let token = "777:lead-token";
    let mut env = common::worker::FAST.to_vec();
    env.push(("MJ_TG_LEAD", token));
    let replica = |d: &ConfigDir| Daemon::start_env(d.path(), &["--redis", url.as_str()], &env);
    let mut first = replica(&d);
    first.wait_until("/api/v1/status", "leading", |v| {
        v["cluster"]["role"] == "leader"
    });
    let second = replica(&d);
    second.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let _worker = common::worker::WorkerProc::start(&redis, 1);

    fake.message(token, ALLOWED, "ana", "/run hello n=1");
    fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() >= 2);
    // Followers and workers have had time to poll by now, and did not.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        fake.most_open_polls(token),
        1,
        "more than one process polled the bot"
    );

    first.signal("KILL");
    let _ = first.child.wait();
    second.wait_until("/api/v1/status", "the next leader", |v| {
        v["cluster"]["role"] == "leader"
    });
    fake.message(token, ALLOWED, "ana", "/run hello n=2");
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() >= 4);
    let id = run_id_in(&sent[2].1);
    let run = second.run_ended(&id);
    assert_eq!(run["inputs"]["n"], "2");
    assert_eq!(runs(&second, "hello").len(), 2);
}

/// A revision that adds, changes or removes a bridge starts, restarts or
/// stops its poller.
#[test]
fn bridges_follow_the_applied_revision() {
    let fake = FakeTelegram::start();
    let d = ConfigDir::new();
    d.write("jobs.d/hello.yaml", "id: hello\ntype: noop\n");
    let token = "888:reload-token";
    let daemon = start(&d, None, &[("MJ_TG_RELOAD", token)]);
    assert_eq!(fake.polls(token), 0);

    let allow = |chats: &str| format!("{{allowed_chat_ids: [{chats}]}}");
    bridge_connector(
        &d,
        "ops-bot",
        &fake,
        "MJ_TG_RELOAD",
        &allow(&ALLOWED.to_string()),
    );
    daemon.wait_until("/api/v1/connectors", "the bridge applied", |v| {
        v["items"][0]["id"] == "ops-bot"
    });
    fake.message(token, ALLOWED, "ana", "/help");
    fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() == 1);

    bridge_connector(
        &d,
        "ops-bot",
        &fake,
        "MJ_TG_RELOAD",
        &allow(&format!("{ALLOWED}, {STRANGER}")),
    );
    daemon.wait_until("/api/v1/connectors", "the changed connector applied", |v| {
        v["items"][0]["spec"]["bridge"]["allowed_chat_ids"]
            == serde_json::json!([ALLOWED, STRANGER])
    });
    fake.message(token, STRANGER, "eve", "/jobs");
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() == 2);
    assert_eq!(sent[1].0, STRANGER);
    assert!(
        sent[1].1.starts_with("hello - enabled, last: no runs yet"),
        "{sent:?}"
    );

    d.remove("jobs.d/ops-bot.yaml");
    daemon.wait_until("/api/v1/connectors", "the connector removed", |v| {
        v["items"].as_array().is_some_and(Vec::is_empty)
    });
    std::thread::sleep(Duration::from_millis(500));
    let polls = fake.polls(token);
    let update = fake.message(token, ALLOWED, "ana", "/help");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.polls(token), polls, "a removed bridge still polls");
    assert!(fake.offset(token).is_some_and(|o| o <= update));
    assert_eq!(fake.sent(token).len(), 2);
}

/// `/help` lists the skills a Telegram chat may start (a `command_prefix`
/// on channel telegram or none), and such a prefix runs the skill's job
/// (`skill:<id>`) with the given inputs; a skill of another channel is not
/// a command here.
#[test]
fn a_skill_command_prefix_runs_the_skill() {
    let (fake, d) = one_bot("hello", "id: hello\ntype: noop\n", "MJ_TG_SKILL");
    let skill = |id: &str, channel: &str, prefix: &str| {
        format!(
            "kind: Skill\nid: {id}\ndescription: Draft a {id}\nchannel: {channel}\ncommand_prefix: {prefix}\nsteps:\n  - id: s\n    set: {{topic: \"{{{{ inputs.topic }}}}\"}}\n"
        )
    };
    d.write("skills.d/brief.yaml", &skill("brief", "telegram", "/brief"));
    d.write("skills.d/offer.yaml", &skill("offer", "slack", "/offer"));
    let token = "999:skill-token";
    let _daemon = start(&d, None, &[("MJ_TG_SKILL", token)]);

    fake.message(token, ALLOWED, "ana", "/help");
    fake.message(token, ALLOWED, "ana", "/offer topic=x");
    fake.message(token, ALLOWED, "ana", "/brief@ops_bot topic=\"12.12 sale\"");
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() >= 3);
    assert!(
        sent[0].1.contains("/brief key=value ... - Draft a brief"),
        "{sent:?}"
    );
    assert!(!sent[0].1.contains("/offer"), "{sent:?}");
    assert!(
        sent[1]
            .1
            .starts_with("unknown command /offer. Commands: /help"),
        "{sent:?}"
    );
    assert!(sent[1].1.ends_with("/reject, /brief"), "{sent:?}");
    assert!(
        sent[2].1.starts_with("run ") && sent[2].1.ends_with(" of skill:brief queued"),
        "{sent:?}"
    );
    // The second reply: the skill's run ended, and said so.
    let sent = fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() >= 4);
    assert!(sent[3].1.contains("succeeded"), "{sent:?}");
}

/// The stored offset is the bot's: a restart polls from it, and a
/// connector given another bot's token starts from what that bot holds
/// (the old offset would confirm, and so drop, the new bot's updates).
#[test]
fn the_offset_survives_a_restart_for_the_same_bot_only() {
    let (fake, d) = one_bot("hello", "id: hello\ntype: noop\n", "MJ_TG_OFFSET");
    let (old, new) = ("1212:offset-token", "3434:other-token");
    let daemon = start(&d, None, &[("MJ_TG_OFFSET", old)]);
    let update = fake.message(old, ALLOWED, "ana", "/help");
    wait_handled(&fake, old, update);
    drop(daemon);

    let before = fake.offsets(old).len();
    let daemon = start(&d, None, &[("MJ_TG_OFFSET", old)]);
    let start_wait = Instant::now();
    while fake.offsets(old).len() <= before {
        assert!(
            start_wait.elapsed() < WAIT,
            "the restarted bridge never polled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fake.offsets(old)[before], Some(update + 1));
    drop(daemon);

    let _daemon = start(&d, None, &[("MJ_TG_OFFSET", new)]);
    fake.message(new, ALLOWED, "ana", "/help");
    fake.wait_for(new, Seen::Sent, WAIT, |s| s.len() == 1);
    assert_eq!(fake.offsets(new)[0], None, "another bot's offset was used");
}

/// A Bot API that refuses polls (409: another poller) or answers garbage
/// gets polled again after a pause; the daemon keeps serving, the log
/// says why and never shows the token, and commands flow once it recovers.
#[test]
fn a_failing_bot_api_is_polled_again_and_the_token_stays_out_of_the_log() {
    let (fake, d) = one_bot("hello", "id: hello\ntype: noop\n", "MJ_TG_FAIL");
    let token = "4545:failing-token-secret";
    fake.fail_polls(
        token,
        &[
            (409, r#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request"}"#),
            (200, "<html>not the bot api</html>"),
            (200, &format!("{{\"ok\":true,\"result\":[{}]}}", "x".repeat(5 * 1024 * 1024))),
        ],
    );
    let daemon = start(&d, None, &[("MJ_TG_FAIL", token)]);
    fake.message(token, ALLOWED, "ana", "/help");
    fake.wait_for(token, Seen::Sent, WAIT, |s| s.len() == 1);
    let (code, _) = daemon.get("/api/v1/status");
    assert_eq!(code, 200);
    let log = daemon.log();
    assert!(log.contains("another process polls this bot"), "{log}");
    assert!(log.contains("not a Bot API answer"), "{log}");
    assert!(log.contains("is over 4194304 bytes"), "{log}");
    assert!(
        !log.contains("failing-token-secret"),
        "the token is in the log:\n{log}"
    );
}
