//! End-to-end benchmark scenarios against the real binary.
//!
//! `cargo bench --bench scenarios` runs every scenario at full size and prints
//! a table (figure, value, unit, target, pass/fail); `-- --scale small` is the
//! seconds-long smoke, which is also what `cargo test --bench scenarios` (CI)
//! runs; `-- --only NAME[,NAME]` picks scenarios; results are also written to
//! `target/bench-results.json`.

#[path = "scenarios/enqueue.rs"]
mod enqueue;
#[path = "scenarios/fanout.rs"]
mod fanout;
#[path = "scenarios/inbound.rs"]
mod inbound;
#[path = "scenarios/latency.rs"]
mod latency;
#[path = "scenarios/notices.rs"]
mod notices;
#[path = "scenarios/otlp.rs"]
mod otlp;
#[path = "scenarios/redis.rs"]
mod redis;
#[path = "scenarios/simulate.rs"]
mod simulate;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Figure {
    scenario: &'static str,
    name: String,
    value: f64,
    unit: &'static str,
    /// (comparison, target): "<=" or ">=".
    target: Option<(&'static str, f64)>,
}

impl Figure {
    fn pass(&self) -> Option<bool> {
        self.target.map(|(cmp, t)| match cmp {
            "<=" => self.value <= t,
            _ => self.value >= t,
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Small,
    Full,
}

/// The daemon under test: this build's, or `MULTIJOB_BENCH_BIN` (e.g.
/// `target/dist/multijob`, to measure another profile's binary with the
/// same harness).
fn bin() -> PathBuf {
    std::env::var_os("MULTIJOB_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_multijob")))
}

/// Run a child to completion; return (wall, peak RSS in MB, success).
fn measure(cmd: &mut Command) -> (Duration, f64, bool) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn multijob");
    let (status, rss_kb) = wait_rusage(child);
    (start.elapsed(), rss_kb as f64 / 1024.0, status == 0)
}

fn wait_rusage(child: Child) -> (i32, i64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes into the two out-parameters we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    std::mem::forget(child);
    (code, usage.ru_maxrss)
}

/// Peak RSS (VmHWM) and current RSS (VmRSS) of a live process, in MB.
fn rss_of(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A config dir with `jobs` jobs over `files` files, mixing features.
fn generate(dir: &Path, jobs: usize, files: usize) {
    let jobs_dir = dir.join("jobs.d");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let per_file = jobs.div_ceil(files);
    let mut n = 0;
    for f in 0..files {
        let mut text = String::new();
        if f == 0 {
            text.push_str("kind: Flow\nid: lane\nmax_active_runs: 5\n---\nkind: Connector\nid: shop\nprovider: http\nbase_url: http://127.0.0.1:9\n---\n");
        }
        for _ in 0..per_file {
            if n == jobs {
                break;
            }
            let schedule = match n % 3 {
                0 => format!("  every: {}s\n", 1 + n % 300),
                1 => "  cron: \"*/5 * * * *\"\n  timezone: Europe/Berlin\n".to_string(),
                _ => format!("  interval_sec: {}\n  jitter_sec: 1\n", 60 + n % 60),
            };
            let body = if n % 4 == 0 {
                format!(
                    "type: agent.workflow\nflow: lane\ninputs: {{sku: \"P{n:05}\", n: {n}}}\nsteps:\n  - id: fetch\n    http: {{connector: shop, path: \"/p/{{{{ inputs.sku }}}}\"}}\n  - id: sum\n    set: {{total: \"{{{{ steps.fetch.output.body | length }}}}\"}}\n"
                )
            } else {
                "type: noop\n".to_string()
            };
            text.push_str(&format!(
                "id: job-{n:05}\n{body}schedule:\n{schedule}retry_policy: {{max_retry: 2, backoff_sec: [1, 5]}}\n---\n"
            ));
            n += 1;
        }
        std::fs::write(jobs_dir.join(format!("f{f:04}.yaml")), text).unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// `<what> p50, <label>` and `<what> p99, <label> (<n> runs)` of
/// latencies in ms, the p99 against `p99_target`.
fn p50_p99(
    scenario: &'static str,
    what: &str,
    label: &str,
    lat: &mut [f64],
    p99_target: Option<(&'static str, f64)>,
) -> [Figure; 2] {
    let runs = lat.len();
    let figure = |name: String, value: f64, target| Figure {
        scenario,
        name,
        value,
        unit: "ms",
        target,
    };
    [
        figure(format!("{what} p50, {label}"), percentile(lat, 0.50), None),
        figure(
            format!("{what} p99, {label} ({runs} runs)"),
            percentile(lat, 0.99),
            p99_target,
        ),
    ]
}

fn scenario_validate(scale: Scale, out: &mut Vec<Figure>) {
    let (jobs, files, reps) = match scale {
        Scale::Full => (10_000, 1_000, 5),
        Scale::Small => (500, 50, 1),
    };
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), jobs, files);
    let mut walls = Vec::new();
    let mut rss = 0.0f64;
    for _ in 0..reps {
        let (wall, peak, ok) = measure(
            Command::new(bin())
                .args(["validate", "--output", "json", "--dir"])
                .arg(tmp.path()),
        );
        assert!(ok, "validate failed on generated config");
        walls.push(wall.as_secs_f64());
        rss = rss.max(peak);
    }
    let full = scale == Scale::Full;
    out.push(Figure {
        scenario: "validate",
        name: format!("validate {jobs} jobs in {files} files, wall (median of {reps})"),
        value: median(walls),
        unit: "s",
        target: full.then_some(("<=", 0.5)),
    });
    out.push(Figure {
        scenario: "validate",
        name: format!("validate {jobs} jobs, peak RSS"),
        value: rss,
        unit: "MB",
        target: full.then_some(("<=", 100.0)),
    });
}

fn scenario_plan(scale: Scale, out: &mut Vec<Figure>) {
    let (jobs, files) = match scale {
        Scale::Full => (10_000, 1_000),
        Scale::Small => (500, 50),
    };
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), jobs, files);
    // A fresh plan: everything is a create.
    let (wall, peak, _) = measure(
        Command::new(bin())
            .args(["plan", "--output", "json", "--dir"])
            .arg(tmp.path()),
    );
    let full = scale == Scale::Full;
    out.push(Figure {
        scenario: "plan",
        name: format!("plan {jobs} jobs (all creates), wall"),
        value: wall.as_secs_f64(),
        unit: "s",
        target: full.then_some(("<=", 1.0)),
    });
    out.push(Figure {
        scenario: "plan",
        name: format!("plan {jobs} jobs, peak RSS"),
        value: peak,
        unit: "MB",
        target: None,
    });
}

/// A daemon on a free port; killed on drop.
struct Daemon {
    child: Child,
    url: String,
}

impl Daemon {
    fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Self::start_env(dir, extra, &[])
    }

    fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(bin())
            .args(["run", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", crate::daemon_log_filter())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn daemon");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Daemon { child, url }
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        http_get(&format!("{}{path}", self.url))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET with `Connection: close`; the raw body bytes (de-chunked).
fn http_get_raw(url: &str) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let body = buf.split_off(at + 4);
    let trimmed: Vec<u8> = body
        .iter()
        .rev()
        .skip_while(|b| b.is_ascii_whitespace() || **b == b'0')
        .cloned()
        .collect::<Vec<u8>>()
        .into_iter()
        .rev()
        .collect();
    Some(trimmed)
}

/// A tiny blocking HTTP GET (no client crate in benches' hot loop).
fn http_get(url: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let body = buf.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

fn wait_for(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn scenario_reload(scale: Scale, out: &mut Vec<Figure>) {
    let edits = match scale {
        Scale::Full => 100,
        Scale::Small => 10,
    };
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), 50, 5);
    let daemon = Daemon::start(tmp.path(), &[]);
    assert!(
        wait_for(
            || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
            Duration::from_secs(20)
        ),
        "daemon never became ready"
    );
    let target = tmp.path().join("jobs.d/edit.yaml");
    let mut latencies = Vec::new();
    for i in 0..edits {
        let text = format!("id: edited\ntype: noop\nschedule: {{every: {}s}}\n", 10 + i);
        let start = Instant::now();
        std::fs::write(&target, text).unwrap();
        let want = format!("{}", 10 + i);
        let ok = wait_for(
            || {
                daemon.get("/api/v1/jobs/edited").is_some_and(|v| {
                    v["spec"]["schedule"]["every"].as_str() == Some(&format!("{want}s"))
                })
            },
            Duration::from_secs(10),
        );
        assert!(ok, "edit {i} never applied");
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let full = scale == Scale::Full;
    out.push(Figure {
        scenario: "reload",
        name: format!("hot reload write → applied, p50 over {edits} edits"),
        value: percentile(&mut latencies, 0.5),
        unit: "ms",
        target: full.then_some(("<=", 100.0)),
    });
    out.push(Figure {
        scenario: "reload",
        name: format!("hot reload write → applied, p99 over {edits} edits"),
        value: percentile(&mut latencies, 0.99),
        unit: "ms",
        target: full.then_some(("<=", 300.0)),
    });
}

fn scenario_rss(scale: Scale, out: &mut Vec<Figure>) {
    let jobs = match scale {
        Scale::Full => 10_000,
        Scale::Small => 500,
    };
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("jobs.d")).unwrap();
    let start = Instant::now();
    let idle = Daemon::start(empty.path(), &[]);
    assert!(wait_for(
        || idle.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(20)
    ));
    let startup = start.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(300));
    let (_, idle_rss) = rss_of(idle.child.id());
    drop(idle);

    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), jobs, jobs / 10);
    let loaded = Daemon::start(tmp.path(), &[]);
    assert!(wait_for(
        || loaded.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(60)
    ));
    std::thread::sleep(Duration::from_millis(500));
    let (peak, now) = rss_of(loaded.child.id());
    let full = scale == Scale::Full;
    out.push(Figure {
        scenario: "rss",
        name: "startup to ready (empty dir)".into(),
        value: startup,
        unit: "ms",
        target: full.then_some(("<=", 100.0)),
    });
    out.push(Figure {
        scenario: "rss",
        name: "daemon RSS idle (empty dir)".into(),
        value: idle_rss,
        unit: "MB",
        target: full.then_some(("<=", 20.0)),
    });
    out.push(Figure {
        scenario: "rss",
        name: format!("daemon RSS with {jobs} jobs loaded"),
        value: now,
        unit: "MB",
        target: full.then_some(("<=", 150.0)),
    });
    out.push(Figure {
        scenario: "rss",
        name: format!("daemon peak RSS loading {jobs} jobs"),
        value: peak,
        unit: "MB",
        target: None,
    });
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/PID/stat: 11 and 12 here.
    let hz = 100.0; // sysconf(_SC_CLK_TCK) is 100 on Linux
    (ticks(11) + ticks(12)) / hz
}

