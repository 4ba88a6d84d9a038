//! Hostile templates against the real daemon (issue #19, defect 3): a
//! template that would run for minutes is stopped at its step's
//! `timeout_ms`, templates that would allocate gigabytes fail with a clear
//! error, and meanwhile the daemon keeps answering and gives its memory
//! back.

mod common;

use std::time::{Duration, Instant};

use common::{ConfigDir, Daemon};

/// Scans a 10 MB string 100,000 times (minutes of work, little memory):
/// stopped at the step's `timeout_ms`.
const SPIN: &str = "{% set s = 'x' * inputs.size %}{% for i in range(100000) %}{% if 'y' in s %}{% endif %}{% endfor %}done";

fn job(id: &str, template: &str, timeout: &str) -> String {
    format!(
        "id: {id}\ntype: agent.workflow\ninputs: {{size: 10000000, n: 100000000}}\nsteps:\n  - id: render\n{timeout}    set:\n      out: \"{template}\"\n"
    )
}

/// The daemon's resident memory, in bytes.
fn rss(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .expect("daemon status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Waits for the daemon's memory to come back within 50 MB of `before`.
#[track_caller]
fn rss_returns(daemon: &Daemon, before: u64) {
    let limit = before + 50 * 1024 * 1024;
    let start = Instant::now();
    let mut now = rss(daemon);
    while now > limit && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
        now = rss(daemon);
    }
    eprintln!("RSS before {} MB, after {} MB", before >> 20, now >> 20);
    assert!(
        now <= limit,
        "RSS {} MB did not come back within 50 MB of {} MB\n--- log ---\n{}",
        now >> 20,
        before >> 20,
        daemon.log()
    );
}

/// Triggers `job`; its run id.
fn trigger(d: &ConfigDir, job: &str) -> String {
    let r = d.run(&["trigger", job]);
    r.assert_code(0);
    r.stdout()
        .split_whitespace()
        .nth(2)
        .expect("run id")
        .to_string()
}

fn ready(d: &ConfigDir) -> (Daemon, u64) {
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    // One small render first, so what it loads is in the baseline.
    let id = trigger(d, "warm");
    daemon.wait_until(&format!("/api/v1/runs/{id}"), "the warm-up", |v| {
        v["status"] == "succeeded"
    });
    let before = rss(&daemon);
    (daemon, before)
}

#[test]
fn heavy_templates_stop_at_their_timeout_while_the_daemon_keeps_answering() {
    let d = ConfigDir::new();
    let mut jobs = vec![job("warm", "{{ inputs.size + 1 }}", "")];
    for i in 1..=3 {
        jobs.push(job(&format!("spin{i}"), SPIN, "    timeout_ms: 1000\n"));
    }
    d.write("jobs.d/jobs.yaml", &jobs.join("---\n"));
    let (mut daemon, before) = ready(&d);

    // Three at once: more than there are render threads.
    let started = Instant::now();
    let ids: Vec<String> = (1..=3).map(|i| trigger(&d, &format!("spin{i}"))).collect();
    let mut slowest = Duration::ZERO;
    let mut finished = Vec::new();
    while finished.len() < ids.len() && started.elapsed() < Duration::from_secs(30) {
        let asked = Instant::now();
        let (code, _) = daemon.get("/healthz");
        slowest = slowest.max(asked.elapsed());
        assert_eq!(code, 200, "{}", daemon.log());
        for id in &ids {
            let (_, run) = daemon.get(&format!("/api/v1/runs/{id}"));
            if run["status"] == "failed" && !finished.iter().any(|(f, _, _)| f == id) {
                finished.push((id.clone(), started.elapsed(), run));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(finished.len(), 3, "runs: {finished:#?}\n{}", daemon.log());
    for (_, took, run) in &finished {
        let error = run["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("step `render`: template `{% set s = 'x' * inputs.size %}")
                && error.contains("did not finish within 1000 ms (the step's timeout_ms)"),
            "{run:#}"
        );
        // Stopped at its timeout, not after its minutes of work.
        assert!(*took < Duration::from_secs(10), "took {took:?}: {run:#}");
    }
    let took: Vec<Duration> = finished.iter().map(|(_, t, _)| *t).collect();
    eprintln!("runs failed after {took:?}; slowest /healthz {slowest:?}");
    // Without a render thread pool the runtime stalled for seconds.
    assert!(
        slowest < Duration::from_secs(2),
        "/healthz took {slowest:?}"
    );
    assert!(daemon.is_running());
    rss_returns(&daemon, before);
}

#[test]
fn oversized_template_values_fail_clearly_and_the_process_survives() {
    let d = ConfigDir::new();
    let jobs = [
        job("warm", "{{ inputs.size + 1 }}", ""),
        job(
            "chain",
            "{{ ('x' * inputs.n)|replace('x','xx')|replace('x','xx')|length }}",
            "    timeout_ms: 1000\n",
        ),
        job("list", "{{ ([0] * inputs.n)|list|length }}", ""),
        job(
            "doubling",
            "{% set ns = namespace(s='x' * 1000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "",
        ),
    ];
    d.write("jobs.d/jobs.yaml", &jobs.join("---\n"));
    let (mut daemon, before) = ready(&d);
    let cases = [
        (
            "chain",
            "a string of 100000000 bytes; the limit is 16 MB per string",
        ),
        (
            "list",
            "a list of 100000000 items; the limit is 1000000 items per list",
        ),
        ("doubling", "template value too large"),
    ];
    for (job, message) in cases {
        let id = trigger(&d, job);
        let run = daemon.wait_until(&format!("/api/v1/runs/{id}"), job, |v| {
            v["status"] == "failed"
        });
        let error = run["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("template value too large") && error.contains(message),
            "{job}: {run:#}"
        );
        assert!(daemon.is_running(), "{}", daemon.log());
        assert_eq!(daemon.get("/healthz").0, 200);
    }
    rss_returns(&daemon, before);
}

#[test]
fn a_template_that_folds_to_a_huge_constant_is_refused_by_validate() {
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        &job(
            "a",
            "{{ ('x' * 100000000)|replace('x','xx')|replace('x','xx')|length }}",
            "",
        ),
    );
    let r = d.run(&["validate"]);
    r.assert_code(1);
    let out = r.stdout() + &r.stderr();
    assert!(
        out.contains("template value too large (a constant expression would make 100000000 bytes"),
        "{}",
        r.explain()
    );
}
