//! Files on a hostile host, against the real binary: a FIFO or a device
//! where a file is expected (in the data dir, in jobs.d) never blocks the
//! daemon or its shutdown, and what `files` steps write is bounded per run
//! and per data dir.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path");
    // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

fn data_dir(d: &ConfigDir) -> std::path::PathBuf {
    d.path().join(".multijob/data")
}

/// SIGTERM, then how long the process took to exit (None: still running
/// after `within`).
fn stop(daemon: &mut Daemon, within: Duration) -> Option<Duration> {
    daemon.signal("TERM");
    let start = Instant::now();
    while start.elapsed() < within {
        if !daemon.is_running() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Regression (#19, 7): a `files` read of a FIFO in the data dir blocked
/// in open(2) on a blocking thread: the run timed out, the thread stayed,
/// and SIGTERM never finished (the runtime joined the thread forever).
#[test]
fn a_files_read_of_a_fifo_fails_the_step_and_sigterm_exits_within_the_grace() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/reader.yaml",
        "id: reader\ntype: agent.workflow\ntimeout_ms: 2000\n\
         steps:\n  - id: r\n    files: {read: pipe}\n",
    );
    std::fs::create_dir_all(data_dir(&d)).expect("data dir");
    mkfifo(&data_dir(&d).join("pipe"));
    let grace = 2;
    let mut daemon = Daemon::start(d.path(), &["--grace", &grace.to_string()]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = d.trigger("reader", &[]);
    let run = daemon.run_ended(&id);
    // Generous slack over the grace for a loaded 2-core CI machine.
    let bound = Duration::from_secs(grace + 8);
    let took = stop(&mut daemon, bound);
    assert!(
        took.is_some(),
        "still running {bound:?} after SIGTERM (grace {grace} s)\nrun: {run:#}\n--- log ---\n{}",
        daemon.log()
    );
    eprintln!("exited {:?} after SIGTERM", took.unwrap_or_default());
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "`pipe` is a FIFO (named pipe), not a regular file; files reads only regular files"
        ),
        "{run:#}"
    );
}

/// Regression (#19, 10): a FIFO or a `/dev/zero` symlink named `*.yaml`
/// in jobs.d was skipped without a word.
#[test]
fn a_fifo_and_a_dev_zero_symlink_named_yaml_are_warnings_and_the_daemon_starts() {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    mkfifo(&d.path().join("jobs.d/x.yaml"));
    std::os::unix::fs::symlink("/dev/zero", d.path().join("jobs.d/zero.yaml")).expect("symlink");
    let fifo_warning = "jobs.d/x.yaml:1:1: warning[io]: a FIFO (named pipe), not a regular file";
    let zero_warning = "jobs.d/zero.yaml:1:1: warning[io]: a symlink to `/dev/zero`, \
                        which is a character device, not a regular file";
    let r = d.run(&["validate"]);
    r.assert_code(0)
        .assert_line(fifo_warning, "skipped")
        .assert_line(zero_warning, "skipped")
        .assert_line("valid:", "2 warnings");

    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon.wait_until("/api/v1/jobs/a", "job a", |v| v["id"] == "a");
    let start = Instant::now();
    while !(daemon.log().contains(fifo_warning) && daemon.log().contains(zero_warning))
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert!(
        log.contains(fifo_warning) && log.contains(zero_warning),
        "--- log ---\n{log}"
    );
}

/// Regression (#19, 9): one run wrote 100 files of 1 MB in 0.2 s.
#[test]
fn a_run_writing_past_its_quota_fails_with_the_limit_named() {
    let d = ConfigDir::new();
    let kb = "x".repeat(600);
    d.write(
        "jobs.d/many.yaml",
        "id: many\ntype: agent.workflow\n\
         steps:\n  - id: w\n    foreach: [1, 2, 3, 4, 5]\n    \
         files: {write: \"many/{{ item }}.txt\", content: x}\n",
    );
    d.write(
        "jobs.d/big.yaml",
        &format!(
            "id: big\ntype: agent.workflow\nsteps:\n  \
             - id: one\n    files: {{write: big/1.txt, content: {kb}}}\n  \
             - id: two\n    files: {{write: big/2.txt, content: {kb}}}\n"
        ),
    );
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start(
        d.path(),
        &["--files-max-writes", "3", "--files-max-run-bytes", "1000"],
    );
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);

    let run = daemon.run_ended(&d.trigger("many", &[]));
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "the run reached its limit of 3 `files` writes; raise it with --files-max-writes"
        ),
        "{run:#}"
    );
    let written = std::fs::read_dir(data_dir(&d).join("many")).map_or(0, |e| e.count());
    assert_eq!(written, 3, "three writes, the fourth refused");

    let run = daemon.run_ended(&d.trigger("big", &[]));
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("step `two`")
            && error.contains("over its limit of 1000 bytes; raise it with --files-max-run-bytes"),
        "{run:#}"
    );
    assert!(!data_dir(&d).join("big/2.txt").exists());
    // The limit is per run: the next run writes again.
    let run = daemon.run_ended(&d.trigger("big", &[]));
    assert!(
        run["steps"][0]["status"] == "succeeded",
        "the next run's first write passes\n{run:#}"
    );
}

/// Regression (#19, 9): nothing bounded what runs left in the data dir.
/// The usage is walked at start, so the limit holds across a restart.
#[test]
fn the_data_dir_quota_holds_across_a_restart() {
    let d = ConfigDir::new();
    let kb = "x".repeat(600);
    d.write(
        "jobs.d/w.yaml",
        &format!(
            "id: w\ntype: agent.workflow\n\
             steps:\n  - id: w\n    files: {{write: \"out/{{{{ run.id }}}}.txt\", content: {kb}}}\n"
        ),
    );
    {
        let mut daemon = Daemon::start(d.path(), &["--files-max-dir-bytes", "1500"]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        for _ in 0..2 {
            let run = daemon.run_ended(&d.trigger("w", &[]));
            assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log());
        }
        assert!(
            stop(&mut daemon, Duration::from_secs(20)).is_some(),
            "{}",
            daemon.log()
        );
    }
    // 1200 bytes on disk; the env var sets the same limit.
    let daemon = Daemon::start_env(d.path(), &[], &[("MULTIJOB_FILES_MAX_DIR_BYTES", "1500")]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let run = daemon.run_ended(&d.trigger("w", &[]));
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("to 1800 bytes, over its limit of 1500 bytes; free space there or raise --files-max-dir-bytes"),
        "{run:#}"
    );
    let files = std::fs::read_dir(data_dir(&d).join("out")).map_or(0, |e| e.count());
    assert_eq!(files, 2, "the refused write left no file");
}
