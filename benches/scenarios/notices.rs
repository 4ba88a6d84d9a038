//! Scenario: the cost of notices. The lateness load (N jobs every second)
//! twice: without `notify:` rules, then with every job notifying a local
//! webhook sink of `failure` and `recovery`, and one job in ten failing
//! half its runs, so notices flow all through the window (~N/20 state
//! changes a second). Target: dispatch lateness p99 unchanged within
//! noise (the notices task reads committed events on its own; it must
//! not stall the scheduler).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::otlp::counting_sink;
use super::{Figure, Scale, lateness_window, write_jobs};

/// Job `i` of file `f`: every second; one in ten fails half its runs;
/// with `notify` rules to `hook` when `notify`.
fn job(f: usize, i: usize, notify: bool) -> String {
    let flaky = if i.is_multiple_of(10) {
        "inputs: {fail_rate: 0.5}\n"
    } else {
        ""
    };
    let rules = if notify {
        "notify:\n  - connector: hook\n    on: [failure, recovery]\n"
    } else {
        ""
    };
    format!(
        "id: n-{f:03}-{i:02}\ntype: simulation.heavy\nschedule: {{every: 1s}}\n\
         failure_memory: {{enabled: false}}\n{flaky}{rules}---\n"
    )
}

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let (jobs, secs) = match scale {
        Scale::Full => (10_000, 30),
        Scale::Small => (500, 3),
    };
    let quiet = tempfile::tempdir().expect("a temp dir");
    write_jobs(quiet.path(), jobs, |f, i| job(f, i, false));
    let without = lateness_window(quiet.path(), secs, &[]);

    let received = Arc::new(AtomicU64::new(0));
    let base = counting_sink(Arc::clone(&received));
    let noisy = tempfile::tempdir().expect("a temp dir");
    write_jobs(noisy.path(), jobs, |f, i| job(f, i, true));
    std::fs::write(
        noisy.path().join("jobs.d/hook.yaml"),
        format!("kind: Connector\nid: hook\nprovider: webhook\nbase_url: {base}/hook\n"),
    )
    .expect("the connector");
    let t0 = Instant::now();
    let with = lateness_window(noisy.path(), secs, &[]);
    let notices = received.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();

    let full = scale == Scale::Full;
    let figure = |name: String, value: f64, unit: &'static str, target| Figure {
        scenario: "notices",
        name,
        value,
        unit,
        target,
    };
    out.push(figure(
        format!("{jobs} jobs at 1 s, no notify: dispatch lateness p99"),
        without.p99_ms,
        "ms",
        None,
    ));
    out.push(figure(
        format!("{jobs} jobs at 1 s, notify, 1 in 10 flapping: lateness p99"),
        with.p99_ms,
        "ms",
        full.then_some(("<=", 5.0)),
    ));
    out.push(figure(
        "notices delivered per second (failure + recovery)".into(),
        notices,
        "1/s",
        None,
    ));
    out.push(figure(
        "slots skipped with notify on".into(),
        with.skipped,
        "slots",
        full.then_some(("<=", 0.0)),
    ));
    out.push(figure(
        "daemon CPU, notify on / off".into(),
        with.cpu_cores / without.cpu_cores.max(f64::EPSILON),
        "ratio",
        None,
    ));
}
