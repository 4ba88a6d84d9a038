//! The `kind: Defaults` document: parsed with its optional id, held to
//! its closed schema, one per directory, its connectors checked, kept
//! through the snapshot's JSON form, and the last fallback of a job's
//! notices.

use super::build_texts;
use super::model::{Defaults, Flow, Job, NoticeKind, NoticeRule};
use super::snapshot::Snapshot;

const HOOK: &str =
    "kind: Connector\nid: hook\nprovider: webhook\nbase_url: http://127.0.0.1:9/hook\n---\n";

fn load(files: &[(&str, &str)]) -> (super::Loaded, Vec<String>) {
    let loaded = build_texts(files);
    let lines = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    (loaded, lines)
}

fn rule(connector: &str) -> NoticeRule {
    NoticeRule {
        connector: connector.into(),
        on: vec![NoticeKind::Failure],
        to: None,
        template: None,
    }
}

#[test]
fn a_defaults_document_without_an_id_is_called_defaults() {
    let text = format!(
        "{HOOK}kind: Defaults\nnotify:\n  - connector: hook\n    on: [failure, recovery]\n    to: ops\n"
    );
    let (loaded, lines) = load(&[("jobs.d/defaults.yaml", &text)]);
    assert!(lines.is_empty(), "{lines:?}");
    let d = loaded.snapshot.defaults().expect("the Defaults document");
    assert_eq!(d.id, "defaults");
    assert_eq!(d.notify.len(), 1);
    assert_eq!(d.notify[0].to.as_deref(), Some("ops"));
    assert_eq!(loaded.snapshot.defaults["defaults"].line, 6);
    // Named explicitly, it keeps its name.
    let text = format!("{HOOK}kind: Defaults\nid: team\nnotify: []\n");
    let (loaded, lines) = load(&[("jobs.d/d.yaml", &text)]);
    assert!(lines.is_empty(), "{lines:?}");
    assert!(loaded.snapshot.defaults.contains_key("team"));
}

#[test]
fn an_unknown_key_is_rejected_with_a_suggestion() {
    let text = "kind: Defaults\nnotfy:\n  - connector: hook\n    on: [failure]\n";
    let (loaded, lines) = load(&[("jobs.d/d.yaml", text)]);
    assert!(loaded.has_errors());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("jobs.d/d.yaml:2:") && l.contains("did you mean `notify`")),
        "{lines:?}"
    );
    assert!(loaded.snapshot.defaults.is_empty());
    // An unknown kind close to it is suggested too.
    let (_, lines) = load(&[("jobs.d/d.yaml", "kind: Default\n")]);
    assert!(
        lines.iter().any(|l| l.contains("did you mean `Defaults`")),
        "{lines:?}"
    );
}

#[test]
fn a_second_defaults_document_is_an_error_naming_both_files() {
    let first = format!("{HOOK}kind: Defaults\nnotify: []\n");
    let second = "description: x\nkind: Defaults\nid: other\n";
    let (loaded, lines) = load(&[("jobs.d/a.yaml", &first), ("jobs.d/b.yaml", second)]);
    assert!(loaded.has_errors());
    let want = "jobs.d/b.yaml:1:1: error[duplicate-defaults] Defaults other: a directory has \
                one Defaults document, and jobs.d/a.yaml:6 already is it";
    assert!(lines.iter().any(|l| l.starts_with(want)), "{lines:?}");
    assert_eq!(loaded.snapshot.defaults.len(), 1);
    // The same (default) id twice is the same error, not a duplicate id.
    let (_, lines) = load(&[
        ("jobs.d/a.yaml", &first),
        ("jobs.d/b.yaml", "kind: Defaults\n"),
    ]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("error[duplicate-defaults]")),
        "{lines:?}"
    );
}

#[test]
fn its_rules_name_messaging_connectors_that_exist() {
    let text = format!(
        "{HOOK}kind: Defaults\nnotify:\n  - connector: hokk\n    on: [failure]\n  \
         - connector: hook\n    on: [recovery]\n    template: \"{{{{ steps.x }}}}\"\n"
    );
    let (loaded, lines) = load(&[("jobs.d/d.yaml", &text)]);
    assert!(loaded.has_errors());
    for want in [
        "jobs.d/d.yaml:8:16: error[reference] Defaults defaults: no Connector `hokk` (did you mean `hook`?)",
        "jobs.d/d.yaml:12:15: error[template] Defaults defaults: `steps` cannot be read here",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "{want}\n{lines:?}"
        );
    }
}

#[test]
fn the_snapshot_json_form_keeps_the_defaults_document() {
    let text = format!("{HOOK}kind: Defaults\nnotify:\n  - connector: hook\n    on: [failure]\n");
    let (loaded, lines) = load(&[("jobs.d/d.yaml", &text)]);
    assert!(lines.is_empty(), "{lines:?}");
    let back = Snapshot::from_json(&loaded.snapshot.to_json(None)).expect("reads back");
    assert_eq!(back, loaded.snapshot);
    assert_eq!(back.content_hash(), loaded.snapshot.content_hash());
}

#[test]
fn notices_fall_back_from_the_job_to_its_flow_to_the_defaults() {
    let job = |notify: Vec<NoticeRule>| -> Job {
        let mut j: Job = serde_json::from_value(serde_json::json!({"id": "j", "type": "noop"}))
            .expect("a minimal job");
        j.notify = notify;
        j
    };
    let flow = |notify: Vec<NoticeRule>| Flow {
        id: "f".into(),
        notify,
        ..serde_json::from_value(serde_json::json!({"id": "f"})).expect("a minimal flow")
    };
    let defaults = Defaults {
        notify: vec![rule("from-defaults")],
        ..Defaults::default()
    };
    let first = |rules: &[NoticeRule]| rules.first().map(|r| r.connector.clone());
    let own = job(vec![rule("own")]);
    let bare = job(Vec::new());
    let lane = flow(vec![rule("from-flow")]);
    let quiet_lane = flow(Vec::new());
    let d = Some(&defaults);
    assert_eq!(
        first(own.notice_rules(Some(&lane), d)).as_deref(),
        Some("own")
    );
    assert_eq!(
        first(bare.notice_rules(Some(&lane), d)).as_deref(),
        Some("from-flow")
    );
    assert_eq!(
        first(bare.notice_rules(Some(&quiet_lane), d)).as_deref(),
        Some("from-defaults")
    );
    assert_eq!(
        first(bare.notice_rules(None, d)).as_deref(),
        Some("from-defaults")
    );
    assert!(bare.notice_rules(None, None).is_empty());
    assert!(
        bare.notice_rules(None, Some(&Defaults::default()))
            .is_empty()
    );
}

#[test]
fn the_schema_shares_the_job_schemas_notify_definition() {
    use super::model::Kind;
    use super::schema::schema_text;
    let defs = |k: Kind| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(schema_text(k)).expect("schema JSON");
        v["$defs"]["notify"].clone()
    };
    assert!(defs(Kind::Defaults).is_object());
    assert_eq!(defs(Kind::Defaults), defs(Kind::Job), "edit both copies");
    assert_eq!(defs(Kind::Defaults), defs(Kind::Flow), "edit both copies");
}
