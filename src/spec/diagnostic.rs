//! Findings about a config directory, each pinned to `file:line:column`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::Kind;
use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding. `code` is a stable machine-readable name (`schema`,
/// `duplicate-id`, `cron`, ...); `message` is one line for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub kind: Option<String>,
    pub id: Option<String>,
    pub severity: Severity,
    pub code: String,
    pub message: String,
    /// JSON pointer of the offending value inside its document.
    pub pointer: String,
}

impl Diagnostic {
    /// An error about a file as a whole (unreadable, not YAML, missing).
    pub fn file_error(file: &str, pos: Pos, code: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            kind: None,
            id: None,
            severity: Severity::Error,
            code: code.to_string(),
            message: message.into(),
            pointer: String::new(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}[{}]",
            self.file, self.line, self.column, severity, self.code
        )?;
        match (&self.kind, &self.id) {
            (Some(kind), Some(id)) => write!(f, " {kind} {id}:")?,
            (Some(kind), None) => write!(f, " {kind}:")?,
            _ => write!(f, ":")?,
        }
        write!(f, " {}", self.message)
    }
}

/// Where a diagnostic is being raised: a document of a file.
#[derive(Debug, Clone)]
pub struct DocContext<'a> {
    pub file: &'a str,
    pub kind: Option<Kind>,
    pub id: Option<&'a str>,
}

impl DocContext<'_> {
    /// A document's context before its kind and id are known.
    pub fn file(file: &str) -> DocContext<'_> {
        DocContext {
            file,
            kind: None,
            id: None,
        }
    }

    pub fn at(
        &self,
        pos: Pos,
        pointer: &str,
        severity: Severity,
        code: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            kind: self.kind.map(|k| k.as_str().to_string()),
            id: self.id.map(str::to_string),
            severity,
            code: code.to_string(),
            message: message.into(),
            pointer: pointer.to_string(),
        }
    }
}

/// Order findings for display: by file, then position, errors first.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity, &a.code, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.severity, &b.code, &b.message))
    });
}
