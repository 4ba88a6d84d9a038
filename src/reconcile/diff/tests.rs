use super::*;
use crate::spec::model::{Connector, Flow, Skill};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::json;

fn res<T: DeserializeOwned + Serialize>(file: &str, line: u32, spec: Value) -> Resource<T> {
    Resource::new(serde_json::from_value(spec).unwrap(), file.into(), line, 1)
}

fn job(id: &str, extra: Value) -> Resource<Job> {
    let mut spec = json!({"id": id, "type": "noop"});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    res("jobs.d/jobs.yaml", 1, spec)
}

fn snapshot(jobs: Vec<Resource<Job>>) -> Snapshot {
    let mut s = Snapshot::default();
    for j in jobs {
        s.jobs.insert(j.spec.id.clone(), j);
    }
    s
}

fn fc(path: &str, old: Option<Value>, new: Option<Value>) -> FieldChange {
    FieldChange {
        path: path.into(),
        old,
        new,
    }
}

fn only_change(plan: &Plan) -> &Change {
    assert_eq!(plan.changes.len(), 1, "{plan:#?}");
    &plan.changes[0]
}

fn load(files: &[(&str, &str)]) -> Snapshot {
    let loaded = crate::spec::build_texts(files);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    loaded.snapshot
}

#[test]
fn counts_and_order() {
    let mut running = snapshot(vec![
        job("a", json!({})),
        job("b", json!({"timeout_ms": 1000})),
        job("c", json!({})),
    ]);
    running.flows.insert(
        "lane".into(),
        res("jobs.d/f.yaml", 1, json!({"id": "lane"})),
    );
    running.connectors.insert(
        "gone".into(),
        res(
            "jobs.d/c.yaml",
            4,
            json!({"id": "gone", "provider": "http"}),
        ),
    );
    let mut desired = snapshot(vec![
        job("a", json!({})),
        job("b", json!({"timeout_ms": 2000})),
        job("d", json!({})),
    ]);
    desired.flows.insert(
        "lane".into(),
        res("jobs.d/f.yaml", 1, json!({"id": "lane"})),
    );
    desired.skills.insert(
        "brief".into(),
        res("skills.d/s.yaml", 1, json!({"id": "brief"})),
    );

    let plan = diff(&running, &desired);
    assert_eq!(
        plan.summary,
        Summary {
            create: 2,
            update: 1,
            delete: 2,
            unchanged: 2
        }
    );
    let order: Vec<(Action, Kind, &str)> = plan
        .changes
        .iter()
        .map(|c| (c.action, c.kind, c.id.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (Action::Update, Kind::Job, "b"),
            (Action::Delete, Kind::Job, "c"),
            (Action::Create, Kind::Job, "d"),
            (Action::Delete, Kind::Connector, "gone"),
            (Action::Create, Kind::Skill, "brief"),
        ]
    );
    assert!(
        plan.changes[2].fields.is_empty(),
        "a create lists no fields"
    );
    assert_eq!(
        (plan.changes[3].file.as_str(), plan.changes[3].line),
        ("jobs.d/c.yaml", 4),
        "a delete points at the running document"
    );
    assert!(!plan.is_empty());
    assert!(diff(&desired, &desired).is_empty());
}

