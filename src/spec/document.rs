//! One YAML document → one typed resource in the snapshot: its kind and
//! id, its placement, its shape (JSON Schema, raw steps, seed aliases),
//! then the typed spec, unless its id is taken.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::diagnostic::{Diagnostic, DocContext, Severity};
use super::model::{DEFAULTS_ID, Kind};
use super::snapshot::{Resource, Snapshot};
use super::yaml::{self, Pos, Positions, YamlDoc};
use super::{SourceFile, SourceMap, aliases, schema, validate};

/// Loads `doc` of `file` into `snapshot`, its findings into `out`.
pub(super) fn load(
    file: &SourceFile,
    doc: YamlDoc,
    snapshot: &mut Snapshot,
    sources: &mut SourceMap,
    out: &mut Vec<Diagnostic>,
) {
    let in_skills_dir = file.path.starts_with("skills.d/");
    let positions = doc.positions;
    let Value::Object(mut map) = doc.value else {
        out.push(DocContext::file(&file.path).at(
            doc.start,
            "",
            Severity::Error,
            "schema",
            "a document must be a mapping with `kind` and `id`",
        ));
        return;
    };
    let Some(kind) = kind_of(&map, &positions, &file.path, in_skills_dir, out) else {
        return;
    };
    let id = id_of(&map, kind);
    let ctx = DocContext {
        file: &file.path,
        kind: Some(kind),
        id: id.as_deref(),
    };
    if (kind == Kind::Skill) != in_skills_dir {
        let place = if kind == Kind::Skill {
            "skills.d/"
        } else {
            "jobs.d/"
        };
        out.push(ctx.at(
            doc.start,
            "",
            Severity::Warning,
            "placement",
            format!("{kind} documents belong in {place}"),
        ));
    }
    let Some(id) = id.clone() else {
        out.push(ctx.at(
            doc.start,
            "",
            Severity::Error,
            "schema",
            "missing required key `id`",
        ));
        return;
    };
    if !check_shape(kind, &mut map, &positions, &ctx, out) {
        // The document is wrong in shape; keep its id known so that
        // references to it do not cascade into more errors.
        sources
            .docs
            .entry((kind, id.clone()))
            .or_insert_with(|| (file.path.clone(), positions.clone()));
        return;
    }
    let at = doc.start;
    if kind == Kind::Defaults && second_defaults(snapshot, &ctx, at, out) {
        return;
    }
    let value = Value::Object(map);
    let typed = Typed {
        file,
        ctx: &ctx,
        positions: &positions,
        at,
    };
    let inserted = match kind {
        Kind::Job => typed.insert(&mut snapshot.jobs, id.clone(), value, out),
        Kind::Flow => typed.insert(&mut snapshot.flows, id.clone(), value, out),
        Kind::Connector => typed.insert(&mut snapshot.connectors, id.clone(), value, out),
        Kind::Skill => typed.insert(&mut snapshot.skills, id.clone(), value, out),
        Kind::Trigger => typed.insert(&mut snapshot.triggers, id.clone(), value, out),
        Kind::Defaults => typed.insert(&mut snapshot.defaults, id.clone(), value, out),
    };
    match inserted {
        Some(None) => {
            sources
                .docs
                .insert((kind, id), (file.path.clone(), positions));
        }
        Some(Some(first)) => out.push(ctx.at(
            positions.value_pos("/id"),
            "/id",
            Severity::Error,
            "duplicate-id",
            format!("{kind} id `{id}` is already defined at {first}"),
        )),
        None => {}
    }
}

