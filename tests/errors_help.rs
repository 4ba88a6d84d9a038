//! Errors that help: every name or reference that names nothing gets the
//! closest one that exists ("did you mean"), never the same word and
//! nothing when no name is close; a bad duration is explained in words;
//! inputs a built-in job type does not read are caught; a `command` job
//! and an ended schedule get warnings. Each case is one `validate`
//! fixture with its exact finding.

mod common;

use common::ConfigDir;

const CONNECTOR: &str =
    "kind: Connector\nid: alerts\nprovider: http\nbase_url: http://127.0.0.1:9\n---\n";

/// `validate` on one file exits `code` and prints exactly `finding` as a line.
#[track_caller]
fn finding(text: &str, code: i32, finding: &str) {
    let d = ConfigDir::new();
    d.write("jobs.d/a.yaml", text);
    let run = d.run(&["validate"]);
    run.assert_code(code);
    assert!(
        run.stdout().lines().any(|l| l == finding),
        "expected the line {finding:?}\n{}",
        run.explain()
    );
}

#[test]
fn a_connector_reference_suggests_the_close_id() {
    finding(
        &format!(
            "{CONNECTOR}id: a\ntype: agent.workflow\nsteps:\n  - id: tell\n    http: {{connector: alert, path: /x}}\n"
        ),
        1,
        "jobs.d/a.yaml:10:23: error[reference] Job a: no Connector `alert` (did you mean `alerts`?)",
    );
}

#[test]
fn a_skill_reference_suggests_the_close_id() {
    finding(
        "kind: Skill\nid: summarize\nsteps:\n  - id: s\n    set: {x: 1}\n---\nid: a\ntype: agent.workflow\nsteps:\n  - id: sum\n    uses: sumarize\n",
        1,
        "jobs.d/a.yaml:11:11: error[reference] Job a: no Skill `sumarize` (did you mean `summarize`?)",
    );
}

#[test]
fn a_flow_reference_suggests_the_declared_flow() {
    finding(
        "kind: Flow\nid: reports\n---\nid: a\ntype: noop\nflow: report\n",
        0,
        "jobs.d/a.yaml:6:1: warning[implicit-flow] Job a: no Flow `report` is declared (did you mean `reports`?): an implicit lane is used (unlimited); declare `kind: Flow` with `id: report`",
    );
}

#[test]
fn a_schedule_job_target_suggests_the_close_job() {
    finding(
        "id: nightly\ntype: noop\n---\nid: a\ntype: agent.workflow\nsteps:\n  - id: next\n    schedule_job: {job: nightlly}\n",
        1,
        "jobs.d/a.yaml:8:25: error[reference] Job a: schedule_job names no Job `nightlly` (did you mean `nightly`?)",
    );
}

#[test]
fn a_job_type_suggests_the_close_type() {
    finding(
        "id: a\ntype: comand\n",
        1,
        "jobs.d/a.yaml:2:7: error[schema] Job a: \"comand\" is not one of: agent.workflow, http.request, monitor.channel, report.daily, backup.export, command, simulation.heavy, noop (did you mean `command`?)",
    );
}

#[test]
fn a_kind_in_another_case_is_suggested() {
    finding(
        "kind: job\nid: a\ntype: noop\n",
        1,
        "jobs.d/a.yaml:1:7: error[schema]: unknown kind `job`: use Job, Flow, Connector, Skill, Trigger or Defaults (did you mean `Job`?)",
    );
}

#[test]
fn a_misspelt_kind_is_suggested() {
    finding(
        "kind: Conector\nid: a\nprovider: http\n",
        1,
        "jobs.d/a.yaml:1:7: error[schema]: unknown kind `Conector`: use Job, Flow, Connector, Skill, Trigger or Defaults (did you mean `Connector`?)",
    );
}

