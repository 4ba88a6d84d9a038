//! `plan` and `run` with the real binary on temp dirs: the GitOps loop.

mod common;

use std::path::Path;

use common::{ConfigDir, Daemon};
use serde_json::Value;

const HEARTBEAT: &str = "id: heartbeat\ntype: noop\nschedule:\n  interval_sec: 30\n";
const LANE: &str = "kind: Flow\nid: lane\nmax_active_runs: 2\n";

fn revision_of(d: &Daemon) -> String {
    d.get("/api/v1/status").1["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn job_field(d: &Daemon, id: &str, pointer: &str) -> Value {
    d.get(&format!("/api/v1/jobs/{id}"))
        .1
        .pointer(pointer)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn plan_then_run_then_edit_then_delete() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    d.write("jobs.d/lane.yaml", LANE);

    // Fresh: everything is a create.
    let fresh = d.run(&["plan", "--detailed-exitcode"]);
    fresh
        .assert_code(2)
        .assert_line("2 to create, 0 to update, 0 to delete, 0 unchanged", "")
        .assert_line("+ Job heartbeat (jobs.d/heartbeat.yaml:1)", "")
        .assert_line("+ Flow lane (jobs.d/lane.yaml:1)", "")
        .assert_line("    next: ", "Z");

    // The daemon applies it; the same plan is then empty. Watching is off
    // so each edit waits for SIGHUP and `plan` sees it pending.
    let daemon = Daemon::start(d.path(), &["--no-watch"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon.wait_until("/api/v1/jobs", "the job", |v| {
        v["items"].as_array().is_some_and(|a| a.len() == 1)
    });
    d.run(&["plan", "--detailed-exitcode"])
        .assert_code(0)
        .assert_line("0 to create, 0 to update, 0 to delete, 2 unchanged", "")
        .assert_line("No changes.", "");

    // An edit: one update with the field path and old/new values, also
    // through --server.
    d.write(
        "jobs.d/heartbeat.yaml",
        "id: heartbeat\ntype: noop\nschedule:\n  interval_sec: 60\n",
    );
    for args in [
        vec!["plan", "--detailed-exitcode"],
        vec![
            "plan",
            "--detailed-exitcode",
            "--server",
            daemon.url.as_str(),
        ],
    ] {
        d.run(&args)
            .assert_code(2)
            .assert_line("0 to create, 1 to update, 0 to delete, 1 unchanged", "")
            .assert_line("~ Job heartbeat (jobs.d/heartbeat.yaml:1)", "")
            .assert_line("    schedule.interval_sec: 30 → 60", "");
    }
    daemon.signal("HUP");
    daemon.wait_until("/api/v1/jobs/heartbeat", "the edit applied", |v| {
        v["spec"]["schedule"]["interval_sec"] == 60
    });

    // A deleted file shows a delete, then is applied.
    d.remove("jobs.d/lane.yaml");
    d.run(&["plan", "--detailed-exitcode"])
        .assert_code(2)
        .assert_line("0 to create, 0 to update, 1 to delete, 1 unchanged", "")
        .assert_line("- Flow lane (jobs.d/lane.yaml:1)", "");
    daemon.signal("HUP");
    daemon.wait_until("/api/v1/status", "the delete applied", |v| {
        v["counts"]["flows"] == 0
    });

    // History: three applied revisions, newest first, with summaries.
    let (_, revs) = daemon.get("/api/v1/revisions");
    let items = revs["items"].as_array().cloned().unwrap_or_default();
    assert!(items.len() >= 3, "{revs:#}");
    assert_eq!(items[0]["status"], "applied");
    assert_eq!(items[0]["summary"]["delete"], 1, "{revs:#}");

    // Events tell the same story.
    let (_, events) = daemon.get("/api/v1/events?limit=100");
    let types: Vec<&str> = events["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    for t in ["reconcile.applied", "job.created", "job.updated"] {
        assert!(types.contains(&t), "missing {t} in {types:?}");
    }
}

#[test]
fn plan_json_matches_the_spec() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule: {cron: \"0 7 * * *\", timezone: Asia/Jakarta}\n",
    );
    let run = d.run(&["plan", "--output", "json"]);
    run.assert_code(0);
    let v = run.json();
    assert!(
        v["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with("nogit+")),
        "{v:#}"
    );
    assert_eq!(
        v["summary"],
        serde_json::json!({"create": 1, "update": 0, "delete": 0, "unchanged": 0})
    );
    let change = &v["changes"][0];
    assert_eq!(change["action"], "create");
    assert_eq!(change["kind"], "Job");
    assert_eq!(change["id"], "a");
    assert_eq!(change["file"], "jobs.d/a.yaml");
    assert!(change["fields"].as_array().is_some_and(|f| f.is_empty()));
    let fires: Vec<&str> = change["next_fires"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(fires.len(), 3, "{v:#}");
    // 07:00 in Jakarta is 00:00 UTC.
    assert!(fires.iter().all(|f| f.ends_with("T00:00:00Z")), "{fires:?}");
}

#[test]
fn a_broken_edit_is_rejected_and_the_last_good_revision_keeps_running() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let good = revision_of(&daemon);

    d.write(
        "jobs.d/heartbeat.yaml",
        "id: heartbeat\ntype: noop\nschedule:\n  cron: \"0 9 * * 11-24\"\n",
    );
    let status = daemon.wait_until("/api/v1/status", "the rejection", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    let error = &status["last_reconcile"]["errors"][0];
    assert_eq!(error["file"], "jobs.d/heartbeat.yaml", "{status:#}");
    assert_eq!(error["line"], 4, "{status:#}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("day-of-week")
    );
    // Still running the last good revision.
    assert_eq!(status["revision"], good.as_str());
    assert_eq!(
        job_field(&daemon, "heartbeat", "/spec/schedule/interval_sec"),
        30
    );
    let (code, _) = daemon.get("/readyz");
    assert_eq!(code, 200);
    let (_, revs) = daemon.get("/api/v1/revisions");
    assert_eq!(revs["items"][0]["status"], "rejected", "{revs:#}");
    assert_eq!(revs["items"][0]["errors"][0]["line"], 4);
    let (_, events) = daemon.get("/api/v1/events?type=reconcile.rejected");
    assert_eq!(
        events["items"].as_array().map(Vec::len),
        Some(1),
        "{events:#}"
    );

    // Fixing it applies again.
    d.write(
        "jobs.d/heartbeat.yaml",
        "id: heartbeat\ntype: noop\nschedule: {interval_sec: 45}\n",
    );
    daemon.wait_until("/api/v1/jobs/heartbeat", "the fix", |v| {
        v["spec"]["schedule"]["interval_sec"] == 45
    });
}

#[test]
fn git_checkout_of_another_commit_is_applied_with_its_sha() {
    let d = ConfigDir::new();
    let dir = d.path();
    common::git(dir, &["init", "-q", "-b", "main"]);
    d.write(".gitignore", ".multijob/\n");
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    common::git(dir, &["add", "-A"]);
    common::git(dir, &["commit", "-qm", "one"]);
    let first = common::git(dir, &["rev-parse", "HEAD"]);
    d.write(
        "jobs.d/heartbeat.yaml",
        "id: heartbeat\ntype: noop\nschedule: {interval_sec: 90}\n",
    );
    d.write("jobs.d/report.yaml", "id: report\ntype: noop\n");
    common::git(dir, &["add", "-A"]);
    common::git(dir, &["commit", "-qm", "two"]);
    let second = common::git(dir, &["rev-parse", "HEAD"]);

    let daemon = Daemon::start(dir, &[]);
    let status = daemon.wait_until("/api/v1/status", "second commit", |v| {
        v["git"]["commit"] == second.as_str()
    });
    assert_eq!(
        status["git"]["dirty"], false,
        "the store inside .multijob must not dirty the checkout"
    );
    assert!(
        status["revision"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{second}+"))
    );

    common::git(dir, &["checkout", "-q", &first]);
    let status = daemon.wait_until("/api/v1/status", "first commit", |v| {
        v["git"]["commit"] == first.as_str() && v["counts"]["jobs"] == 1
    });
    assert!(
        status["revision"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{first}+"))
    );
    assert_eq!(
        job_field(&daemon, "heartbeat", "/spec/schedule/interval_sec"),
        30
    );

    // A local edit makes it dirty.
    d.write("jobs.d/extra.yaml", "id: extra\ntype: noop\n");
    daemon.wait_until("/api/v1/status", "dirty revision", |v| {
        v["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with(&format!("{first}-dirty+")))
    });
}

fn rename_over(dir: &Path, relative: &str, text: &str) {
    let tmp = dir.join(format!("{relative}.tmp~"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(relative)).unwrap();
}

#[test]
fn rename_on_save_is_picked_up() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    rename_over(
        d.path(),
        "jobs.d/heartbeat.yaml",
        "id: heartbeat\ntype: noop\nschedule: {interval_sec: 77}\n",
    );
    daemon.wait_until("/api/v1/jobs/heartbeat", "the renamed save", |v| {
        v["spec"]["schedule"]["interval_sec"] == 77
    });
}

#[test]
fn a_symlink_swap_is_picked_up() {
    // The git-sync / ConfigMap layout: DIR/jobs.d -> revN/jobs.d, swapped
    // atomically by renaming a new symlink over the old one.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for (rev, secs) in [("rev1", 30), ("rev2", 31)] {
        std::fs::create_dir_all(r.join(rev).join("jobs.d")).unwrap();
        std::fs::write(
            r.join(rev).join("jobs.d/heartbeat.yaml"),
            format!("id: heartbeat\ntype: noop\nschedule: {{interval_sec: {secs}}}\n"),
        )
        .unwrap();
    }
    let conf = r.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::os::unix::fs::symlink(r.join("rev1/jobs.d"), conf.join("jobs.d")).unwrap();
    let daemon = Daemon::start(&conf, &[]);
    daemon.wait_until("/api/v1/jobs/heartbeat", "rev1", |v| {
        v["spec"]["schedule"]["interval_sec"] == 30
    });
    std::os::unix::fs::symlink(r.join("rev2/jobs.d"), conf.join("jobs.d.new")).unwrap();
    std::fs::rename(conf.join("jobs.d.new"), conf.join("jobs.d")).unwrap();
    daemon.wait_until("/api/v1/jobs/heartbeat", "rev2 after the swap", |v| {
        v["spec"]["schedule"]["interval_sec"] == 31
    });
}

#[test]
fn sighup_reloads_when_watching_is_off() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    let daemon = Daemon::start(d.path(), &["--no-watch"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    d.write("jobs.d/b.yaml", "id: b\ntype: noop\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(daemon.get("/api/v1/status").1["counts"]["jobs"], 1);
    daemon.signal("HUP");
    daemon.wait_until("/api/v1/status", "the SIGHUP reload", |v| {
        v["counts"]["jobs"] == 2
    });
}

#[test]
fn poll_mode_sees_changes() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    let daemon = Daemon::start(d.path(), &["--watch-poll", "0.2"]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    d.write("jobs.d/b.yaml", "id: b\ntype: noop\n");
    daemon.wait_until("/api/v1/status", "the polled change", |v| {
        v["counts"]["jobs"] == 2
    });
}

#[test]
fn bad_input_never_crashes_the_daemon() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    let mut daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let good = revision_of(&daemon);

    // Malformed YAML.
    d.write("jobs.d/broken.yaml", "id: [unclosed\n");
    daemon.wait_until("/api/v1/status", "syntax rejection", |v| {
        v["last_reconcile"]["errors"][0]["code"] == "syntax"
    });
    // Not UTF-8 (an unreadable file).
    d.write("jobs.d/broken.yaml", "id: x\n");
    std::fs::write(
        d.path().join("jobs.d/binary.yaml"),
        [0xff, 0xfe, 0x00, 0x80],
    )
    .unwrap();
    daemon.wait_until("/api/v1/status", "io rejection", |v| {
        v["last_reconcile"]["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["code"] == "io"))
    });
    std::fs::remove_file(d.path().join("jobs.d/binary.yaml")).unwrap();
    std::fs::remove_file(d.path().join("jobs.d/broken.yaml")).unwrap();
    // Files deleted and written in quick succession (deleted mid-read).
    for i in 0..50 {
        let p = format!("jobs.d/churn{}.yaml", i % 3);
        d.write(&p, &format!("id: churn{}\ntype: noop\n", i % 3));
        let _ = std::fs::remove_file(d.path().join(&p));
    }
    // The whole directory disappears, then comes back.
    let jobs = d.path().join("jobs.d");
    let aside = d.path().join("jobs.d.aside");
    std::fs::rename(&jobs, &aside).unwrap();
    daemon.wait_until("/api/v1/status", "missing-dir rejection", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    assert_eq!(
        revision_of(&daemon),
        good,
        "the last good revision keeps running"
    );
    std::fs::rename(&aside, &jobs).unwrap();
    d.write("jobs.d/back.yaml", "id: back\ntype: noop\n");
    daemon.wait_until("/api/v1/jobs/back", "the directory back", |v| {
        v["id"] == "back"
    });
    assert!(daemon.is_running(), "daemon died\n{}", daemon.log());
    let (code, _) = daemon.get("/healthz");
    assert_eq!(code, 200);
}

#[test]
fn restart_resumes_the_applied_revision_from_the_store() {
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    let first = {
        let daemon = Daemon::start(d.path(), &[]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        revision_of(&daemon)
    };
    // Break the config while it is down: the restart keeps the stored revision.
    d.write("jobs.d/heartbeat.yaml", "id: heartbeat\ntype: nope\n");
    let daemon = Daemon::start(d.path(), &[]);
    let status = daemon.wait_until("/api/v1/status", "rejection on start", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    assert_eq!(status["revision"], first.as_str());
    let (code, _) = daemon.get("/readyz");
    assert_eq!(code, 200, "a stored revision counts as applied");
    assert_eq!(job_field(&daemon, "heartbeat", "/type"), "noop");
}

#[test]
fn plan_reports_runs_in_flight_and_slots_to_catch_up() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/slow.yaml",
        "id: slow\ntype: simulation.heavy\ninputs: {work_ms: 20000}\n",
    );
    d.write(
        "jobs.d/tick.yaml",
        "id: tick\ntype: noop\nschedule: {every: 1s}\n",
    );
    {
        let daemon = Daemon::start(d.path(), &["--no-watch"]);
        daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
        let run = d.run(&["trigger", "slow"]);
        run.assert_code(0);
        daemon.wait_until("/api/v1/runs?status=running", "slow running", |v| {
            v["items"].as_array().is_some_and(|a| !a.is_empty())
        });
        daemon.wait_until("/api/v1/jobs/tick", "tick ran", |v| {
            v["last_run"]["status"] == "succeeded"
        });
        // Deleting a job with a run in flight: plan says so (also --server).
        d.remove("jobs.d/slow.yaml");
        for args in [vec!["plan"], vec!["plan", "--server", daemon.url.as_str()]] {
            d.run(&args)
                .assert_code(0)
                .assert_line("Runs in flight of jobs being deleted or disabled:", "")
                .assert_line("    slow: 1 active run (delete)", "");
        }
        daemon.signal("KILL");
    }
    // Down for a while, then a rescheduled job with misfire run_all shows
    // the slots it would catch up.
    std::thread::sleep(std::time::Duration::from_millis(3_200));
    d.write(
        "jobs.d/tick.yaml",
        "id: tick\ntype: noop\nschedule: {every: 1s, misfire: run_all, max_catchup_runs: 2}\n",
    );
    d.run(&["plan"])
        .assert_code(0)
        .assert_line("Missed slots that would be caught up:", "")
        .assert_line("    tick: 2 to run", "misfire run_all");
}

/// `n` skills in one file; `uses(i)` names the skill step `i` uses.
fn skills_text(n: usize, uses: impl Fn(usize) -> Option<usize>) -> String {
    (0..n)
        .map(|i| match uses(i) {
            Some(t) => format!("---\nid: s{i:04}\nsteps:\n  - id: a\n    uses: s{t:04}\n"),
            None => format!("---\nid: s{i:04}\nsteps:\n  - id: a\n    set: {{x: 1}}\n"),
        })
        .collect()
}

#[test]
fn a_reload_of_thousands_of_skills_is_quick_and_a_loop_among_them_is_one_error() {
    // A 2,000-skill `uses` loop took minutes to reject, one reload at a
    // time, while no other change could be applied.
    let d = ConfigDir::new();
    d.write("jobs.d/heartbeat.yaml", HEARTBEAT);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    let good = revision_of(&daemon);

    d.write(
        "skills.d/all.yaml",
        &skills_text(2000, |i| Some((i + 1) % 2000)),
    );
    let status = daemon.wait_until("/api/v1/status", "the rejection", |v| {
        v["last_reconcile"]["result"] == "rejected"
    });
    let errors = status["last_reconcile"]["errors"].as_array().cloned();
    let errors = errors.unwrap_or_default();
    assert_eq!(errors.len(), 1, "{status:#}");
    assert_eq!(errors[0]["code"], "uses-cycle", "{status:#}");
    assert_eq!(errors[0]["line"], 5, "{status:#}");
    assert_eq!(revision_of(&daemon), good);

    // 2,000 skills in chains of 10 (as deep as a run may nest) apply.
    d.write(
        "skills.d/all.yaml",
        &skills_text(2000, |i| (i % 10 != 9).then_some(i + 1)),
    );
    let status = daemon.wait_until("/api/v1/status", "the skills applied", |v| {
        v["counts"]["skills"] == 2000 && v["last_reconcile"]["result"] == "applied"
    });
    let ms = status["last_reconcile"]["duration_ms"]
        .as_u64()
        .unwrap_or(0);
    eprintln!("reload of 2,000 skills: {ms} ms");
    assert!(daemon.get("/healthz").0 == 200);
}
