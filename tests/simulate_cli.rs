//! `multijob simulate` against what a real daemon does with the same jobs,
//! its worker recommendation applied to a real daemon, and its CLI's
//! hostile input.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ConfigDir, Daemon};
use jiff::Timestamp;
use serde_json::Value;

/// Skip reasons the daemon recorded and runs it dispatched, by slot
/// (nominal time).
#[derive(Debug, Default)]
struct Outcomes {
    dispatched: Vec<Timestamp>,
    skipped: Vec<(String, Timestamp)>,
}

impl Outcomes {
    fn read(daemon: &Daemon) -> Outcomes {
        let mut out = Outcomes::default();
        let (_, runs) = daemon.get("/api/v1/runs?limit=1000");
        for run in runs["items"].as_array().into_iter().flatten() {
            if let Some(slot) = run["scheduled_at"].as_str() {
                out.dispatched.push(slot.parse().unwrap());
            }
        }
        for reason in ["overlap", "flow_limit", "pressure", "missed", "cooldown"] {
            let path =
                format!("/api/v1/events?limit=1000&type=scheduler.dispatch_skipped_{reason}");
            let (_, events) = daemon.get(&path);
            let items = events["items"].as_array().cloned().unwrap_or_default();
            assert!(items.len() < 1000, "more skips than one page");
            for e in items {
                if let Some(slot) = e["data"]["slot"].as_str() {
                    out.skipped
                        .push((reason.to_string(), slot.parse().unwrap()));
                }
            }
        }
        out
    }

    fn first_slot(&self) -> Timestamp {
        let skipped = self.skipped.iter().map(|(_, t)| *t);
        self.dispatched
            .iter()
            .copied()
            .chain(skipped)
            .min()
            .expect("no slot decided")
    }

    /// Counts for slots in `[from, from + secs)`: `dispatched` and each reason.
    fn counts(&self, from: Timestamp, secs: i64) -> BTreeMap<String, u64> {
        let to = from + jiff::SignedDuration::from_secs(secs);
        let inside = |t: &Timestamp| *t >= from && *t < to;
        let mut counts = BTreeMap::new();
        *counts.entry("dispatched".to_string()).or_default() +=
            self.dispatched.iter().filter(|t| inside(t)).count() as u64;
        for (reason, t) in &self.skipped {
            if inside(t) {
                *counts.entry(reason.clone()).or_default() += 1;
            }
        }
        counts
    }
}

/// `simulate -o json` over `dir` from `from` for `secs`.
fn simulate(dir: &ConfigDir, from: Timestamp, secs: i64, extra: &[&str]) -> Value {
    // Slots strictly after `from` are simulated: start just before the first.
    let from = (from - jiff::SignedDuration::from_millis(1)).to_string();
    let period = format!("{secs}s");
    let mut args = vec!["simulate", "--from", &from, "--for", &period, "-o", "json"];
    args.extend_from_slice(extra);
    let run = dir.run(&args);
    run.assert_code(0);
    run.json()
}

fn simulated_counts(sim: &Value) -> BTreeMap<String, u64> {
    let report = &sim["report"];
    let mut counts = BTreeMap::new();
    counts.insert(
        "dispatched".to_string(),
        report["dispatched"].as_u64().unwrap(),
    );
    for (reason, n) in report["skipped"].as_object().unwrap() {
        counts.insert(reason.clone(), n.as_u64().unwrap());
    }
    counts
}

fn heavy(id: &str, every: &str, work_ms: u64, flow: Option<&str>) -> String {
    let flow = flow.map_or(String::new(), |f| format!("flow: {f}\n"));
    format!(
        "id: {id}\ntype: simulation.heavy\nschedule: {{every: {every}}}\n{flow}\
         inputs: {{work_ms: {work_ms}}}\n---\n"
    )
}

/// Let the daemon decide `secs` of slots after its first, then stop it.
fn run_for(dir: &ConfigDir, secs: u64, extra: &[&str]) -> Outcomes {
    let daemon = Daemon::start(dir.path(), extra);
    daemon.wait_until("/api/v1/jobs", "jobs applied", |v| {
        v["items"].as_array().is_some_and(|a| !a.is_empty())
    });
    // The first slot comes within one interval; then `secs` of slots, and
    // a little more for the last skip events to be written.
    std::thread::sleep(Duration::from_secs(secs + 12));
    Outcomes::read(&daemon)
}

