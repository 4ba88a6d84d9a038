//! `simulate`'s text report: totals, the most skipped jobs, lanes, the
//! queue, and the worker recommendation in words.

use std::fmt::Write;
use std::time::Duration;

use jiff::Timestamp;

use super::simulate::{ASSUMPTIONS, Simulated};
use crate::schedule::simulate::JobReport;

/// `24h`, `90s`, `1h30m`: a period as the flags write it.
pub(super) fn period(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if out.is_empty() {
        format!("{} ms", d.as_millis())
    } else {
        out
    }
}

fn at(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn reasons(by: &std::collections::BTreeMap<&'static str, u64>) -> String {
    by.iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

pub(super) fn text(sim: &Simulated, length: Duration, top: usize) -> String {
    let r = &sim.report;
    let mut out = String::new();
    let workers = r.workers.map_or("unlimited".to_string(), |w| w.to_string());
    let _ = writeln!(
        out,
        "Simulated {} jobs for {} ({} → {}) with {workers} workers, in {:.2} s.",
        r.jobs.len(),
        period(length),
        at(r.from),
        at(r.to),
        sim.took.as_secs_f64()
    );
    let skipped: u64 = r.skipped.values().sum();
    let _ = writeln!(
        out,
        "\n  slots {}   dispatched {}   skipped {skipped}{}",
        r.slots,
        r.dispatched,
        if skipped > 0 {
            format!(" ({})", reasons(&r.skipped))
        } else {
            String::new()
        }
    );
    jobs_table(&mut out, &r.jobs, top);
    lanes_table(&mut out, sim);
    queue_lines(&mut out, sim);
    recommendation(&mut out, sim);
    let _ = writeln!(out, "\nDurations: {}.", sim.durations);
    let _ = writeln!(out, "Assumed: {}.", ASSUMPTIONS.join("; "));
    out
}

fn jobs_table(out: &mut String, jobs: &[JobReport], top: usize) {
    let mut rows: Vec<&JobReport> = jobs.iter().collect();
    rows.sort_by_key(|j| std::cmp::Reverse(j.slots - j.dispatched));
    rows.truncate(top);
    if rows.is_empty() {
        let _ = writeln!(out, "\nNo scheduled, enabled jobs.");
        return;
    }
    let _ = writeln!(
        out,
        "\nJobs (most skipped first, {} of {}):",
        rows.len(),
        jobs.len()
    );
    let width = rows.iter().map(|j| j.id.len()).max().unwrap_or(3).max(3);
    let _ = writeln!(
        out,
        "  {:width$}  {:>7}  {:>7}  {:>7}  {:>9}  BY REASON",
        "JOB", "SLOTS", "RAN", "SKIPPED", "DURATION"
    );
    for j in rows {
        let _ = writeln!(
            out,
            "  {:width$}  {:>7}  {:>7}  {:>7}  {:>9}  {}",
            j.id,
            j.slots,
            j.dispatched,
            j.slots - j.dispatched,
            format!("{:.1} s", j.duration_ms as f64 / 1000.0),
            reasons(&j.skipped)
        );
    }
}

fn lanes_table(out: &mut String, sim: &Simulated) {
    let lanes = &sim.report.lanes;
    if lanes.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nLanes:");
    for l in lanes {
        let max = l.max_active_runs.map_or("∞".to_string(), |m| m.to_string());
        let busiest = l.busiest_hour.as_ref().map_or(String::new(), |h| {
            format!(
                "; busiest hour {} ({} started, full {})",
                h.start.strftime("%Y-%m-%d %H:00 UTC"),
                h.runs_started,
                seconds(h.full_seconds)
            )
        });
        let _ = writeln!(
            out,
            "  {} (max {max}): {} runs started, full for {}{busiest}",
            l.id,
            l.runs_started,
            seconds(l.full_seconds)
        );
    }
}

fn queue_lines(out: &mut String, sim: &Simulated) {
    let q = &sim.report.queue;
    let peak_at = q
        .peak_waiting_at
        .map_or(String::new(), |t| format!(" at {}", at(t)));
    let _ = writeln!(
        out,
        "\nQueue: at most {} runs left waiting for a worker{peak_at}, {} running at once; \
         longest wait {:.0} ms (mean {:.0} ms); pressure mode on for {} ({} times).",
        q.peak_waiting,
        q.peak_running,
        q.max_wait_ms,
        q.mean_wait_ms,
        seconds(q.pressure_seconds),
        q.pressure_turned_on
    );
}

fn recommendation(out: &mut String, sim: &Simulated) {
    let recommended = sim.recommended_workers();
    let caused = sim.worker_caused();
    let workers = sim.report.workers.unwrap_or(usize::MAX);
    if caused.is_empty() && sim.report.queue.max_wait_ms == 0.0 {
        let _ = writeln!(
            out,
            "\nWorkers: enough; no run waited for one. {recommended} would do (the most runs running at once with unlimited workers)."
        );
        return;
    }
    let total: u64 = caused.values().sum();
    let because = if total > 0 {
        format!(
            ", and {total} slots were skipped because of it ({})",
            reasons(&caused)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\nWorkers: with {workers}, runs waited up to {:.1} s for one{because}.\n\
         recommended --workers {recommended} (the most runs running at once with unlimited workers: no run waits)",
        sim.report.queue.max_wait_ms / 1000.0
    );
}