#[test]
fn nested_and_array_field_paths() {
    let steps = |url: &str| {
        json!([
            {"id": "a", "set": {"x": 1}},
            {"id": "b", "kv": {"get": "k"}},
            {"id": "c", "http": {"url": url}},
        ])
    };
    let old = job(
        "x",
        json!({
            "type": "agent.workflow",
            "description": "old text",
            "schedule": {"interval_sec": 30},
            "inputs": {"products": [{"sku": "A1", "qty": 1}]},
            "steps": steps("https://a.example/x"),
        }),
    );
    let new = job(
        "x",
        json!({
            "type": "agent.workflow",
            "labels": {"team": "ops", "app.kubernetes.io/name": "x"},
            "schedule": {"interval_sec": 60},
            "inputs": {"products": [{"sku": "B2", "qty": 1}]},
            "steps": steps("https://b.example/x"),
        }),
    );
    let plan = diff(&snapshot(vec![old]), &snapshot(vec![new]));
    let change = only_change(&plan);
    assert_eq!(change.action, Action::Update);
    assert_eq!(
        change.fields,
        [
            fc("description", Some(json!("old text")), None),
            fc("schedule.interval_sec", Some(json!(30)), Some(json!(60))),
            fc(
                "inputs.products[0].sku",
                Some(json!("A1")),
                Some(json!("B2"))
            ),
            fc(
                "steps[2].http.url",
                Some(json!("https://a.example/x")),
                Some(json!("https://b.example/x"))
            ),
            fc(
                "labels",
                None,
                Some(json!({"team": "ops", "app.kubernetes.io/name": "x"}))
            ),
        ]
    );
}

#[test]
fn arrays_of_different_length_compare_index_wise() {
    let plan = diff(
        &snapshot(vec![job(
            "x",
            json!({"inputs": {"l": [1, 2], "m": [1, 2, 3]}}),
        )]),
        &snapshot(vec![job(
            "x",
            json!({"inputs": {"l": [1, 3, 4], "m": [1]}}),
        )]),
    );
    assert_eq!(
        only_change(&plan).fields,
        [
            fc("inputs.l[1]", Some(json!(2)), Some(json!(3))),
            fc("inputs.l[2]", None, Some(json!(4))),
            fc("inputs.m[1]", Some(json!(2)), None),
            fc("inputs.m[2]", Some(json!(3)), None),
        ]
    );
}

#[test]
fn odd_keys_are_quoted_in_paths() {
    let plan = diff(
        &snapshot(vec![job(
            "x",
            json!({"labels": {"app.kubernetes.io/name": "a"}}),
        )]),
        &snapshot(vec![job(
            "x",
            json!({"labels": {"app.kubernetes.io/name": "b"}}),
        )]),
    );
    assert_eq!(
        only_change(&plan).fields[0].path,
        r#"labels["app.kubernetes.io/name"]"#
    );
}

#[test]
fn an_array_with_many_changes_collapses_into_one() {
    let items = |offset: u64, n: u64| (0..n).map(|i| i + offset).collect::<Vec<_>>();
    let plan = diff(
        &snapshot(vec![job("x", json!({"inputs": {"items": items(0, 500)}}))]),
        &snapshot(vec![job("x", json!({"inputs": {"items": items(1, 500)}}))]),
    );
    assert_eq!(
        only_change(&plan).fields,
        [fc(
            "inputs.items",
            Some(json!(items(0, 500))),
            Some(json!(items(1, 500)))
        )]
    );

    // 20 entries stay listed; 21 collapse. Growth counts as entries too.
    let at = |n: usize| {
        let plan = diff(
            &snapshot(vec![job("x", json!({"inputs": {"l": []}}))]),
            &snapshot(vec![job("x", json!({"inputs": {"l": items(0, n as u64)}}))]),
        );
        only_change(&plan).fields.len()
    };
    assert_eq!(at(ARRAY_COLLAPSE_AT), ARRAY_COLLAPSE_AT);
    assert_eq!(at(ARRAY_COLLAPSE_AT + 1), 1);
}

#[test]
fn key_order_does_not_matter() {
    let a = load(&[(
        "jobs.d/a.yaml",
        "id: x\ntype: noop\ninputs: {b: 1, a: {y: 2, x: 1}}\nschedule: {interval_sec: 30, timezone: UTC}\n",
    )]);
    let b = load(&[(
        "jobs.d/a.yaml",
        "schedule: {timezone: UTC, interval_sec: 30}\ninputs: {a: {x: 1, y: 2}, b: 1}\ntype: noop\nid: x\n",
    )]);
    let plan = diff(&a, &b);
    assert!(plan.is_empty(), "{plan:#?}");
    assert_eq!(plan.summary.unchanged, 1);
}