/// What one window of a loaded daemon showed: dispatch lateness, slots
/// skipped, dispatch rate, the daemon's CPU and RSS.
struct Lateness {
    p50_ms: f64,
    p99_ms: f64,
    skipped: f64,
    dispatched_per_sec: f64,
    cpu_cores: f64,
    rss_mb: f64,
}

/// `jobs` files of 100 jobs each, every one made by `job(file, index)`.
fn write_jobs(dir: &Path, jobs: usize, job: impl Fn(usize, usize) -> String) {
    let jobs_dir = dir.join("jobs.d");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    for f in 0..jobs.div_ceil(100) {
        let text: String = (0..100.min(jobs - f * 100)).map(|i| job(f, i)).collect();
        std::fs::write(jobs_dir.join(format!("f{f:03}.yaml")), text).unwrap();
    }
}

/// Start a daemon on `dir` (16 workers, pressure mode off so a full
/// queue is not mistaken for lateness), let it settle, and measure a
/// window of `secs` whole seconds.
fn lateness_window(dir: &Path, secs: u64, env: &[(&str, &str)]) -> Lateness {
    let mut all = vec![
        ("SCHEDULER_PRESSURE_DEPTH_HIGH", "100000000"),
        ("SCHEDULER_PRESSURE_DEPTH_LOW", "1"),
    ];
    all.extend_from_slice(env);
    let daemon = Daemon::start_env(dir, &["--workers", "16", "--keep-runs", "100"], &all);
    assert!(
        wait_for(
            || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
            Duration::from_secs(60)
        ),
        "daemon never became ready"
    );
    // Let it settle, then measure a window of whole seconds.
    std::thread::sleep(Duration::from_millis(1500));
    let before = daemon.get("/api/v1/status").unwrap_or_default();
    let cpu0 = cpu_seconds(daemon.child.id());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = daemon.get("/api/v1/status").unwrap_or_default();
    let cpu_cores = (cpu_seconds(daemon.child.id()) - cpu0) / t0.elapsed().as_secs_f64();
    let (_, rss_mb) = rss_of(daemon.child.id());
    let dispatched = after["scheduler"]["dispatched"].as_f64().unwrap_or(0.0)
        - before["scheduler"]["dispatched"].as_f64().unwrap_or(0.0);
    let skipped: f64 = after["scheduler"]["skipped"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_f64()).sum::<f64>())
        .unwrap_or(0.0)
        // An empty f64 sum is -0.0; print 0.
        + 0.0;
    let lateness = &after["scheduler"]["lateness"];
    Lateness {
        p50_ms: lateness["p50_ms"].as_f64().unwrap_or(f64::NAN),
        p99_ms: lateness["p99_ms"].as_f64().unwrap_or(f64::NAN),
        skipped,
        dispatched_per_sec: dispatched / secs as f64,
        cpu_cores,
        rss_mb,
    }
}

