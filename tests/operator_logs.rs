//! `multijob runs`, `multijob logs [--follow]` and `trigger --wait` with
//! the real binary beside a running daemon, on the embedded store and on
//! Redis: one table of checks, each run once per backend.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};
use multijob::testkit::RedisServer;

const JOBS: &str = "\
id: hello
type: command
inputs: {argv: [/bin/sh, -c, 'echo out-line; echo err-line >&2']}
---
id: slow
type: command
inputs: {argv: [/bin/sh, -c, 'echo first-line; sleep 2; echo second-line']}
---
id: fails
type: command
retry_policy: {max_retry: 0}
inputs: {argv: [/bin/sh, -c, 'echo before-fail; echo boom >&2; exit 3']}
---
id: sleepy
type: command
inputs: {argv: [/bin/sh, -c, 'sleep 30']}
---
id: big
type: command
inputs: {argv: [/bin/sh, -c, 'head -c 5242880 /dev/zero | tr \"\\000\" x | fold -w 99']}
---
kind: Connector
id: api
provider: http
base_url: http://127.0.0.1:9
---
id: flow
type: agent.workflow
retry_policy: {max_retry: 0}
steps:
  - id: steal
    http: {connector: api, url: \"http://169.254.169.254/latest/meta-data\"}
";

/// A daemon with the jobs above on one backend, and the arguments that
/// point the CLI at its store.
struct Setup {
    dir: ConfigDir,
    daemon: Daemon,
    store_args: Vec<String>,
    _redis: Option<RedisServer>,
}

impl Setup {
    fn sqlite() -> Setup {
        let dir = ConfigDir::new();
        dir.write("jobs.d/jobs.yaml", JOBS);
        let daemon = Daemon::start(dir.path(), &["--allow-command"]);
        Setup {
            dir,
            daemon,
            store_args: vec![],
            _redis: None,
        }
    }

    fn redis() -> Setup {
        let server = RedisServer::start().expect("redis-server");
        let url = server.url();
        let dir = ConfigDir::new();
        dir.write("jobs.d/jobs.yaml", JOBS);
        let daemon = Daemon::start(dir.path(), &["--allow-command", "--redis", &url]);
        daemon.wait_until("/api/v1/status", "leading, a revision applied", |v| {
            v["cluster"]["role"] == "leader" && v["revision"].is_string()
        });
        Setup {
            dir,
            daemon,
            store_args: vec!["--redis".into(), url],
            _redis: Some(server),
        }
    }

    /// `multijob ARGS` on this setup's store.
    fn cli(&self, args: &[&str]) -> common::Run {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(self.store_args.iter().map(String::as_str));
        self.dir.run(&all)
    }

    /// The same as a child process with piped stdout, for reading as it goes.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(common::bin())
            .args(args)
            .args(&self.store_args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the CLI")
    }

    /// Triggers `job` and waits for it to end through `trigger --wait`.
    #[track_caller]
    fn run_to_end(&self, job: &str) -> (String, common::Run) {
        let out = self.cli(&["trigger", job, "--wait", "--timeout", "30s"]);
        let id = out
            .stdout()
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no run id\n{}", out.explain()))
            .to_string();
        (id, out)
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Setup::sqlite()); })*
        }
        mod redis {
            $(#[test] fn $name() { super::$name(&super::Setup::redis()); })*
        }
    };
}

both_backends!(
    runs_lists_filters_and_prints_json,
    logs_shows_a_finished_command_runs_stdout_and_stderr_and_resolves_prefixes,
    logs_follow_streams_the_first_line_before_the_run_ends,
    trigger_wait_exits_with_the_runs_status_or_times_out,
    hostile_ids_and_a_run_printing_5_mib_are_handled_and_the_daemon_keeps_serving,
);

