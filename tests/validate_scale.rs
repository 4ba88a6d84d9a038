//! `multijob validate` on large generated directories: `uses` chains and
//! loops of thousands of skills, and thousands of duplicate ids, are
//! checked in time linear in their size.
//!
//! Time is the child's CPU time (user + system), which a machine busy
//! with other builds barely changes; the bounds compare a size with its
//! double (or four times it), so a quadratic or cubic cost fails them by
//! far while a linear one passes with room to spare. A run is killed after `WALL_LIMIT`, so a
//! regression fails instead of hanging.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::ConfigDir;

const WALL_LIMIT: Duration = Duration::from_secs(90);

struct Timed {
    code: Option<i32>,
    cpu: Duration,
    stdout: String,
}

/// CPU time (user + system) of this process's children that ended.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One child at a time, so the growth of `children_cpu` is that child's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `multijob validate --dir <d>`, its exit code, CPU time and stdout.
fn validate_timed(d: &ConfigDir) -> Timed {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out_path = d.path().join("validate.out");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let before = children_cpu();
    let mut child = std::process::Command::new(common::bin())
        .args(["validate", "--dir"])
        .arg(d.path())
        .env_remove("MULTIJOB_DIR")
        .stdout(out)
        .spawn()
        .expect("spawn multijob");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > WALL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("validate still ran after {WALL_LIMIT:?} on {}", d.listing());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Timed {
        code: status.code(),
        cpu: children_cpu() - before,
        stdout: std::fs::read_to_string(&out_path).expect("read stdout"),
    }
}

/// The run on `factor` times the size costs at most 1.5 times `factor`
/// as much, plus slack for the fixed start-up cost: a linear cost grows
/// by `factor`, a quadratic one by its square.
#[track_caller]
fn assert_linear(small: &Timed, large: &Timed, factor: u32, what: &str) {
    let bound = small.cpu * factor * 3 / 2 + Duration::from_millis(300);
    eprintln!(
        "{what}: {:?} CPU, then {:?} at {factor} times the size",
        small.cpu, large.cpu
    );
    assert!(
        large.cpu < bound,
        "{what}: {:?} CPU at {factor} times the size vs {:?}: grows faster than linear",
        large.cpu,
        small.cpu
    );
}

/// Skills `s0000`.. in one file; `uses(i)` names the skill step `i` uses.
fn skills_dir(n: usize, uses: impl Fn(usize) -> Option<usize>) -> ConfigDir {
    let mut text = String::new();
    for i in 0..n {
        let _ = write!(text, "---\nkind: Skill\nid: s{i:04}\nsteps:\n");
        match uses(i) {
            Some(t) => {
                let _ = writeln!(text, "  - id: a\n    uses: s{t:04}");
            }
            None => text.push_str("  - id: a\n    set: {x: 1}\n"),
        }
    }
    let d = ConfigDir::new();
    d.write("skills.d/all.yaml", &text);
    d
}

fn lines_with<'a>(out: &'a str, text: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(text)).collect()
}

#[test]
fn a_2000_skill_uses_chain_is_rejected_for_its_depth_in_linear_time() {
    // Every run of it fails with "nests deeper than 10"; it validated, and
    // the check cost the cube of the chain's length.
    let chain = |n: usize| skills_dir(n, move |i| (i + 1 < n).then_some(i + 1));
    let small = validate_timed(&chain(1000));
    let large = validate_timed(&chain(2000));
    assert_eq!(large.code, Some(1), "{}", large.stdout);
    let errors = lines_with(&large.stdout, "error[");
    assert_eq!(
        errors,
        [
            "skills.d/all.yaml:6:11: error[uses-depth] Skill s0000: `uses` nests deeper than 10, \
          the limit at run time: s0000 → s0001 → s0002 → s0003 → … → s1999 is 2000 skills deep; \
          flatten the chain"
        ],
        "{}",
        large.stdout
    );
    assert_linear(&small, &large, 2, "uses chain");
}

#[test]
fn a_2000_skill_uses_loop_is_one_error_in_linear_time() {
    let ring = |n: usize| skills_dir(n, move |i| Some((i + 1) % n));
    let small = validate_timed(&ring(1000));
    let large = validate_timed(&ring(2000));
    assert_eq!(large.code, Some(1), "{}", large.stdout);
    let errors = lines_with(&large.stdout, "error[");
    assert_eq!(
        errors,
        [
            "skills.d/all.yaml:6:11: error[uses-cycle] Skill s0000: `uses` forms a cycle: \
          s0000 → s0001 → s0002 → s0003 → … → s1999 → s0000 (a loop of 2000 skills)"
        ],
        "{}",
        large.stdout
    );
    assert_linear(&small, &large, 2, "uses loop");
}