fn scenario_lateness(scale: Scale, out: &mut Vec<Figure>) {
    let (jobs, secs) = match scale {
        Scale::Full => (10_000, 30),
        Scale::Small => (500, 3),
    };
    let tmp = tempfile::tempdir().unwrap();
    write_jobs(tmp.path(), jobs, |f, i| {
        format!("id: tick-{f:03}-{i:02}\ntype: noop\nschedule: {{every: 1s}}\n---\n")
    });
    let l = lateness_window(tmp.path(), secs, &[]);
    let full = scale == Scale::Full;
    let figure = |name: &str, value: f64, unit: &'static str, target| Figure {
        scenario: "lateness",
        name: format!("{jobs} jobs at 1 s: {name}"),
        value,
        unit,
        target,
    };
    out.push(figure("dispatch lateness p50", l.p50_ms, "ms", None));
    out.push(figure(
        "dispatch lateness p99",
        l.p99_ms,
        "ms",
        full.then_some(("<=", 5.0)),
    ));
    out.push(figure(
        "slots skipped (missed)",
        l.skipped,
        "slots",
        full.then_some(("<=", 0.0)),
    ));
    out.push(figure(
        "runs dispatched per second",
        l.dispatched_per_sec,
        "1/s",
        None,
    ));
    out.push(figure("daemon CPU (cores)", l.cpu_cores, "cores", None));
    out.push(figure("daemon RSS under load", l.rss_mb, "MB", None));
}

