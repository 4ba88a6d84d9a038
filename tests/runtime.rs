//! The scheduler and worker pool through the real binary: slots, guards,
//! retries, timeouts, failure memory, lanes, pressure, crash recovery.

mod common;

use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};
use serde_json::Value;

fn runs(d: &Daemon, query: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/api/v1/runs?limit=1000{query}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

fn events(d: &Daemon, query: &str) -> Vec<Value> {
    let (_, v) = d.get(&format!("/api/v1/events?limit=1000{query}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

fn wait_for<T>(what: &str, d: &Daemon, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out waiting for {what}\n--- daemon log ---\n{}",
        d.log()
    );
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

fn trigger(d: &ConfigDir, job: &str, inputs: Option<&str>) -> String {
    let mut args = vec!["trigger", job];
    if let Some(i) = inputs {
        args.push("--inputs");
        args.push(i);
    }
    let run = d.run(&args);
    run.assert_code(0);
    run.stdout()
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no run id in {}", run.stdout()))
        .to_string()
}

fn run_of(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/api/v1/runs/{id}")).1
}

fn wait_run_status(d: &Daemon, id: &str, status: &str) -> Value {
    wait_for(&format!("run {id} to be {status}"), d, || {
        let r = run_of(d, id);
        (r["status"] == status).then_some(r)
    })
}

#[test]
fn an_interval_job_runs_about_once_per_second() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/tick.yaml",
        "id: tick\ntype: noop\nschedule: {every: 1s}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    std::thread::sleep(Duration::from_millis(4_300));
    let done = runs(&daemon, "&job=tick&status=succeeded");
    assert!(
        (3..=6).contains(&done.len()),
        "expected ~4 runs in ~4 s, got {}\n{}",
        done.len(),
        daemon.log()
    );
    // Each run is keyed by its slot and scheduled on whole seconds.
    for r in &done {
        assert_eq!(r["trigger"], "schedule");
        let at = ts(&r["scheduled_at"]);
        assert_eq!(at.subsec_nanosecond(), 0, "{r}");
    }
    let status = daemon.get("/api/v1/status").1;
    assert!(
        status["scheduler"]["dispatched"].as_u64().unwrap_or(0) >= 3,
        "{status:#}"
    );
}

#[test]
fn overlap_forbid_skips_slots_with_events() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/slow.yaml",
        "id: slow\ntype: simulation.heavy\nschedule: {every: 1s}\ninputs: {work_ms: 2500}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    let skipped = wait_for("an overlap skip", &daemon, || {
        let e = events(&daemon, "&type=scheduler.dispatch_skipped_overlap");
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(skipped[0]["job_id"], "slow");
    assert_eq!(skipped[0]["data"]["reason"], "overlap");
    // Never two runs of the job at once.
    let all = runs(&daemon, "&job=slow");
    let active = all
        .iter()
        .filter(|r| r["status"] == "running" || r["status"] == "queued")
        .count();
    assert!(active <= 1, "{all:#?}");
}

#[test]
fn a_lane_of_one_never_overlaps() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/lane.yaml",
        "kind: Flow\nid: one\nmax_active_runs: 1\n---\nid: a\ntype: simulation.heavy\nflow: one\noverlap: allow\nschedule: {every: 1s}\ninputs: {work_ms: 400}\n---\nid: b\ntype: simulation.heavy\nflow: one\noverlap: allow\nschedule: {every: 1s}\ninputs: {work_ms: 400}\n",
    );
    let daemon = Daemon::start(d.path(), &["--workers", "4"]);
    std::thread::sleep(Duration::from_millis(4_500));
    let mut spans: Vec<(jiff::Timestamp, jiff::Timestamp, String)> =
        runs(&daemon, "&status=succeeded")
            .iter()
            .map(|r| {
                (
                    ts(&r["started_at"]),
                    ts(&r["finished_at"]),
                    r["job_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
    spans.sort();
    assert!(spans.len() >= 3, "{spans:?}\n{}", daemon.log());
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "lane runs overlap: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let flow_skips = events(&daemon, "&type=scheduler.dispatch_skipped_flow_limit");
    assert!(
        !flow_skips.is_empty(),
        "a full lane skips slots with flow_limit"
    );
}

/// Regression (QA): two jobs in a lane of one, each busy longer than its
/// interval; the one whose id sorts later never ran.
#[test]
fn jobs_sharing_a_busy_lane_take_turns() {
    let d = ConfigDir::new();
    let job = |id: &str| {
        format!(
            "id: {id}\ntype: simulation.heavy\nflow: one\nschedule: {{every: 1s}}\ninputs: {{work_ms: 1500}}\n"
        )
    };
    d.write(
        "jobs.d/lane.yaml",
        &format!(
            "kind: Flow\nid: one\nmax_active_runs: 1\n---\n{}---\n{}",
            job("lane-a"),
            job("lane-b")
        ),
    );
    let daemon = Daemon::start(d.path(), &["--workers", "4"]);
    let started = |id: &str| {
        runs(&daemon, &format!("&job={id}"))
            .iter()
            .filter(|r| !r["started_at"].is_null())
            .count()
    };
    wait_for("both lane jobs to have started twice", &daemon, || {
        (started("lane-a") >= 2 && started("lane-b") >= 2).then_some(())
    });
}

/// Regression (QA): `misfire: run_all` with `max_catchup_runs: 3` ran one
/// catch-up after a downtime; `overlap: forbid` skipped the others.
#[test]
fn run_all_catches_up_every_missed_slot_within_the_cap() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/every.yaml",
        "id: every\ntype: noop\nschedule: {every: 1s, misfire: run_all, max_catchup_runs: 3}\n",
    );
    {
        let mut daemon = Daemon::start(d.path(), &[]);
        wait_for("a first run", &daemon, || {
            (!runs(&daemon, "&job=every&status=succeeded").is_empty()).then_some(())
        });
        daemon.signal("TERM");
        let start = Instant::now();
        while daemon.is_running() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !daemon.is_running(),
            "daemon did not stop\n{}",
            daemon.log()
        );
    }
    // Down for 5 s: 4 or more slots missed, 3 of them caught up.
    std::thread::sleep(Duration::from_secs(5));
    let daemon = Daemon::start(d.path(), &[]);
    let catchups = wait_for("three catch-up runs", &daemon, || {
        let queued: Vec<Value> = events(&daemon, "&type=run.queued")
            .into_iter()
            .filter(|e| e["data"]["catchup"] == true)
            .collect();
        (queued.len() >= 3).then_some(queued)
    });
    assert_eq!(catchups.len(), 3, "{catchups:#?}");
    // Each distinct slot, and all of them run.
    let mut slots: Vec<String> = catchups
        .iter()
        .map(|e| e["data"]["scheduled_at"].as_str().unwrap_or("").to_string())
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 3, "{slots:?}");
    for e in &catchups {
        let id = e["run_id"].as_str().unwrap_or_default();
        wait_run_status(&daemon, id, "succeeded");
    }
}

