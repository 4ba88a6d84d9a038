//! Seed aliases: the Python platform's spellings, rewritten to the preferred
//! ones so a seed job spec validates unchanged. Each rewrite is reported as
//! a warning naming the preferred spelling.

use serde_json::{Map, Value};

use super::diagnostic::{Diagnostic, DocContext, Severity};
use super::yaml::Positions;

/// `(alias key, failure_memory field)` accepted at top level or in inputs.
const FAILURE_ALIASES: [(&str, &str); 4] = [
    ("failure_memory_enabled", "enabled"),
    ("failure_threshold", "threshold"),
    ("failure_cooldown_sec", "cooldown_sec"),
    ("failure_cooldown_max_sec", "cooldown_max_sec"),
];

const PRIORITIES: [&str; 4] = ["critical", "high", "normal", "low"];

/// Rewrite a Job document's seed aliases in place.
pub fn normalize_job(
    doc: &mut Map<String, Value>,
    positions: &Positions,
    ctx: &DocContext<'_>,
) -> Vec<Diagnostic> {
    let mut f = Findings {
        ctx,
        positions,
        out: Vec::new(),
    };
    job_id(doc, &mut f);
    let inputs = doc
        .get("inputs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(group) = inputs.get("flow_group") {
        flow_group(doc, group, &mut f);
    }
    if let Some(priority) = inputs.get("pressure_priority") {
        pressure_priority(doc, priority, &mut f);
    }
    if let Some(allow) = inputs.get("allow_overlap") {
        allow_overlap(doc, allow, &mut f);
    }
    // failure_* keys: top level wins over inputs; both rewrite failure_memory.
    for (alias, field) in FAILURE_ALIASES {
        let (value, pointer) = match doc.remove(alias) {
            Some(v) => (v, format!("/{alias}")),
            None => match inputs.get(alias) {
                Some(v) => (v.clone(), format!("/inputs/{alias}")),
                None => continue,
            },
        };
        failure_alias(doc, alias, field, value, &pointer, &mut f);
    }
    f.out
}

/// What rewriting one document found.
struct Findings<'a> {
    ctx: &'a DocContext<'a>,
    positions: &'a Positions,
    out: Vec<Diagnostic>,
}

impl Findings<'_> {
    /// A seed spelling, rewritten or redundant: a warning at its key.
    fn alias(&mut self, pointer: &str, message: String) {
        self.at_key(pointer, Severity::Warning, "alias", message);
    }

    /// A seed spelling that disagrees with the preferred one.
    fn conflict(&mut self, pointer: &str, message: String) {
        self.at_key(pointer, Severity::Error, "alias-conflict", message);
    }

    /// A seed spelling whose value has the wrong type, at the value.
    fn bad_value(&mut self, pointer: &str, message: String) {
        let pos = self.positions.value_pos(pointer);
        self.out.push(
            self.ctx
                .at(pos, pointer, Severity::Error, "schema", message),
        );
    }

    fn at_key(&mut self, pointer: &str, severity: Severity, code: &str, message: String) {
        let pos = self.positions.key_pos(pointer);
        self.out
            .push(self.ctx.at(pos, pointer, severity, code, message));
    }
}

/// `job_id` → `id`.
fn job_id(doc: &mut Map<String, Value>, f: &mut Findings) {
    let Some(job_id) = doc.remove("job_id") else {
        return;
    };
    match doc.get("id") {
        None => {
            doc.insert("id".into(), job_id);
            f.alias("/job_id", "`job_id` is a seed alias; write `id`".into());
        }
        Some(id) if *id == job_id => {
            f.alias("/job_id", "`job_id` repeats `id`; remove it".into());
        }
        Some(id) => f.conflict(
            "/job_id",
            format!("`job_id` {job_id} disagrees with `id` {id}; keep only `id`"),
        ),
    }
}

/// `inputs.flow_group` → `flow`.
fn flow_group(doc: &mut Map<String, Value>, group: &Value, f: &mut Findings) {
    let pointer = "/inputs/flow_group";
    match doc.get("flow") {
        None => {
            doc.insert("flow".into(), group.clone());
            f.alias(
                pointer,
                "`inputs.flow_group` is a seed alias; write `flow:` at top level".into(),
            );
        }
        Some(flow) if flow == group => {}
        Some(flow) => f.conflict(
            pointer,
            format!("`inputs.flow_group` {group} disagrees with `flow` {flow}"),
        ),
    }
}

