//! PURE. Config text → validated [`Snapshot`] plus every finding, each with
//! `file:line:column`.
//!
//! The path: [`yaml`] parses each file into documents with a position index;
//! [`schema`] checks each against its kind's JSON Schema; [`aliases`] rewrites
//! seed spellings; the document becomes a typed [`model`] resource; then
//! [`validate`] checks what a schema cannot (cron, templates, references,
//! `uses` loops and depth ([`uses`]), secrets). All findings are collected,
//! never only the first. [`snapshot`] is what loads: the resources by kind.
//!
//! It reads text it is handed (no files, no network, no clock: `now` is an
//! argument) and uses only
//! `calendar` (schedules compile there); everything above builds on it.

pub mod actions;
pub mod aliases;
pub mod commands;
#[cfg(test)]
mod defaults_tests;
pub mod diagnostic;
mod document;
pub mod model;
pub mod notice;
pub mod planner;
pub mod schema;
pub mod snapshot;
pub mod suggest;
pub mod templates;
pub mod uses;
pub mod validate;
pub mod yaml;

use std::collections::HashMap;

use diagnostic::Diagnostic;
use model::Kind;
use snapshot::Snapshot;
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
    build_at(files, None)
}

/// [`build`], and with `now` also the checks that depend on the time: a
/// schedule whose window has ended gets a warning.
pub fn build_at(files: &[SourceFile], now: Option<jiff::Timestamp>) -> Loaded {
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
    validate::check_snapshot(&mut snapshot, &sources, now, &mut diagnostics);
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

/// One file: each of its documents, or one `syntax` finding when it does
/// not parse (then it defines nothing).
fn load_file(
    file: &SourceFile,
    snapshot: &mut Snapshot,
    sources: &mut SourceMap,
    out: &mut Vec<Diagnostic>,
) {
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
        document::load(file, doc, snapshot, sources, out);
    }
}

/// [`build`] over `(path, text)` pairs, for tests.
#[cfg(test)]
pub(crate) fn build_texts(files: &[(&str, &str)]) -> Loaded {
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.to_string(),
            text: text.to_string(),
        })
        .collect();
    build(&files)
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
