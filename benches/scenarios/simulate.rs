//! Scenario: `multijob simulate --for 24h` over 10,000 jobs, at the
//! defaults (5 workers).
//! - the generated directory the validate/plan scenarios use (a third
//!   every 1-300 s, a third cron every 5 minutes in Europe/Berlin, a
//!   third every 60-119 s with jitter; a quarter in a lane of 5): ~10
//!   million slots; wall and peak RSS, including loading the directory;
//! - the seeds' load script at 100x (`--jobs 10000 --interval 30s
//!   --work-ms 8000 --jitter 25s`): 28.8 million slots, wall.
//!
//! Each run simulates twice (the asked workers and unlimited, for the
//! recommendation), on two threads.

use std::process::Command;

use super::{Figure, Scale, bin, generate, measure};

pub fn scenario(scale: Scale, out: &mut Vec<Figure>) {
    let (jobs, files, period) = match scale {
        Scale::Full => (10_000, 1_000, "24h"),
        Scale::Small => (500, 50, "1h"),
    };
    let full = scale == Scale::Full;
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(tmp.path(), jobs, files);
    let (wall, rss, ok) = measure(
        Command::new(bin())
            .args([
                "simulate",
                "-o",
                "json",
                "--from",
                "2026-12-07T00:00:00Z",
                "--for",
                period,
                "--dir",
            ])
            .arg(tmp.path()),
    );
    assert!(ok, "simulate failed on the generated config");
    out.push(Figure {
        scenario: "simulate",
        name: format!("simulate --for {period}, {jobs} generated jobs, wall"),
        value: wall.as_secs_f64(),
        unit: "s",
        target: full.then_some(("<=", 10.0)),
    });
    out.push(Figure {
        scenario: "simulate",
        name: format!("simulate --for {period}, {jobs} generated jobs, peak RSS"),
        value: rss,
        unit: "MB",
        target: None,
    });
    let n = jobs.to_string();
    let (wall, _, ok) = measure(Command::new(bin()).args([
        "simulate",
        "-o",
        "json",
        "--from",
        "2026-12-07T00:00:00Z",
        "--for",
        period,
        "--jobs",
        &n,
        "--interval",
        "30s",
        "--work-ms",
        "8000",
        "--jitter",
        "25s",
    ]));
    assert!(ok, "simulate --jobs failed");
    out.push(Figure {
        scenario: "simulate",
        name: format!("simulate --for {period}, --jobs {n} every 30 s (seeds' script), wall"),
        value: wall.as_secs_f64(),
        unit: "s",
        target: full.then_some(("<=", 10.0)),
    });
}
