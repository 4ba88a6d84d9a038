//! `multijob validate`: one test per check of SPEC section 2, each with a
//! fixture that breaks it, asserting exit 1 and the exact file:line.

mod common;

use common::ConfigDir;

fn dir_with(file: &str, text: &str) -> ConfigDir {
    let d = ConfigDir::new();
    d.write(file, text);
    d
}

#[test]
fn a_clean_directory_is_valid() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule: {every: 5s}\n---\nkind: Flow\nid: lane\nmax_active_runs: 2\n",
    );
    d.run(&["validate"]).assert_code(0).assert_line(
        "valid:",
        "1 job, 1 flow, 0 connectors, 0 skills, 0 triggers in 1 file, 0 warnings",
    );
}

#[test]
fn unknown_key_points_at_the_key_with_a_suggestion() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedul:\n  every: 5s\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:3:1: error[schema] Job a:",
        "unknown key `schedul` (did you mean `schedule`?)",
    );
}

#[test]
fn nested_schema_error_points_at_the_nested_line() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "kind: Job\nid: a\ntype: agent.workflow\nsteps:\n  - id: fetch\n    http:\n      url: http://x\n      methd: GET\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:8:7: error[schema] Job a:",
        "unknown key `methd`",
    );
}

#[test]
fn bad_enum_value_lists_the_allowed_ones() {
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: noop\npriority: urgent\n");
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:3:11: error[schema] Job a:",
        "\"urgent\" is not one of: critical, high, normal, low",
    );
}

#[test]
fn unknown_job_type_is_rejected() {
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: shell\n");
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:2:7: error[schema] Job a:",
        "\"shell\" is not one of",
    );
}

#[test]
fn invalid_id_is_rejected() {
    let d = dir_with("jobs.d/a.yaml", "id: -bad id\ntype: noop\n");
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:1:5: error[schema]", "invalid id");
}

#[test]
fn duplicate_ids_name_both_places() {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", "id: same\ntype: noop\n");
    d.write("jobs.d/b.yaml", "# second\n\nid: same\ntype: noop\n");
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/b.yaml:3:5: error[duplicate-id] Job same:",
        "already defined at jobs.d/a.yaml:1",
    );
}

#[test]
fn same_id_in_different_kinds_is_fine() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: ops\ntype: noop\nflow: ops\n---\nkind: Flow\nid: ops\n",
    );
    d.run(&["validate"]).assert_code(0);
}

#[test]
fn undeclared_flow_is_an_implicit_lane_with_a_warning() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nflow: team\ninputs: {flow_max_active_runs: 2}\n",
    );
    d.run(&["validate"]).assert_code(0).assert_line(
        "jobs.d/a.yaml:3:1: warning[implicit-flow] Job a:",
        "max_active_runs 2 from inputs.flow_max_active_runs",
    );
}

#[test]
fn missing_connector_reference() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: tell\n    message:\n      connector: nowhere\n      text: hi\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:6:18: error[reference] Job a:",
        "no Connector `nowhere`",
    );
}

#[test]
fn connector_of_the_wrong_provider() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "kind: Connector\nid: tg\nprovider: telegram\nbase_url: http://127.0.0.1:9\n---\nid: a\ntype: agent.workflow\nsteps:\n  - id: think\n    llm: {connector: tg, prompt: hi}\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:10:22: error[reference] Job a:",
        "is a telegram connector and cannot serve a `llm` step",
    );
}

#[test]
fn missing_skill_reference() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: s\n    uses: nope\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:5:11: error[reference] Job a:",
        "no Skill `nope`",
    );
}

#[test]
fn missing_schedule_job_target() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: later\n    schedule_job: {job: ghost, delay_sec: 60}\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:5:25: error[reference] Job a:",
        "no Job `ghost`",
    );
}

#[test]
fn black_friday_cron_day_of_week_out_of_range() {
    let d = dir_with(
        "jobs.d/bf.yaml",
        "id: bf\ntype: noop\nschedule:\n  cron: \"0 9 * * 11-24\"\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/bf.yaml:4:9: error[schedule] Job bf:", "day-of-week");
}

#[test]
fn cron_syntax_error() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule: {cron: \"61 * * * *\"}\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:3:18: error[schedule] Job a:", "minute");
}

#[test]
fn unknown_timezone() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule:\n  cron: \"0 7 * * *\"\n  timezone: Asia/Jakartaa\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:5:13: error[schedule] Job a:",
        "Asia/Jakartaa",
    );
}

