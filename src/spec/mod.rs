//! PURE. Config text → validated [`Snapshot`] plus every finding, each with
//! `file:line:column`.
//!
//! The path: [`yaml`] parses each file into documents with a position index;
//! [`schema`] checks each against its kind's JSON Schema; [`aliases`] rewrites
//! seed spellings; the document becomes a typed [`model`] resource; then
//! [`validate`] checks what a schema cannot (cron, templates, references,
//! `uses` loops and depth ([`uses`]), secrets). All findings are collected,
//! never only the first.

pub mod aliases;
pub mod diagnostic;
pub mod model;
pub mod schema;
pub mod snapshot;
pub mod templates;
pub mod uses;
pub mod validate;
pub mod yaml;

use std::collections::HashMap;

use serde_json::Value;

use diagnostic::{Diagnostic, DocContext, Severity};
use model::Kind;
use snapshot::{Resource, Snapshot};
use yaml::Positions;

/// One config file's text. `path` is relative to the config directory.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// The outcome of loading a directory: the snapshot of every resource that
/// loaded, and the findings. Apply the snapshot only when `!has_errors()`.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// Where each loaded resource's document is, for findings about it.
#[derive(Debug, Default)]
pub struct SourceMap {
    docs: HashMap<(Kind, String), (String, Positions)>,
}

impl SourceMap {
    /// The file and position index of a resource's document.
    pub fn get(&self, kind: Kind, id: &str) -> Option<(&str, &Positions)> {
        self.docs
            .get(&(kind, id.to_string()))
            .map(|(f, p)| (f.as_str(), p))
    }
}

/// Load, check and assemble every file.
pub fn build(files: &[SourceFile]) -> Loaded {
    let mut snapshot = Snapshot::default();
    let mut diagnostics = Vec::new();
    let mut sources = SourceMap::default();
    for file in files {
        load_file(file, &mut snapshot, &mut sources, &mut diagnostics);
    }
    let unread: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.code == "syntax")
        .map(|d| d.file.clone())
        .collect();
    let checked_from = diagnostics.len();
    validate::check_snapshot(&mut snapshot, &sources, &mut diagnostics);
    // A file that does not parse defines nothing: a reference to what it
    // holds reads as missing. Say so, so the one real error stands out.
    if !unread.is_empty() {
        let hint = format!(
            " (or it is defined in {}, which does not parse)",
            unread.join(", ")
        );
        for d in &mut diagnostics[checked_from..] {
            if d.code == "reference" {
                d.message.push_str(&hint);
            }
        }
    }
    diagnostic::sort(&mut diagnostics);
    Loaded {
        snapshot,
        diagnostics,
    }
}

