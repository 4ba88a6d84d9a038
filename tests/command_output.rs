//! A `command` run's output through the real binary: what the command
//! printed is kept on the run's record whether it succeeded or failed.

mod common;

use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};
use serde_json::{Value, json};

/// The run's record once it has `status`, or a failure with the daemon's
/// log.
fn wait_run_status(d: &Daemon, id: &str, status: &str) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(30) {
        last = d.get(&format!("/api/v1/runs/{id}")).1;
        if last["status"] == status {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "run {id} did not become {status}; last record: {last:#}\n--- daemon log ---\n{}",
        d.log()
    );
}

/// Issue #21: a failed `command` run recorded `output: null` and lost what
/// it printed; the error alone kept stderr's last line.
#[test]
fn a_failed_command_run_keeps_its_stdout_and_stderr() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/c.yaml",
        "id: c\ntype: command\nretry_policy: {max_retry: 0}\n\
         inputs: {argv: [/bin/sh, -c, 'echo out; echo oops-stderr >&2; exit 3']}\n",
    );
    let daemon = Daemon::start(d.path(), &["--allow-command"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = d.trigger("c", &[]);
    let run = wait_run_status(&daemon, &id, "failed");
    assert_eq!(run["error"], "exit code 3: oops-stderr", "{run:#}");
    assert_eq!(
        run["output"],
        json!({
            "exit_code": 3,
            "stdout": "out\n",
            "stderr": "oops-stderr\n",
            "truncated": false,
        }),
        "{run:#}"
    );
}

/// The success path keeps the same shape it always had.
#[test]
fn a_successful_command_run_keeps_the_same_output_shape() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/ok.yaml",
        "id: ok\ntype: command\ninputs: {argv: [/bin/sh, -c, 'echo out; echo note >&2']}\n",
    );
    let daemon = Daemon::start(d.path(), &["--allow-command"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = d.trigger("ok", &[]);
    let run = wait_run_status(&daemon, &id, "succeeded");
    assert_eq!(run["error"], Value::Null, "{run:#}");
    assert_eq!(
        run["output"],
        json!({"exit_code": 0, "stdout": "out\n", "stderr": "note\n", "truncated": false}),
        "{run:#}"
    );
}
