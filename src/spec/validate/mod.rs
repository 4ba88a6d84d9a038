//! Checks beyond the schema: schedules, the step grammar, templates,
//! references between resources, `uses` cycles, tool policies, skill
//! params and literal secrets. Every finding is collected. What each job
//! type asks of a job is in [`job`]; a Trigger's target and inputs in
//! [`trigger`]; skills' chat commands in [`skill_commands`].
//!
//! Pure, like all of `spec`: it uses the model, the templates and
//! `calendar` (a schedule must compile), nothing above `spec`.

mod agent_tools;
mod bridge;
mod commands;
mod mcp;
mod notify;
pub use mcp::inside_data_dir;
mod inputs;
mod job;
mod skill_commands;
mod trigger;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::SourceMap;
use super::diagnostic::{Diagnostic, DocContext, Severity};
use super::model::{Action, Connector, Flow, Job, Kind, Provider, Skill, Step, ToolPolicy};
use super::snapshot::{Resource, Snapshot};
use super::suggest;
use super::templates::{self, TemplateUse};
use super::yaml::Positions;
use job::check_job;
use skill_commands::Commands;

/// Step checks that must run on the raw document, before it becomes typed:
/// exactly one action per step, and `with` only beside `uses`.
pub fn check_raw_steps(
    doc: &Value,
    positions: &Positions,
    ctx: &DocContext<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(steps) = doc.get("steps").and_then(Value::as_array) else {
        return;
    };
    // Both findings name a key that should not be there.
    let at_key = |pointer: &str, message: String| {
        let pos = positions.key_pos(pointer);
        ctx.at(pos, pointer, Severity::Error, "step-action", message)
    };
    for (i, step) in steps.iter().enumerate() {
        let Some(step) = step.as_object() else {
            continue;
        };
        let base = format!("/steps/{i}");
        let actions: Vec<&str> = Action::NAMES
            .iter()
            .copied()
            .filter(|a| step.contains_key(*a))
            .collect();
        match actions.as_slice() {
            [] => out.push(ctx.at(
                positions.value_pos(&base),
                &base,
                Severity::Error,
                "step-action",
                format!(
                    "step has no action: give exactly one of {}",
                    Action::NAMES.join(", ")
                ),
            )),
            [_] => {}
            [_, second, ..] => {
                out.push(at_key(
                    &format!("{base}/{second}"),
                    format!(
                        "step has {} actions ({}): a step does exactly one; split it into steps",
                        actions.len(),
                        actions.join(", ")
                    ),
                ));
            }
        }
        if step.contains_key("with") && !step.contains_key("uses") {
            out.push(at_key(
                &format!("{base}/with"),
                "`with` passes a skill's params and needs `uses`".to_string(),
            ));
        }
    }
}

/// Checks over the assembled snapshot. Adds implicit flows for lanes that
/// jobs name but no Flow document declares (seed behaviour).
pub fn check_snapshot(
    snapshot: &mut Snapshot,
    sources: &SourceMap,
    now: Option<jiff::Timestamp>,
    out: &mut Vec<Diagnostic>,
) {
    let env = templates::environment();
    let params = compile_params(snapshot);
    let mut implicit: BTreeMap<String, Resource<Flow>> = BTreeMap::new();
    let docs = Docs {
        sources,
        params: &params,
    };
    docs.each(&snapshot.jobs, Kind::Job, out, |job, c| {
        check_job(&job.spec, snapshot, &env, c);
        if let Some(now) = now {
            job::check_window(&job.spec, now, c);
        }
        check_lane(job, snapshot, &mut implicit, c);
        notify::check_rules(&job.spec.notify, job.spec.deadline_sec, snapshot, &env, c);
    });
    docs.each(&snapshot.flows, Kind::Flow, out, |flow, c| {
        notify::check_rules(&flow.spec.notify, Some(0), snapshot, &env, c);
    });
    docs.each(&snapshot.defaults, Kind::Defaults, out, |d, c| {
        notify::check_rules(&d.spec.notify, Some(0), snapshot, &env, c);
    });
    let commands = Commands::of(snapshot);
    docs.each(&snapshot.skills, Kind::Skill, out, |skill, c| {
        check_skill(&skill.spec, snapshot, &env, c);
        commands.check(&skill.spec, c);
    });
    docs.each(&snapshot.triggers, Kind::Trigger, out, |t, c| {
        trigger::check_trigger(&t.spec, snapshot, &env, c);
    });
    check_uses_graph(snapshot, sources, out);
    docs.each(
        &snapshot.connectors,
        Kind::Connector,
        out,
        |connector, c| {
            check_connector(&connector.spec, c);
            bridge::check_bridge(&connector.spec, c);
            mcp::check_mcp(&connector.spec, c);
        },
    );
    snapshot.flows.extend(implicit);
}

