//! PURE. The AI planner's side of `multijob new --ai`: the structured
//! output format sent to the model (the job JSON Schema itself, under
//! `{jobs: [...]}`), the prompts, and the model's answer turned into
//! [`PlannedJob`]s, or the findings to send back when it cannot be.
//!
//! The answer is data only: each job is read field by field into a
//! [`PlannedJob`] and [`super::render`] writes its YAML, so nothing the
//! model wrote reaches a file verbatim. A `command` job, or a type our
//! renderer does not write, is a finding like a validation error.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::PlannedJob;
use super::when::Schedule;
use crate::spec::model::Kind;
use crate::spec::schema::schema_text;

/// Largest answer read; a bigger one is refused unread.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Most jobs one answer may plan.
pub const MAX_JOBS: usize = 20;
/// The job types the AI planner writes (those of the rule planner).
pub const TYPES: [&str; 4] = [
    "monitor.channel",
    "report.daily",
    "backup.export",
    "agent.workflow",
];

/// What the model is told beside the sentence.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub timezone: String,
    pub channel: Option<String>,
    pub account: Option<String>,
    /// The directory's job ids (taken).
    pub job_ids: Vec<String>,
    /// The directory's connectors: id and provider name.
    pub connectors: Vec<(String, String)>,
}

/// The `response_format` of the request: `{jobs: [<job schema>]}`. The
/// job schema's `$defs` move to the root so its `#/$defs/...` references
/// still resolve.
///
/// Sent with `strict: false`: OpenAI's strict mode needs every object to
/// list all its properties as `required` and `additionalProperties:
/// false`, and refuses `if`/`then`, `patternProperties` and `oneOf`
/// branches the job schema uses; rewriting it would no longer be the
/// schema `validate` checks, so we ask non-strict and validate ourselves.
pub fn response_format() -> Value {
    let mut job: Map<String, Value> = serde_json::from_str(schema_text(Kind::Job))
        .ok()
        .and_then(|v: Value| v.as_object().cloned())
        .unwrap_or_default();
    let defs = job.remove("$defs").unwrap_or_else(|| json!({}));
    job.remove("$schema");
    job.remove("$id");
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "multijob_plan",
            "strict": false,
            "schema": {
                "type": "object",
                "required": ["jobs"],
                "additionalProperties": false,
                "properties": {
                    "jobs": {"type": "array", "minItems": 1, "maxItems": MAX_JOBS, "items": job}
                },
                "$defs": defs
            }
        }
    })
}

/// The system message: the rules of the answer and the directory's facts.
pub fn system_prompt(ctx: &Context) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(", ")
        }
    };
    let connectors: Vec<String> = ctx
        .connectors
        .iter()
        .map(|(id, p)| format!("{id} ({p})"))
        .collect();
    format!(
        "You plan jobs for multijob, a declarative job runner. Turn the user's sentence \
(Indonesian or English) into jobs. Answer only JSON: {{\"jobs\": [...]}}, each item a job \
of the given JSON Schema. Use only these types: {types}. Never use type `command` and never \
put code or shell in any field. Give each job a readable lowercase slug id (a-z, 0-9, -) that \
is not taken. Write schedules as `schedule: {{every: \"30s\"}}` or `schedule: {{cron: \"0 7 * * *\", \
timezone: ...}}`.\n\
Time zone of every schedule: {tz}.\n\
Default channel: {channel}. Default account: {account}. Put a job's channel and account in \
`labels: {{channel, account}}`.\n\
A monitor.channel job checks `inputs.connector`; a report.daily job has `inputs.period` \
(e.g. 24h) and `inputs.deliver_to` (connector ids).\n\
Job ids taken in the directory: {jobs}.\n\
Connectors of the directory: {conns}.",
        types = TYPES.join(", "),
        tz = ctx.timezone,
        channel = ctx.channel.as_deref().unwrap_or("(none)"),
        account = ctx.account.as_deref().unwrap_or("(none)"),
        jobs = list(&ctx.job_ids),
        conns = list(&connectors),
    )
}

/// The user message that sends the findings of a refused answer back.
pub fn retry_prompt(findings: &[String]) -> String {
    format!(
        "Your plan was refused; fix these and answer the whole plan again, JSON only:\n- {}",
        findings.join("\n- ")
    )
}

