//! `multijob why` with the real binary beside a real daemon, on the
//! embedded store and on Redis: a lane of one shared by two jobs of 3 s
//! work every 2 s, so one job's slots are skipped while the other's run
//! holds the lane, and `why` names that run.

mod common;

use serde_json::Value;

use common::deployment::{Deployment, events, runs, wait_for};

const JOBS: &str = "kind: Flow\nid: pricing_team\nmax_active_runs: 1\n---\n\
id: alpha\ntype: simulation.heavy\nflow: pricing_team\nschedule: {every: 2s}\ninputs: {work_ms: 3000}\n---\n\
id: beta\ntype: simulation.heavy\nflow: pricing_team\nschedule: {every: 2s}\ninputs: {work_ms: 3000}\n---\n\
id: by_hand\ntype: noop\n";

fn why_explains_past_slots(redis: bool) {
    let dep = Deployment::new(redis, &[("lane.yaml", JOBS)]);
    let daemon = dep.daemon();
    // A slot of one job skipped for the lane, held by the other's run.
    let (skipped, holder, other) = wait_for("a flow_limit skip naming a run", &daemon, || {
        ["alpha", "beta"].into_iter().find_map(|job| {
            let e = events(&daemon, "scheduler.dispatch_skipped_flow_limit", job);
            let first = e.first()?.clone();
            let other = if job == "alpha" { "beta" } else { "alpha" };
            Some((first, job, other))
        })
    });
    let slot = skipped["data"]["slot"].as_str().expect("slot").to_string();
    let detail = &skipped["data"]["detail"];
    assert_eq!(detail["lane"], "pricing_team", "{skipped:#}");
    assert_eq!(
        (detail["active"].as_u64(), detail["max"].as_u64()),
        (Some(1), Some(1))
    );
    let run_id = detail["runs"]["ids"][0]
        .as_str()
        .expect("a run id")
        .to_string();
    let other_runs = runs(&daemon, other);
    assert!(
        other_runs.iter().any(|r| r["id"] == run_id.as_str()),
        "{run_id} is not a run of {other}: {other_runs:#?}"
    );

    let out = dep.cli(&["why", holder, "--at", &slot]);
    out.assert_code(0);
    let want = format!("skipped: lane pricing_team was full (1/1: run {run_id})");
    let line = out
        .stdout()
        .lines()
        .find(|l| l.starts_with('→'))
        .map(str::to_string);
    assert!(
        line.as_deref().is_some_and(|l| l.ends_with(&want)),
        "nearest line {line:?}, wanted …{want}\n{}",
        out.explain()
    );

    let json = dep.cli(&["why", holder, "--at", &slot, "-o", "json"]);
    let json = json.assert_code(0).json();
    let slot_json = nearest(&json);
    assert_eq!(slot_json["slot"], slot.as_str(), "{json:#}");
    assert_eq!(slot_json["outcome"], "skipped");
    assert_eq!(slot_json["reason"], "flow_limit");
    assert_eq!(slot_json["detail"]["runs"]["ids"][0], run_id.as_str());

    // The slot the holder's run came from: dispatched, and how it ended.
    let ended = wait_for("the holding run to end", &daemon, || {
        runs(&daemon, other)
            .into_iter()
            .find(|r| r["id"] == run_id.as_str() && r["status"] == "succeeded")
    });
    let ran_slot = ended["scheduled_at"].as_str().expect("scheduled_at");
    let out = dep.cli(&["why", other, "--at", ran_slot]);
    let want = format!("ran: run {run_id} succeeded in ");
    assert!(
        out.assert_code(0)
            .stdout()
            .lines()
            .any(|l| l.starts_with('→') && l.contains(&want) && l.ends_with(" s")),
        "wanted …{want}\n{}",
        out.explain()
    );
    let json = dep
        .cli(&["why", other, "--at", ran_slot, "-o", "json"])
        .json();
    let slot_json = nearest(&json);
    assert_eq!(slot_json["outcome"], "ran", "{json:#}");
    assert_eq!(slot_json["run"]["id"], run_id.as_str());
    assert_eq!(slot_json["run"]["status"], "succeeded");
    assert!(
        slot_json["run"]["duration_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= 3000)
    );

    hostile(&dep);
    let (code, _) = daemon.get("/api/v1/jobs/alpha");
    assert_eq!(code, 200, "the daemon stopped serving");
}

/// Bad input fails with a clear error and exit 1.
fn hostile(dep: &Deployment) {
    dep.cli(&["why", "betta"])
        .assert_code(1)
        .assert_stderr_has("no job `betta`")
        .assert_stderr_has("did you mean `beta`?");
    for bad in ["yesterday", "25:61", "-5parsecs", "2026-02-30T00:00:00Z"] {
        dep.cli(&["why", "beta", "--at", bad])
            .assert_code(1)
            .assert_stderr_has(&format!("--at \"{bad}\""))
            .assert_stderr_has("RFC 3339");
    }
    let long = "9".repeat(100_000);
    dep.cli(&["why", "beta", "--at", &long])
        .assert_code(1)
        .assert_stderr_has("RFC 3339");
    // The future: predicted by the simulation from the daemon's active
    // runs; the lane of one keeps skipping one job's slots.
    let out = dep.cli(&["why", "beta", "--at", "+10s"]);
    let text = out.assert_code(0).stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{}", out.explain());
    assert_eq!(lines.iter().filter(|l| l.starts_with('→')).count(), 1);
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" will run") || l.contains(" will be skipped: ")),
        "{}",
        out.explain()
    );
    assert!(
        text.contains("will be skipped: lane pricing_team will be full (1/1: runs of alpha)"),
        "{}",
        out.explain()
    );
    let json = dep
        .cli(&["why", "beta", "--at", "+10s", "-o", "json"])
        .json();
    assert_eq!(nearest(&json)["outcome"], "predicted", "{json:#}");
    dep.cli(&["why", "by_hand"])
        .assert_code(1)
        .assert_stderr_has("job by_hand has no schedule");
    // Now (the default): the latest slot, marked.
    let out = dep.cli(&["why", "beta"]);
    assert!(
        out.assert_code(0)
            .stdout()
            .lines()
            .filter(|l| l.starts_with('→'))
            .count()
            == 1,
        "{}",
        out.explain()
    );
    // Before the job's first slot was ever recorded: the slot math still
    // finds slots; nothing is on record for them.
    let out = dep.cli(&["why", "beta", "--at", "2020-01-01T00:00:00Z"]);
    out.assert_code(0);
    assert!(
        out.stdout()
            .contains("no record (the daemon was not running"),
        "{}",
        out.explain()
    );
}

