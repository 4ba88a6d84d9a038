//! PURE. What a Trigger change means for the requests it answers, in
//! words `plan` prints under the change: "now runs job Y (was job X)",
//! "its secret reference changed: requests signed with the old secret are
//! refused", "POST /hooks/X will answer 404". The field lines above them
//! say what changed; these say what that does.

use crate::spec::model::{Trigger, TriggerAction};
use crate::spec::snapshot::Snapshot;

use super::diff::{Action, Change};

/// The notes of one change of kind Trigger (none for an unchanged one).
pub fn notes(change: &Change, running: &Snapshot, desired: &Snapshot) -> Vec<String> {
    let old = running.triggers.get(&change.id).map(|r| &r.spec);
    let new = desired.triggers.get(&change.id).map(|r| &r.spec);
    let path = format!("POST /hooks/{}", change.id);
    match (change.action, old, new) {
        (Action::Create, _, Some(new)) if new.enabled => vec![format!(
            "{path} ({} signature) will run {}{}",
            new.source.as_str(),
            target(new),
            if new.requires_approval {
                ", each run waiting for approval"
            } else {
                ""
            }
        )],
        (Action::Create, _, Some(_)) => vec![format!("{path} stays off (enabled: false)")],
        (Action::Delete, Some(_), _) => vec![format!("{path} will answer 404")],
        (Action::Update, Some(old), Some(new)) => update_notes(&path, old, new),
        _ => Vec::new(),
    }
}

fn update_notes(path: &str, old: &Trigger, new: &Trigger) -> Vec<String> {
    let mut out = Vec::new();
    if old.enabled != new.enabled {
        out.push(if new.enabled {
            format!("{path} is turned on: it will run {}", target(new))
        } else {
            format!("{path} is turned off: it will answer 404")
        });
    }
    if target(old) != target(new) {
        out.push(format!("now runs {} (was {})", target(new), target(old)));
    }
    if old.source != new.source {
        out.push(format!(
            "now checks {} signatures (was {}): senders must sign the new way",
            new.source.as_str(),
            old.source.as_str()
        ));
    }
    if old.secret != new.secret {
        out.push(
            "its secret reference changed: requests signed with the old secret will be refused"
                .to_string(),
        );
    }
    if old.requires_approval != new.requires_approval {
        out.push(if new.requires_approval {
            "its runs will wait for approval".to_string()
        } else {
            "its runs will no longer wait for approval".to_string()
        });
    }
    out
}

/// `job X`, `skill Y`, or what an action does.
fn target(t: &Trigger) -> String {
    match (&t.job, &t.skill, t.action) {
        (Some(job), _, _) => format!("job {job}"),
        (None, Some(skill), _) => format!("skill {skill}"),
        (None, None, Some(TriggerAction::Sync)) => {
            "a git fetch on each push to the pulled branch (action: sync, with run --git)"
                .to_string()
        }
        (None, None, None) => "nothing".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::diff::diff;
    use crate::spec::snapshot::Resource;
    use serde_json::{Value, json};

    fn snapshot(triggers: &[Value]) -> Snapshot {
        let mut s = Snapshot::default();
        for t in triggers {
            let spec: Trigger = serde_json::from_value(t.clone()).unwrap();
            s.triggers.insert(
                spec.id.clone(),
                Resource::new(spec, "jobs.d/t.yaml".into(), 1, 1),
            );
        }
        s
    }

    fn hook(id: &str, extra: Value) -> Value {
        let mut t = json!({"id": id, "source": "webhook", "job": "fulfil", "secret": "${env:S}"});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        t
    }

    /// Every note of the plan from `running` to `desired`, by trigger.
    fn all(running: &Snapshot, desired: &Snapshot) -> Vec<(String, Vec<String>)> {
        diff(running, desired)
            .changes
            .iter()
            .map(|c| (c.id.clone(), notes(c, running, desired)))
            .collect()
    }

    #[test]
    fn created_and_deleted_triggers_say_what_the_path_does() {
        let running = snapshot(&[hook("gone", json!({}))]);
        let desired = snapshot(&[
            hook("new", json!({"requires_approval": true})),
            hook(
                "off",
                json!({"enabled": false, "skill": "brief", "job": null}),
            ),
        ]);
        assert_eq!(
            all(&running, &desired),
            [
                ("gone".into(), vec!["POST /hooks/gone will answer 404".to_string()]),
                (
                    "new".into(),
                    vec!["POST /hooks/new (webhook signature) will run job fulfil, each run waiting for approval".to_string()]
                ),
                ("off".into(), vec!["POST /hooks/off stays off (enabled: false)".to_string()]),
            ]
        );
    }

    #[test]
    fn a_sync_trigger_says_it_fetches() {
        let desired = snapshot(&[hook(
            "push",
            json!({"job": null, "action": "sync", "source": "github"}),
        )]);
        assert_eq!(
            all(&Snapshot::default(), &desired),
            [(
                "push".into(),
                vec!["POST /hooks/push (github signature) will run a git fetch on each push to the pulled branch (action: sync, with run --git)".to_string()]
            )]
        );
        let running = snapshot(&[hook("push", json!({}))]);
        let notes = all(&running, &desired);
        assert_eq!(
            notes[0].1[0],
            "now runs a git fetch on each push to the pulled branch (action: sync, with run --git) (was job fulfil)"
        );
    }

    #[test]
    fn an_update_names_each_effect() {
        let running = snapshot(&[hook("t", json!({}))]);
        let desired = snapshot(&[hook(
            "t",
            json!({"job": null, "skill": "brief", "source": "github",
                   "secret": "${env:OTHER}", "requires_approval": true}),
        )]);
        assert_eq!(
            all(&running, &desired),
            [(
                "t".into(),
                vec![
                    "now runs skill brief (was job fulfil)".to_string(),
                    "now checks github signatures (was webhook): senders must sign the new way".to_string(),
                    "its secret reference changed: requests signed with the old secret will be refused".to_string(),
                    "its runs will wait for approval".to_string(),
                ]
            )]
        );
        let off = snapshot(&[hook("t", json!({"enabled": false}))]);
        assert_eq!(
            all(&running, &off),
            [(
                "t".into(),
                vec!["POST /hooks/t is turned off: it will answer 404".to_string()]
            )]
        );
        assert_eq!(
            all(&off, &running),
            [(
                "t".into(),
                vec!["POST /hooks/t is turned on: it will run job fulfil".to_string()]
            )]
        );
        // A change with no effect on requests (a description) has no note.
        let described = snapshot(&[hook("t", json!({"description": "orders"}))]);
        assert_eq!(
            all(&running, &described),
            [("t".into(), Vec::<String>::new())]
        );
    }
}
