//! The JSON Schemas of `schemas/`, embedded, compiled once, and their errors
//! turned into diagnostics that point at the offending YAML key or value.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::diagnostic::{Diagnostic, DocContext, Severity};
use super::model::Kind;
use super::suggest;
use super::yaml::{Positions, escape_token};

/// The schema files exactly as checked in under `schemas/`.
pub fn schema_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Job => include_str!("../../schemas/job.schema.json"),
        Kind::Flow => include_str!("../../schemas/flow.schema.json"),
        Kind::Connector => include_str!("../../schemas/connector.schema.json"),
        Kind::Skill => include_str!("../../schemas/skill.schema.json"),
        Kind::Trigger => include_str!("../../schemas/trigger.schema.json"),
        Kind::Defaults => include_str!("../../schemas/defaults.schema.json"),
    }
}

struct Compiled {
    validator: Validator,
    /// Every property name the schema declares, for "did you mean".
    known_keys: BTreeSet<String>,
}

static COMPILED: LazyLock<Vec<Result<Compiled, String>>> =
    LazyLock::new(|| Kind::ALL.iter().map(|k| compile(*k)).collect());

fn compile(kind: Kind) -> Result<Compiled, String> {
    let schema: Value = serde_json::from_str(schema_text(kind))
        .map_err(|e| format!("embedded {} schema is not JSON: {e}", kind.schema_name()))?;
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .map_err(|e| {
            format!(
                "embedded {} schema does not compile: {e}",
                kind.schema_name()
            )
        })?;
    let mut known_keys = BTreeSet::new();
    collect_property_names(&schema, &mut known_keys);
    Ok(Compiled {
        validator,
        known_keys,
    })
}

fn collect_property_names(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                out.extend(props.keys().cloned());
            }
            for v in map.values() {
                collect_property_names(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_property_names(v, out)),
        _ => {}
    }
}

/// Check that every embedded schema compiles (used by tests and `schema`).
pub fn self_check() -> Result<(), String> {
    for c in COMPILED.iter() {
        if let Err(e) = c {
            return Err(e.clone());
        }
    }
    Ok(())
}

/// Every secret that is not a `${env:NAME}` / `${file:PATH}` reference,
/// whatever its type, checked on the raw document so that another error
/// in the connector cannot hide one. The value is never part of the
/// message (and `validate` prints no excerpt for these).
const FIX: &str = "secrets never live in git: write `${env:NAME}` or `${file:PATH}`";

/// A connector's fields that hold only secret references: maps of them
/// (`secrets`, an MCP server's `env` and `headers`) and one (`token`).
const SECRET_MAPS: [&str; 3] = ["secrets", "env", "headers"];
const SECRET_FIELDS: [&str; 1] = ["token"];

fn literal_secrets(
    value: &Value,
    positions: &Positions,
    ctx: &DocContext<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let mut literal = |pointer: String, message: String| {
        out.push(ctx.at(
            positions.value_pos(&pointer),
            &pointer,
            Severity::Error,
            "literal-secret",
            message,
        ));
    };
    for key in SECRET_FIELDS {
        match value.get(key) {
            Some(v) if !v.as_str().is_some_and(super::validate::is_secret_reference) => literal(
                format!("/{key}"),
                format!("`{key}` holds a literal value; {FIX}"),
            ),
            _ => {}
        }
    }
    for key in SECRET_MAPS {
        let Some(secrets) = value.get(key) else {
            continue;
        };
        let Some(map) = secrets.as_object() else {
            literal(
                format!("/{key}"),
                format!("`{key}` must map names to references; {FIX}"),
            );
            continue;
        };
        for (name, v) in map {
            if v.as_str().is_some_and(super::validate::is_secret_reference) {
                continue;
            }
            let what = if key == "secrets" { "secret" } else { key };
            literal(
                format!("/{key}/{}", escape_token(name)),
                format!("{what} `{name}` holds a literal value; {FIX}"),
            );
        }
    }
}

/// A Trigger's `secret` (its signing secret) that is not a reference,
/// reported like a connector's: without the value.
fn literal_trigger_secret(
    value: &Value,
    positions: &Positions,
    ctx: &DocContext<'_>,
    out: &mut Vec<Diagnostic>,
) {
    match value.get("secret") {
        None => {} // `required` says it is missing
        Some(v) if v.as_str().is_some_and(super::validate::is_secret_reference) => {}
        Some(_) => out.push(ctx.at(
            positions.value_pos("/secret"),
            "/secret",
            Severity::Error,
            "literal-secret",
            format!("`secret` holds a literal value, not a reference; {FIX}"),
        )),
    }
}

/// The pointer under which a kind's schema errors would echo a secret
/// value: reported without it by the checks above instead.
fn secret_pointers(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Connector => &["/secrets", "/env", "/headers", "/token"],
        Kind::Trigger => &["/secret"],
        _ => &[],
    }
}

/// Validate one document against its kind's schema.
pub fn check(
    kind: Kind,
    value: &Value,
    positions: &Positions,
    ctx: &DocContext<'_>,
) -> Vec<Diagnostic> {
    let compiled = match &COMPILED[kind as usize] {
        Ok(c) => c,
        Err(e) => {
            return vec![ctx.at(
                positions.value_pos(""),
                "",
                Severity::Error,
                "internal",
                e.clone(),
            )];
        }
    };
    let mut out = Vec::new();
    match kind {
        Kind::Connector => literal_secrets(value, positions, ctx, &mut out),
        Kind::Trigger => literal_trigger_secret(value, positions, ctx, &mut out),
        _ => {}
    }
    for error in compiled.validator.iter_errors(value) {
        // Reported above without the value: a schema message or excerpt
        // would echo it ("1234567890 is not of type string").
        let path = error.instance_path().as_str();
        if secret_pointers(kind).iter().any(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }) {
            continue;
        }
        describe(&error, compiled, positions, ctx, &mut out);
    }
    out
}

