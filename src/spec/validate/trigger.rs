//! A `kind: Trigger` beyond its schema: the job or skill it runs exists
//! (a disabled job gets a warning: its requests would queue nothing), a
//! skill's params accept the `inputs` (as a `uses` step's `with`), a
//! telegram trigger's skill listens on telegram, and every `inputs`
//! template compiles and reads only the request (`payload`, `headers`,
//! `source`, `now`): what comes from outside reaches the run's `inputs`
//! and nothing else. `action: sync` takes GitHub's pushes only. A header looked up with capitals gets a warning (the
//! request's header names are lower-cased). A literal `secret` is refused
//! on the raw document (`schema`), without echoing it.

use serde_json::Value;

use super::{Checker, check_args, no_such, push_template_issue, walk_strings};
use crate::spec::commands::skill_channel;
use crate::spec::model::{Trigger, TriggerAction, TriggerSource};
use crate::spec::snapshot::Snapshot;
use crate::spec::templates::{self, INBOUND_ROOTS};
use crate::spec::yaml::escape_token;

/// Why nothing else: the end of the finding about another name.
const ONLY_THE_REQUEST: &str = "a trigger's inputs come from the request alone, which must not reach the run's inputs, steps, job, secrets or environment";

pub(super) fn check_trigger(
    trigger: &Trigger,
    snapshot: &Snapshot,
    env: &minijinja::Environment<'_>,
    c: &mut Checker,
) {
    if let Some(job) = &trigger.job {
        check_job(trigger, job, snapshot, c);
    }
    if let Some(skill) = &trigger.skill {
        check_skill(trigger, skill, snapshot, c);
    }
    if let Some(action) = trigger.action {
        check_action(trigger, action, c);
    }
    for (key, value) in &trigger.inputs {
        let pointer = format!("/inputs/{}", escape_token(key));
        check_inputs(env, value, &pointer, c);
    }
}

fn check_job(trigger: &Trigger, job: &str, snapshot: &Snapshot, c: &mut Checker) {
    match snapshot.jobs.get(job) {
        None => c.error("/job", "reference", no_such("Job", job, &snapshot.jobs)),
        Some(r) if !r.spec.enabled && trigger.enabled => c.warn(
            "/job",
            "disabled",
            format!(
                "job `{job}` is disabled ({}:{}): requests to POST /hooks/{} queue no run until it is enabled; enable the job or set `enabled: false` here",
                r.file, r.line, trigger.id
            ),
        ),
        Some(_) => {}
    }
}

fn check_skill(trigger: &Trigger, skill: &str, snapshot: &Snapshot, c: &mut Checker) {
    let Some(r) = snapshot.skills.get(skill) else {
        c.error(
            "/skill",
            "reference",
            no_such("Skill", skill, &snapshot.skills),
        );
        return;
    };
    check_args(
        &trigger.inputs,
        "`inputs`",
        ("/inputs", "/skill"),
        &r.spec,
        c,
    );
    if trigger.source != TriggerSource::Telegram {
        return;
    }
    if let Some(channel) = skill_channel(&r.spec)
        && channel != TriggerSource::Telegram.as_str()
    {
        c.error(
            "/skill",
            "channel",
            format!(
                "skill `{skill}` listens on {channel} ({}:{}), and this trigger's source is telegram: point it at a telegram skill, or change the skill's `channel`",
                r.file, r.line
            ),
        );
    }
}

/// `sync` acts on a GitHub `push`: no other sender says which branch moved.
fn check_action(trigger: &Trigger, action: TriggerAction, c: &mut Checker) {
    match action {
        TriggerAction::Sync if trigger.source != TriggerSource::Github => c.error(
            "/action",
            "action",
            format!(
                "`action: sync` fetches the config repository when GitHub sends a push to the pulled branch, so it takes only `source: github` (this trigger's source is {}): set `source: github`, or run a job with `job:` instead",
                trigger.source.as_str()
            ),
        ),
        TriggerAction::Sync => {}
    }
    let unused = [
        ("/inputs", "inputs", !trigger.inputs.is_empty()),
        (
            "/requires_approval",
            "requires_approval",
            trigger.requires_approval,
        ),
    ];
    for (pointer, field, set) in unused {
        if set {
            c.warn(
                pointer,
                "action",
                format!(
                    "`{field}` does nothing on an `action: {}` trigger: it makes no run; remove it",
                    action.as_str()
                ),
            );
        }
    }
}