#[test]
fn retries_succeed_on_the_right_attempt_with_backoff() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/flaky.yaml",
        "id: flaky\ntype: simulation.heavy\nretry_policy: {max_retry: 3, backoff_sec: [0.2, 0.4]}\ninputs: {fail_attempts: 2}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = trigger(&d, "flaky", None);
    let run = wait_run_status(&daemon, &id, "succeeded");
    assert_eq!(run["attempt"], 3, "{run:#}");
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[1]["status"], "failed");
    assert_eq!(attempts[2]["status"], "succeeded");
    assert!(attempts[0]["error"].as_str().unwrap().contains("attempt 1"));
    // The second attempt waited the first backoff (0.2 s), the third the second (0.4 s).
    let gap1 = ts(&attempts[1]["started_at"]).duration_since(ts(&attempts[0]["finished_at"]));
    let gap2 = ts(&attempts[2]["started_at"]).duration_since(ts(&attempts[1]["finished_at"]));
    assert!(gap1.as_millis() >= 190, "{gap1:?}");
    assert!(gap2.as_millis() >= 390, "{gap2:?}");
    let retrying = events(&daemon, "&type=run.retrying");
    assert_eq!(retrying.len(), 2);
    assert_eq!(run["trigger"], "manual");
}

#[test]
fn a_timeout_ends_as_timed_out() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/hang.yaml",
        "id: hang\ntype: simulation.heavy\ntimeout_ms: 300\ninputs: {work_ms: 10000}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let started = Instant::now();
    let id = trigger(&d, "hang", None);
    let run = wait_run_status(&daemon, &id, "timed_out");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(run["attempts"][0]["status"], "timed_out");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 300 ms"),
        "{run:#}"
    );
    assert!(!events(&daemon, "&type=run.timed_out").is_empty());
}