#[test]
fn moving_a_document_to_another_file_is_no_change() {
    let a = load(&[
        (
            "jobs.d/a.yaml",
            "id: x\ntype: noop\n---\nkind: Flow\nid: lane\nmax_active_runs: 2\n",
        ),
        ("jobs.d/b.yaml", "id: y\ntype: noop\nflow: lane\n"),
    ]);
    let b = load(&[
        (
            "jobs.d/b.yaml",
            "id: y\ntype: noop\nflow: lane\n---\nkind: Flow\nid: lane\nmax_active_runs: 2\n",
        ),
        ("jobs.d/moved/c.yaml", "# moved\n\nid: x\ntype: noop\n"),
    ]);
    assert_ne!(a.jobs["x"].file, b.jobs["x"].file);
    let plan = diff(&a, &b);
    assert!(plan.is_empty(), "{plan:#?}");
    assert_eq!(plan.summary.unchanged, 3);
}

#[test]
fn implicit_flows_and_secret_references_diff_like_any_field() {
    let mut running = Snapshot::default();
    running.flows.insert(
        "lane".into(),
        res(
            "jobs.d/a.yaml",
            1,
            json!({"id": "lane", "max_active_runs": 2, "implicit": true}),
        ),
    );
    running.connectors.insert(
        "tg".into(),
        res(
            "jobs.d/c.yaml",
            1,
            json!({"id": "tg", "provider": "telegram", "secrets": {"bot_token": "${env:OLD}"}}),
        ),
    );
    let mut desired = Snapshot::default();
    desired.flows.insert(
        "lane".into(),
        res(
            "jobs.d/f.yaml",
            1,
            json!({"id": "lane", "max_active_runs": 3}),
        ),
    );
    desired.connectors.insert(
        "tg".into(),
        res(
            "jobs.d/c.yaml",
            1,
            json!({"id": "tg", "provider": "telegram", "secrets": {"bot_token": "${env:NEW}"}}),
        ),
    );
    let plan = diff(&running, &desired);
    assert_eq!(
        plan.changes[0].fields,
        [
            fc("max_active_runs", Some(json!(2)), Some(json!(3))),
            fc("implicit", Some(json!(true)), None),
        ]
    );
    assert_eq!(
        plan.changes[1].fields,
        [fc(
            "secrets.bot_token",
            Some(json!("${env:OLD}")),
            Some(json!("${env:NEW}"))
        )]
    );
}

#[test]
fn rescheduled_and_enabled_flags() {
    let flags = |old: Option<Value>, new: Option<Value>| {
        let running = snapshot(old.into_iter().map(|v| job("x", v)).collect());
        let desired = snapshot(new.into_iter().map(|v| job("x", v)).collect());
        let plan = diff(&running, &desired);
        let c = only_change(&plan);
        (c.rescheduled, c.enabled_change)
    };
    let every = |s: u64| json!({"schedule": {"interval_sec": s}});
    assert_eq!(flags(None, Some(every(30))), (true, None), "new, scheduled");
    assert_eq!(
        flags(None, Some(json!({}))),
        (false, None),
        "new, triggered only"
    );
    assert_eq!(flags(Some(every(30)), Some(every(60))), (true, None));
    assert_eq!(
        flags(
            Some(every(30)),
            Some(json!({"schedule": {"interval_sec": 30, "misfire": "skip"}}))
        ),
        (true, None),
        "any schedule key"
    );
    assert_eq!(
        flags(
            Some(every(30)),
            Some(json!({"schedule": {"interval_sec": 30}, "timeout_ms": 5}))
        ),
        (false, None),
        "not a schedule change"
    );
    let enabled = |on: bool| json!({"schedule": {"interval_sec": 30}, "enabled": on});
    assert_eq!(
        flags(Some(enabled(true)), Some(enabled(false))),
        (false, Some(false))
    );
    assert_eq!(
        flags(Some(enabled(false)), Some(enabled(true))),
        (true, Some(true))
    );
    assert_eq!(flags(Some(every(30)), None), (false, None), "deleted");
    let mut flows = Snapshot::default();
    flows
        .flows
        .insert("f".into(), res("jobs.d/f.yaml", 1, json!({"id": "f"})));
    assert!(!diff(&Snapshot::default(), &flows).changes[0].rescheduled);
}