/// `inputs.pressure_priority` → `priority`.
fn pressure_priority(doc: &mut Map<String, Value>, priority: &Value, f: &mut Findings) {
    let pointer = "/inputs/pressure_priority";
    let valid = priority.as_str().is_some_and(|p| PRIORITIES.contains(&p));
    if !valid {
        f.bad_value(
            pointer,
            format!("{priority} is not one of: {}", PRIORITIES.join(", ")),
        );
    } else if doc.get("priority").is_none() {
        doc.insert("priority".into(), priority.clone());
        f.alias(
            pointer,
            "`inputs.pressure_priority` is a seed alias; write `priority:` at top level".into(),
        );
    } else if doc.get("priority") != Some(priority) {
        f.conflict(
            pointer,
            "`inputs.pressure_priority` disagrees with `priority`".into(),
        );
    }
}

/// `inputs.allow_overlap: true|false` → `overlap: allow|forbid`.
fn allow_overlap(doc: &mut Map<String, Value>, allow: &Value, f: &mut Findings) {
    let pointer = "/inputs/allow_overlap";
    let Some(allow) = allow.as_bool() else {
        f.bad_value(
            pointer,
            format!("`inputs.allow_overlap` must be true or false, not {allow}"),
        );
        return;
    };
    let overlap = if allow { "allow" } else { "forbid" };
    match doc.get("overlap").and_then(Value::as_str) {
        None => {
            doc.insert("overlap".into(), Value::from(overlap));
            f.alias(
                pointer,
                format!("`inputs.allow_overlap` is a seed alias; write `overlap: {overlap}`"),
            );
        }
        Some(o) if o == overlap => {}
        Some(o) => f.conflict(
            pointer,
            format!("`inputs.allow_overlap: {allow}` disagrees with `overlap: {o}`"),
        ),
    }
}

/// One `failure_*` key (at `pointer`) → `failure_memory.<field>`.
fn failure_alias(
    doc: &mut Map<String, Value>,
    alias: &str,
    field: &str,
    value: Value,
    pointer: &str,
    f: &mut Findings,
) {
    let expected_ok = if field == "enabled" {
        value.is_boolean()
    } else {
        value.as_u64().is_some()
    };
    if !expected_ok {
        f.bad_value(
            pointer,
            format!(
                "`{alias}` must be {}, not {value}",
                if field == "enabled" {
                    "true or false"
                } else {
                    "a whole number"
                }
            ),
        );
        return;
    }
    let memory = doc
        .entry("failure_memory")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(memory) = memory {
        match memory.get(field) {
            Some(existing) if *existing != value => f.conflict(
                pointer,
                format!("`{alias}` disagrees with `failure_memory.{field}`"),
            ),
            _ => {
                memory.insert(field.into(), value);
                f.alias(
                    pointer,
                    format!("`{alias}` is a seed alias; write `failure_memory: {{{field}: ...}}`"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::Kind;
    use serde_json::json;

    fn run(doc: Value) -> (Value, Vec<Diagnostic>) {
        let mut map = doc.as_object().cloned().unwrap();
        let ctx = DocContext {
            file: "f.json",
            kind: Some(Kind::Job),
            id: Some("x"),
        };
        let diags = normalize_job(&mut map, &Positions::default(), &ctx);
        (Value::Object(map), diags)
    }

    #[test]
    fn seed_aliases_are_rewritten_with_warnings() {
        let (doc, diags) = run(json!({
            "job_id": "a", "type": "noop",
            "failure_threshold": 5, "failure_memory_enabled": true,
            "inputs": {"flow_group": "team", "pressure_priority": "critical",
                       "allow_overlap": false, "failure_cooldown_sec": 120}
        }));
        assert_eq!(doc["id"], "a");
        assert_eq!(doc["flow"], "team");
        assert_eq!(doc["priority"], "critical");
        assert_eq!(doc["overlap"], "forbid");
        assert_eq!(
            doc["failure_memory"],
            json!({"threshold": 5, "enabled": true, "cooldown_sec": 120})
        );
        assert!(doc.get("job_id").is_none());
        assert_eq!(diags.len(), 7, "{diags:#?}");
        assert!(diags.iter().all(|d| d.severity == Severity::Warning));
        assert!(diags.iter().any(|d| d.message.contains("write `id`")));
    }

    #[test]
    fn conflicting_aliases_are_errors() {
        let (_, diags) = run(json!({
            "id": "a", "job_id": "b", "type": "noop", "flow": "x",
            "inputs": {"flow_group": "y", "pressure_priority": "urgent"}
        }));
        let codes: Vec<_> = diags
            .iter()
            .map(|d| (d.code.as_str(), d.severity))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("alias-conflict", Severity::Error),
                ("alias-conflict", Severity::Error),
                ("schema", Severity::Error)
            ]
        );
    }
}
