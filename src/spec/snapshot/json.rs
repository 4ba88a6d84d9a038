//! The snapshot's JSON form: what backup files hold under `snapshot` and
//! what `GET /api/v1/snapshot` serves to `plan --server`. One writer, one
//! reader, so the API and the backup format change together and only here.
//!
//! ```json
//! {"version": 1, "revision": "abc" | null, "content_hash": "…",
//!  "items": [{"kind": "Job", "id": "…", "spec": {…}, "hash": "…",
//!             "file": "jobs.d/a.yaml", "line": 1, "column": 1}]}
//! ```
//!
//! Reading checks every field a resource needs and names what is missing
//! or malformed, instead of filling zeros. A document without `version`
//! (written before the field existed) is version 1.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Resource, Snapshot};
use crate::spec::model::Kind;

/// The version of the form [`Snapshot::to_json`] writes, and the only one
/// [`Snapshot::from_json`] reads.
pub const VERSION: u64 = 1;

/// Why a JSON document is not a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a multijob snapshot: {0}")]
pub struct ReadError(String);

/// The fields of the form this reader needs; `version` is absent in what
/// the release before it wrote.
#[derive(Deserialize)]
struct Document {
    version: Option<u64>,
    items: Vec<Value>,
}

/// One resource as written: every field required.
#[derive(Deserialize)]
struct Item {
    kind: Kind,
    id: String,
    spec: Value,
    hash: String,
    file: String,
    line: u32,
    column: u32,
}

impl Snapshot {
    /// This snapshot in its JSON form, applied as `revision` (if any).
    pub fn to_json(&self, revision: Option<&str>) -> Value {
        let mut items = Vec::with_capacity(self.len());
        push(Kind::Job, &self.jobs, &mut items);
        push(Kind::Flow, &self.flows, &mut items);
        push(Kind::Connector, &self.connectors, &mut items);
        push(Kind::Skill, &self.skills, &mut items);
        push(Kind::Trigger, &self.triggers, &mut items);
        push(Kind::Defaults, &self.defaults, &mut items);
        json!({
            "version": VERSION,
            "revision": revision,
            "content_hash": self.content_hash(),
            "items": items,
        })
    }

    /// Rebuild a snapshot from [`Snapshot::to_json`] output. Fields this
    /// form does not know (the API's `runtime`) are left to their readers.
    pub fn from_json(document: &Value) -> Result<Snapshot, ReadError> {
        let document = Document::deserialize(document).map_err(|e| ReadError(e.to_string()))?;
        if let Some(version) = document.version.filter(|v| *v != VERSION) {
            return Err(ReadError(format!(
                "version {version} is not one this multijob reads (it reads version {VERSION})"
            )));
        }
        let mut snapshot = Snapshot::default();
        for (index, item) in document.items.iter().enumerate() {
            add(&mut snapshot, item).map_err(|e| ReadError(format!("items[{index}]: {e}")))?;
        }
        Ok(snapshot)
    }
}

fn push<T: serde::Serialize>(
    kind: Kind,
    m: &BTreeMap<String, Resource<T>>,
    items: &mut Vec<Value>,
) {
    for (id, r) in m {
        items.push(json!({
            "kind": kind, "id": id, "spec": r.spec, "hash": r.hash,
            "file": r.file, "line": r.line, "column": r.column,
        }));
    }
}

/// Add one item to `snapshot`; a duplicate of an id already read is an
/// error, as two resources with one id are in a config directory.
fn add(snapshot: &mut Snapshot, item: &Value) -> Result<(), String> {
    let item = Item::deserialize(item).map_err(|e| e.to_string())?;
    let what = format!("{} `{}`", item.kind.as_str(), item.id);
    let duplicate = match item.kind {
        Kind::Job => insert(&mut snapshot.jobs, item),
        Kind::Flow => insert(&mut snapshot.flows, item),
        Kind::Connector => insert(&mut snapshot.connectors, item),
        Kind::Skill => insert(&mut snapshot.skills, item),
        Kind::Trigger => insert(&mut snapshot.triggers, item),
        Kind::Defaults => insert(&mut snapshot.defaults, item),
    }
    .map_err(|e| format!("{what}: spec: {e}"))?;
    if duplicate {
        return Err(format!("{what} appears twice"));
    }
    Ok(())
}

/// Insert `item` typed; `Ok(true)` when its id was already there.
fn insert<T: DeserializeOwned>(
    into: &mut BTreeMap<String, Resource<T>>,
    item: Item,
) -> Result<bool, serde_json::Error> {
    let resource = Resource {
        spec: serde_json::from_value(item.spec)?,
        file: item.file,
        line: item.line,
        column: item.column,
        hash: item.hash,
    };
    Ok(into.insert(item.id, resource).is_some())
}

#[cfg(test)]
mod tests;