fn scenario_throughput(scale: Scale, out: &mut Vec<Figure>) {
    let runs: u64 = match scale {
        Scale::Full => 300_000,
        Scale::Small => 5_000,
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("jobs.d")).unwrap();
    std::fs::write(
        tmp.path().join("jobs.d/n.yaml"),
        "id: n\ntype: noop\noverlap: allow\n",
    )
    .unwrap();
    let daemon = Daemon::start_env(
        tmp.path(),
        &["--workers", "16", "--keep-runs", "100000000"],
        &[
            ("SCHEDULER_PRESSURE_DEPTH_HIGH", "100000000"),
            ("SCHEDULER_PRESSURE_DEPTH_LOW", "1"),
        ],
    );
    assert!(wait_for(
        || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(30)
    ));
    let cpu0 = cpu_seconds(daemon.child.id());
    let start = Instant::now();
    let dir = tmp.path().display().to_string();
    let peak = trigger_and_wait(&daemon, runs, &["--dir", &dir]);
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(daemon.child.id()) - cpu0;
    // Every run recorded: count them in the store after a clean stop.
    let pid = daemon.child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut daemon = daemon;
    // A clean stop flushes the store; wait for it before counting.
    let _ = wait_for(
        || matches!(daemon.child.try_wait(), Ok(Some(_))),
        Duration::from_secs(60),
    );
    drop(daemon);
    let conn = rusqlite::Connection::open(tmp.path().join(".multijob/state.db")).unwrap();
    let recorded: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE status = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let full = scale == Scale::Full;
    out.push(Figure {
        scenario: "throughput",
        name: format!("noop runs/s, embedded store ({runs} runs, 16 workers)"),
        value: runs as f64 / wall,
        unit: "1/s",
        target: full.then_some((">=", 50_000.0)),
    });
    out.push(Figure {
        scenario: "throughput",
        name: "runs recorded as succeeded in the store".into(),
        value: recorded as f64,
        unit: "runs",
        target: Some((">=", runs as f64)),
    });
    out.push(Figure {
        scenario: "throughput",
        name: "daemon CPU per run".into(),
        value: cpu / runs as f64 * 1e6,
        unit: "µs",
        target: None,
    });
    out.push(Figure {
        scenario: "throughput",
        name: "daemon peak RSS during the run".into(),
        value: peak,
        unit: "MB",
        target: None,
    });
}

/// `multijob trigger JOB --count N` on `store` (`--dir D` or `--redis URL`).
fn trigger(job: &str, count: u64, store: &[&str]) {
    let trig = Command::new(bin())
        .args(["trigger", job, "--count", &count.to_string()])
        .args(store)
        .output()
        .expect("trigger");
    assert!(
        trig.status.success(),
        "{}",
        String::from_utf8_lossy(&trig.stderr)
    );
}