#[test]
fn failure_memory_cools_a_job_down_and_counts_a_run_once() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/broken.yaml",
        "id: broken\ntype: simulation.heavy\nschedule: {every: 1s}\noverlap: allow\nretry_policy: {max_retry: 1, backoff_sec: [0.05]}\nfailure_memory: {threshold: 2, cooldown_sec: 60, cooldown_max_sec: 600}\ninputs: {fail_attempts: 100}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    let job = daemon.wait_until("/api/v1/jobs/broken", "the cooldown", |v| {
        v["failure_memory"]["cooldown_until"].is_string()
    });
    // Two runs of two attempts each: counted as two failures, not four.
    assert_eq!(job["failure_memory"]["consecutive_failures"], 2, "{job:#}");
    assert!(
        job["failure_memory"]["last_error"]
            .as_str()
            .unwrap()
            .contains("simulated failure")
    );
    let until = ts(&job["failure_memory"]["cooldown_until"]);
    let secs = until.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((50..=61).contains(&secs), "cooldown ~60 s, got {secs}");
    wait_for("a cooldown skip", &daemon, || {
        let e = events(&daemon, "&type=scheduler.dispatch_skipped_cooldown");
        (!e.is_empty()).then_some(())
    });
    assert!(!events(&daemon, "&type=job.cooldown").is_empty());
}

#[test]
fn a_run_waiting_for_its_retry_counts_as_active() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/r.yaml",
        "id: r\ntype: simulation.heavy\nschedule: {every: 1s}\nretry_policy: {max_retry: 1, backoff_sec: [3]}\nfailure_memory: {enabled: false}\ninputs: {fail_attempts: 1}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    let retrying = wait_for("a retrying run", &daemon, || {
        runs(&daemon, "&job=r&status=retrying").into_iter().next()
    });
    // While it waits for its retry, slots are skipped as overlaps.
    wait_for("an overlap skip during the retry wait", &daemon, || {
        let e = events(&daemon, "&type=scheduler.dispatch_skipped_overlap");
        (!e.is_empty()).then_some(())
    });
    let now_retrying = run_of(&daemon, retrying["id"].as_str().unwrap());
    assert_eq!(
        now_retrying["status"], "retrying",
        "still waiting: {now_retrying:#}"
    );
}

#[test]
fn two_hundred_jobs_under_a_tick_cap_of_eighty_all_run() {
    let d = ConfigDir::new();
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&format!(
            "id: job-{i:03}\ntype: noop\nschedule: {{every: 1s}}\noverlap: allow\n---\n"
        ));
    }
    d.write("jobs.d/many.yaml", &text);
    let daemon = Daemon::start_env(
        d.path(),
        &["--workers", "8"],
        &[("SCHEDULER_MAX_DISPATCH_PER_TICK", "80")],
    );
    wait_for("every job to have run", &daemon, || {
        let (_, jobs) = daemon.get("/api/v1/jobs?limit=1000");
        let items = jobs["items"].as_array()?.clone();
        (items.len() == 200 && items.iter().all(|j| j["last_run"]["status"] == "succeeded"))
            .then_some(())
    });
    let status = daemon.get("/api/v1/status").1;
    assert!(
        status["scheduler"]["skipped"]["tick_limit"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the cap must have deferred and skipped some slots: {status:#}"
    );
}

#[test]
fn pressure_mode_switches_on_and_off_again() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/p.yaml",
        "id: p\ntype: simulation.heavy\noverlap: allow\ninputs: {work_ms: 30}\n",
    );
    let daemon = Daemon::start_env(
        d.path(),
        &["--workers", "1"],
        &[
            ("SCHEDULER_PRESSURE_DEPTH_HIGH", "5"),
            ("SCHEDULER_PRESSURE_DEPTH_LOW", "2"),
        ],
    );
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    // One burst: twelve separate `trigger` calls on a loaded machine came
    // slower than the 30 ms runs finished, and the queue never got deep.
    d.run(&["trigger", "p", "--count", "12"]).assert_code(0);
    wait_for("pressure on then off", &daemon, || {
        let on = events(&daemon, "&type=scheduler.pressure_on");
        let off = events(&daemon, "&type=scheduler.pressure_off");
        (!on.is_empty() && !off.is_empty()).then_some(())
    });
    let status = daemon.wait_until("/api/v1/status", "the queue drained", |v| {
        v["queue_depth"] == 0
    });
    assert_eq!(status["pressure_mode"], false);
}

