use serde_json::json;

use super::*;
use crate::spec::SourceFile;

const CONFIG: &str = "\
kind: Connector
id: ops
provider: webhook
base_url: https://hooks.example.com/x
---
kind: Flow
id: lane
max_active_runs: 2
---
kind: Skill
id: greet
steps:
  - id: say
    set: {text: hi}
---
kind: Job
id: nightly
type: noop
flow: lane
";

/// A snapshot with one resource of every kind, as the loader builds it.
fn loaded() -> Snapshot {
    let loaded = crate::spec::build(&[SourceFile {
        path: "jobs.d/all.yaml".into(),
        text: CONFIG.into(),
    }]);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    assert_eq!(loaded.snapshot.len(), 4);
    loaded.snapshot
}

#[test]
fn a_snapshot_survives_the_round_trip() {
    let snapshot = loaded();
    let written = snapshot.to_json(Some("rev-1"));
    assert_eq!(written["version"], json!(VERSION));
    assert_eq!(written["revision"], json!("rev-1"));
    assert_eq!(written["content_hash"], json!(snapshot.content_hash()));
    let read = Snapshot::from_json(&written).expect("reads what it wrote");
    assert_eq!(read, snapshot);
    assert_eq!(read.content_hash(), snapshot.content_hash());
    // Through text too, as a backup file or the API carries it.
    let text = serde_json::to_string_pretty(&written).unwrap();
    let reread: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(Snapshot::from_json(&reread).unwrap(), snapshot);
}

#[test]
fn a_missing_field_is_rejected_by_name() {
    let written = loaded().to_json(None);
    for field in ["kind", "id", "spec", "hash", "file", "line", "column"] {
        let mut broken = written.clone();
        broken["items"][3].as_object_mut().unwrap().remove(field);
        let err = Snapshot::from_json(&broken).expect_err(field).to_string();
        assert!(
            err.contains("items[3]") && err.contains(&format!("missing field `{field}`")),
            "{field}: {err}"
        );
    }
    let mut no_items = written.clone();
    no_items.as_object_mut().unwrap().remove("items");
    let err = Snapshot::from_json(&no_items).unwrap_err().to_string();
    assert!(err.contains("missing field `items`"), "{err}");
}

#[test]
fn bad_values_are_rejected_not_zeroed() {
    let written = loaded().to_json(None);
    let mut negative = written.clone();
    negative["items"][0]["line"] = json!(-1);
    let err = Snapshot::from_json(&negative).unwrap_err().to_string();
    assert!(err.contains("items[0]") && err.contains("-1"), "{err}");
    let mut bad_spec = written.clone();
    bad_spec["items"][0]["spec"] = json!({"nonsense": true});
    let err = Snapshot::from_json(&bad_spec).unwrap_err().to_string();
    assert!(err.contains("items[0]: Job `nightly`: spec:"), "{err}");
    let mut twice = written.clone();
    let first = twice["items"][0].clone();
    twice["items"].as_array_mut().unwrap().push(first);
    let err = Snapshot::from_json(&twice).unwrap_err().to_string();
    assert!(err.contains("Job `nightly` appears twice"), "{err}");
    let mut future = written.clone();
    future["version"] = json!(2);
    let err = Snapshot::from_json(&future).unwrap_err().to_string();
    assert!(err.contains("version 2"), "{err}");
    let err = Snapshot::from_json(&json!([])).unwrap_err().to_string();
    assert!(err.contains("expected struct Document"), "{err}");
}

/// A backup written by the release before `version` existed: its
/// `snapshot` has `revision`, `content_hash` and `items` only.
#[test]
fn an_old_document_without_version_reads_as_version_1() {
    let snapshot = loaded();
    let mut old = snapshot.to_json(Some("abc"));
    old.as_object_mut().unwrap().remove("version");
    let backup = json!({"format": "multijob-backup/1", "snapshot": old, "runs": []});
    assert_eq!(Snapshot::from_json(&backup["snapshot"]).unwrap(), snapshot);
}