#[test]
fn serializes_as_the_spec_says() {
    let plan = diff(
        &snapshot(vec![job("x", json!({"description": "d"}))]),
        &snapshot(vec![job("x", json!({}))]),
    );
    assert_eq!(
        serde_json::to_value(&plan).unwrap(),
        json!({
            "changes": [{
                "action": "update", "kind": "Job", "id": "x",
                "file": "jobs.d/jobs.yaml", "line": 1,
                "fields": [{"path": "description", "old": "d", "new": null}],
            }],
            "summary": {"create": 0, "update": 1, "delete": 0, "unchanged": 0},
        })
    );
}

#[test]
fn ten_thousand_jobs_with_a_hundred_changed() {
    let base = job(
        "",
        json!({
            "type": "http.request",
            "schedule": {"interval_sec": 60, "jitter_sec": 5},
            "flow": "lane", "labels": {"team": "ops"},
            "inputs": {"url": "https://example.com/", "tags": ["a", "b", "c"]},
        }),
    )
    .spec;
    let spec = |i: usize| Job {
        id: format!("job-{i:05}"),
        ..base.clone()
    };
    let running = snapshot(
        (0..10_000)
            .map(|i| Resource::new(spec(i), "jobs.d/all.yaml".into(), 1, 1))
            .collect(),
    );
    let mut desired = running.clone();
    for i in (0..10_000).step_by(100) {
        let mut s = spec(i);
        s.schedule.as_mut().unwrap().interval_sec = Some(120);
        desired.jobs.insert(
            s.id.clone(),
            Resource::new(s, "jobs.d/all.yaml".into(), 1, 1),
        );
    }
    let started = std::time::Instant::now();
    let plan = diff(&running, &desired);
    let took = started.elapsed();
    assert_eq!(
        plan.summary,
        Summary {
            create: 0,
            update: 100,
            delete: 0,
            unchanged: 9_900
        }
    );
    assert!(
        plan.changes
            .iter()
            .all(|c| c.fields.len() == 1 && c.rescheduled)
    );
    assert!(took.as_secs_f64() < 2.0, "diff took {took:?}");
}

// ---- property: the plan lists exactly the resources that differ ------

/// Per id of a small pool: absent, or a spec variant and a file.
fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let jobs = proptest::collection::vec(proptest::option::of((0u8..6, 0u8..3)), 8);
    let flows = proptest::collection::vec(proptest::option::of((0u8..3, 0u8..3)), 4);
    let connectors = proptest::collection::vec(proptest::option::of((0u8..3, 0u8..3)), 3);
    (jobs, flows, connectors).prop_map(|(jobs, flows, connectors)| {
        let mut s = Snapshot::default();
        let file = |f: u8| format!("jobs.d/f{f}.yaml");
        for (i, v) in jobs.into_iter().enumerate() {
            if let Some((variant, f)) = v {
                let id = format!("j{i}");
                let spec = json!({
                    "id": id, "type": "noop",
                    "enabled": variant % 2 == 0,
                    "schedule": {"interval_sec": 30 + u64::from(variant / 2)},
                });
                s.jobs.insert(id, res(&file(f), u32::from(f) + 1, spec));
            }
        }
        for (i, v) in flows.into_iter().enumerate() {
            if let Some((variant, f)) = v {
                let id = format!("f{i}");
                let spec = json!({"id": id, "max_active_runs": variant + 1});
                s.flows.insert(id, res::<Flow>(&file(f), 1, spec));
            }
        }
        for (i, v) in connectors.into_iter().enumerate() {
            if let Some((variant, f)) = v {
                let id = format!("c{i}");
                let spec = json!({
                    "id": id, "provider": "http",
                    "secrets": {"token": format!("${{env:T{variant}}}")},
                });
                s.connectors.insert(id, res::<Connector>(&file(f), 1, spec));
            }
        }
        s
    })
}