#[test]
fn two_thousand_skills_in_chains_as_deep_as_the_limit_are_valid() {
    // 200 chains of 10: a job's `uses` of each chain's head runs.
    let d = skills_dir(2000, |i| (i % 10 != 9).then_some(i + 1));
    let r = validate_timed(&d);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("valid: 0 jobs, 0 flows, 0 connectors, 2000 skills, 0 triggers in 1 file"),
        "{}",
        r.stdout
    );
    // One longer chain among them is one error, at its head.
    let d = skills_dir(2000, |i| (i % 10 != 9 || i == 1009).then_some(i + 1));
    let r = validate_timed(&d);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    let errors = lines_with(&r.stdout, "error[");
    assert_eq!(errors.len(), 1, "{}", r.stdout);
    assert!(
        errors[0].contains("Skill s1000: `uses` nests deeper than 10")
            && errors[0].contains("s1000 → s1001 → s1002 → s1003 → … → s1019 is 20 skills deep"),
        "{}",
        r.stdout
    );
}

#[test]
fn twenty_thousand_duplicate_ids_are_reported_in_linear_time() {
    // Each finding's excerpt looked its line up from the top of the file.
    let same = |n: usize| {
        let text: String = (0..n).map(|_| "---\nid: same\ntype: noop\n").collect();
        let d = ConfigDir::new();
        d.write("jobs.d/a.yaml", &text);
        d
    };
    let small = validate_timed(&same(10_000));
    let large = validate_timed(&same(20_000));
    assert_eq!(large.code, Some(1));
    let dups = lines_with(&large.stdout, "error[duplicate-id] Job same:");
    assert_eq!(dups.len(), 19_999);
    assert_eq!(
        dups[19_998],
        "jobs.d/a.yaml:59999:5: error[duplicate-id] Job same: Job id `same` is already defined at jobs.d/a.yaml:2"
    );
    assert!(
        large
            .stdout
            .contains("  59999 | id: same\n        |     ^\n"),
        "the last excerpt is missing"
    );
    assert_linear(&small, &large, 2, "duplicate ids");
}

#[test]
fn thousands_of_findings_on_one_long_line_are_reported_in_linear_time() {
    // Minified JSON: every excerpt split the whole line into chars again.
    let minified = |n: usize| {
        let steps: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({"id": format!("s{i}"), "set": {"x": 1}, "bogus": 1}))
            .collect();
        let job = serde_json::json!({"id": "a", "type": "agent.workflow", "steps": steps});
        let d = ConfigDir::new();
        d.write("jobs.d/a.json", &job.to_string());
        d
    };
    let small = validate_timed(&minified(1000));
    let large = validate_timed(&minified(4000));
    assert_eq!(large.code, Some(1));
    let errors = lines_with(&large.stdout, "error[schema] Job a:");
    assert_eq!(errors.len(), 4000, "{}", large.stdout);
    assert!(errors.iter().all(|l| l.contains("unknown key `bogus`")));
    // Each excerpt is clipped around its column.
    assert!(
        large.stdout.lines().all(|l| l.chars().count() < 200),
        "an excerpt is not clipped"
    );
    assert_linear(&small, &large, 4, "findings on one line");
}

#[test]
fn many_uses_of_a_skill_with_large_params_are_checked_in_linear_time() {
    // Each `uses` step compiled the skill's params schema again.
    let dir = |n: usize| {
        let properties: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                (
                    format!("p{i}"),
                    serde_json::json!({"type": "string", "pattern": "^[a-z]+$"}),
                )
            })
            .collect();
        let skill = serde_json::json!({
            "kind": "Skill", "id": "sk",
            "params": {"type": "object", "properties": properties},
            "steps": [{"id": "a", "set": {"x": 1}}],
        });
        let mut job = String::from("id: a\ntype: agent.workflow\nsteps:\n");
        for i in 0..n {
            let _ = writeln!(job, "  - id: u{i}\n    uses: sk\n    with: {{p0: abc}}");
        }
        let d = ConfigDir::new();
        d.write("skills.d/sk.json", &skill.to_string());
        d.write("jobs.d/a.yaml", &job);
        d
    };
    let small = validate_timed(&dir(250));
    let large = validate_timed(&dir(1000));
    assert_eq!(large.code, Some(0), "{}", large.stdout);
    assert_linear(&small, &large, 4, "uses of a skill with params");
    // A `with` that does not match is still reported, at its step.
    let d = dir(3);
    let job = std::fs::read_to_string(d.path().join("jobs.d/a.yaml")).expect("job");
    d.write("jobs.d/a.yaml", &job.replacen("{p0: abc}", "{p0: ABC}", 1));
    let r = validate_timed(&d);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "jobs.d/a.yaml:6:16: error[params] Job a: `with` does not match skill `sk` params"
        ),
        "{}",
        r.stdout
    );
}