#[test]
fn schedule_needs_exactly_one_kind() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule:\n  every: 5s\n  cron: \"* * * * *\"\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:4:3: error[schedule] Job a:", "");
}

#[test]
fn template_syntax_error_points_at_its_line() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: s\n    set:\n      note: |\n        first line\n        {{ inputs.x + }}\n        last\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:8:9: error[template] Job a:",
        "template does not compile",
    );
}

#[test]
fn template_reading_a_later_step_is_rejected() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: first\n    set: {x: \"{{ steps.second.output }}\"}\n  - id: second\n    set: {y: 1}\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:5:14: error[template] Job a:",
        "`steps.second`: no step runs before this one",
    );
}

#[test]
fn template_cannot_read_env() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: s\n    set: {x: \"{{ env.HOME }}\"}\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:5:14: error[template]", "unknown name `env`");
}

const SKILL: &str = "kind: Skill\nid: brief\nparams:\n  type: object\n  required: [topic]\n  properties:\n    topic: {type: string}\n    words: {type: integer}\nsteps:\n  - id: out\n    set: {t: \"{{ inputs.topic }}\"}\n";

#[test]
fn skill_with_must_match_params() {
    let d = ConfigDir::new();
    d.write("skills.d/brief.yaml", SKILL);
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: s\n    uses: brief\n    with:\n      words: many\n",
    );
    let run = d.run(&["validate"]);
    run.assert_code(1)
        .assert_line(
            "jobs.d/a.yaml:7:14: error[params] Job a:",
            "\"many\" is not of type",
        )
        .assert_line(
            "jobs.d/a.yaml:6:5: error[params] Job a:",
            "\"topic\" is a required property",
        );
}

#[test]
fn skill_with_templates_are_checked_at_run_time() {
    let d = ConfigDir::new();
    d.write("skills.d/brief.yaml", SKILL);
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\ninputs: {t: x}\nsteps:\n  - id: s\n    uses: brief\n    with:\n      topic: \"{{ inputs.t }}\"\n      words: \"{{ 3 }}\"\n",
    );
    d.run(&["validate"]).assert_code(0);
}

#[test]
fn uses_cycles_are_rejected() {
    let d = ConfigDir::new();
    d.write(
        "skills.d/loop.yaml",
        "kind: Skill\nid: one\nsteps:\n  - id: a\n    uses: two\n---\nkind: Skill\nid: two\nsteps:\n  - id: b\n    uses: one\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "skills.d/loop.yaml:5:11: error[uses-cycle] Skill one:",
        "one → two → one",
    );
}

#[test]
fn literal_secrets_are_rejected_without_echoing_them() {
    let d = dir_with(
        "jobs.d/c.yaml",
        "kind: Connector\nid: tg\nprovider: telegram\nsecrets:\n  bot_token: 123456789:AAsupersecretvalue\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line(
            "jobs.d/c.yaml:5:14: error[literal-secret] Connector tg:",
            "secrets never live in git",
        )
        .assert_stdout_lacks("AAsupersecretvalue");
}

#[test]
fn a_literal_secret_of_any_type_is_reported_and_never_echoed_even_beside_other_errors() {
    // A number or a list used to be quoted by the schema message and its
    // excerpt; a string one was not reported when the connector had
    // another error (here a misspelt provider).
    let d = dir_with(
        "jobs.d/c.yaml",
        "kind: Connector\nid: tg\nprovider: telegramm\nsecrets:\n  bot_token: 1234567890\n  key: AAsupersecretvalue\n  list: [listsecret42]\n  ok: ${env:TG_TOKEN}\n",
    );
    let r = d.run(&["validate"]);
    r.assert_code(1)
        .assert_line(
            "jobs.d/c.yaml:3:11: error[schema] Connector tg:",
            "telegramm",
        )
        .assert_line(
            "jobs.d/c.yaml:5:14: error[literal-secret] Connector tg:",
            "`bot_token`",
        )
        .assert_line(
            "jobs.d/c.yaml:6:8: error[literal-secret] Connector tg:",
            "`key`",
        )
        .assert_line(
            "jobs.d/c.yaml:7:9: error[literal-secret] Connector tg:",
            "`list`",
        )
        .assert_stdout_lacks("1234567890")
        .assert_stdout_lacks("AAsupersecretvalue")
        .assert_stdout_lacks("listsecret42");
    let json = d.run(&["validate", "--output", "json"]);
    for secret in ["1234567890", "AAsupersecretvalue", "listsecret42"] {
        assert!(!json.stdout().contains(secret), "{}", json.stdout());
    }
}