/// Where the resources' documents are, and what checking them shares.
struct Docs<'a> {
    sources: &'a SourceMap,
    params: &'a SkillParams<'a>,
}

impl Docs<'_> {
    /// Runs `check` on each resource of `kind` that has a document, with a
    /// [`Checker`] that reports into it.
    fn each<'s, T>(
        &self,
        resources: &'s BTreeMap<String, Resource<T>>,
        kind: Kind,
        out: &mut Vec<Diagnostic>,
        mut check: impl FnMut(&'s Resource<T>, &mut Checker<'_, '_>),
    ) {
        for (id, resource) in resources {
            let Some((file, positions)) = self.sources.get(kind, id) else {
                continue;
            };
            let ctx = DocContext {
                file,
                kind: Some(kind),
                id: Some(id),
            };
            let mut c = Checker {
                ctx: &ctx,
                positions,
                out: &mut *out,
                params: self.params,
            };
            check(resource, &mut c);
        }
    }
}

/// A job's `flow`: a lane no Flow declares becomes an implicit one (its
/// limit from `inputs.flow_max_active_runs`, the tightest winning), with
/// a warning; beside a declared Flow that input is ignored.
fn check_lane(
    job: &Resource<Job>,
    snapshot: &Snapshot,
    implicit: &mut BTreeMap<String, Resource<Flow>>,
    c: &mut Checker,
) {
    let Some(flow) = &job.spec.flow else {
        return;
    };
    if snapshot.flows.contains_key(flow) {
        if job.spec.inputs.contains_key("flow_max_active_runs") {
            c.warn(
                "/inputs/flow_max_active_runs",
                "alias",
                "ignored: the declared Flow's max_active_runs applies".to_string(),
            );
        }
        return;
    }
    let max = job
        .spec
        .inputs
        .get("flow_max_active_runs")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0);
    let pointer = if c.positions.get("/flow").is_some() {
        "/flow"
    } else {
        "/inputs/flow_group"
    };
    c.warn(
        pointer,
        "implicit-flow",
        format!(
            "no Flow `{flow}` is declared{}: an implicit lane is used ({}); declare `kind: Flow` with `id: {flow}`",
            suggest::hint(flow, snapshot.flows.keys().map(String::as_str)),
            match max {
                Some(n) => format!("max_active_runs {n} from inputs.flow_max_active_runs"),
                None => "unlimited".to_string(),
            }
        ),
    );
    let entry = implicit.entry(flow.clone()).or_insert_with(|| {
        Resource::new(
            Flow {
                id: flow.clone(),
                max_active_runs: max,
                priority: None,
                description: None,
                implicit: true,
                budgets: Default::default(),
                notify: Vec::new(),
            },
            job.file.clone(),
            job.line,
            job.column,
        )
    });
    // Several jobs may name the lane: the tightest limit wins.
    if let Some(n) = max
        && entry.spec.max_active_runs.is_none_or(|m| n < m)
    {
        *entry = Resource::new(
            Flow {
                max_active_runs: Some(n),
                ..entry.spec.clone()
            },
            entry.file.clone(),
            entry.line,
            entry.column,
        );
    }
}

/// A connector's `base_url` has its provider's scheme and a host.
/// Literal secrets are reported by the schema check, on the raw document
/// (see `schema::literal_secrets`).
fn check_connector(connector: &Connector, c: &mut Checker) {
    let Some(url) = &connector.base_url else {
        return;
    };
    if let Some(after) = url.strip_prefix("${env:") {
        // Read at each call from the daemon's environment: only its form
        // can be checked here.
        let ok = after.split_once('}').is_some_and(|(name, rest)| {
            is_secret_reference(&format!("${{env:{name}}}"))
                && (rest.is_empty() || rest.starts_with('/'))
        });
        if !ok {
            c.error(
                "/base_url",
                "url",
                format!("base_url `{url}`: write `${{env:NAME}}` alone or followed by a path, like `${{env:API_URL}}/v1`"),
            );
        }
        return;
    }
    let schemes: &[&str] = if connector.provider == Provider::Smtp {
        &["smtp", "smtps"]
    } else {
        &["http", "https"]
    };
    match reqwest::Url::parse(url) {
        Ok(u) if schemes.contains(&u.scheme()) && u.host().is_some() => {}
        Ok(_) => c.error(
            "/base_url",
            "url",
            format!(
                "base_url `{url}` must be a {} URL with a host",
                schemes.join("/")
            ),
        ),
        Err(e) => c.error("/base_url", "url", format!("base_url `{url}`: {e}")),
    }
}

