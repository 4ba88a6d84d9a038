//! PURE. What changes between the running snapshot and the desired one, as a
//! value: `plan` prints it, `run` applies it, nothing else decides.
//!
//! Resources compare by content hash, so moving a document to another file
//! or reordering its keys changes nothing. Only when hashes differ are the
//! two specs walked as JSON to name the changed fields, by path:
//! `schedule.interval_sec`, `steps[2].http.url`, `labels["app.kubernetes.io/name"]`.
//!
//! It uses `spec` (the snapshots it compares) and nothing else of the
//! crate.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::spec::model::{Job, Kind};
use crate::spec::snapshot::{Resource, Snapshot};

/// An array whose changes would take more entries than this is reported as
/// one change of the whole array.
pub const ARRAY_COLLAPSE_AT: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One changed field. `None` is a key present on one side only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// One resource to create, update or delete.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub action: Action,
    pub kind: Kind,
    pub id: String,
    /// Where the desired document is; for a delete, where the running one was.
    pub file: String,
    pub line: u32,
    /// Changed fields of an update; empty for a create or a delete.
    pub fields: Vec<FieldChange>,
    /// A job whose timers must be recomputed: its schedule changed, or it is
    /// new with a schedule, or it was re-enabled.
    #[serde(skip)]
    pub rescheduled: bool,
    /// `Some(true)`: a job was enabled; `Some(false)`: disabled.
    #[serde(skip)]
    pub enabled_change: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

/// Every change, sorted by kind (Job, Flow, Connector, Skill) then id.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub summary: Summary,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Field paths an update's line names; the rest are counted.
const PATHS_NAMED: usize = 10;

impl Change {
    /// One line, as `kubectl apply` says it: `job/heartbeat updated:
    /// schedule.every`, `job/x created`, `connector/y deleted`.
    pub fn line(&self) -> String {
        let kind = self.kind.as_str().to_ascii_lowercase();
        let verb = match self.action {
            Action::Create => "created",
            Action::Update => "updated",
            Action::Delete => "deleted",
        };
        let mut line = format!("{kind}/{} {verb}", self.id);
        if !self.fields.is_empty() {
            let paths: Vec<&str> = self
                .fields
                .iter()
                .take(PATHS_NAMED)
                .map(|f| f.path.as_str())
                .collect();
            line.push_str(": ");
            line.push_str(&paths.join(", "));
            if self.fields.len() > PATHS_NAMED {
                line.push_str(&format!(" and {} more", self.fields.len() - PATHS_NAMED));
            }
        }
        line
    }
}

/// The plan that turns `running` into `desired`.
pub fn diff(running: &Snapshot, desired: &Snapshot) -> Plan {
    let mut plan = Plan::default();
    diff_kind(
        Kind::Job,
        &running.jobs,
        &desired.jobs,
        job_flags,
        &mut plan,
    );
    diff_kind(
        Kind::Flow,
        &running.flows,
        &desired.flows,
        no_flags,
        &mut plan,
    );
    diff_kind(
        Kind::Connector,
        &running.connectors,
        &desired.connectors,
        no_flags,
        &mut plan,
    );
    diff_kind(
        Kind::Skill,
        &running.skills,
        &desired.skills,
        no_flags,
        &mut plan,
    );
    diff_kind(
        Kind::Trigger,
        &running.triggers,
        &desired.triggers,
        no_flags,
        &mut plan,
    );
    diff_kind(
        Kind::Defaults,
        &running.defaults,
        &desired.defaults,
        no_flags,
        &mut plan,
    );
    plan.changes
        .sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.id.cmp(&b.id)));
    plan
}

/// `(rescheduled, enabled_change)` of a resource going from `old` to `new`.
type Flags<T> = fn(Option<&T>, Option<&T>) -> (bool, Option<bool>);

fn diff_kind<T: Serialize>(
    kind: Kind,
    running: &BTreeMap<String, Resource<T>>,
    desired: &BTreeMap<String, Resource<T>>,
    flags: Flags<T>,
    plan: &mut Plan,
) {
    for (id, new) in desired {
        let old = running.get(id);
        let (action, fields) = match old {
            None => (Action::Create, Vec::new()),
            Some(old) if old.hash == new.hash => {
                plan.summary.unchanged += 1;
                continue;
            }
            Some(old) => (Action::Update, field_changes(&old.spec, &new.spec)),
        };
        let (rescheduled, enabled_change) = flags(old.map(|r| &r.spec), Some(&new.spec));
        match action {
            Action::Create => plan.summary.create += 1,
            _ => plan.summary.update += 1,
        }
        plan.changes.push(Change {
            action,
            kind,
            id: id.clone(),
            file: new.file.clone(),
            line: new.line,
            fields,
            rescheduled,
            enabled_change,
        });
    }
    for (id, old) in running {
        if desired.contains_key(id) {
            continue;
        }
        plan.summary.delete += 1;
        let (rescheduled, enabled_change) = flags(Some(&old.spec), None);
        plan.changes.push(Change {
            action: Action::Delete,
            kind,
            id: id.clone(),
            file: old.file.clone(),
            line: old.line,
            fields: Vec::new(),
            rescheduled,
            enabled_change,
        });
    }
}

fn no_flags<T>(_: Option<&T>, _: Option<&T>) -> (bool, Option<bool>) {
    (false, None)
}

fn job_flags(old: Option<&Job>, new: Option<&Job>) -> (bool, Option<bool>) {
    match (old, new) {
        (None, Some(new)) => (new.schedule.is_some(), None),
        (Some(old), Some(new)) => {
            let re_enabled = !old.enabled && new.enabled;
            let enabled_change = (old.enabled != new.enabled).then_some(new.enabled);
            (old.schedule != new.schedule || re_enabled, enabled_change)
        }
        _ => (false, None),
    }
}

/// The changed fields between two specs, in the old spec's key order.
fn field_changes<T: Serialize>(old: &T, new: &T) -> Vec<FieldChange> {
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(&mut String::new(), &old, &new, &mut out);
    out
}

fn walk(path: &mut String, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, av) in a {
                let len = push_key(path, key);
                match b.get(key) {
                    Some(bv) => walk(path, av, bv, out),
                    None => out.push(change(path, Some(av), None)),
                }
                path.truncate(len);
            }
            for (key, bv) in b {
                if !a.contains_key(key) {
                    let len = push_key(path, key);
                    out.push(change(path, None, Some(bv)));
                    path.truncate(len);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            let start = out.len();
            for i in 0..a.len().max(b.len()) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                match (a.get(i), b.get(i)) {
                    (Some(av), Some(bv)) => walk(path, av, bv, out),
                    (av, bv) => out.push(change(path, av, bv)),
                }
                path.truncate(len);
                if out.len() - start > ARRAY_COLLAPSE_AT {
                    out.truncate(start);
                    out.push(change(path, Some(old), Some(new)));
                    return;
                }
            }
        }
        _ => out.push(change(path, Some(old), Some(new))),
    }
}

fn change(path: &str, old: Option<&Value>, new: Option<&Value>) -> FieldChange {
    FieldChange {
        path: path.to_string(),
        old: old.cloned(),
        new: new.cloned(),
    }
}

/// Appends `.key` (or `["odd.key"]`) to `path`; returns the length before.
fn push_key(path: &mut String, key: &str) -> usize {
    let len = path.len();
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&Value::String(key.to_string()).to_string());
        path.push(']');
    }
    len
}

#[cfg(test)]
mod tests;