/// 20 jobs every 10 s of 4 s work in a lane of 3, and 4 jobs every 5 s of
/// 7 s work (overlap forbid): for 60 s the real daemon and the
/// simulation give the same counts per reason, within 5%.
#[test]
fn simulation_matches_a_real_daemon_whose_lane_saturates() {
    let dir = ConfigDir::new();
    let mut text = "kind: Flow\nid: pricing\nmax_active_runs: 3\n---\n".to_string();
    for i in 0..20 {
        text.push_str(&heavy(
            &format!("price-{i:02}"),
            "10s",
            4000,
            Some("pricing"),
        ));
    }
    for i in 0..4 {
        text.push_str(&heavy(&format!("crisis-{i}"), "5s", 7000, None));
    }
    dir.write("jobs.d/load.yaml", &text);
    let real = run_for(&dir, 60, &["--workers", "10"]);
    let first = real.first_slot();
    let real_counts = real.counts(first, 60);
    // Durations now come from the runs the daemon just recorded (p95).
    let sim = simulate(&dir, first, 60, &["--workers", "10", "--assume-ms", "4000"]);
    let sim_counts = simulated_counts(&sim);
    assert!(real_counts["flow_limit"] >= 90, "{real_counts:?}");
    assert!(real_counts["overlap"] >= 20, "{real_counts:?}");
    for key in ["dispatched", "flow_limit", "overlap"] {
        let (r, s) = (
            real_counts[key] as f64,
            sim_counts.get(key).copied().unwrap_or(0) as f64,
        );
        assert!(
            (r - s).abs() <= 0.05 * r,
            "{key}: real {r} vs simulated {s}\nreal {real_counts:?}\nsimulated {sim_counts:?}"
        );
    }
    // 6 slots of a lane of 3 run 18 of its 20 jobs: the others have no
    // recorded run yet and take --assume-ms (their work, 4 s).
    let from_store = sim["durations"]["from_store_p95"].as_u64().unwrap_or(0);
    assert!(from_store >= 18, "{:#}", sim["durations"]);
    let lane = &sim["report"]["lanes"][0];
    assert_eq!(lane["id"], "pricing");
    assert!(lane["full_seconds"].as_f64().unwrap() > 20.0, "{lane:#}");
}

/// With 2 workers, 12 jobs every 10 s of 6 s work skip for want of
/// workers; the simulation says so and recommends 12, and a real daemon
/// with 12 workers skips nothing.
#[test]
fn the_recommended_worker_count_leaves_no_worker_caused_skips_in_a_real_run() {
    let dir = ConfigDir::new();
    let text: String = (0..12)
        .map(|i| heavy(&format!("report-{i:02}"), "10s", 6000, None))
        .collect();
    dir.write("jobs.d/reports.yaml", &text);
    let now = Timestamp::now();
    let few = simulate(&dir, now, 60, &["--workers", "2", "--assume-ms", "6000"]);
    let caused = few["worker_caused_skips"]["overlap"].as_u64().unwrap_or(0);
    assert!(caused > 10, "{:#}", few["worker_caused_skips"]);
    let recommended = few["recommended_workers"].as_u64().unwrap();
    assert_eq!(recommended, 12);
    let workers = recommended.to_string();
    let real = run_for(&dir, 30, &["--workers", &workers]);
    let counts = real.counts(real.first_slot(), 30);
    assert_eq!(counts.get("overlap"), None, "{counts:?}");
    assert_eq!(counts.get("pressure"), None, "{counts:?}");
    assert_eq!(counts["dispatched"], 36, "{counts:?}");
}

/// The seeds' load script's set for a day.
const SEEDS_DAY: [&str; 13] = [
    "simulate",
    "--jobs",
    "100",
    "--interval",
    "30s",
    "--work-ms",
    "8000",
    "--jitter",
    "25s",
    "--for",
    "24h",
    "--from",
    "2026-12-07T00:00:00Z",
];

#[test]
fn a_synthetic_day_of_the_seeds_load_is_simulated_with_a_recommendation() {
    let dir = ConfigDir::new();
    let run = dir.run(&SEEDS_DAY);
    run.assert_code(0);
    let out = run.stdout();
    assert!(out.contains("Simulated 100 jobs for 24h"), "{out}");
    assert!(out.contains("recommended --workers "), "{out}");
    let json = dir.run(&[&SEEDS_DAY[..], &["-o", "json"]].concat()).json();
    let report = &json["report"];
    // 2,880 slots a day each, less the last one of a job whose jitter
    // puts its fire past the period's end: every one has an outcome.
    let slots = report["slots"].as_u64().unwrap();
    assert!((287_900..=288_000).contains(&slots), "{slots}");
    let skipped: u64 = report["skipped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(report["dispatched"].as_u64().unwrap() + skipped, slots);
    let recommended = json["recommended_workers"].as_u64().unwrap();
    assert!((27..=100).contains(&recommended), "{recommended}");
}

#[test]
fn hostile_and_wrong_input_fails_with_a_clear_error() {
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/bad.yaml",
        "id: x\ntype: noop\nschedule: {every: banana}\n",
    );
    let run = dir.run(&["simulate"]);
    run.assert_code(1);
    run.assert_stderr_has("jobs.d/bad.yaml:3");
    run.assert_stderr_has("simulate: the directory is invalid");
    dir.remove("jobs.d/bad.yaml");
    dir.run(&["simulate", "--for", "400d"])
        .assert_code(1)
        .assert_stderr_has("longer than 31 days");
    dir.run(&["simulate", "--for", "-5s"]).assert_code(1);
    dir.run(&["simulate", "--jobs", "0"]).assert_code(1);
    dir.run(&["simulate", "--jobs", "99999999"]).assert_code(1);
    dir.run(&["simulate", "--workers", "0"]).assert_code(1);
    dir.run(&["simulate", "--interval", "5s"])
        .assert_code(1)
        .assert_stderr_has("--jobs");
    dir.run(&[
        "simulate",
        "--jobs",
        "3",
        "--interval",
        "10s",
        "--jitter",
        "20s",
    ])
    .assert_code(1)
    .assert_stderr_has("jitter_sec");
    dir.run(&["simulate", "--from", "yesterday"])
        .assert_code(1)
        .assert_stderr_has("RFC 3339");
}