/// `no Connector `x``, with the closest id that exists.
fn no_such<T>(what: &str, name: &str, known: &BTreeMap<String, Resource<T>>) -> String {
    format!(
        "no {what} `{name}`{}",
        suggest::hint(name, known.keys().map(String::as_str))
    )
}

/// `${env:NAME}` or `${file:PATH}`, nothing else.
pub fn is_secret_reference(s: &str) -> bool {
    let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
        return false;
    };
    match inner.split_once(':') {
        Some(("env", name)) => {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        Some(("file", path)) => !path.is_empty() && !path.contains('}'),
        _ => false,
    }
}

struct Checker<'a, 'b> {
    ctx: &'a DocContext<'a>,
    positions: &'a Positions,
    out: &'b mut Vec<Diagnostic>,
    params: &'a SkillParams<'a>,
}

/// Each skill's `params` compiled once: a `uses` step checks its `with`
/// against them, and compiling per step cost steps × schema size.
type SkillParams<'a> = HashMap<&'a str, Result<jsonschema::Validator, String>>;

fn compile_params(snapshot: &Snapshot) -> SkillParams<'_> {
    snapshot
        .skills
        .iter()
        .filter_map(|(id, skill)| {
            let params = skill.spec.params.as_ref()?;
            Some((
                id.as_str(),
                jsonschema::validator_for(params).map_err(|e| e.to_string()),
            ))
        })
        .collect()
}

impl Checker<'_, '_> {
    fn push(&mut self, pointer: &str, severity: Severity, code: &str, message: String) {
        let pos = self.positions.value_pos(pointer);
        self.out
            .push(self.ctx.at(pos, pointer, severity, code, message));
    }

    /// At the key naming `pointer` (for "this key is wrong" findings).
    fn push_at_key(&mut self, pointer: &str, severity: Severity, code: &str, message: String) {
        let pos = self.positions.key_pos(pointer);
        self.out
            .push(self.ctx.at(pos, pointer, severity, code, message));
    }

    fn error(&mut self, pointer: &str, code: &str, message: String) {
        self.push(pointer, Severity::Error, code, message);
    }

    fn warn(&mut self, pointer: &str, code: &str, message: String) {
        self.push_at_key(pointer, Severity::Warning, code, message);
    }
}

fn check_skill(
    skill: &Skill,
    snapshot: &Snapshot,
    env: &minijinja::Environment<'_>,
    c: &mut Checker,
) {
    if let Some(Err(e)) = c.params.get(skill.id.as_str()) {
        c.error(
            "/params",
            "params",
            format!("params is not a valid JSON Schema: {e}"),
        );
    }
    check_steps(&skill.steps, snapshot, env, None, c);
}

fn check_steps(
    steps: &[Step],
    snapshot: &Snapshot,
    env: &minijinja::Environment<'_>,
    tools: Option<&ToolPolicy>,
    c: &mut Checker,
) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let base = format!("/steps/{i}");
        let action = step.action.name();
        if seen.contains(&step.id.as_str()) {
            c.error(
                &format!("{base}/id"),
                "duplicate-step-id",
                format!("step id `{}` is used twice in this list", step.id),
            );
        }
        if let Some(policy) = tools {
            let allowed = policy
                .allow
                .as_ref()
                .is_none_or(|a| a.iter().any(|t| t == action));
            if !allowed || policy.deny.iter().any(|t| t == action) {
                c.push_at_key(
                    &format!("{base}/{action}"),
                    Severity::Error,
                    "tools",
                    format!(
                        "step `{}` uses `{action}`, which this job's `tools` policy does not allow",
                        step.id
                    ),
                );
            }
        }
        if step.concurrency.is_some() && step.foreach.is_none() {
            c.warn(
                &format!("{base}/concurrency"),
                "foreach",
                "`concurrency` only applies with `foreach`".to_string(),
            );
        }
        if let Some(foreach) = &step.foreach
            && !(foreach.is_array() || foreach.as_str().is_some_and(templates::is_template))
        {
            c.error(
                &format!("{base}/foreach"),
                "foreach",
                "`foreach` takes a list, or a `{{ expr }}` that yields one".to_string(),
            );
        }
        // Templates: `when` is a condition; every other string a value.
        if let Some(Value::String(when)) = &step.when {
            check_template(
                env,
                when,
                TemplateUse::Condition,
                (&seen, false),
                &format!("{base}/when"),
                c,
            );
        }
        // `when` and `foreach` are read once per step; the rest once per
        // item, where `item` and `loop` exist.
        if let Some(list) = &step.foreach {
            check_values(env, list, &format!("{base}/foreach"), (&seen, false), c);
        }
        let mut body = serde_json::to_value(step).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut body {
            map.remove("id");
            map.remove("when");
            map.remove("foreach");
        }
        let in_foreach = step.foreach.is_some();
        check_values(env, &body, &base, (&seen, in_foreach), c);
        check_action(step, &base, snapshot, c);
        seen.push(step.id.as_str());
    }
}

