//! What a template ends with is what is written, against the real binary:
//! minijinja drops one trailing newline by default, and the workflow
//! engine's templates must not (#21).

mod common;

use common::{ConfigDir, Daemon};
use serde_json::Value;

/// Queue a run of `job`; its id.
fn trigger(d: &ConfigDir, job: &str) -> String {
    let r = d.run(&["trigger", job]);
    r.assert_code(0);
    r.stdout()
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no run id\n{}", r.explain()))
        .to_string()
}

/// Regression (#21): `content: "{{ run.id }} {{ now }}\n"` in a `files`
/// write wrote the text without its newline.
#[test]
fn a_files_write_keeps_the_trailing_newlines_its_content_ends_with() {
    let d = ConfigDir::new();
    // Text with a newline, one `{{ expr }}` with two, and a YAML block
    // scalar (which ends in one).
    d.write(
        "jobs.d/stamp.yaml",
        "id: stamp\ntype: agent.workflow\nsteps:\n  \
         - id: one\n    files: {write: one.txt, content: \"{{ run.id }} {{ now }}\\n\"}\n  \
         - id: two\n    files: {write: two.txt, content: \"{{ run.id }}\\n\\n\"}\n  \
         - id: three\n    files:\n      write: three.txt\n      content: |\n        \
         run {{ run.id }}\n        {% if true %}done{% endif %}\n",
    );
    d.run(&["validate"]).assert_code(0);
    let daemon = Daemon::start(d.path(), &[]);
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    daemon.wait_until("/api/v1/jobs/stamp", "job stamp", |v| v["id"] == "stamp");

    let id = trigger(&d, "stamp");
    let run: Value = daemon.wait_until(&format!("/api/v1/runs/{id}"), "the run to end", |v| {
        matches!(
            v["status"].as_str(),
            Some("succeeded" | "failed" | "timed_out")
        )
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");

    let data = d.path().join(".multijob/data");
    let read = |name: &str| {
        std::fs::read_to_string(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", d.listing()))
    };
    let one = read("one.txt");
    assert!(
        one.starts_with(&format!("{id} ")) && one.ends_with('\n') && !one.ends_with("\n\n"),
        "one.txt: {one:?}"
    );
    assert_eq!(one.matches('\n').count(), 1, "one.txt: {one:?}");
    assert_eq!(read("two.txt"), format!("{id}\n\n"));
    assert_eq!(read("three.txt"), format!("run {id}\ndone\n"));
}
