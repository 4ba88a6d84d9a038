//! A whole, validated config directory: every resource with its source
//! position and content hash. What the reconciler diffs and applies, and
//! its JSON form ([`json`]: backup files, the `plan --server` wire), and
//! the jobs it implies ([`derived`]: a skill's one-off runs).
//!
//! Pure; uses only `spec::model`.

pub mod derived;
pub mod json;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::{Connector, Defaults, Flow, Job, Kind, Priority, Skill, Trigger};

/// A resource as loaded: its spec and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource<T> {
    pub spec: T,
    /// Path relative to the config directory, `/`-separated.
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// sha256 of the spec's canonical JSON (keys sorted), hex.
    pub hash: String,
}

impl<T: Serialize> Resource<T> {
    pub fn new(spec: T, file: String, line: u32, column: u32) -> Self {
        let hash = spec_hash(&spec);
        Resource {
            spec,
            file,
            line,
            column,
            hash,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub jobs: BTreeMap<String, Resource<Job>>,
    pub flows: BTreeMap<String, Resource<Flow>>,
    pub connectors: BTreeMap<String, Resource<Connector>>,
    pub skills: BTreeMap<String, Resource<Skill>>,
    #[serde(default)]
    pub triggers: BTreeMap<String, Resource<Trigger>>,
    /// The `kind: Defaults` document: at most one (validation rejects a
    /// second), keyed by its id like every kind.
    #[serde(default)]
    pub defaults: BTreeMap<String, Resource<Defaults>>,
}

impl Snapshot {
    /// Hash of every resource's kind, id and spec hash: equal snapshots
    /// (whatever their file layout) hash equal.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for (kind, id, hash) in self.entries() {
            h.update(kind.as_str());
            h.update([0]);
            h.update(id);
            h.update([0]);
            h.update(hash);
            h.update([0]);
        }
        hex(&h.finalize())
    }

    /// `(kind, id, spec hash)` of every resource, in kind then id order.
    pub fn entries(&self) -> Vec<(Kind, &str, &str)> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(entries_of(Kind::Job, &self.jobs));
        out.extend(entries_of(Kind::Flow, &self.flows));
        out.extend(entries_of(Kind::Connector, &self.connectors));
        out.extend(entries_of(Kind::Skill, &self.skills));
        out.extend(entries_of(Kind::Trigger, &self.triggers));
        out.extend(entries_of(Kind::Defaults, &self.defaults));
        out
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
            + self.flows.len()
            + self.connectors.len()
            + self.skills.len()
            + self.triggers.len()
            + self.defaults.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The count of resources of one kind.
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Job => self.jobs.len(),
            Kind::Flow => self.flows.len(),
            Kind::Connector => self.connectors.len(),
            Kind::Skill => self.skills.len(),
            Kind::Trigger => self.triggers.len(),
            Kind::Defaults => self.defaults.len(),
        }
    }

    /// The directory's Defaults document, if it has one.
    pub fn defaults(&self) -> Option<&Defaults> {
        self.defaults.values().next().map(|r| &r.spec)
    }

    /// A job's priority: its own, else its flow's, else normal.
    pub fn effective_priority(&self, job: &Job) -> Priority {
        job.priority
            .or_else(|| {
                job.flow
                    .as_ref()
                    .and_then(|f| self.flows.get(f))
                    .and_then(|f| f.spec.priority)
            })
            .unwrap_or(Priority::Normal)
    }

    /// One resource's spec as JSON, with its file and position.
    pub fn resource_json(&self, kind: Kind, id: &str) -> Option<(Value, &str, u32)> {
        fn one<T: Serialize>(r: &Resource<T>) -> (Value, &str, u32) {
            (
                serde_json::to_value(&r.spec).unwrap_or(Value::Null),
                r.file.as_str(),
                r.line,
            )
        }
        match kind {
            Kind::Job => self.jobs.get(id).map(one),
            Kind::Flow => self.flows.get(id).map(one),
            Kind::Connector => self.connectors.get(id).map(one),
            Kind::Skill => self.skills.get(id).map(one),
            Kind::Trigger => self.triggers.get(id).map(one),
            Kind::Defaults => self.defaults.get(id).map(one),
        }
    }
}

/// `(kind, id, spec hash)` of every resource in `m`, in id order.
fn entries_of<T>(
    kind: Kind,
    m: &BTreeMap<String, Resource<T>>,
) -> impl Iterator<Item = (Kind, &str, &str)> {
    m.iter()
        .map(move |(id, r)| (kind, id.as_str(), r.hash.as_str()))
}

/// sha256 of a value's canonical JSON (object keys sorted), hex.
pub fn spec_hash<T: Serialize>(spec: &T) -> String {
    let value = serde_json::to_value(spec).unwrap_or(Value::Null);
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    hex(&Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order() {
        assert_eq!(
            spec_hash(&json!({"a": 1, "b": {"x": 1, "y": [1, 2]}})),
            spec_hash(&json!({"b": {"y": [1, 2], "x": 1}, "a": 1}))
        );
        assert_ne!(spec_hash(&json!({"a": 1})), spec_hash(&json!({"a": 2})));
    }
}