fn check_template(
    env: &minijinja::Environment<'_>,
    source: &str,
    usage: TemplateUse,
    (earlier, in_foreach): (&[&str], bool),
    pointer: &str,
    c: &mut Checker,
) {
    if let Err(issue) = templates::check(env, source, usage, earlier, in_foreach) {
        push_template_issue(issue, pointer, c);
    }
}

/// A template's finding, at its line inside the value when it has one.
fn push_template_issue(issue: templates::TemplateIssue, pointer: &str, c: &mut Checker) {
    let mut pos = c.positions.value_pos(pointer);
    if let (Some(line), Some(node)) = (issue.line, c.positions.get(pointer)) {
        // Lines of a block scalar are lines of the file; a quoted
        // multi-line string folds, so this is then approximate.
        pos.line = node.value.line + u32::try_from(line.saturating_sub(1)).unwrap_or(0);
        if line > 1 && !node.block_scalar {
            pos.column = 1;
        }
    }
    c.out.push(
        c.ctx
            .at(pos, pointer, Severity::Error, "template", issue.message),
    );
}

/// Check every template among the strings of `v` as a value.
fn check_values(
    env: &minijinja::Environment<'_>,
    v: &Value,
    pointer: &str,
    scope: (&[&str], bool),
    c: &mut Checker,
) {
    walk_strings(v, pointer, &mut |pointer, s| {
        if templates::is_template(s) {
            check_template(env, s, TemplateUse::Value, scope, pointer, c);
        }
    });
}

fn walk_strings(v: &Value, pointer: &str, f: &mut dyn FnMut(&str, &str)) {
    match v {
        Value::String(s) => f(pointer, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_strings(item, &format!("{pointer}/{i}"), f);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                walk_strings(
                    item,
                    &format!("{pointer}/{}", super::yaml::escape_token(k)),
                    f,
                );
            }
        }
        _ => {}
    }
}