/// The jobs of the model's answer, or why it is refused (each finding
/// names `jobs[i].field`). `sentence` is the part of a job without a
/// description.
pub fn jobs_of(
    answer: &str,
    ctx: &Context,
    sentence: &str,
) -> Result<Vec<PlannedJob>, Vec<String>> {
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(vec![format!(
            "the answer is {} bytes; at most {MAX_ANSWER_BYTES} are read",
            answer.len()
        )]);
    }
    let value: Value = serde_json::from_str(answer.trim()).map_err(|e| {
        vec![format!(
            "the answer is not JSON ({e}); answer only the JSON object"
        )]
    })?;
    let items = match value.get("jobs").and_then(Value::as_array) {
        Some(items) if !items.is_empty() && items.len() <= MAX_JOBS => items,
        Some(items) if !items.is_empty() => {
            return Err(vec![format!(
                "jobs: {} jobs; plan at most {MAX_JOBS}",
                items.len()
            )]);
        }
        _ => return Err(vec!["jobs: a non-empty array of jobs is required".into()]),
    };
    let mut jobs = Vec::new();
    let mut findings = Vec::new();
    let mut ids = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        match job_of(item, ctx, sentence) {
            Ok(job) if !ids.insert(job.id.clone()) => {
                findings.push(format!("jobs[{i}].id: {:?} is used twice", job.id));
            }
            Ok(job) => jobs.push(job),
            Err(why) => findings.extend(why.into_iter().map(|w| format!("jobs[{i}].{w}"))),
        }
    }
    if findings.is_empty() {
        Ok(jobs)
    } else {
        Err(findings)
    }
}

/// Keys of a job this planner reads; any other is dropped with a warning.
const READ_KEYS: [&str; 8] = [
    "kind",
    "id",
    "type",
    "description",
    "labels",
    "schedule",
    "inputs",
    "enabled",
];