fn describe(
    error: &ValidationError<'_>,
    compiled: &Compiled,
    positions: &Positions,
    ctx: &DocContext<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let pointer = error.instance_path().as_str();
    let value_pos = positions.value_pos(pointer);
    let err = |pos, pointer: &str, message: String| {
        ctx.at(pos, pointer, Severity::Error, "schema", message)
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for key in unexpected {
                let child = format!("{pointer}/{}", escape_token(key));
                let message = format!(
                    "unknown key `{key}`{}",
                    suggest::hint(key, compiled.known_keys.iter().map(String::as_str))
                );
                out.push(err(positions.key_pos(&child), &child, message));
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            out.push(err(
                value_pos,
                pointer,
                format!("missing required key `{name}`"),
            ));
        }
        ValidationErrorKind::Enum { options } => {
            out.push(err(
                value_pos,
                pointer,
                enum_message(options, error.instance()),
            ));
        }
        // Only metric labels constrain key names: the key as the instance.
        ValidationErrorKind::PropertyNames { error: inner } => {
            let key = inner.instance().as_str().unwrap_or_default();
            let child = format!("{pointer}/{}", escape_token(key));
            out.push(err(
                positions.key_pos(&child),
                &child,
                format!(
                    "label `{key}` is not a Prometheus label name: a letter or `_`, then letters, digits, `_` (not `__...`)"
                ),
            ));
        }
        ValidationErrorKind::Pattern { pattern } => {
            let message = pattern_message(pointer, pattern, error.instance());
            out.push(err(value_pos, pointer, message));
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // Report the branch that got furthest into the value: it is the
            // one the author most likely meant.
            let best = context.iter().max_by_key(|branch| {
                branch
                    .iter()
                    .map(|e| e.instance_path().as_str().len())
                    .max()
                    .unwrap_or(0)
            });
            match best {
                Some(branch)
                    if branch
                        .iter()
                        .any(|e| e.instance_path().as_str().len() > pointer.len()) =>
                {
                    for e in branch {
                        describe(e, compiled, positions, ctx, out);
                    }
                }
                _ => out.push(err(
                    value_pos,
                    pointer,
                    format!(
                        "{} does not match any allowed form ({})",
                        short(error.instance()),
                        allowed_forms(context)
                    ),
                )),
            }
        }
        ValidationErrorKind::Not { schema } => {
            out.push(err(value_pos, pointer, not_message(schema, error)));
        }
        _ => out.push(err(value_pos, pointer, error.to_string())),
    }
}

/// `value` is not one of the `options` of an enum.
fn enum_message(options: &Value, value: &Value) -> String {
    let allowed = match options {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    let near = match (options, value) {
        (Value::Array(items), Value::String(word)) => {
            suggest::hint(word, items.iter().filter_map(Value::as_str))
        }
        _ => String::new(),
    };
    format!("{} is not one of: {allowed}{near}", short(value))
}

/// `value` at `pointer` does not match `pattern`; ids say what they allow.
fn pattern_message(pointer: &str, pattern: &str, value: &Value) -> String {
    let what = pointer.rsplit('/').next().unwrap_or("");
    if pointer.contains("/steps/") && what == "id" {
        format!(
            "invalid step id {}: use letters, digits and `_`, starting with a letter or `_` (templates read it as steps.<id>)",
            short(value)
        )
    } else if what == "id" || what == "job_id" {
        format!(
            "invalid id {}: use letters, digits, `.`, `_`, `-` (at most 128), starting with a letter or digit",
            short(value)
        )
    } else if what == "command_prefix" {
        format!(
            "command_prefix {}: a chat command is `/`, a lowercase letter, then at most 31 lowercase letters, digits or `_`, like `/brief`",
            short(value)
        )
    } else if what == "every" {
        format!(
            "{}: use a number with s, m, h or d, like 30s or 5m (or combined, like 1h30m)",
            short(value)
        )
    } else {
        format!("{} does not match `{pattern}`", short(value))
    }
}

/// A `not` schema failed. Our schemas use `not: {required: [a, b]}` for
/// "not both".
fn not_message(schema: &Value, error: &ValidationError<'_>) -> String {
    let both: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match both.as_slice() {
        [a, b] => format!("give either `{a}` or `{b}`, not both"),
        _ => error.to_string(),
    }
}

fn allowed_forms(context: &[Vec<ValidationError<'static>>]) -> String {
    context
        .iter()
        .filter_map(|branch| branch.first().map(|e| e.to_string()))
        .collect::<Vec<_>>()
        .join("; or ")
}

/// A value for a message: short, one line.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_compile() {
        self_check().unwrap();
    }

    #[test]
    fn an_enum_value_close_to_an_option_gets_a_suggestion() {
        let options = serde_json::json!(["command", "noop"]);
        assert_eq!(
            enum_message(&options, &Value::from("comand")),
            "\"comand\" is not one of: command, noop (did you mean `command`?)"
        );
        assert_eq!(
            enum_message(&options, &Value::from("shell")),
            "\"shell\" is not one of: command, noop"
        );
    }
}