#[test]
fn step_needs_exactly_one_action() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: two\n    set: {a: 1}\n    kv: {get: k}\n  - id: none\n    when: \"true\"\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line(
            "jobs.d/a.yaml:5:5: error[step-action] Job a:",
            "2 actions (kv, set)",
        )
        .assert_line("jobs.d/a.yaml:7:5: error[step-action] Job a:", "no action");
}

#[test]
fn steps_on_a_non_workflow_job() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nsteps:\n  - id: s\n    set: {a: 1}\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:3:1: error[steps] Job a:",
        "only in agent.workflow",
    );
}

#[test]
fn tools_policy_forbids_an_action_used_by_a_step() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\ntools: {deny: [kv]}\nsteps:\n  - id: s\n    kv: {get: k}\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:6:5: error[tools] Job a:", "does not allow");
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: noop\nschedule: {every: 5s\n");
    let run = d.run(&["validate"]);
    run.assert_code(1);
    assert!(
        run.stdout()
            .lines()
            .any(|l| l.starts_with("jobs.d/a.yaml:") && l.contains("error[syntax]")),
        "{}",
        run.explain()
    );
}

#[test]
fn duplicate_yaml_keys_are_errors() {
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: noop\ntype: noop\n");
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:3:1: error[syntax]", "duplicate key `type`");
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", "id: a\ntype: noop\npriority: urgent\n");
    d.write(
        "jobs.d/b.yaml",
        "id: b\ntype: noop\nschedule: {cron: \"0 9 * * 11-24\"}\n",
    );
    d.write("jobs.d/c.yaml", "id: c\ntype: nope\n");
    let run = d.run(&["validate"]);
    run.assert_code(1).assert_line("invalid:", "3 errors");
}

#[test]
fn json_output_has_the_documented_fields() {
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: noop\npriority: urgent\n");
    let run = d.run(&["validate", "--output", "json"]);
    run.assert_code(1);
    let v = run.json();
    let first = &v[0];
    for field in [
        "file", "line", "column", "kind", "id", "severity", "code", "message", "pointer",
    ] {
        assert!(first.get(field).is_some(), "missing {field}: {v}");
    }
    assert_eq!(first["file"], "jobs.d/a.yaml");
    assert_eq!(first["line"], 3);
    assert_eq!(first["kind"], "Job");
    assert_eq!(first["id"], "a");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["pointer"], "/priority");
}

#[test]
fn hidden_files_and_keys_are_ignored() {
    let d = ConfigDir::new();
    d.write("jobs.d/_draft.yaml", "this is: [not valid\n");
    d.write("jobs.d/.hidden/x.yaml", "nor: {this\n");
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\n_note: free text\n.x: 1\n",
    );
    d.run(&["validate"]).assert_code(0);
}

#[test]
fn seed_aliases_warn_with_the_preferred_spelling() {
    let d = dir_with(
        "jobs.d/seed.json",
        "{\n  \"job_id\": \"monitor-247\",\n  \"type\": \"monitor.channel\",\n  \"schedule\": {\"interval_sec\": 30},\n  \"failure_threshold\": 5\n}\n",
    );
    d.run(&["validate"])
        .assert_code(0)
        .assert_line("jobs.d/seed.json:2:3: warning[alias]", "write `id`")
        .assert_line(
            "jobs.d/seed.json:5:3: warning[alias]",
            "write `failure_memory: {threshold: ...}`",
        );
}

#[test]
fn missing_directory_is_a_clear_error() {
    let run = common::run(
        &[
            "validate".into(),
            "--dir".into(),
            "/nonexistent/multijob".into(),
        ],
        None,
    );
    run.assert_code(1);
    assert!(
        run.stderr().contains("no such directory"),
        "{}",
        run.explain()
    );
}

#[test]
fn every_seed_job_spec_validates_except_black_friday() {
    let seeds = common::repo().join("tests/fixtures/seeds");
    let mut count = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        count += 1;
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let d = ConfigDir::new();
        d.write(
            &format!("jobs.d/{name}"),
            &std::fs::read_to_string(&path).unwrap(),
        );
        let run = d.run(&["validate"]);
        if name.contains("black-friday") {
            run.assert_code(1).assert_line(
                &format!("jobs.d/{name}:"),
                "error[schedule] Job black-friday-campaign-2026: day-of-week",
            );
        } else {
            run.assert_code(0)
                .assert_line(&format!("jobs.d/{name}:"), "warning[alias]");
        }
    }
    assert!(count >= 20, "expected the seed fixtures, found {count}");
}