/// Queue `runs` runs of job `n` (`store` names the store: `--dir D` or
/// `--redis URL`) and wait until the daemon has finished them all; the
/// daemon's peak RSS meanwhile, in MB.
fn trigger_and_wait(daemon: &Daemon, runs: u64, store: &[&str]) -> f64 {
    trigger("n", runs, store);
    let mut peak = 0.0f64;
    // Polled every 10 ms (at most 0.2% of a 5-second run): polling every
    // few ms took a measurable share of the two cores being measured.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        peak = peak.max(rss_of(daemon.child.id()).1);
        // Finished and committed: a run counts once its record is in
        // the store, not when its worker returns.
        let done = daemon.get("/api/v1/status").is_some_and(|v| {
            v["runs_since_start"]["finished"].as_u64() == Some(runs)
                && v["store_backlog"].as_u64() == Some(0)
        });
        if done {
            return peak;
        }
        assert!(Instant::now() < deadline, "not every run finished");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Requests per connection-thread: GET `path` repeatedly for `secs`.
fn hammer(url: &str, paths: &[&str], threads: usize, secs: f64) -> Vec<f64> {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = url.to_string();
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = t;
                while Instant::now() < stop {
                    let path = &paths[i % paths.len()];
                    i += 1;
                    let t0 = Instant::now();
                    // Timed to the last byte, not parsed: the client's own
                    // JSON parsing is not the server's latency.
                    if http_get_raw(&format!("{url}{path}")).is_some_and(|b| b.ends_with(b"}")) {
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                lat
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
}

/// p50, p99 and requests/s of one endpoint's latencies (ms) over `secs`.
fn latency_figures(name: &str, lat: &mut [f64], secs: f64, out: &mut Vec<Figure>) {
    if lat.is_empty() {
        return;
    }
    for (what, value, unit) in [
        ("p50", percentile(lat, 0.5), "ms"),
        ("p99", percentile(lat, 0.99), "ms"),
        ("requests/s", lat.len() as f64 / secs, "1/s"),
    ] {
        out.push(Figure {
            scenario: "api",
            name: format!("{name}: {what}"),
            value,
            unit,
            target: None,
        });
    }
}

/// One SSE client of `/api/v1/events?type=run.completed`: says on
/// `ready` once the stream is open, then counts events until `events`
/// (or the stream ends); (events seen, seconds).
fn sse_client(host: &str, events: u64, ready: &std::sync::mpsc::Sender<()>) -> (u64, f64) {
    use std::io::{BufRead, Write};
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return (0, 0.0);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = write!(
        s,
        "GET /api/v1/events?type=run.completed HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    );
    let mut reader = std::io::BufReader::new(s);
    let mut line = String::new();
    let mut seen = 0;
    let mut announced = false;
    let start = Instant::now();
    while seen < events {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !announced && line == "\r\n" {
            announced = true;
            let _ = ready.send(());
        }
        if line.starts_with("event: run.completed") {
            seen += 1;
        }
    }
    (seen, start.elapsed().as_secs_f64())
}

fn scenario_api(scale: Scale, out: &mut Vec<Figure>) {
    let (jobs, secs, conns, sse_clients, events) = match scale {
        Scale::Full => (1_000, 10.0, 100, 200, 2_000u64),
        Scale::Small => (100, 1.0, 10, 10, 100u64),
    };
    let tmp = tempfile::tempdir().unwrap();
    let jobs_dir = tmp.path().join("jobs.d");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let mut text = String::from("id: load\ntype: noop\noverlap: allow\n---\n");
    for i in 0..jobs {
        text.push_str(&format!(
            "id: job-{i:04}\ntype: noop\nschedule: {{every: 5s}}\n---\n"
        ));
    }
    std::fs::write(jobs_dir.join("jobs.yaml"), text).unwrap();
    let daemon = Daemon::start_env(tmp.path(), &["--workers", "8"], &[]);
    assert!(wait_for(
        || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(30)
    ));
    std::thread::sleep(Duration::from_secs(1));
    // Runs keep flowing while the API is measured: the scheduled jobs
    // (~200 runs/s at full size) plus a backlog of manual runs.
    let trig = Command::new(bin())
        .args([
            "trigger",
            "load",
            "--count",
            &(events * 10).to_string(),
            "--dir",
        ])
        .arg(tmp.path())
        .output()
        .expect("trigger");
    assert!(trig.status.success());
    let mut jobs_lat = hammer(&daemon.url, &["/api/v1/jobs?limit=1000"], conns, secs);
    let mut runs_lat = hammer(&daemon.url, &["/api/v1/runs?limit=100"], conns, secs);
    let full = scale == Scale::Full;
    let jobs_name = format!("/api/v1/jobs ({jobs} jobs)");
    for (name, lat) in [
        (jobs_name.as_str(), &mut jobs_lat),
        ("/api/v1/runs", &mut runs_lat),
    ] {
        latency_figures(&format!("{name}, {conns} connections"), lat, secs, out);
    }

    // SSE fan-out: every client must see every new run.completed event.
    let url = daemon.url.clone();
    let host = url.trim_start_matches("http://").to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..sse_clients)
        .map(|_| {
            let host = host.clone();
            let ready = ready_tx.clone();
            std::thread::spawn(move || sse_client(&host, events, &ready))
        })
        .collect();
    for _ in 0..sse_clients {
        let _ = ready_rx.recv_timeout(Duration::from_secs(30));
    }
    // Let the earlier backlog finish so the counted events are the new ones.
    wait_for(
        || {
            daemon
                .get("/api/v1/status")
                .is_some_and(|v| v["queue_depth"] == 0 && v["running"] == 0)
        },
        Duration::from_secs(120),
    );
    let t0 = Instant::now();
    let trig = Command::new(bin())
        .args(["trigger", "load", "--count", &events.to_string(), "--dir"])
        .arg(tmp.path())
        .output()
        .expect("trigger");
    assert!(trig.status.success());
    let results: Vec<(u64, f64)> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or((0, 0.0)))
        .collect();
    let complete = results.iter().filter(|(n, _)| *n >= events).count();
    out.push(Figure {
        scenario: "api",
        name: format!("SSE: clients that got all {events} events (of {sse_clients})"),
        value: complete as f64,
        unit: "clients",
        target: full.then_some((">=", sse_clients as f64)),
    });
    out.push(Figure {
        scenario: "api",
        name: format!("SSE: {events} events to {sse_clients} clients, wall"),
        value: t0.elapsed().as_secs_f64(),
        unit: "s",
        target: None,
    });
}

/// A local HTTP sink counting POSTs, on 127.0.0.1:0 (its own threads).
fn start_sink() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    // One keep-alive connection may carry many requests.
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
                    if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

fn scenario_workflow(scale: Scale, out: &mut Vec<Figure>) {
    let (messages, runs_of_100) = match scale {
        Scale::Full => (10_000u64, 20u64),
        Scale::Small => (300u64, 3u64),
    };
    let (sink, received) = start_sink();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("jobs.d")).unwrap();
    let mut steps = String::new();
    for i in 0..100 {
        steps.push_str(&format!("  - id: s{i}\n    set: {{n: {i}}}\n"));
    }
    std::fs::write(
        tmp.path().join("jobs.d/w.yaml"),
        format!(
            "kind: Connector\nid: sink\nprovider: webhook\nbase_url: {sink}/hook\n---\nid: blast\ntype: agent.workflow\ntimeout_ms: 3600000\ninputs: {{n: {messages}}}\nsteps:\n  - id: send\n    foreach: \"{{{{ range(inputs.n) | list }}}}\"\n    concurrency: 32\n    message: {{connector: sink, text: \"offer {{{{ item }}}}\"}}\n---\nid: hundred\ntype: agent.workflow\noverlap: allow\nsteps:\n{steps}"
        ),
    )
    .unwrap();
    let daemon = Daemon::start_env(tmp.path(), &["--workers", "4"], &[]);
    assert!(wait_for(
        || daemon.get("/readyz").is_some_and(|v| v["ready"] == true),
        Duration::from_secs(30)
    ));
    let start = Instant::now();
    let trig = Command::new(bin())
        .args(["trigger", "blast", "--dir"])
        .arg(tmp.path())
        .output()
        .expect("trigger");
    assert!(trig.status.success());
    let mut peak = 0.0f64;
    let ok = wait_for(
        || {
            peak = peak.max(rss_of(daemon.child.id()).1);
            received.load(std::sync::atomic::Ordering::Relaxed) >= messages
        },
        Duration::from_secs(600),
    );
    let wall = start.elapsed().as_secs_f64();
    assert!(ok, "not every message arrived");
    out.push(Figure {
        scenario: "workflow",
        name: format!("messages/s through one webhook connector ({messages}, concurrency 32)"),
        value: messages as f64 / wall,
        unit: "1/s",
        target: None,
    });
    out.push(Figure {
        scenario: "workflow",
        name: "daemon peak RSS while sending".into(),
        value: peak,
        unit: "MB",
        target: None,
    });
    // Engine overhead: a 100-step workflow of `set` steps, run N times.
    let trig = Command::new(bin())
        .args([
            "trigger",
            "hundred",
            "--count",
            &runs_of_100.to_string(),
            "--dir",
        ])
        .arg(tmp.path())
        .output()
        .expect("trigger");
    assert!(trig.status.success());
    let done = wait_for(
        || {
            daemon
                .get("/api/v1/runs?job=hundred&status=succeeded&limit=1000")
                .and_then(|v| v["items"].as_array().map(|a| a.len() as u64))
                == Some(runs_of_100)
        },
        Duration::from_secs(300),
    );
    assert!(done, "100-step runs did not finish");
    let runs = daemon
        .get("/api/v1/runs?job=hundred&limit=1000")
        .unwrap_or_default();
    // Durations are whole milliseconds: average over all runs.
    let durations: Vec<f64> = runs["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["duration_ms"].as_f64()).collect())
        .unwrap_or_default();
    let mean_ms = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    out.push(Figure {
        scenario: "workflow",
        name: format!(
            "workflow engine overhead per step (100 set steps, mean of {runs_of_100} runs)"
        ),
        value: mean_ms * 1000.0 / 100.0,
        unit: "µs",
        target: None,
    });
}

type Scenario = (&'static str, fn(Scale, &mut Vec<Figure>));

const SCENARIOS: [Scenario; 16] = [
    ("validate", scenario_validate),
    ("plan", scenario_plan),
    ("reload", scenario_reload),
    ("rss", scenario_rss),
    ("lateness", scenario_lateness),
    ("throughput", scenario_throughput),
    ("api", scenario_api),
    ("workflow", scenario_workflow),
    ("redis", redis::scenario),
    ("latency", latency::scenario),
    ("enqueue", enqueue::scenario),
    ("inbound", inbound::scenario),
    ("simulate", simulate::scenario),
    ("otlp", otlp::scenario),
    ("notices", notices::scenario),
    ("fanout", fanout::scenario),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench: full size. `cargo test --bench
    // scenarios` (CI) does not: the seconds-long smoke.
    let mut scale = if args.iter().any(|a| a == "--bench") {
        Scale::Full
    } else {
        Scale::Small
    };
    let mut only: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--scale" => {
                i += 1;
                scale = match args.get(i).map(String::as_str) {
                    Some("small") => Scale::Small,
                    Some("full") | None => Scale::Full,
                    Some(other) => panic!("--scale small|full, not {other}"),
                };
            }
            "--only" => {
                i += 1;
                only.extend(
                    args.get(i)
                        .into_iter()
                        .flat_map(|s| s.split(','))
                        .map(str::to_string),
                );
            }
            // cargo passes --bench; ignore anything else it adds.
            _ => {}
        }
        i += 1;
    }
    let mut figures = Vec::new();
    for (name, run) in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("scenario {name}...");
        run(scale, &mut figures);
    }
    println!(
        "{:<60} {:>12} {:<5} {:>10} {:>6}",
        "figure", "value", "unit", "target", "pass"
    );
    for f in &figures {
        let target = f
            .target
            .map(|(c, t)| format!("{c} {t}"))
            .unwrap_or_else(|| "-".into());
        let pass = match f.pass() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!(
            "{:<60} {:>12.3} {:<5} {:>10} {:>6}",
            f.name, f.value, f.unit, target, pass
        );
    }
    let json: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            serde_json::json!({
                "scenario": f.scenario, "figure": f.name, "value": f.value, "unit": f.unit,
                "target": f.target.map(|(c, t)| format!("{c} {t}")), "pass": f.pass(),
            })
        })
        .collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.json");
    if let Err(e) = std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        eprintln!("could not write {}: {e}", path.display());
    } else {
        eprintln!("wrote {}", path.display());
    }
}

/// The daemons' and workers' `RUST_LOG`: what a user gets (`info`, one
/// line per finished run) unless `BENCH_RUST_LOG` says otherwise, so the
/// figures include the cost of the log a user reads.
fn daemon_log_filter() -> String {
    std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".to_string())
}