#[test]
fn kill_9_mid_run_then_restart_retries_the_run_and_keeps_history() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/long.yaml",
        "id: long\ntype: simulation.heavy\nretry_policy: {max_retry: 2, backoff_sec: [0.1]}\ninputs: {work_ms: 1500}\n---\nid: quick\ntype: noop\n",
    );
    let id;
    {
        let daemon = Daemon::start(d.path(), &[]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        let q = trigger(&d, "quick", None);
        wait_run_status(&daemon, &q, "succeeded");
        id = trigger(&d, "long", None);
        wait_run_status(&daemon, &id, "running");
        // Give the group commit a moment to make `running` durable.
        std::thread::sleep(Duration::from_millis(200));
        daemon.signal("KILL");
    }
    let daemon = Daemon::start(d.path(), &[]);
    let run = wait_run_status(&daemon, &id, "succeeded");
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run:#}");
    assert_eq!(attempts[0]["status"], "failed");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("worker lost"),
        "{run:#}"
    );
    // History from before the crash is intact, and nothing stays running.
    assert_eq!(runs(&daemon, "&job=quick&status=succeeded").len(), 1);
    assert!(runs(&daemon, "&status=running").is_empty());
    let status = daemon.get("/api/v1/status").1;
    assert_eq!(status["recovery"]["orphaned"], 1, "{status:#}");
}