#[test]
fn every_example_and_the_bundled_demo_validate() {
    let root = common::repo();
    let mut dirs = vec![root.clone()];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    assert!(dirs.len() >= 3, "examples missing: {dirs:?}");
    for dir in dirs {
        let run = common::run(
            &["validate".into(), "--dir".into(), dir.display().to_string()],
            Some(&dir),
        );
        run.assert_code(0);
        // A dated campaign's window ends as the calendar moves on; that
        // warning is about today, not about the spelling.
        assert!(
            !run.stdout()
                .lines()
                .any(|l| l.contains("warning[") && !l.contains("warning[schedule-ended]")),
            "examples use the preferred spellings; warnings found:\n{}",
            run.explain()
        );
    }
}

#[test]
fn schema_out_writes_the_checked_in_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let run = common::run(
        &[
            "schema".into(),
            "--out".into(),
            tmp.path().display().to_string(),
        ],
        None,
    );
    run.assert_code(0);
    for kind in ["job", "flow", "connector", "skill"] {
        let name = format!("{kind}.schema.json");
        let written = std::fs::read_to_string(tmp.path().join(&name)).unwrap();
        let checked_in =
            std::fs::read_to_string(common::repo().join("schemas").join(&name)).unwrap();
        assert_eq!(written, checked_in, "{name} differs from schemas/");
    }
    let printed = common::run(&["schema".into()], None);
    printed.assert_code(0);
    assert!(printed.json()["Job"]["$schema"].is_string());
}

#[test]
fn init_scaffolds_a_directory_that_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("ops");
    let run = common::run(&["init".into(), target.display().to_string()], None);
    run.assert_code(0);
    assert!(
        target.join("jobs.d/heartbeat.yaml").is_file(),
        "{}",
        run.explain()
    );
    assert!(target.join("schemas/job.schema.json").is_file());
    let v = common::run(
        &[
            "validate".into(),
            "--dir".into(),
            target.display().to_string(),
        ],
        Some(&target),
    );
    v.assert_code(0);
    // A second init keeps what exists.
    std::fs::write(
        target.join("jobs.d/heartbeat.yaml"),
        "id: mine\ntype: noop\n",
    )
    .unwrap();
    let again = common::run(&["init".into(), target.display().to_string()], None);
    again.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(target.join("jobs.d/heartbeat.yaml")).unwrap(),
        "id: mine\ntype: noop\n"
    );
}

#[test]
fn a_metric_label_that_is_not_a_prometheus_name_is_rejected() {
    // One such label would make scrapers reject the daemon's whole /metrics.
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: m\n    metric:\n      name: orders\n      value: 1\n      labels:\n        shop_id: main\n        bad-key: x\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:10:9: error[schema] Job a:",
        "label `bad-key` is not a Prometheus label name",
    );
    let ok = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: m\n    metric:\n      name: orders\n      value: 1\n      labels: {shop_id: main, _x: y}\n",
    );
    ok.run(&["validate"]).assert_code(0);
}

#[test]
fn a_backoff_longer_than_30_days_is_rejected() {
    // 1e300 seconds used to pass and then panic in the daemon's retry path.
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nretry_policy:\n  max_retry: 2\n  backoff_sec: [1, 1e300]\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:5:", "2592000");
}

#[test]
fn a_usage_error_exits_1_not_2_which_means_changes() {
    // `plan --detailed-exitcode || test $? -eq 2` must not pass on a typo.
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: noop\n");
    d.run(&["plan", "--detailed-exitcod"]).assert_code(1);
    d.run(&["validate", "--output", "yaml"]).assert_code(1);
    d.run(&["plan", "--detailed-exitcode"]).assert_code(2);
}

#[test]
fn plan_with_a_state_path_that_does_not_exist_is_an_error() {
    // Planning against nothing would say "create everything" and exit 2.
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: noop\n");
    let missing = d.path().join("nope/state.db");
    let r = d.run(&[
        "plan",
        "--detailed-exitcode",
        "--state",
        missing.to_str().unwrap_or_default(),
    ]);
    r.assert_code(1);
    assert!(r.stderr().contains("no store at"), "{}", r.stderr());
    // Without --state, a missing default store means nothing runs yet.
    d.run(&["plan", "--detailed-exitcode"]).assert_code(2);
}