fn runs_lists_filters_and_prints_json(s: &Setup) {
    let (ok, out) = s.run_to_end("hello");
    out.assert_code(0);
    let (failed, out) = s.run_to_end("fails");
    out.assert_code(1);

    let table = s.cli(&["runs"]);
    table.assert_code(0).assert_line("ID", "STATUS");
    let text = table.stdout();
    let (at_ok, at_failed) = (text.find(&ok).unwrap(), text.find(&failed).unwrap());
    assert!(at_failed < at_ok, "newest first\n{text}");
    table
        .assert_line(&failed, "exit code 3: boom")
        .assert_line(&ok, "succeeded");

    let json = s.cli(&["runs", "hello", "-o", "json"]);
    json.assert_code(0);
    let ids: Vec<String> = json
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&ok), "{}", json.explain());
    let failed_only = s.cli(&["runs", "--status", "failed", "-o", "json"]).json();
    assert_eq!(failed_only.as_array().unwrap().len(), 1, "{failed_only:#}");
    assert_eq!(failed_only[0]["error"], "exit code 3: boom");
    let recent = s
        .cli(&["runs", "--since", "1h", "--limit", "1", "-o", "json"])
        .json();
    assert_eq!(recent[0]["id"].as_str(), Some(failed.as_str()));
    assert_eq!(recent.as_array().unwrap().len(), 1);

    let bad = s.cli(&["runs", "--status", "done"]);
    bad.assert_code(1);
    assert!(
        bad.stderr()
            .contains("use one of queued, awaiting_approval, running, succeeded"),
        "{}",
        bad.explain()
    );
    let bad = s.cli(&["runs", "--since", "5x"]);
    assert!(
        bad.stderr()
            .contains("\"5x\": use a number with s, m, h or d, like 30s or 5m"),
        "{}",
        bad.explain()
    );
    let unknown = s.cli(&["runs", "helo"]);
    unknown.assert_code(1);
    assert!(
        unknown.stderr().contains("no job `helo`")
            && unknown.stderr().contains("did you mean `hello`?"),
        "{}",
        unknown.explain()
    );
}

fn logs_shows_a_finished_command_runs_stdout_and_stderr_and_resolves_prefixes(s: &Setup) {
    let (id, out) = s.run_to_end("hello");
    out.assert_code(0);
    let logs = s.cli(&["logs", &id]);
    logs.assert_code(0)
        .assert_line(
            &format!("run {id}"),
            "job hello  trigger manual  status succeeded",
        )
        .assert_line("out| out-line", "")
        .assert_line("err| err-line", "")
        .assert_line(&format!("run {id} succeeded"), "attempt 1");
    // The only run so far: its first 8 characters name it; 7 never do.
    s.cli(&["logs", &id[..8]])
        .assert_code(0)
        .assert_line("out| out-line", "");
    let short = s.cli(&["logs", &id[..7]]);
    short.assert_code(1);
    assert!(
        short
            .stderr()
            .contains("a prefix needs at least 8 characters"),
        "{}",
        short.explain()
    );
    let json = s.cli(&["logs", &id, "-o", "json"]).json();
    assert_eq!(json["run"]["id"], id.as_str());
    // A workflow run: each step with its status and error.
    let (flow, out) = s.run_to_end("flow");
    out.assert_code(1);
    let steps = s.cli(&["logs", &flow]);
    steps.assert_code(0).assert_line("  step steal", "failed");
    assert!(
        steps.stdout().contains("      error: "),
        "{}",
        steps.explain()
    );
    let texts: Vec<&str> = json["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"out-line\n") && texts.contains(&"err-line\n"),
        "{json:#}"
    );
    // A second run in the same minute shares the first 8 characters (a
    // UUIDv7's time): the prefix is refused as ambiguous.
    let (other, _) = s.run_to_end("hello");
    if other[..8] == id[..8] {
        let both = s.cli(&["logs", &id[..8]]);
        both.assert_code(1);
        assert!(
            both.stderr().contains("fits more than one run"),
            "{}",
            both.explain()
        );
    }
}