proptest! {
    #[test]
    fn diff_with_itself_is_empty(a in arb_snapshot()) {
        let plan = diff(&a, &a);
        prop_assert!(plan.is_empty());
        prop_assert_eq!(plan.summary, Summary { unchanged: a.len(), ..Summary::default() });
    }

    #[test]
    fn diff_lists_exactly_the_resources_that_differ(a in arb_snapshot(), b in arb_snapshot()) {
        let plan = diff(&a, &b);
        let hashes = |s: &Snapshot| -> BTreeMap<(Kind, String), String> {
            s.entries().into_iter().map(|(k, id, h)| ((k, id.to_string()), h.to_string())).collect()
        };
        let (ha, hb) = (hashes(&a), hashes(&b));
        let expected: Vec<(Kind, String)> = ha
            .keys()
            .chain(hb.keys())
            .filter(|key| ha.get(*key) != hb.get(*key))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let listed: Vec<(Kind, String)> =
            plan.changes.iter().map(|c| (c.kind, c.id.clone())).collect();
        prop_assert_eq!(&listed, &expected, "sorted by kind, then id");
        for c in &plan.changes {
            let key = (c.kind, c.id.clone());
            let action = match (ha.contains_key(&key), hb.contains_key(&key)) {
                (false, true) => Action::Create,
                (true, false) => Action::Delete,
                _ => Action::Update,
            };
            prop_assert_eq!(c.action, action);
            prop_assert_eq!(c.action == Action::Update, !c.fields.is_empty());
        }
        let s = &plan.summary;
        prop_assert_eq!(s.create + s.update + s.unchanged, b.len());
        prop_assert_eq!(s.update + s.delete + s.unchanged, a.len());
    }
}

#[test]
fn skills_are_diffed_too() {
    let mut a = Snapshot::default();
    a.skills.insert(
        "s".into(),
        res::<Skill>("skills.d/s.yaml", 1, json!({"id": "s", "tags": ["a"]})),
    );
    let mut b = Snapshot::default();
    b.skills.insert(
        "s".into(),
        res::<Skill>("skills.d/s.yaml", 1, json!({"id": "s", "tags": ["a", "b"]})),
    );
    assert_eq!(
        only_change(&diff(&a, &b)).fields,
        [fc("tags[1]", None, Some(json!("b")))]
    );
}

#[test]
fn each_change_has_a_kubectl_style_line() {
    let running = snapshot(vec![
        job("heartbeat", json!({"schedule": {"every": "1s"}})),
        job("gone", json!({})),
    ]);
    let desired = snapshot(vec![
        job("heartbeat", json!({"schedule": {"every": "5s"}})),
        job("x", json!({})),
    ]);
    let lines: Vec<String> = diff(&running, &desired)
        .changes
        .iter()
        .map(Change::line)
        .collect();
    assert_eq!(
        lines,
        [
            "job/gone deleted",
            "job/heartbeat updated: schedule.every",
            "job/x created"
        ]
    );
    let many = Change {
        fields: (0..12)
            .map(|i| fc(&format!("labels.l{i}"), None, None))
            .collect(),
        ..only_change(&diff(
            &snapshot(vec![]),
            &snapshot(vec![job("y", json!({}))]),
        ))
        .clone()
    };
    assert!(
        many.line().ends_with("labels.l9 and 2 more"),
        "{}",
        many.line()
    );
}