#[test]
fn durations_and_counts_have_upper_bounds() {
    // 2^64-1 seconds validated, then `plan` said the schedule had ended.
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule: {interval_sec: 18446744073709551615}\ntimeout_ms: 99999999999\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:3:", "31622400")
        .assert_line("jobs.d/a.yaml:4:", "604800000");
}

#[test]
fn a_command_piped_into_head_ends_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    // `multijob schema | head -1`: the reader goes away early.
    let mut child = Command::new(common::bin())
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 1];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("read");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_value_that_fits_the_schema_but_not_the_model_points_at_its_line() {
    // `1e3` is a number to JSON Schema but a float to the model: the
    // error used to point at 1:1.
    let d = dir_with("jobs.d/a.yaml", "id: a\ntype: noop\ntimeout_ms: 1e3\n");
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:3:13: error[schema] Job a:", "`timeout_ms`");
}

#[test]
fn an_excerpt_of_a_long_line_is_clipped_around_the_column() {
    // Minified JSON: one line of the whole file.
    let pad = "y".repeat(5000);
    let d = dir_with(
        "jobs.d/a.json",
        &format!(
            "{{\"id\": \"a\", \"type\": \"noop\", \"description\": \"{pad}\", \"priority\": \"urgent\"}}\n"
        ),
    );
    let r = d.run(&["validate"]);
    r.assert_code(1)
        .assert_line("jobs.d/a.json:1:", "\"urgent\" is not one of");
    let out = r.stdout();
    assert!(out.lines().all(|l| l.chars().count() < 200), "{out}");
    assert!(out.contains("\"priority\": \"urgent\"}"), "{out}");
}

#[test]
fn a_reference_to_a_file_that_does_not_parse_says_so() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: agent.workflow\nsteps:\n  - id: s\n    schedule_job: {job: target}\n",
    );
    d.write("jobs.d/t.yaml", "id: target\ntype: noop\n  bad: [\n");
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/t.yaml:3:6: error[syntax]", "")
        .assert_line(
            "jobs.d/a.yaml:5:25: error[reference] Job a:",
            "or it is defined in jobs.d/t.yaml, which does not parse",
        );
}

#[test]
fn a_document_in_skills_d_is_a_skill_without_saying_so() {
    let d = dir_with(
        "skills.d/s.yaml",
        "id: s1\ndescription: x\nsteps:\n  - id: a\n    set: {x: 1}\n",
    );
    d.run(&["validate"])
        .assert_code(0)
        .assert_line("valid:", "1 skill, 0 triggers in 1 file");
}

#[test]
fn an_http_request_jobs_templates_are_checked() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: a\ntype: http.request\ninputs:\n  sku: P1\n  url: \"http://shop.local/p/{{ inputs.sku | nosuch }}\"\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:5:8: error[template] Job a:",
        "unknown filter `nosuch`",
    );
}

#[test]
fn report_and_monitor_jobs_name_connectors_that_exist() {
    let d = dir_with(
        "jobs.d/a.yaml",
        "id: daily\ntype: report.daily\ninputs:\n  deliver_to: [ops-chat]\n---\nid: mon\ntype: monitor.channel\ninputs:\n  connector: shop\n  alert_connector: pager\n",
    );
    d.run(&["validate"])
        .assert_code(1)
        .assert_line(
            "jobs.d/a.yaml:4:16: error[reference] Job daily:",
            "no Connector `ops-chat`",
        )
        .assert_line(
            "jobs.d/a.yaml:9:14: error[reference] Job mon:",
            "no Connector `shop`",
        )
        .assert_line(
            "jobs.d/a.yaml:10:20: error[reference] Job mon:",
            "no Connector `pager`",
        );
}

#[test]
fn a_file_broken_by_lone_carriage_returns_shows_the_right_line() {
    // The parser ends a line at a lone `\r`; the excerpt did not, so it
    // showed nothing (or another line) under the finding.
    let d = dir_with("jobs.d/a.yaml", "id: a\rtype: noop\rpriority: urgent\r");
    d.run(&["validate"])
        .assert_code(1)
        .assert_line("jobs.d/a.yaml:3:11: error[schema] Job a:", "\"urgent\"")
        .assert_line("  3 | priority: urgent", "");
}