/// Fails every attempt; cools down after two failures in a row.
const FLAKY: &str = "id: flaky\ntype: simulation.heavy\nschedule: {every: 1s}\n\
failure_memory: {threshold: 2, cooldown_sec: 600, cooldown_max_sec: 600}\ninputs: {fail_attempts: 1000}\n";

/// A cooldown's and a pause's skips, said with what the guard saw.
fn why_says_cooldown_and_pause(redis: bool) {
    let dep = Deployment::new(redis, &[("flaky.yaml", FLAKY)]);
    let daemon = dep.daemon();
    let skip = wait_for("a cooldown skip", &daemon, || {
        events(&daemon, "scheduler.dispatch_skipped_cooldown", "flaky")
            .first()
            .cloned()
    });
    let detail = &skip["data"]["detail"];
    let until: jiff::Timestamp = detail["until"]
        .as_str()
        .expect("until")
        .parse()
        .expect("a time");
    let failures = detail["failures"].as_u64().expect("failures");
    assert!(failures >= 2, "{skip:#}");
    let slot = skip["data"]["slot"].as_str().expect("slot");
    // The slot itself, then the next ones predicted: still cooling down,
    // from the store's failure memory.
    let until = until.strftime("%H:%M");
    for (at, said) in [(slot, "skipped"), ("+5s", "will be skipped")] {
        let out = dep.cli(&["why", "flaky", "--at", at]);
        let want = format!("{said}: cooldown until {until} after {failures} failures");
        assert!(
            out.assert_code(0)
                .stdout()
                .lines()
                .any(|l| l.starts_with('→') && l.ends_with(&want)),
            "wanted …{want}\n{}",
            out.explain()
        );
    }
    dep.cli(&["pause", "flaky", "--by", "ann", "--note", "vendor down"])
        .assert_code(0);
    let skip = wait_for("a paused skip", &daemon, || {
        events(&daemon, "scheduler.dispatch_skipped_paused", "flaky")
            .first()
            .cloned()
    });
    let slot = skip["data"]["slot"].as_str().expect("slot");
    let out = dep.cli(&["why", "flaky", "--at", slot]);
    assert!(
        out.assert_code(0)
            .stdout()
            .lines()
            .any(|l| l.starts_with('→')
                && l.contains("skipped: paused by ann since ")
                && l.ends_with("(vendor down)")),
        "{}",
        out.explain()
    );
}

fn nearest(json: &Value) -> Value {
    json["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["nearest"] == true).cloned())
        .unwrap_or_else(|| panic!("no nearest slot in {json:#}"))
}

#[test]
fn why_explains_past_slots_on_the_embedded_store() {
    why_explains_past_slots(false);
}

#[test]
fn why_explains_past_slots_on_redis() {
    why_explains_past_slots(true);
}

#[test]
fn why_says_cooldown_and_pause_on_the_embedded_store() {
    why_says_cooldown_and_pause(false);
}

#[test]
fn why_says_cooldown_and_pause_on_redis() {
    why_says_cooldown_and_pause(true);
}
