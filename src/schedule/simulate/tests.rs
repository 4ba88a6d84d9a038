use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::*;

const FROM: &str = "2026-12-07T10:00:00Z";

/// The jobs of `text` (YAML documents), each run taking `work`.
fn jobs_of(text: &str, work: Duration) -> (Vec<SimJob>, BTreeMap<String, Option<u32>>) {
    let loaded = crate::spec::build(&[crate::spec::SourceFile {
        path: "jobs.d/t.yaml".into(),
        text: text.to_string(),
    }]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    from_snapshot(&loaded.snapshot, |_| work)
}

fn config(secs: i64, workers: Option<usize>) -> SimConfig {
    let from: Timestamp = FROM.parse().unwrap();
    SimConfig {
        from,
        to: from + jiff::SignedDuration::from_secs(secs),
        workers,
        pressure_high: 300,
        pressure_low: 180,
        trace: None,
        active: Vec::new(),
    }
}

/// `n` jobs `every` in lane `lane` (max `max`), or in none.
fn fleet(n: usize, every: &str, lane: Option<(&str, u32)>) -> String {
    let mut text = String::new();
    if let Some((id, max)) = lane {
        text.push_str(&format!(
            "kind: Flow\nid: {id}\nmax_active_runs: {max}\n---\n"
        ));
    }
    for i in 0..n {
        text.push_str(&format!(
            "id: j{i:02}\ntype: noop\nschedule: {{every: {every}}}\n"
        ));
        if let Some((id, _)) = lane {
            text.push_str(&format!("flow: {id}\n"));
        }
        text.push_str("---\n");
    }
    text
}

#[test]
fn a_saturated_lane_dispatches_its_limit_each_slot_and_skips_the_rest() {
    let (jobs, lanes) = jobs_of(
        &fleet(20, "10s", Some(("pricing", 3))),
        Duration::from_secs(4),
    );
    let r = simulate(jobs, &lanes, &config(60, Some(5)));
    // Slots at :10 ... :50 (the period is [10:00:00, 10:01:00)).
    assert_eq!(r.slots, 100);
    assert_eq!(r.dispatched, 15);
    assert_eq!(r.skipped.get("flow_limit"), Some(&85));
    let lane = &r.lanes[0];
    assert_eq!(lane.runs_started, 15);
    // Full for 4 s after each of the 5 slots.
    assert!((lane.full_seconds - 20.0).abs() < 1e-6, "{lane:?}");
    // Lane waits are passed on: every job gets its turns.
    let turns: Vec<u64> = r.jobs.iter().map(|j| j.dispatched).collect();
    assert!(turns.iter().all(|t| *t <= 1), "{turns:?}");
}

#[test]
fn too_few_workers_turn_into_overlap_skips_and_unlimited_ones_into_none() {
    let (jobs, lanes) = jobs_of(&fleet(10, "10s", None), Duration::from_secs(8));
    let few = simulate(jobs.clone(), &lanes, &config(120, Some(2)));
    assert!(
        few.skipped.get("overlap").copied().unwrap_or(0) > 0,
        "{:?}",
        few.skipped
    );
    assert_eq!(few.queue.peak_running, 2);
    assert!(few.queue.max_wait_ms > 0.0);
    let all = simulate(jobs, &lanes, &config(120, None));
    assert_eq!(all.skipped.get("overlap"), None, "{:?}", all.skipped);
    assert_eq!(all.queue.peak_running, 10);
    assert_eq!(all.queue.max_wait_ms, 0.0);
    assert_eq!(all.dispatched, all.slots);
}

#[test]
fn pressure_turns_on_at_high_and_off_at_low_and_spares_critical_jobs() {
    let mut text = fleet(30, "1s", None);
    text.push_str("id: vip\ntype: noop\npriority: critical\nschedule: {every: 1s}\n");
    let (jobs, lanes) = jobs_of(&text, Duration::from_millis(900));
    let mut c = config(30, Some(1));
    c.pressure_high = 10;
    c.pressure_low = 4;
    let r = simulate(jobs, &lanes, &c);
    assert!(r.queue.pressure_turned_on >= 1, "{:?}", r.queue);
    assert!(r.queue.pressure_seconds > 0.0);
    assert!(r.skipped.get("pressure").copied().unwrap_or(0) > 0);
    let vip = r.jobs.iter().find(|j| j.id == "vip").unwrap();
    assert_eq!(vip.skipped.get("pressure"), None, "{vip:?}");
}

#[test]
fn replace_cancels_the_active_run_and_buffer_one_runs_once_after_it() {
    let text = "id: rep\ntype: noop\noverlap: replace\nschedule: {every: 10s}\n---\n\
                id: buf\ntype: noop\noverlap: buffer_one\nschedule: {every: 10s}\n";
    let (jobs, lanes) = jobs_of(text, Duration::from_secs(25));
    let r = simulate(jobs, &lanes, &config(60, Some(4)));
    let rep = r.jobs.iter().find(|j| j.id == "rep").unwrap();
    // Every slot replaces the run before it.
    assert_eq!((rep.slots, rep.dispatched), (5, 5));
    let buf = r.jobs.iter().find(|j| j.id == "buf").unwrap();
    // :10 runs until :35; :20 is buffered, :30 skipped; at :35 the buffered
    // slot runs (until 1:00), :40 is buffered, :50 skipped.
    assert_eq!(buf.dispatched, 2, "{buf:?}");
    assert_eq!(buf.skipped.get("overlap"), Some(&2), "{buf:?}");
    // The replaced runs freed their workers: never more than 2 running.
    assert!(r.queue.peak_running <= 2, "{:?}", r.queue);
}

#[test]
fn the_traced_job_says_who_held_its_lane() {
    let (jobs, lanes) = jobs_of(&fleet(3, "10s", Some(("l", 1))), Duration::from_secs(4));
    let mut c = config(30, Some(5));
    c.trace = Some("j02".into());
    let r = simulate(jobs, &lanes, &c);
    assert_eq!(r.trace.len(), 2);
    let first = &r.trace[0];
    assert_eq!(first.outcome, "skipped");
    assert_eq!(first.reason, Some("flow_limit"));
    let lane = first.lane.as_ref().unwrap();
    assert_eq!((lane.active, lane.max), (1, Some(1)));
    assert_eq!(lane.held_by, vec!["j00".to_string()]);
}

#[test]
fn a_paused_job_and_a_cooling_job_skip_with_their_reasons() {
    let (mut jobs, lanes) = jobs_of(&fleet(2, "10s", None), Duration::from_secs(1));
    jobs[0].paused = true;
    jobs[1].cooldown_until = Some("2026-12-07T10:00:25Z".parse().unwrap());
    let r = simulate(jobs, &lanes, &config(60, Some(5)));
    assert_eq!(r.jobs[0].skipped.get("paused"), Some(&5));
    // :10 and :20 cool down; :30, :40, :50 run.
    assert_eq!(r.jobs[1].skipped.get("cooldown"), Some(&2));
    assert_eq!(r.jobs[1].dispatched, 3);
}

#[test]
fn the_busiest_hour_is_the_one_the_lane_was_full_longest() {
    let text = "kind: Flow\nid: l\nmax_active_runs: 1\n---\n\
                id: nightly\ntype: noop\nflow: l\nschedule: {cron: \"0 2 * * *\"}\n---\n\
                id: often\ntype: noop\nflow: l\nschedule: {every: 1h}\n";
    let (jobs, lanes) = jobs_of(text, Duration::from_secs(1200));
    let r = simulate(jobs, &lanes, &config(24 * 3600, Some(5)));
    let lane = &r.lanes[0];
    let busy = lane.busiest_hour.as_ref().unwrap();
    // Slots at 11:00 ... 09:00 (23): one run of 20 minutes an hour, both
    // due at 02:00 where one is skipped. Ties go to the hour that started
    // more runs, then the earliest.
    assert!((busy.full_seconds - 1200.0).abs() < 1e-6, "{busy:?}");
    assert_eq!(
        busy.start,
        "2026-12-07T11:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert!((lane.full_seconds - 23.0 * 1200.0).abs() < 1e-3, "{lane:?}");
    assert_eq!(r.skipped.get("flow_limit"), Some(&1));
}

#[test]
fn runs_active_at_the_start_hold_their_job_lane_and_worker() {
    let (jobs, lanes) = jobs_of(&fleet(2, "10s", Some(("l", 2))), Duration::from_secs(1));
    let mut c = config(30, Some(1));
    c.trace = Some("j00".into());
    c.active = vec![
        ActiveRun {
            job: "j00".into(),
            ends_at: Some("2026-12-07T10:00:15Z".parse().unwrap()),
        },
        ActiveRun {
            job: "gone".into(),
            ends_at: None,
        },
    ];
    let r = simulate(jobs, &lanes, &c);
    // j00 at :10 is still running (until :15): skipped; :20 runs.
    assert_eq!(r.trace[0].reason, Some("overlap"));
    assert_eq!(r.trace[1].outcome, "dispatched");
    // j01 at :10 had the lane (1 of 2) but no worker until :15.
    assert_eq!(r.jobs[1].dispatched, 2);
    assert!(r.queue.max_wait_ms >= 5000.0, "{:?}", r.queue);
}
