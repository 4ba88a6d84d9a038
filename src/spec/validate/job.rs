//! What each job type asks of a job beyond its schema: a schedule that
//! compiles, steps only in workflows, a URL for http.request, connectors
//! that exist, an argv for command, a provider for an implicit agent.

use serde_json::Value;

use super::inputs::check_inputs;
use super::{Checker, check_steps, check_values, no_such};
use crate::calendar::slots::SlotRule;
use crate::spec::diagnostic::Severity;
use crate::spec::model::{Job, Provider};
use crate::spec::snapshot::Snapshot;
use crate::spec::templates;

pub(super) fn check_job(
    job: &Job,
    snapshot: &Snapshot,
    env: &minijinja::Environment<'_>,
    c: &mut Checker,
) {
    check_timing(job, c);
    check_steps_for_type(job, snapshot, c);
    if job.job_type == "http.request" {
        check_http_request(job, snapshot, env, c);
    }
    check_named_connectors(job, snapshot, c);
    if job.job_type == "command" {
        check_command(job, c);
    }
    super::commands::check_commands(job, c);
    check_inputs(job, c);
    check_steps(&job.steps, snapshot, env, Some(&job.tools), c);
}

/// The schedule compiles; the failure memory's cooldowns are in order.
fn check_timing(job: &Job, c: &mut Checker) {
    if let Some(schedule) = &job.schedule
        && let Err(e) = SlotRule::compile(schedule, &job.id)
    {
        let pointer = if e.field == "schedule" {
            "/schedule".to_string()
        } else {
            format!("/schedule/{}", e.field)
        };
        let mut message = e.message;
        if e.field == "timezone"
            && let Some(name) = &schedule.timezone
        {
            message.push_str(&crate::spec::suggest::zone_hint(name));
        }
        c.error(&pointer, "schedule", message);
    }
    if let Some(expect) = &job.expect
        && let Err(e) = expect.within_secs()
    {
        c.error("/expect/success_within", "expect", e);
    }
    let memory = &job.failure_memory;
    if memory.cooldown_max_sec < memory.cooldown_sec {
        c.error(
            "/failure_memory/cooldown_max_sec",
            "failure-memory",
            format!(
                "cooldown_max_sec {} is below cooldown_sec {}",
                memory.cooldown_max_sec, memory.cooldown_sec
            ),
        );
    }
}

/// A schedule whose `end_at` has passed fires no more: say so, the job
/// only runs when triggered.
pub(super) fn check_window(job: &Job, now: jiff::Timestamp, c: &mut Checker) {
    let Some(end) = job
        .schedule
        .as_ref()
        .and_then(|s| s.end_at.as_deref())
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
    else {
        return;
    };
    if end < now {
        c.warn(
            "/schedule/end_at",
            "schedule-ended",
            format!(
                "the schedule ended at {end}: this job gets no more scheduled runs (remove `end_at` or move it later)"
            ),
        );
    }
}

/// `steps` only in agent.workflow jobs, which need them (or a prompt for
/// an implicit agent).
fn check_steps_for_type(job: &Job, snapshot: &Snapshot, c: &mut Checker) {
    let is_workflow = job.job_type == "agent.workflow";
    if !is_workflow && !job.steps.is_empty() {
        c.push_at_key(
            "/steps",
            Severity::Error,
            "steps",
            format!(
                "`steps` run only in agent.workflow jobs, not {}",
                job.job_type
            ),
        );
    }
    if is_workflow && job.steps.is_empty() {
        match job.inputs.get("prompt") {
            None => c.push_at_key(
                "/type",
                Severity::Error,
                "steps",
                "an agent.workflow job needs `steps`, or `inputs.prompt` to run as an implicit agent"
                    .to_string(),
            ),
            Some(_) => check_implicit_agent(job, snapshot, c),
        }
    }
}