/// Counts from the store file itself (the daemon may still be running:
/// WAL readers see every committed write).
fn count_in_store(d: &ConfigDir, sql: &str) -> i64 {
    let db = d.path().join(".multijob/state.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

#[test]
fn a_burst_cut_by_kill_9_resumes_and_runs_each_run_once() {
    const RUNS: i64 = 6000;
    let d = ConfigDir::new();
    d.write(
        "jobs.d/burst.yaml",
        "id: burst\ntype: simulation.heavy\noverlap: allow\nretry_policy: {max_retry: 1, backoff_sec: [0]}\ninputs: {work_ms: 4}\n",
    );
    {
        let daemon = Daemon::start(d.path(), &["--workers", "8", "--keep-runs", "100000"]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        d.run(&["trigger", "burst", "--count", &RUNS.to_string()])
            .assert_code(0);
        daemon.wait_until("/api/v1/status", "a third of the burst done", |v| {
            v["runs_since_start"]["finished"].as_i64() >= Some(RUNS / 3)
        });
        daemon.signal("KILL");
    }
    let before = count_in_store(&d, "SELECT count(*) FROM runs");
    assert!(
        before < RUNS,
        "the burst was not cut: {before} runs recorded"
    );
    let daemon = Daemon::start(d.path(), &["--workers", "8", "--keep-runs", "100000"]);
    wait_for("every run of the burst to succeed", &daemon, || {
        (count_in_store(&d, "SELECT count(*) FROM runs WHERE status = 'succeeded'") == RUNS)
            .then_some(())
    });
    wait_for("the command to be done", &daemon, || {
        (count_in_store(&d, "SELECT count(*) FROM inbox") == 0).then_some(())
    });
    let status = daemon.get("/api/v1/status").1;
    assert_eq!(status["bursts"], serde_json::json!([]), "{status:#}");
    assert_eq!(count_in_store(&d, "SELECT count(*) FROM runs"), RUNS);
    // Queued once and completed once each: nothing finished before the
    // crash was queued or run again after it.
    for (event, sql) in [
        (
            "run.queued",
            "SELECT count(*) FROM events WHERE type = 'run.queued'",
        ),
        (
            "run.completed",
            "SELECT count(*) FROM events WHERE type = 'run.completed'",
        ),
        (
            "run.completed per run",
            "SELECT count(DISTINCT run_id) FROM events WHERE type = 'run.completed'",
        ),
    ] {
        assert_eq!(count_in_store(&d, sql), RUNS, "{event}\n{}", daemon.log());
    }
}

#[test]
fn a_long_burst_does_not_hold_up_other_commands() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/jobs.yaml",
        "id: slow\ntype: simulation.heavy\noverlap: allow\ninputs: {work_ms: 200}\n---\nid: gated\ntype: noop\nrequires_approval: true\n",
    );
    let daemon = Daemon::start(d.path(), &["--workers", "1"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    // Hours of work for one worker: queued as it is worked off.
    d.run(&["trigger", "slow", "--count", "50000"])
        .assert_code(0);
    daemon.wait_until("/api/v1/status", "the burst under way", |v| {
        v["running"] == 1
    });
    let gated = trigger(&d, "gated", None);
    wait_run_status(&daemon, &gated, "awaiting_approval");
    d.run(&["approvals", "approve", &format!("ap-{gated}")])
        .assert_code(0);
    // Decided while the burst goes on: the run waits behind its slices.
    wait_run_status(&daemon, &gated, "queued");
    // At most one slice of the burst (64 runs) waits in the queue; the
    // approved run waits with it.
    let status = daemon.get("/api/v1/status").1;
    let depth = status["queue_depth"].as_u64().unwrap_or(u64::MAX);
    assert!((2..=65).contains(&depth), "{status:#}");
    // The rest of the burst shows as waiting to be admitted.
    let bursts = status["bursts"].as_array().cloned().unwrap_or_default();
    assert_eq!(bursts.len(), 1, "{status:#}");
    assert_eq!(bursts[0]["job_id"], "slow");
    assert_eq!(bursts[0]["total"], 50_000);
    let admitted = bursts[0]["admitted"].as_u64().unwrap_or(0);
    assert!((64..50_000).contains(&admitted), "{status:#}");
}

#[test]
fn approvals_gate_runs_of_jobs_that_require_them() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/gated.yaml",
        "id: gated\ntype: noop\nrequires_approval: true\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let first = trigger(&d, "gated", Some("{\"note\": \"one\"}"));
    wait_run_status(&daemon, &first, "awaiting_approval");
    let list = d.run(&["approvals", "list"]);
    list.assert_code(0)
        .assert_line(&format!("ap-{first}"), "pending");
    d.run(&["approvals", "approve", &format!("ap-{first}")])
        .assert_code(0);
    let run = wait_run_status(&daemon, &first, "succeeded");
    assert_eq!(run["inputs"]["note"], "one");

    let second = trigger(&d, "gated", None);
    wait_run_status(&daemon, &second, "awaiting_approval");
    d.run(&["approvals", "reject", &format!("ap-{second}")])
        .assert_code(0);
    let run = wait_run_status(&daemon, &second, "failed");
    assert!(run["error"].as_str().unwrap().contains("rejected"));
    // Deciding twice is refused.
    d.run(&["approvals", "approve", &format!("ap-{second}")])
        .assert_code(1);
    let (_, approvals) = daemon.get("/api/v1/approvals");
    assert_eq!(approvals["items"].as_array().map(Vec::len), Some(2));
    for t in [
        "approval.requested",
        "approval.approved",
        "approval.rejected",
    ] {
        assert!(
            !events(&daemon, &format!("&type={t}")).is_empty(),
            "missing {t}"
        );
    }
}

/// Defect: `approve` then `reject` within a second both printed success
/// with rc 0; the reject was dropped, seen only as an `approval.failed`
/// event without job or run. The second decision is refused (rc 1), and a
/// decision the daemon cannot apply names the job and the run.
#[test]
fn a_conflicting_second_decision_is_refused() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/gated.yaml",
        "id: gated\ntype: noop\nrequires_approval: true\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = trigger(&d, "gated", None);
    wait_run_status(&daemon, &id, "awaiting_approval");
    let ap = format!("ap-{id}");
    d.run(&["approvals", "approve", &ap]).assert_code(0);
    // At once, before or after the daemon applied the approval.
    let second = d.run(&["approvals", "reject", &ap]);
    second.assert_code(1);
    assert!(
        second.stderr().contains("approved") && second.stderr().contains("not applied"),
        "{}",
        second.explain()
    );
    wait_run_status(&daemon, &id, "succeeded");
    let (_, approvals) = daemon.get("/api/v1/approvals");
    assert_eq!(approvals["items"][0]["status"], "approved", "{approvals:#}");

    // A decision that reaches the daemon anyway (posted straight to the
    // inbox, as a racing CLI would) is refused there, by job and run.
    let state = d.path().join(".multijob/state.db");
    multijob::store::sqlite::post_to_inbox(
        &state,
        &multijob::store::runs::InboxCommand::Decide {
            approval_id: ap.clone(),
            approve: false,
            by: "test".into(),
            note: None,
        },
    )
    .expect("post to the inbox");
    let failed = wait_for("approval.failed", &daemon, || {
        events(&daemon, "&type=approval.failed").into_iter().next()
    });
    assert_eq!(failed["job_id"], "gated", "{failed:#}");
    assert_eq!(failed["run_id"], id.as_str(), "{failed:#}");
    let reason = failed["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("already approved"), "{failed:#}");
    assert_eq!(run_of(&daemon, &id)["status"], "succeeded");
}

#[test]
fn trigger_refuses_unknown_jobs_and_bad_inputs() {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    d.run(&["trigger", "a"]).assert_code(1);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let r = d.run(&["trigger", "nope"]);
    r.assert_code(1);
    assert!(r.stderr().contains("no job `nope`"), "{}", r.explain());
    let r = d.run(&["trigger", "a", "--inputs", "[1]"]);
    r.assert_code(1);
    assert!(r.stderr().contains("JSON object"), "{}", r.explain());
}

#[test]
fn command_jobs_need_allow_command() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/c.yaml",
        "id: c\ntype: command\ninputs: {argv: [/bin/echo, hello]}\n",
    );
    {
        let daemon = Daemon::start(d.path(), &[]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        let id = trigger(&d, "c", None);
        let run = wait_run_status(&daemon, &id, "failed");
        assert!(
            run["error"].as_str().unwrap().contains("--allow-command"),
            "{run:#}"
        );
    }
    let daemon = Daemon::start(d.path(), &["--allow-command"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = trigger(&d, "c", None);
    let run = wait_run_status(&daemon, &id, "succeeded");
    assert_eq!(run["output"]["stdout"], "hello\n");
}

#[test]
fn history_is_bounded_by_keep_runs() {
    let d = ConfigDir::new();
    d.write("jobs.d/n.yaml", "id: n\ntype: noop\n");
    let daemon = Daemon::start(d.path(), &["--keep-runs", "5"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let mut last = String::new();
    for _ in 0..15 {
        last = trigger(&d, "n", None);
    }
    wait_run_status(&daemon, &last, "succeeded");
    std::thread::sleep(Duration::from_millis(300));
    let kept = runs(&daemon, "&job=n");
    assert!(kept.len() <= 6, "kept {} runs", kept.len());
    assert!(
        kept.iter().any(|r| r["id"] == last.as_str()),
        "the newest run is kept"
    );
}

#[test]
fn status_prints_a_table_of_jobs() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "id: alpha\ntype: noop\nschedule: {cron: \"0 7 * * *\"}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let r = common::run(
        &["status".into(), "--server".into(), daemon.url.clone()],
        None,
    );
    r.assert_code(0)
        .assert_line("revision  nogit+", "")
        .assert_line("alpha", "T07:00:00");
    // Columns line up whatever the value's type.
    let row = r
        .stdout()
        .lines()
        .find(|l| l.starts_with("alpha"))
        .unwrap_or_default()
        .to_string();
    let header = r
        .stdout()
        .lines()
        .find(|l| l.starts_with("JOB"))
        .unwrap_or_default()
        .to_string();
    for column in ["NEXT FIRE", "ACTIVE", "FAILURES"] {
        let at = header.find(column).unwrap_or(usize::MAX);
        assert_ne!(
            row.as_bytes().get(at.wrapping_sub(1)),
            None,
            "{header}
{row}"
        );
        assert_eq!(
            row.as_bytes()[at - 1],
            b' ',
            "{header}
{row}"
        );
        assert_ne!(
            row.as_bytes()[at],
            b' ',
            "{column}
{header}
{row}"
        );
    }
    // A rejected revision: the status names the first error in full.
    d.write(
        "jobs.d/b.yaml",
        "id: beta
type: nope
",
    );
    daemon.wait_until("/api/v1/status", "a rejected revision", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    let r = common::run(
        &["status".into(), "--server".into(), daemon.url.clone()],
        None,
    );
    r.assert_line("reconcile rejected", "first: jobs.d/b.yaml:2:7: ");
    let down = common::run(
        &[
            "status".into(),
            "--server".into(),
            "http://127.0.0.1:9".into(),
        ],
        None,
    );
    down.assert_code(1);
}

#[test]
fn sigterm_drains_and_interrupted_runs_run_again_after_restart() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/long.yaml",
        "id: long\ntype: simulation.heavy\ninputs: {work_ms: 3000}\n",
    );
    let id;
    {
        let mut daemon = Daemon::start(d.path(), &["--grace", "0.2"]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        id = trigger(&d, "long", None);
        wait_run_status(&daemon, &id, "running");
        daemon.signal("TERM");
        let start = Instant::now();
        while daemon.is_running() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !daemon.is_running(),
            "daemon did not stop\n{}",
            daemon.log()
        );
        assert!(daemon.log().contains("interrupting"), "{}", daemon.log());
    }
    let daemon = Daemon::start(d.path(), &[]);
    let run = wait_run_status(&daemon, &id, "succeeded");
    // The interrupted attempt is recorded but not counted against retries.
    assert_eq!(run["attempt"], 1, "{run:#}");
    assert_eq!(run["attempts"][0]["status"], "cancelled");
}

#[test]
fn backup_export_writes_specs_and_history_and_rotates() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/b.yaml",
        "id: backup\ntype: backup.export\ninputs: {keep: 2}\n---\nid: work\ntype: noop\n---\nkind: Flow\nid: lane\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let w = trigger(&d, "work", None);
    wait_run_status(&daemon, &w, "succeeded");
    let mut outputs = Vec::new();
    for _ in 0..3 {
        let id = trigger(&d, "backup", None);
        let run = wait_run_status(&daemon, &id, "succeeded");
        outputs.push(run["output"].clone());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let last = outputs.last().unwrap();
    let path = d
        .path()
        .join(".multijob/data")
        .join(last["path"].as_str().unwrap());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["format"], "multijob-backup/1");
    let kinds: Vec<&str> = doc["snapshot"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"Job") && kinds.contains(&"Flow"),
        "{kinds:?}"
    );
    let run_ids: Vec<&str> = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(
        run_ids.contains(&w.as_str()),
        "the history holds the earlier run"
    );
    assert_eq!(last["runs"].as_u64(), Some(run_ids.len() as u64));
    // keep: 2 — the oldest of three backups was rotated out.
    let dir = d.path().join(".multijob/data/backups/backup");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        2,
        "{:?}",
        std::fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn a_disabled_job_gets_no_new_runs_from_trigger_or_a_follow_up() {
    // SPEC section 4: deleted or disabled jobs get no new runs.
    let d = ConfigDir::new();
    d.write("jobs.d/off.yaml", "id: off\ntype: noop\nenabled: false\n");
    d.write(
        "jobs.d/chain.yaml",
        "id: chain\ntype: agent.workflow\nsteps:\n  - id: later\n    schedule_job: {job: off, delay_sec: 0}\n",
    );
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let off = d.run(&["trigger", "off"]);
    off.assert_code(1);
    assert!(
        off.stderr().contains("job `off` is disabled"),
        "{}",
        off.stderr()
    );
    d.run(&["trigger", "chain", "--count", "0"]).assert_code(1);
    let run = daemon.run_ended(&d.trigger("chain", &[]));
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{run:#}"
    );
    let (_, runs) = daemon.get("/api/v1/runs?job=off");
    assert_eq!(runs["items"], serde_json::json!([]), "{runs:#}");
}

#[test]
fn a_retry_runs_on_the_spec_its_run_started_with() {
    // SPEC section 4: a running run finishes on the spec it started with.
    // The spec changes while attempt 1 waits out its backoff; attempt 2
    // would time out under the new one (timeout 50 ms, work 400 ms).
    let d = ConfigDir::new();
    let spec = |timeout: u32| {
        format!(
            "id: r\ntype: simulation.heavy\ntimeout_ms: {timeout}\nretry_policy: {{max_retry: 1, backoff_sec: [2]}}\nfailure_memory: {{enabled: false}}\ninputs: {{fail_attempts: 1, work_ms: 400}}\n"
        )
    };
    d.write("jobs.d/r.yaml", &spec(10_000));
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let id = trigger(&d, "r", None);
    let waiting = wait_run_status(&daemon, &id, "retrying");
    let (_, before) = daemon.get("/api/v1/status");
    d.write("jobs.d/r.yaml", &spec(50));
    daemon.wait_until("/api/v1/status", "the new revision", |v| {
        v["revision"] != before["revision"]
    });
    let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the retry", |v| {
        v["status"] == "succeeded" || v["status"] == "failed" || v["status"] == "timed_out"
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["attempt"], 2, "{run:#}");
    assert_eq!(run["spec_hash"], waiting["spec_hash"], "{run:#}");
}