/// One job of the answer; findings are `field: why`.
fn job_of(item: &Value, ctx: &Context, sentence: &str) -> Result<PlannedJob, Vec<String>> {
    let Some(obj) = item.as_object() else {
        return Err(vec!["(the job): not an object".into()]);
    };
    let mut findings = Vec::new();
    let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_string);
    let job_type = match text("type").as_deref() {
        Some("command") => {
            findings.push(
                "type: `command` runs a process; the AI planner may not plan one (use one of the listed types)".into(),
            );
            None
        }
        Some(t) => TYPES.iter().find(|k| **k == t).copied().or_else(|| {
            findings.push(format!("type: {t:?} is not one of {}", TYPES.join(", ")));
            None
        }),
        None => {
            findings.push("type: required".into());
            None
        }
    };
    let id = text("id").unwrap_or_default();
    if !valid_id(&id) {
        findings.push(format!(
            "id: {id:?} must be 1-100 of a-z, 0-9 and '-', starting with a letter"
        ));
    }
    if let Some(kind) = text("kind").filter(|k| k != "Job") {
        findings.push(format!("kind: {kind:?} must be Job"));
    }
    let (schedule, timezone) = schedule_of(obj.get("schedule"), ctx, &mut findings);
    let labels = obj.get("labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let inputs = obj.get("inputs");
    let input = |k: &str| inputs.and_then(|l| l.get(k));
    let mut connectors: Vec<String> = match input("deliver_to") {
        Some(Value::Array(v)) => v
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    if let Some(c) = input("connector").and_then(Value::as_str) {
        connectors.insert(0, c.to_string());
    }
    let warnings = obj
        .keys()
        .filter(|k| !READ_KEYS.contains(&k.as_str()))
        .map(|k| {
            format!("the model's field `{k}` of job {id} was dropped; add it by hand if needed")
        })
        .collect();
    let Some(job_type) = job_type.filter(|_| findings.is_empty()) else {
        return Err(findings);
    };
    Ok(PlannedJob {
        id,
        job_type,
        part: text("description").unwrap_or_else(|| sentence.to_string()),
        schedule,
        timezone,
        channel: label("channel").map(String::from),
        connectors,
        account: label("account").map(String::from),
        period: input("period").and_then(Value::as_str).map(String::from),
        warnings,
    })
}

/// `every` or `cron`, and the zone (the context's when the model gave none).
fn schedule_of(
    schedule: Option<&Value>,
    ctx: &Context,
    findings: &mut Vec<String>,
) -> (Schedule, String) {
    let Some(s) = schedule.filter(|s| !s.is_null()) else {
        return (Schedule::None, ctx.timezone.clone());
    };
    let field = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
    let timezone = field("timezone").unwrap_or_else(|| ctx.timezone.clone());
    let schedule = match (field("every"), field("cron")) {
        (Some(e), None) => Schedule::Every(e),
        (None, Some(c)) => Schedule::Cron(c),
        _ => {
            findings
                .push("schedule: exactly one of `every` or `cron` (a string) is required".into());
            Schedule::None
        }
    };
    (schedule, timezone)
}

fn valid_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            timezone: "Asia/Jakarta".into(),
            ..Context::default()
        }
    }

    #[test]
    fn a_monitor_and_a_report_become_planned_jobs() {
        let answer = r#"{"jobs": [
          {"id": "monitor-telegram-bot-a01", "type": "monitor.channel",
           "labels": {"channel": "telegram", "account": "bot_a01"},
           "schedule": {"every": "30s"}, "inputs": {"connector": "tg"}},
          {"id": "laporan-harian", "type": "report.daily", "description": "laporan harian",
           "schedule": {"cron": "0 7 * * *", "timezone": "UTC"},
           "inputs": {"period": "24h", "deliver_to": ["mail"]}, "retry_policy": {}}]}"#;
        let jobs = jobs_of(answer, &ctx(), "the sentence").unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].job_type, "monitor.channel");
        assert_eq!(jobs[0].schedule, Schedule::Every("30s".into()));
        assert_eq!(jobs[0].timezone, "Asia/Jakarta");
        assert_eq!(jobs[0].account.as_deref(), Some("bot_a01"));
        assert_eq!(jobs[0].connectors, vec!["tg".to_string()]);
        assert_eq!(jobs[0].part, "the sentence");
        assert_eq!(jobs[1].schedule, Schedule::Cron("0 7 * * *".into()));
        assert_eq!(jobs[1].timezone, "UTC");
        assert_eq!(jobs[1].period.as_deref(), Some("24h"));
        assert_eq!(jobs[1].connectors, vec!["mail".to_string()]);
        assert!(
            jobs[1].warnings[0].contains("retry_policy"),
            "{:?}",
            jobs[1].warnings
        );
    }

    #[test]
    fn a_command_job_is_a_finding_never_a_job() {
        let answer =
            r#"{"jobs": [{"id": "x", "type": "command", "inputs": {"argv": ["rm", "-rf", "/"]}}]}"#;
        let why = jobs_of(answer, &ctx(), "s").unwrap_err();
        assert!(why[0].starts_with("jobs[0].type: `command`"), "{why:?}");
    }

    #[test]
    fn malformed_answers_are_findings_naming_the_field() {
        let cases = [
            ("not json", "not JSON"),
            ("{}", "jobs: a non-empty array"),
            (r#"{"jobs": []}"#, "jobs: a non-empty array"),
            (r#"{"jobs": [1]}"#, "jobs[0].(the job): not an object"),
            (
                r#"{"jobs": [{"id": "A b", "type": "backup.export"}]}"#,
                "jobs[0].id:",
            ),
            (
                r#"{"jobs": [{"id": "a", "type": "nope"}]}"#,
                "jobs[0].type: \"nope\"",
            ),
            (r#"{"jobs": [{"id": "a"}]}"#, "jobs[0].type: required"),
            (
                r#"{"jobs": [{"id": "a", "type": "backup.export", "schedule": {"every": "1m", "cron": "* * * * *"}}]}"#,
                "jobs[0].schedule: exactly one",
            ),
            (
                r#"{"jobs": [{"id": "a", "type": "backup.export"}, {"id": "a", "type": "backup.export"}]}"#,
                "jobs[1].id: \"a\" is used twice",
            ),
        ];
        for (answer, want) in cases {
            let why = jobs_of(answer, &ctx(), "s").unwrap_err();
            assert!(why.iter().any(|w| w.contains(want)), "{answer}: {why:?}");
        }
    }

    #[test]
    fn an_oversized_answer_is_refused_unread() {
        let answer = format!(
            "{{\"jobs\": [], \"pad\": \"{}\"}}",
            "x".repeat(MAX_ANSWER_BYTES)
        );
        let why = jobs_of(&answer, &ctx(), "s").unwrap_err();
        assert!(why[0].contains("at most"), "{why:?}");
    }

    #[test]
    fn the_format_carries_the_job_schema_with_its_defs_at_the_root() {
        let f = response_format();
        let schema = &f["json_schema"]["schema"];
        assert_eq!(f["type"], "json_schema");
        assert!(schema["$defs"]["schedule"].is_object());
        let items = &schema["properties"]["jobs"]["items"];
        assert!(items["properties"]["schedule"].is_object());
        assert!(items.get("$defs").is_none());
        let compiled = jsonschema::validator_for(schema);
        assert!(compiled.is_ok(), "{:?}", compiled.err());
    }
}