/// The document's `kind`, by default the one its folder holds; `None`,
/// with a finding, when it names no kind.
fn kind_of(
    map: &Map<String, Value>,
    positions: &Positions,
    file: &str,
    in_skills_dir: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<Kind> {
    let finding = match map.get("kind") {
        None if in_skills_dir => return Some(Kind::Skill),
        None => return Some(Kind::Job),
        Some(Value::String(k)) => match Kind::parse(k) {
            Some(kind) => return Some(kind),
            None => DocContext {
                file,
                kind: None,
                id: map.get("id").and_then(Value::as_str),
            }
            .at(
                positions.value_pos("/kind"),
                "/kind",
                Severity::Error,
                "schema",
                format!(
                    "unknown kind `{k}`: use Job, Flow, Connector, Skill, Trigger or Defaults{}",
                    super::suggest::hint(k, Kind::ALL.map(Kind::as_str))
                ),
            ),
        },
        Some(other) => DocContext::file(file).at(
            positions.value_pos("/kind"),
            "/kind",
            Severity::Error,
            "schema",
            format!("`kind` must be a string, not {other}"),
        ),
    };
    out.push(finding);
    None
}

/// `id`, or for a job its seed spelling `job_id`; a Defaults document
/// needs none (`defaults`).
fn id_of(map: &Map<String, Value>, kind: Kind) -> Option<String> {
    let id = map
        .get("id")
        .or_else(|| {
            if kind == Kind::Job {
                map.get("job_id")
            } else {
                None
            }
        })
        .and_then(Value::as_str)
        .map(str::to_string);
    match (id, kind) {
        (None, Kind::Defaults) if !map.contains_key("id") => Some(DEFAULTS_ID.to_string()),
        (id, _) => id,
    }
}

/// True, with a finding, when the directory already has a Defaults
/// document (whatever its id): there is one per directory.
fn second_defaults(
    snapshot: &Snapshot,
    ctx: &DocContext<'_>,
    at: Pos,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let Some(first) = snapshot.defaults.values().next() else {
        return false;
    };
    out.push(ctx.at(
        at,
        "",
        Severity::Error,
        "duplicate-defaults",
        format!(
            "a directory has one Defaults document, and {}:{} already is it; \
             merge the two into one",
            first.file, first.line
        ),
    ));
    true
}

/// The JSON Schema and raw-step findings, then (for a job) the seed
/// spellings rewritten; `false` when the shape is wrong.
fn check_shape(
    kind: Kind,
    map: &mut Map<String, Value>,
    positions: &Positions,
    ctx: &DocContext<'_>,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let value = Value::Object(map.clone());
    let mut schema_errors: Vec<Diagnostic> = schema::check(kind, &value, positions, ctx)
        .into_iter()
        // The id/job_id alternative was handled above with a clearer message.
        .filter(|d| !(d.pointer.is_empty() && d.message.contains("does not match any")))
        .collect();
    validate::check_raw_steps(&value, positions, ctx, &mut schema_errors);
    let schema_failed = schema_errors.iter().any(Diagnostic::is_error);
    out.extend(schema_errors);
    if kind == Kind::Job {
        let alias_findings = aliases::normalize_job(map, positions, ctx);
        out.extend(alias_findings);
    }
    !schema_failed
}

/// Where a document is, for turning it into its typed spec.
struct Typed<'a> {
    file: &'a SourceFile,
    ctx: &'a DocContext<'a>,
    positions: &'a Positions,
    at: Pos,
}

impl Typed<'_> {
    /// The typed spec into `map`: `None` when it does not fit the model,
    /// `Some(Some(first))` when the id is taken (where the first is).
    fn insert<T: serde::de::DeserializeOwned + serde::Serialize>(
        &self,
        map: &mut BTreeMap<String, Resource<T>>,
        id: String,
        value: Value,
        out: &mut Vec<Diagnostic>,
    ) -> Option<Option<String>> {
        let spec = typed(value, self.ctx, self.positions, out)?;
        Some(insert(
            map,
            id,
            spec,
            self.file,
            self.at.line,
            self.at.column,
        ))
    }
}

/// Deserialize a schema-valid document into its typed spec.
fn typed<T: serde::de::DeserializeOwned>(
    value: Value,
    ctx: &DocContext<'_>,
    positions: &Positions,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    // The path of the value that does not fit (`timeout_ms: 1e3` is a
    // float where a whole number goes) points the error at its line.
    match serde_path_to_error::deserialize(value) {
        Ok(spec) => Some(spec),
        Err(e) => {
            let pointer = json_pointer(e.path());
            let field = e.path().to_string();
            let inner = e.into_inner();
            let message = if pointer.is_empty() {
                format!(
                    "does not fit the {} model: {inner}",
                    ctx.kind.map_or("", Kind::as_str)
                )
            } else {
                format!("`{field}`: {inner}")
            };
            out.push(ctx.at(
                positions.value_pos(&pointer),
                &pointer,
                Severity::Error,
                "schema",
                message,
            ));
            None
        }
    }
}

/// A serde path as a JSON pointer into the document (up to the first
/// segment that names no key or index).
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                pointer.push('/');
                pointer.push_str(&yaml::escape_token(key));
            }
            Segment::Unknown => break,
        }
    }
    pointer
}

/// Insert unless the id exists; on a duplicate return where the first is.
fn insert<T: serde::Serialize>(
    map: &mut BTreeMap<String, Resource<T>>,
    id: String,
    spec: T,
    file: &SourceFile,
    line: u32,
    column: u32,
) -> Option<String> {
    if let Some(first) = map.get(&id) {
        return Some(format!("{}:{}", first.file, first.line));
    }
    map.insert(id, Resource::new(spec, file.path.clone(), line, column));
    None
}