fn check_action(step: &Step, base: &str, snapshot: &Snapshot, c: &mut Checker) {
    let action = step.action.name();
    if let Some(name) = step.action.connector()
        && !templates::is_template(name)
    {
        let pointer = format!("{base}/{action}/connector");
        match snapshot.connectors.get(name) {
            None => c.error(
                &pointer,
                "reference",
                no_such("Connector", name, &snapshot.connectors),
            ),
            Some(r) => {
                let provider = r.spec.provider;
                let fits = match &step.action {
                    Action::Llm(_) | Action::Agent(_) => provider == Provider::Openai,
                    Action::Message(_) => Provider::MESSAGING.contains(&provider),
                    _ => true,
                };
                if !fits {
                    c.error(
                        &pointer,
                        "reference",
                        format!(
                            "connector `{name}` is a {} connector and cannot serve a `{action}` step",
                            serde_json::to_value(provider)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
    match &step.action {
        Action::Http(http) => {
            if http.url.is_none() && http.path.is_none() {
                c.push_at_key(
                    &format!("{base}/http"),
                    Severity::Error,
                    "http",
                    "an http step needs `url`, or `path` with a `connector`".to_string(),
                );
            }
            if http.path.is_some() && http.connector.is_none() {
                c.error(
                    &format!("{base}/http/path"),
                    "http",
                    "`path` is joined to a connector's base_url: add `connector`".to_string(),
                );
            }
        }
        Action::ScheduleJob(s)
            if !templates::is_template(&s.job) && !snapshot.jobs.contains_key(&s.job) =>
        {
            c.error(
                &format!("{base}/schedule_job/job"),
                "reference",
                format!(
                    "schedule_job names no Job `{}`{}",
                    s.job,
                    suggest::hint(&s.job, snapshot.jobs.keys().map(String::as_str))
                ),
            );
        }
        Action::Uses(skill_id) => {
            let pointer = format!("{base}/uses");
            match snapshot.skills.get(skill_id) {
                None => c.error(
                    &pointer,
                    "reference",
                    no_such("Skill", skill_id, &snapshot.skills),
                ),
                Some(skill) => check_with(step, base, &skill.spec, c),
            }
        }
        Action::Llm(llm) => check_variants(&llm.variants, base, "llm", c),
        Action::Agent(agent) => {
            check_variants(&agent.variants, base, "agent", c);
            for (i, tool) in agent.tools.iter().enumerate() {
                if tool == "agent" || tool == "uses" {
                    c.error(
                        &format!("{base}/agent/tools/{i}"),
                        "agent",
                        format!("an agent cannot offer `{tool}` as a tool"),
                    );
                }
                if let Some(why) = agent_tools::unknown_tool(tool, snapshot) {
                    c.error(&format!("{base}/agent/tools/{i}"), "reference", why);
                }
            }
        }
        _ => {}
    }
}

/// A prompt experiment's variant ids are unique (weights > 0 is the
/// schema's).
fn check_variants(
    variants: &[crate::spec::model::Variant],
    base: &str,
    action: &str,
    c: &mut Checker,
) {
    for (i, v) in variants.iter().enumerate() {
        if variants[..i].iter().any(|w| w.id == v.id) {
            c.error(
                &format!("{base}/{action}/variants/{i}/id"),
                "variants",
                format!(
                    "variant id `{}` is used twice in this step; give each variant its own id",
                    v.id
                ),
            );
        }
    }
}

/// A `uses` step's `with` against the skill's params.
fn check_with(step: &Step, base: &str, skill: &Skill, c: &mut Checker) {
    let with = step.with.clone().unwrap_or_default();
    let at = (format!("{base}/with"), format!("{base}/uses"));
    check_args(&with, "`with`", (&at.0, &at.1), skill, c);
}

/// What a caller passes a skill (a `uses` step's `with`, a trigger's
/// `inputs`), named `what` and found at `pointer` (or, when absent, at
/// `anchor`), against the skill's params. Values that are templates are
/// only known at run time; the rest are checked now.
fn check_args(
    args: &Map<String, Value>,
    what: &str,
    (pointer, anchor): (&str, &str),
    skill: &Skill,
    c: &mut Checker,
) {
    let Some(Ok(validator)) = c.params.get(skill.id.as_str()) else {
        return; // no params, or reported on the skill itself
    };
    let mut literal = Map::new();
    let mut templated = HashSet::new();
    for (k, v) in args {
        if v.as_str().is_some_and(templates::is_template) {
            templated.insert(k.clone());
        } else {
            literal.insert(k.clone(), v.clone());
        }
    }
    // Templated params count as present for `required`.
    for k in &templated {
        literal.insert(k.clone(), Value::Null);
    }
    let instance = Value::Object(literal);
    for e in validator.iter_errors(&instance) {
        let path = e.instance_path().as_str().to_string();
        let top = path.trim_start_matches('/').split('/').next().unwrap_or("");
        if !top.is_empty() && templated.contains(top) {
            continue;
        }
        let at = format!("{pointer}{path}");
        let message = format!("{what} does not match skill `{}` params: {e}", skill.id);
        if path.is_empty() && c.positions.get(&at).is_some() {
            // About the arguments as a whole (a missing param): their key.
            c.push_at_key(&at, Severity::Error, "params", message);
        } else if c.positions.get(&at).is_some() {
            c.error(&at, "params", message);
        } else {
            c.error(anchor, "params", message);
        }
    }
}

/// `uses` between skills must not loop nor nest deeper than a run allows.
fn check_uses_graph(snapshot: &Snapshot, sources: &SourceMap, out: &mut Vec<Diagnostic>) {
    for finding in super::uses::check(&snapshot.skills) {
        let Some((file, positions)) = sources.get(Kind::Skill, &finding.skill) else {
            continue;
        };
        let pointer = format!("/steps/{}/uses", finding.step);
        out.push(
            DocContext {
                file,
                kind: Some(Kind::Skill),
                id: Some(&finding.skill),
            }
            .at(
                positions.value_pos(&pointer),
                &pointer,
                Severity::Error,
                finding.code,
                finding.message,
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references() {
        assert!(is_secret_reference("${env:TELEGRAM_BOT_TOKEN}"));
        assert!(is_secret_reference("${file:/run/secrets/token}"));
        assert!(!is_secret_reference("123456789:AAabc"));
        assert!(!is_secret_reference("${env:}"));
        assert!(!is_secret_reference("${vault:x}"));
        assert!(!is_secret_reference("prefix ${env:X}"));
    }
}