fn logs_follow_streams_the_first_line_before_the_run_ends(s: &Setup) {
    // Followed at once: the trigger may still wait in the inbox.
    let id = s.dir.trigger(
        "slow",
        &s.store_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut child = s.spawn(&["logs", &id, "--follow"]);
    let stdout = child.stdout.take().unwrap();
    let start = Instant::now();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        seen.push((start.elapsed(), line));
    }
    let status = child.wait().unwrap();
    let ended = start.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // Piped: no spinner, no cursor escapes.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let when = |text: &str| seen.iter().find(|(_, l)| l.contains(text)).map(|(t, _)| *t);
    let first = when("out| first-line").unwrap_or_else(|| panic!("{seen:?}"));
    let second = when("out| second-line").unwrap_or_else(|| panic!("{seen:?}"));
    assert!(first < second, "{seen:?}");
    assert!(
        ended - first >= Duration::from_millis(1200),
        "first line came {first:?}, the end {ended:?}: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(_, l)| l.contains(&format!("run {id} succeeded"))),
        "{seen:?}"
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    // As JSON lines: status, output and the ended run.
    let json = s.cli(&["logs", &id, "--follow", "-o", "json"]);
    json.assert_code(0);
    let events: Vec<serde_json::Value> = json
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events[0]["event"], "status", "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["chunk"]["text"] == "first-line\n"),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "ended", "{events:?}");
    assert_eq!(last["run"]["status"], "succeeded", "{events:?}");
}

fn trigger_wait_exits_with_the_runs_status_or_times_out(s: &Setup) {
    let (_, ok) = s.run_to_end("hello");
    ok.assert_code(0)
        .assert_line("out| out-line", "")
        .assert_line("run ", "succeeded");
    let (_, failed) = s.run_to_end("fails");
    failed
        .assert_code(1)
        .assert_line("out| before-fail", "")
        .assert_line("error: exit code 3: boom", "");
    let slow = s.cli(&["trigger", "sleepy", "--wait", "--timeout", "2s"]);
    slow.assert_code(1);
    let err = slow.stderr();
    assert!(
        err.contains("timed out waiting: run") && err.contains("is still"),
        "{}",
        slow.explain()
    );
    assert!(err.contains("--follow`"), "{}", slow.explain());
    let burst = s.cli(&[
        "trigger",
        "hello",
        "--count",
        "3",
        "--wait",
        "--timeout",
        "60s",
    ]);
    burst
        .assert_code(0)
        .assert_line("3 runs: 3 succeeded, 0 failed", "");
    // Piped: no progress bar, no cursor escapes.
    assert!(
        !burst.stderr().contains('\u{1b}') && !burst.stdout().contains('\u{1b}'),
        "{}",
        burst.explain()
    );
    let burst = s.cli(&[
        "trigger",
        "fails",
        "--count",
        "2",
        "--wait",
        "--timeout",
        "60s",
    ]);
    burst
        .assert_code(1)
        .assert_line("2 runs: 0 succeeded, 2 failed (2 failed)", "");
}

fn hostile_ids_and_a_run_printing_5_mib_are_handled_and_the_daemon_keeps_serving(s: &Setup) {
    let unknown = s.cli(&["logs", "0193ffff-0000-7000-8000-000000000000"]);
    unknown.assert_code(1);
    assert!(
        unknown
            .stderr()
            .contains("no run `0193ffff-0000-7000-8000-000000000000`"),
        "{}",
        unknown.explain()
    );
    let odd = s.cli(&["logs", "*******'; DROP TABLE runs; --"]);
    odd.assert_code(1);
    assert!(odd.stderr().contains("no run"), "{}", odd.explain());
    s.cli(&["logs", "", "--follow"]).assert_code(1);

    let (big, out) = s.run_to_end("big");
    out.assert_code(0);
    let json = s.cli(&["logs", &big, "-o", "json"]);
    json.assert_code(0);
    let chunks = json.json()["output"].as_array().unwrap().clone();
    let recorded: usize = chunks
        .iter()
        .map(|c| c["text"].as_str().unwrap().len())
        .sum();
    assert!(recorded <= 1024 * 1024 + 512, "{recorded} bytes recorded");
    assert!(recorded >= 1000 * 1024, "{recorded} bytes recorded");
    let last = chunks.last().unwrap()["text"].as_str().unwrap();
    assert!(last.contains("more bytes of output not recorded"), "{last}");
    // The daemon goes on: its API answers, another run and the listing work.
    let (code, _) = s.daemon.get("/readyz");
    assert_eq!(code, 200, "{}", s.daemon.log());
    let (_, again) = s.run_to_end("hello");
    again.assert_code(0);
    s.cli(&["runs", "--limit", "2"])
        .assert_code(0)
        .assert_line(&big, "succeeded");
}