/// Every template among the strings of one input; the rest are literals.
fn check_inputs(env: &minijinja::Environment<'_>, value: &Value, pointer: &str, c: &mut Checker) {
    walk_strings(value, pointer, &mut |pointer, s| {
        if !templates::is_template(s) {
            return;
        }
        if let Err(issue) = templates::check_reads(env, s, &INBOUND_ROOTS, ONLY_THE_REQUEST) {
            push_template_issue(issue, pointer, c);
            return;
        }
        for name in cased_header_names(s) {
            c.warn(
                pointer,
                "headers",
                format!(
                    "header names are lower-cased: `{name}` never matches; write `{}`",
                    name.to_lowercase()
                ),
            );
        }
    });
}

/// Header names with capitals a template looks up, as `headers.Name` or
/// `headers['Name']`: the request's header names are lower-cased, so
/// these read nothing.
fn cased_header_names(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (at, _) in source.match_indices("headers") {
        let before = source[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue; // part of another name, or an attribute of something else
        }
        let rest = &source[at + "headers".len()..];
        let name = if let Some(attr) = rest.strip_prefix('.') {
            let end = attr
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(attr.len());
            &attr[..end]
        } else if let Some(sub) = rest.strip_prefix('[') {
            let sub = sub.trim_start();
            let Some(quote) = sub.chars().next().filter(|q| *q == '\'' || *q == '"') else {
                continue;
            };
            let inner = &sub[1..];
            inner.find(quote).map_or("", |end| &inner[..end])
        } else {
            continue;
        };
        if name.chars().any(char::is_uppercase) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::spec::{SourceFile, build};

    const JOBS: &str = "\
id: fulfil-order
type: noop
---
id: paused-job
type: noop
enabled: false
";

    const SKILLS: &str = "\
id: brief
command_prefix: /brief
steps: [{id: s, set: {}}]
---
id: on-slack
channel: slack
steps: [{id: s, set: {}}]
---
id: with-params
params: {type: object, required: [topic], properties: {topic: {type: string}}}
steps: [{id: s, set: {}}]
";

    /// Every finding on a directory holding the jobs, the skills and
    /// `trigger` (at jobs.d/t.yaml), as `validate` prints them.
    fn findings(trigger: &str) -> Vec<String> {
        let files = [
            ("jobs.d/jobs.yaml", JOBS),
            ("skills.d/skills.yaml", SKILLS),
            ("jobs.d/t.yaml", trigger),
        ]
        .map(|(path, text)| SourceFile {
            path: path.into(),
            text: text.into(),
        });
        build(&files)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn trigger(lines: &str) -> String {
        format!("kind: Trigger\nid: t\nsource: webhook\nsecret: ${{env:HOOK_SECRET}}\n{lines}")
    }

    #[track_caller]
    fn one(trigger: &str) -> String {
        let found = findings(trigger);
        assert_eq!(found.len(), 1, "{found:#?}");
        found[0].clone()
    }

    #[test]
    fn a_good_trigger_has_no_findings() {
        let t = trigger(
            "job: fulfil-order\nrequires_approval: true\nrate_limit: {per_minute: 60, burst: 10}\ninputs:\n  order_id: \"{{ payload.id }}\"\n  lines: [\"{{ payload.items | length }}\", literal]\n  meta: {from: \"{{ source }}\", agent: \"{{ headers['user-agent'] }}\", at: \"{{ now }}\"}\n  fixed: 3\n",
        );
        assert_eq!(findings(&t), Vec::<String>::new());
        let t = trigger("skill: brief\n").replace("webhook", "telegram");
        assert_eq!(findings(&t), Vec::<String>::new());
    }

    #[test]
    fn a_missing_job_or_skill_is_named_with_the_closest_one() {
        assert_eq!(
            one(&trigger("job: fulfil-ordr\n")),
            "jobs.d/t.yaml:5:6: error[reference] Trigger t: no Job `fulfil-ordr` (did you mean `fulfil-order`?)"
        );
        assert_eq!(
            one(&trigger("skill: brif\n")),
            "jobs.d/t.yaml:5:8: error[reference] Trigger t: no Skill `brif` (did you mean `brief`?)"
        );
    }

    #[test]
    fn a_sync_action_takes_only_github() {
        let github = trigger("action: sync\n").replace("webhook", "github");
        assert_eq!(findings(&github), Vec::<String>::new());
        assert_eq!(
            one(&trigger("action: sync\n")),
            "jobs.d/t.yaml:5:9: error[action] Trigger t: `action: sync` fetches the config repository when GitHub sends a push to the pulled branch, so it takes only `source: github` (this trigger's source is webhook): set `source: github`, or run a job with `job:` instead"
        );
        let unknown = one(&trigger("action: pull\n").replace("webhook", "github"));
        assert!(unknown.contains("jobs.d/t.yaml:5:"), "{unknown}");
        let two = one(&trigger("action: sync\njob: fulfil-order\n").replace("webhook", "github"));
        assert!(two.starts_with("jobs.d/t.yaml:"), "{two}");
        let approval =
            trigger("action: sync\nrequires_approval: true\n").replace("webhook", "github");
        assert_eq!(
            one(&approval),
            "jobs.d/t.yaml:6:1: warning[action] Trigger t: `requires_approval` does nothing on an `action: sync` trigger: it makes no run; remove it"
        );
    }

    #[test]
    fn a_disabled_job_is_a_warning_unless_the_trigger_is_off_too() {
        let w = one(&trigger("job: paused-job\n"));
        assert_eq!(
            w,
            "jobs.d/t.yaml:5:1: warning[disabled] Trigger t: job `paused-job` is disabled (jobs.d/jobs.yaml:4): requests to POST /hooks/t queue no run until it is enabled; enable the job or set `enabled: false` here"
        );
        assert_eq!(
            findings(&trigger("job: paused-job\nenabled: false\n")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_literal_secret_is_refused_without_being_echoed() {
        for literal in ["whsec_0123456789abcdef", "12345678901234", "[whsec_abc]"] {
            let t = trigger("job: fulfil-order\n").replace("${env:HOOK_SECRET}", literal);
            let e = one(&t);
            assert!(
                e.starts_with("jobs.d/t.yaml:4:9: error[literal-secret] Trigger t: `secret` holds a literal value, not a reference; secrets never live in git"),
                "{e}"
            );
            assert!(!e.contains(literal.trim_matches(['[', ']'])), "{e}");
        }
    }

    #[test]
    fn inputs_templates_read_only_the_request() {
        for name in ["inputs", "steps", "env", "secrets", "job", "run", "item"] {
            let e = one(&trigger(&format!(
                "job: fulfil-order\ninputs:\n  x: \"id {{{{ {name}.anything }}}}\"\n"
            )));
            assert!(
                e.starts_with(&format!(
                    "jobs.d/t.yaml:7:6: error[template] Trigger t: `{name}` cannot be read here: these templates read only payload, headers, source, now;"
                )),
                "{e}"
            );
        }
        // Inside nested values and lists too, each at its own place.
        let e = one(&trigger(
            "job: fulfil-order\ninputs:\n  deep: {list: [ok, \"{{ secrets.token }}\"]}\n",
        ));
        assert!(
            e.starts_with(
                "jobs.d/t.yaml:7:21: error[template] Trigger t: `secrets` cannot be read here"
            ),
            "{e}"
        );
    }

    #[test]
    fn names_a_template_defines_are_its_own() {
        let t = trigger(
            "job: fulfil-order\ninputs:\n  skus: \"{% for i in payload.items %}{{ loop.index }}:{{ i.sku }} {% endfor %}\"\n  n: \"{% set n = payload.items | length %}{{ n }} {{ range(2) | list }}\"\n",
        );
        assert_eq!(findings(&t), Vec::<String>::new());
    }

    #[test]
    fn hostile_documents_are_findings() {
        // Inputs as one template (not a map), a secret as a map, a
        // template that would build a huge string: each one finding.
        let e = one(&trigger("job: fulfil-order\ninputs: \"{{ payload }}\"\n"));
        assert!(
            e.starts_with("jobs.d/t.yaml:6:9: error[schema] Trigger t:"),
            "{e}"
        );
        let t = trigger("job: fulfil-order\n").replace("${env:HOOK_SECRET}", "{value: whsec_x}");
        let e = one(&t);
        assert!(
            e.contains("error[literal-secret]") && !e.contains("whsec_x"),
            "{e}"
        );
        let e = one(&trigger(
            "job: fulfil-order\ninputs: {x: \"{{ 'ab' * 9999999999 }}\"}\n",
        ));
        assert!(
            e.starts_with("jobs.d/t.yaml:6:13: error[template] Trigger t:"),
            "{e}"
        );
    }

    #[test]
    fn a_header_name_with_capitals_reads_nothing() {
        let found = findings(&trigger(
            "job: fulfil-order\ninputs:\n  shop: \"{{ headers['X-Shop-Id'] }} {{ headers.Host }} {{ headers[\\\"x-ok\\\"] }} {{ payload.headers.Big }}\"\n",
        ));
        assert_eq!(
            found,
            [
                "jobs.d/t.yaml:7:3: warning[headers] Trigger t: header names are lower-cased: `Host` never matches; write `host`",
                "jobs.d/t.yaml:7:3: warning[headers] Trigger t: header names are lower-cased: `X-Shop-Id` never matches; write `x-shop-id`",
            ]
        );
    }

    #[test]
    fn inputs_templates_must_compile() {
        let e = one(&trigger(
            "job: fulfil-order\ninputs:\n  x: \"{{ payload.id \"\n",
        ));
        assert!(
            e.starts_with(
                "jobs.d/t.yaml:7:6: error[template] Trigger t: template does not compile"
            ),
            "{e}"
        );
        let e = one(&trigger(
            "job: fulfil-order\ninputs:\n  x: \"{{ payload.id | uper }}\"\n",
        ));
        assert!(
            e.ends_with("unknown filter `uper` (did you mean `upper`?)"),
            "{e}"
        );
    }

    #[test]
    fn a_skills_params_accept_the_inputs() {
        // `topic` is required: a template counts as present, a literal is
        // checked now, a missing one is named.
        let ok = trigger("skill: with-params\ninputs: {topic: \"{{ payload.text }}\"}\n");
        assert_eq!(findings(&ok), Vec::<String>::new());
        let e = one(&trigger("skill: with-params\ninputs: {topic: 42}\n"));
        assert!(
            e.starts_with("jobs.d/t.yaml:6:17: error[params] Trigger t: `inputs` does not match skill `with-params` params: 42 is not of type \"string\""),
            "{e}"
        );
        let e = one(&trigger("skill: with-params\n"));
        assert!(
            e.starts_with("jobs.d/t.yaml:5:8: error[params] Trigger t: `inputs` does not match skill `with-params` params: \"topic\" is a required property"),
            "{e}"
        );
    }

    #[test]
    fn a_telegram_trigger_runs_only_a_telegram_skill() {
        let t = trigger("skill: on-slack\n").replace("source: webhook", "source: telegram");
        let e = one(&t);
        assert!(
            e.starts_with("jobs.d/t.yaml:5:8: error[channel] Trigger t: skill `on-slack` listens on slack (skills.d/skills.yaml:5)"),
            "{e}"
        );
        // Another source may run it.
        assert_eq!(
            findings(&trigger("skill: on-slack\n")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_schema_refuses_what_cannot_work() {
        let e = one(&trigger("job: fulfil-order\nrate_limit: {per_minute: 0}\n"));
        assert_eq!(
            e,
            "jobs.d/t.yaml:6:26: error[schema] Trigger t: 0 is less than the minimum of 1"
        );
        let both = findings(&trigger("job: fulfil-order\nskill: brief\n"));
        assert!(!both.is_empty(), "job and skill together must be refused");
        let e = one(&trigger("").replace("source: webhook", "source: webhok"));
        assert!(e.contains("did you mean `webhook`?"), "{e}");
    }

    #[test]
    fn ids_are_unique_and_triggers_belong_in_jobs_d() {
        let t = trigger("job: fulfil-order\n");
        let twice = format!("{t}---\n{t}");
        let e = one(&twice);
        assert!(
            e.starts_with("jobs.d/t.yaml:8:5: error[duplicate-id] Trigger t: Trigger id `t` is already defined at jobs.d/t.yaml:1"),
            "{e}"
        );
        let files = [SourceFile {
            path: "skills.d/t.yaml".into(),
            text: trigger("job: x\n"),
        }];
        let found: Vec<String> = build(&files)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            found.iter().any(|d| d.starts_with("skills.d/t.yaml:1:1: warning[placement] Trigger t: Trigger documents belong in jobs.d/")),
            "{found:#?}"
        );
    }
}