#[test]
fn a_time_zone_suggests_the_iana_name() {
    finding(
        "id: a\ntype: noop\nschedule: {cron: \"0 7 * * *\", timezone: Europe/Berln}\n",
        1,
        "jobs.d/a.yaml:3:41: error[schedule] Job a: unknown time zone 'Europe/Berln': use an IANA name such as Europe/Berlin or UTC (did you mean `Europe/Berlin`?)",
    );
}

#[test]
fn a_template_filter_suggests_the_close_filter() {
    finding(
        "id: a\ntype: agent.workflow\nsteps:\n  - id: s\n    set: {x: \"{{ inputs.name | uper }}\"}\n",
        1,
        "jobs.d/a.yaml:5:14: error[template] Job a: unknown filter `uper` (did you mean `upper`?)",
    );
}

#[test]
fn an_input_of_a_builtin_type_suggests_the_input_it_reads() {
    finding(
        "id: a\ntype: simulation.heavy\ninputs: {wrk_ms: 50}\n",
        1,
        "jobs.d/a.yaml:3:10: error[input] Job a: simulation.heavy does not read input `wrk_ms` (did you mean `work_ms`?)",
    );
    finding(
        "id: a\ntype: report.daily\ninputs:\n  perod: 24h\n",
        1,
        "jobs.d/a.yaml:4:3: error[input] Job a: report.daily does not read input `perod` (did you mean `period`?)",
    );
}

#[test]
fn an_input_far_from_every_known_one_is_a_warning_without_a_suggestion() {
    finding(
        "id: a\ntype: backup.export\ninputs: {recipients: [ops]}\n",
        0,
        "jobs.d/a.yaml:3:10: warning[input] Job a: backup.export does not read input `recipients`: it is ignored (backup.export reads include_runs, max_runs, keep)",
    );
}

#[test]
fn a_name_far_from_everything_gets_no_suggestion() {
    finding(
        &format!(
            "{CONNECTOR}id: a\ntype: agent.workflow\nsteps:\n  - id: tell\n    http: {{connector: warehouse, path: /x}}\n"
        ),
        1,
        "jobs.d/a.yaml:10:23: error[reference] Job a: no Connector `warehouse`",
    );
}

#[test]
fn a_bad_duration_is_explained_in_words() {
    finding(
        "id: a\ntype: noop\nschedule: {every: 5x}\n",
        1,
        "jobs.d/a.yaml:3:19: error[schema] Job a: \"5x\": use a number with s, m, h or d, like 30s or 5m (or combined, like 1h30m)",
    );
}

#[test]
fn a_command_job_notes_that_it_needs_allow_command() {
    finding(
        "id: a\ntype: command\ninputs: {argv: [\"true\"]}\n",
        0,
        "jobs.d/a.yaml:2:1: warning[command] Job a: a command job runs only on a daemon started with `--allow-command`; elsewhere its runs fail",
    );
}

#[test]
fn a_schedule_that_ended_gets_a_warning() {
    finding(
        "id: a\ntype: noop\nschedule:\n  every: 5m\n  end_at: \"2020-01-01T00:00:00Z\"\n",
        0,
        "jobs.d/a.yaml:5:3: warning[schedule-ended] Job a: the schedule ended at 2020-01-01T00:00:00Z: this job gets no more scheduled runs (remove `end_at` or move it later)",
    );
    // A window still open is fine.
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule:\n  every: 5m\n  end_at: \"2999-01-01T00:00:00Z\"\n",
    );
    d.run(&["validate"])
        .assert_code(0)
        .assert_stdout_lacks("schedule-ended");
}

#[test]
fn a_known_word_is_never_suggested_to_itself() {
    // `noop` is a known type, `alerts` a known connector: no finding at all.
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        &format!(
            "{CONNECTOR}id: a\ntype: agent.workflow\nsteps:\n  - id: tell\n    http: {{connector: alerts, path: /x}}\n"
        ),
    );
    d.run(&["validate"])
        .assert_code(0)
        .assert_stdout_lacks("did you mean");
}