fn load_file(
    file: &SourceFile,
    snapshot: &mut Snapshot,
    sources: &mut SourceMap,
    out: &mut Vec<Diagnostic>,
) {
    let in_skills_dir = file.path.starts_with("skills.d/");
    let docs = match yaml::parse_documents(&file.text) {
        Ok(docs) => docs,
        Err(e) => {
            out.push(Diagnostic::file_error(
                &file.path, e.pos, "syntax", e.message,
            ));
            return;
        }
    };
    for doc in docs {
        let positions = doc.positions;
        let Value::Object(mut map) = doc.value else {
            out.push(
                DocContext {
                    file: &file.path,
                    kind: None,
                    id: None,
                }
                .at(
                    doc.start,
                    "",
                    Severity::Error,
                    "schema",
                    "a document must be a mapping with `kind` and `id`",
                ),
            );
            continue;
        };
        let default_kind = if in_skills_dir {
            Kind::Skill
        } else {
            Kind::Job
        };
        let kind = match map.get("kind") {
            None => default_kind,
            Some(Value::String(k)) => match Kind::parse(k) {
                Some(kind) => kind,
                None => {
                    out.push(
                        DocContext {
                            file: &file.path,
                            kind: None,
                            id: map.get("id").and_then(Value::as_str),
                        }
                        .at(
                            positions.value_pos("/kind"),
                            "/kind",
                            Severity::Error,
                            "schema",
                            format!("unknown kind `{k}`: use Job, Flow, Connector or Skill"),
                        ),
                    );
                    continue;
                }
            },
            Some(other) => {
                out.push(
                    DocContext {
                        file: &file.path,
                        kind: None,
                        id: None,
                    }
                    .at(
                        positions.value_pos("/kind"),
                        "/kind",
                        Severity::Error,
                        "schema",
                        format!("`kind` must be a string, not {other}"),
                    ),
                );
                continue;
            }
        };
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
            continue;
        };
        let value = Value::Object(map.clone());
        let schema_errors: Vec<Diagnostic> = schema::check(kind, &value, &positions, &ctx)
            .into_iter()
            // The id/job_id alternative was handled above with a clearer message.
            .filter(|d| !(d.pointer.is_empty() && d.message.contains("does not match any")))
            .collect();
        let mut schema_errors = schema_errors;
        validate::check_raw_steps(&value, &positions, &ctx, &mut schema_errors);
        let schema_failed = schema_errors.iter().any(Diagnostic::is_error);
        out.extend(schema_errors);
        if kind == Kind::Job {
            let alias_findings = aliases::normalize_job(&mut map, &positions, &ctx);
            out.extend(alias_findings);
        }
        if schema_failed {
            // The document is wrong in shape; keep its id known so that
            // references to it do not cascade into more errors.
            sources
                .docs
                .entry((kind, id.clone()))
                .or_insert_with(|| (file.path.clone(), positions.clone()));
            continue;
        }
        let value = Value::Object(map);
        let pos = doc.start;
        let inserted = match kind {
            Kind::Job => typed(value, &ctx, &positions, out).map(|spec| {
                insert(
                    &mut snapshot.jobs,
                    id.clone(),
                    spec,
                    file,
                    pos.line,
                    pos.column,
                )
            }),
            Kind::Flow => typed(value, &ctx, &positions, out).map(|spec| {
                insert(
                    &mut snapshot.flows,
                    id.clone(),
                    spec,
                    file,
                    pos.line,
                    pos.column,
                )
            }),
            Kind::Connector => typed(value, &ctx, &positions, out).map(|spec| {
                insert(
                    &mut snapshot.connectors,
                    id.clone(),
                    spec,
                    file,
                    pos.line,
                    pos.column,
                )
            }),
            Kind::Skill => typed(value, &ctx, &positions, out).map(|spec| {
                insert(
                    &mut snapshot.skills,
                    id.clone(),
                    spec,
                    file,
                    pos.line,
                    pos.column,
                )
            }),
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
    map: &mut std::collections::BTreeMap<String, Resource<T>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job_nested(levels: usize) -> Vec<SourceFile> {
        // `inputs` and the root are two levels; the rest are lists.
        let n = levels - 2;
        vec![SourceFile {
            path: "jobs.d/a.yaml".into(),
            text: format!(
                "id: a\ntype: noop\ninputs:\n  x: {}{}\n",
                "[".repeat(n),
                "]".repeat(n)
            ),
        }]
    }

    #[test]
    fn a_document_nested_past_what_the_store_reads_back_is_rejected() {
        // 140 levels validated; the applied job was stored as JSON that
        // serde_json refuses past 128, so the daemon could not restart.
        let loaded = build(&job_nested(140));
        let errors: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("jobs.d/a.yaml:4:")
                && errors[0].contains("nest deeper than 64 levels"),
            "{errors:?}"
        );
        // As deep as allowed: the snapshot and each stored spec read back.
        let loaded = build(&job_nested(yaml::MAX_NESTING));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let json = serde_json::to_string(&loaded.snapshot).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, loaded.snapshot);
        let spec = serde_json::to_string(&loaded.snapshot.jobs["a"].spec).unwrap();
        serde_json::from_str::<model::Job>(&spec).unwrap();
    }
}