/// An http.request job has a URL (or a path with a connector that
/// exists), and its request fields render like an http step's.
fn check_http_request(
    job: &Job,
    snapshot: &Snapshot,
    env: &minijinja::Environment<'_>,
    c: &mut Checker,
) {
    let has = |k: &str| job.inputs.get(k).is_some_and(|v| !v.is_null());
    if !has("url") && !has("path") {
        c.push_at_key(
            "/inputs",
            Severity::Error,
            "http",
            "an http.request job needs `inputs.url`, or `inputs.path` with `inputs.connector`"
                .to_string(),
        );
    }
    if let Some(Value::String(name)) = job.inputs.get("connector")
        && !templates::is_template(name)
        && !snapshot.connectors.contains_key(name)
    {
        c.error(
            "/inputs/connector",
            "reference",
            no_such("Connector", name, &snapshot.connectors),
        );
    }
    // The request's fields are rendered like an http step's.
    for (field, value) in job
        .inputs
        .iter()
        .filter(|(k, _)| crate::spec::model::HTTP_REQUEST_FIELDS.contains(&k.as_str()))
    {
        check_values(env, value, &format!("/inputs/{field}"), (&[], false), c);
    }
}

/// Connectors that report and monitor jobs name in their inputs exist.
fn check_named_connectors(job: &Job, snapshot: &Snapshot, c: &mut Checker) {
    let named: &[&str] = match job.job_type.as_str() {
        "report.daily" => &["deliver_to"],
        "monitor.channel" => &["connector", "connectors", "alert_connector"],
        _ => &[],
    };
    for key in named {
        let names: Vec<(String, &str)> = match job.inputs.get(*key) {
            Some(Value::String(n)) => vec![(format!("/inputs/{key}"), n.as_str())],
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_str().map(|n| (format!("/inputs/{key}/{i}"), n)))
                .collect(),
            _ => Vec::new(),
        };
        for (pointer, name) in names {
            if !templates::is_template(name) && !snapshot.connectors.contains_key(name) {
                c.error(
                    &pointer,
                    "reference",
                    no_such("Connector", name, &snapshot.connectors),
                );
            }
        }
    }
}

/// A command job has an argv: a non-empty list of strings.
fn check_command(job: &Job, c: &mut Checker) {
    let argv_ok = job
        .inputs
        .get("argv")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
    if !argv_ok {
        c.push_at_key(
            "/inputs",
            Severity::Error,
            "command",
            "a command job needs `inputs.argv`: a non-empty list of strings (no shell)".to_string(),
        );
    }
    c.warn(
        "/type",
        "command",
        "a command job runs only on a daemon started with `--allow-command`; elsewhere its runs fail"
            .to_string(),
    );
}

fn check_implicit_agent(job: &Job, snapshot: &Snapshot, c: &mut Checker) {
    let openai: Vec<&String> = snapshot
        .connectors
        .iter()
        .filter(|(_, r)| r.spec.provider == Provider::Openai)
        .map(|(id, _)| id)
        .collect();
    match job.inputs.get("llm_connector") {
        Some(Value::String(name)) => match snapshot.connectors.get(name) {
            Some(r) if r.spec.provider == Provider::Openai => {}
            Some(_) => c.error(
                "/inputs/llm_connector",
                "reference",
                format!("connector `{name}` is not an openai connector"),
            ),
            None => c.error(
                "/inputs/llm_connector",
                "reference",
                no_such("Connector", name, &snapshot.connectors),
            ),
        },
        Some(other) => c.error(
            "/inputs/llm_connector",
            "reference",
            format!("`llm_connector` must be a connector id, not {other}"),
        ),
        None if openai.len() == 1 => {}
        None if openai.is_empty() => c.warn(
            "/inputs/prompt",
            "implicit-agent",
            "this job runs its prompt as an implicit agent, but no openai connector is configured: its runs will fail".to_string(),
        ),
        None => c.warn(
            "/inputs/prompt",
            "implicit-agent",
            format!(
                "several openai connectors ({}): set `inputs.llm_connector` to choose one",
                openai
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}
