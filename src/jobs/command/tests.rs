//! Real processes: these tests fork `/bin/echo`, `/usr/bin/env`, `/bin/sh`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::connectors::process::parse_stat;

fn job(inputs: Value) -> Job {
    serde_json::from_value(json!({"id": "cmd", "type": "command", "inputs": inputs}))
        .expect("a minimal command job deserializes")
}

fn ctx(data_dir: &TempDir) -> RunContext {
    RunContext {
        run_id: "run-1".into(),
        job_id: "cmd".into(),
        attempt: 1,
        inputs: json!({}),
        data_dir: data_dir.path().to_path_buf(),
        allow_command: true,
        store: None,
        applied: None,
    }
}

async fn run_inputs(data_dir: &TempDir, inputs: Value) -> RunResult {
    run(&job(inputs), &ctx(data_dir), &CancellationToken::new()).await
}

fn permanent(result: RunResult) -> String {
    match result {
        Err(RunError::Permanent(m)) => m,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

/// The message of a retryable failure, with or without the output it
/// carries.
fn retryable(result: RunResult) -> String {
    match result {
        Err(e) if e.is_retryable() => e.message().to_string(),
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

/// Alive and not a zombie: this container's PID 1 does not reap orphans,
/// so a killed grandchild can linger as a zombie that `kill(pid, 0)` still
/// finds.
fn process_is_live(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn echo_succeeds_with_its_stdout() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_inputs(&dir, json!({"argv": ["/bin/echo", "hello", "world"]}))
        .await
        .expect("echo succeeds");
    assert_eq!(
        out,
        json!({"exit_code": 0, "stdout": "hello world\n", "stderr": "", "truncated": false})
    );
}

#[tokio::test]
async fn the_environment_is_cleared() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_inputs(
        &dir,
        json!({"argv": ["/usr/bin/env"], "env": {"GREETING": "hi there", "_X1": ""}}),
    )
    .await
    .expect("env succeeds");
    let stdout = out["stdout"].as_str().expect("stdout is text");
    let vars: BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let names: BTreeSet<&str> = vars.keys().copied().collect();
    let expected: BTreeSet<&str> = [
        "PATH",
        "HOME",
        "MULTIJOB_RUN_ID",
        "MULTIJOB_JOB_ID",
        "MULTIJOB_ATTEMPT",
        "GREETING",
        "_X1",
    ]
    .into();
    assert_eq!(names, expected, "{stdout}");
    assert_eq!(vars["PATH"], CHILD_PATH);
    assert_eq!(vars["MULTIJOB_RUN_ID"], "run-1");
    assert_eq!(vars["MULTIJOB_JOB_ID"], "cmd");
    assert_eq!(vars["MULTIJOB_ATTEMPT"], "1");
    assert_eq!(vars["GREETING"], "hi there");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(Path::new(vars["HOME"]), root.join("scratch/run-1"));
    assert!(
        !root.join("scratch/run-1").exists(),
        "scratch is removed after the attempt"
    );
}

#[tokio::test]
async fn default_cwd_is_created_under_the_data_dir() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_inputs(&dir, json!({"argv": ["/bin/pwd"]}))
        .await
        .expect("pwd succeeds");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(
        out["stdout"],
        format!("{}\n", root.join("command/cmd").display())
    );
}

#[tokio::test]
async fn a_relative_cwd_is_created_and_used() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_inputs(&dir, json!({"argv": ["pwd"], "cwd": "./work/sub"}))
        .await
        .expect("pwd, found on PATH, succeeds");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(
        out["stdout"],
        format!("{}\n", root.join("work/sub").display())
    );
}

#[tokio::test]
async fn cwd_escapes_are_refused() {
    let dir = TempDir::new().expect("temp dir");
    let outside = TempDir::new().expect("another temp dir");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");
    for cwd in ["../x", "a/../../b", "/tmp", "out", "out/deeper"] {
        let message = permanent(run_inputs(&dir, json!({"argv": ["/bin/true"], "cwd": cwd})).await);
        assert!(message.contains("cwd"), "{cwd}: {message}");
    }
    assert!(
        !outside.path().join("deeper").exists(),
        "nothing was created through the symlink"
    );
}

#[tokio::test]
async fn non_zero_exit_is_retryable_with_the_last_stderr_line() {
    let dir = TempDir::new().expect("temp dir");
    let message = retryable(
        run_inputs(
            &dir,
            json!({"argv": ["/bin/sh", "-c", "echo first >&2; echo 'disk on fire' >&2; echo; exit 3"]}),
        )
        .await,
    );
    assert_eq!(message, "exit code 3: disk on fire");
    let message = retryable(run_inputs(&dir, json!({"argv": ["/bin/false"]})).await);
    assert_eq!(message, "exit code 1");
}

#[tokio::test]
async fn a_failed_command_keeps_what_it_printed() {
    let dir = TempDir::new().expect("temp dir");
    let argv = json!(["/bin/sh", "-c", "echo out; echo oops-stderr >&2; exit 3"]);
    let failed = run_inputs(&dir, json!({"argv": argv}))
        .await
        .expect_err("exit code 3 fails the run");
    assert!(failed.is_retryable(), "{failed:?}");
    assert_eq!(failed.to_string(), "exit code 3: oops-stderr");
    let expected = json!({
        "exit_code": 3,
        "stdout": "out\n",
        "stderr": "oops-stderr\n",
        "truncated": false,
    });
    assert_eq!(failed.output(), Some(&expected));
    // Killed by a signal: no exit code, the same shape.
    let killed = run_inputs(
        &dir,
        json!({"argv": ["/bin/sh", "-c", "echo before; kill -TERM $$"]}),
    )
    .await
    .expect_err("a signal fails the run");
    let output = killed.output().expect("a killed command keeps its output");
    assert_eq!(output["exit_code"], Value::Null);
    assert_eq!(output["stdout"], "before\n");
}

#[tokio::test]
async fn death_by_signal_is_retryable_and_names_it() {
    let dir = TempDir::new().expect("temp dir");
    let message =
        retryable(run_inputs(&dir, json!({"argv": ["/bin/sh", "-c", "kill -TERM $$"]})).await);
    assert_eq!(message, "killed by signal 15 (SIGTERM)");
}

#[tokio::test]
async fn a_missing_binary_is_permanent() {
    let dir = TempDir::new().expect("temp dir");
    let message = permanent(run_inputs(&dir, json!({"argv": ["/nonexistent/frobnicate"]})).await);
    assert_eq!(message, "command not found: /nonexistent/frobnicate");
    let message = permanent(run_inputs(&dir, json!({"argv": ["frobnicate-xyz-not-here"]})).await);
    assert_eq!(message, "command not found: frobnicate-xyz-not-here");
}

#[tokio::test]
async fn without_allow_command_nothing_runs() {
    let dir = TempDir::new().expect("temp dir");
    let mut context = ctx(&dir);
    context.allow_command = false;
    let marker = dir.path().join("ran");
    let argv = json!(["/usr/bin/touch", marker.to_str().expect("utf-8 path")]);
    let message = permanent(
        run(
            &job(json!({"argv": argv})),
            &context,
            &CancellationToken::new(),
        )
        .await,
    );
    assert!(message.contains("--allow-command"), "{message}");
    assert!(!marker.exists());
}

#[tokio::test]
async fn argv_comes_from_the_spec_not_from_trigger_inputs() {
    let dir = TempDir::new().expect("temp dir");
    let mut context = ctx(&dir);
    context.inputs = json!({"argv": ["/bin/echo", "from a trigger"]});
    let out = run(
        &job(json!({"argv": ["/bin/echo", "from the spec"]})),
        &context,
        &CancellationToken::new(),
    )
    .await
    .expect("echo succeeds");
    assert_eq!(out["stdout"], "from the spec\n");
}

#[tokio::test]
async fn bad_inputs_are_permanent_and_name_the_input() {
    let dir = TempDir::new().expect("temp dir");
    for (inputs, expected) in [
        (json!({}), "argv: missing"),
        (json!({"argv": "echo hi"}), "argv: expected a list"),
        (json!({"argv": []}), "argv: is empty"),
        (json!({"argv": [""]}), "argv[0]: is empty"),
        (
            json!({"argv": ["/bin/echo", 3]}),
            "argv[1]: expected a string",
        ),
        (
            json!({"argv": ["/bin/echo", "a\u{0}b"]}),
            "argv[1]: contains a NUL",
        ),
        (
            json!({"argv": ["/bin/true"], "env": {"lower": "x"}}),
            "env: name \"lower\"",
        ),
        (
            json!({"argv": ["/bin/true"], "env": {"1A": "x"}}),
            "env: name \"1A\"",
        ),
        (
            json!({"argv": ["/bin/true"], "env": {"PORT": 8080}}),
            "env.PORT: expected a string",
        ),
        (
            json!({"argv": ["/bin/true"], "env": {"MULTIJOB_JOB_ID": "x"}}),
            "reserved",
        ),
        (
            json!({"argv": ["/bin/true"], "env": ["A=1"]}),
            "env: expected a map",
        ),
        (
            json!({"argv": ["/bin/true"], "cwd": 7}),
            "cwd: expected a path",
        ),
    ] {
        let message = permanent(run_inputs(&dir, inputs.clone()).await);
        assert!(message.contains(expected), "{inputs}: {message}");
    }
}

#[tokio::test]
async fn output_is_capped_and_the_cut_is_reported() {
    let dir = TempDir::new().expect("temp dir");
    let out = run_inputs(
        &dir,
        json!({"argv": ["/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a; echo done >&2"]}),
    )
    .await
    .expect("succeeds");
    assert_eq!(out["stdout"].as_str().map(str::len), Some(CAPTURE_LIMIT));
    assert_eq!(out["stderr"], "done\n");
    assert_eq!(out["truncated"], true);
}

#[tokio::test]
async fn a_background_process_holding_stdout_does_not_hold_the_run() {
    let dir = TempDir::new().expect("temp dir");
    let started = Instant::now();
    let out = run_inputs(
        &dir,
        json!({"argv": ["/bin/sh", "-c", "sleep 30 & echo $! > bg.pid; echo done"]}),
    )
    .await
    .expect("succeeds");
    assert_eq!(out["stdout"], "done\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pid_file = dir.path().join("command/cmd/bg.pid");
    if let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // SAFETY: kill(2) on the pid this test's own child started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn cancellation_kills_the_whole_process_group() {
    let dir = TempDir::new().expect("temp dir");
    let token = CancellationToken::new();
    let trigger = token.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let result = run_inputs_with(
        &dir,
        json!({"argv": ["/bin/sh", "-c", "sleep 30 & echo $! > child.pid; wait"]}),
        &token,
    )
    .await;
    canceller.await.expect("the canceller ran");
    assert_eq!(result, Err(RunError::Cancelled));
    // SIGTERM ends both at once, so the run must not sit out the grace
    // period (measured: ~330 ms in all). It would if zombies, which this
    // container's PID 1 leaves behind, counted as live members.
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );

    let pid_text = std::fs::read_to_string(dir.path().join("command/cmd/child.pid"))
        .expect("sh wrote the grandchild's pid");
    let pid: i32 = pid_text.trim().parse().expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(3);
    while process_is_live(pid) {
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} still alive after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_group_that_ignores_sigterm_gets_sigkill() {
    let dir = TempDir::new().expect("temp dir");
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let result = run_inputs_with(
        &dir,
        json!({"argv": ["/bin/sh", "-c", "trap '' TERM; sleep 30 & echo $! > child.pid; wait"]}),
        &token,
    )
    .await;
    assert_eq!(result, Err(RunError::Cancelled));
    let took = started.elapsed();
    assert!(
        took >= TERM_GRACE,
        "SIGKILL came before the grace ended: {took:?}"
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("command/cmd/child.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(3);
    while process_is_live(pid) {
        assert!(Instant::now() < deadline, "grandchild {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let dir = TempDir::new().expect("temp dir");
    let token = CancellationToken::new();
    let job = job(json!({"argv": ["/bin/sh", "-c", "sleep 30 & echo $! > child.pid; wait"]}));
    let context = ctx(&dir);
    let pid_file = dir.path().join("command/cmd/child.pid");
    {
        let run = run(&job, &context, &token);
        tokio::pin!(run);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pid_file.exists() {
            assert!(Instant::now() < deadline, "sh never wrote child.pid");
            tokio::select! {
                r = &mut run => panic!("finished early: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        // Dropped here, mid-run, as a caller's timeout would.
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(3);
    while process_is_live(pid) {
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} outlived the dropped run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_inputs_with(dir: &TempDir, inputs: Value, token: &CancellationToken) -> RunResult {
    run(&job(inputs), &ctx(dir), token).await
}

#[test]
fn env_names() {
    for good in ["A", "_", "PATH", "MY_VAR_2", "_X"] {
        assert!(is_env_name(good), "{good}");
    }
    for bad in ["", "a", "1A", "MY-VAR", "MY VAR", "É"] {
        assert!(!is_env_name(bad), "{bad}");
    }
}
