//! PURE. What a change to the directory's `kind: Defaults` document means,
//! in words `plan` prints under the change: whose notices follow it (the
//! jobs with no `notify:` of their own and none on their flow). The field
//! lines above say what changed; this says which jobs it reaches.

use crate::spec::snapshot::Snapshot;

use super::diff::{Action, Change};

/// Job ids named in a note before the rest are counted.
const NAMED: usize = 10;

/// The notes of one change of kind Defaults.
pub fn notes(change: &Change, running: &Snapshot, desired: &Snapshot) -> Vec<String> {
    let (jobs, what) = match change.action {
        Action::Delete => (following(running), "jobs left without notices"),
        Action::Create | Action::Update => {
            (following(desired), "jobs that take their notices from it")
        }
    };
    if jobs.is_empty() {
        return vec!["no job takes its notices from it (each has its own or its flow's)".into()];
    }
    let shown = jobs
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = match jobs.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let count = jobs.len();
    vec![format!("{what} ({count}): {shown}{more}")]
}

/// The jobs of `snapshot` with neither their own nor their flow's rules.
fn following(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .jobs
        .iter()
        .filter(|(_, job)| {
            let flow = job.spec.flow.as_ref().and_then(|f| snapshot.flows.get(f));
            job.spec
                .notice_rules(flow.map(|f| &f.spec), None)
                .is_empty()
        })
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::build_texts;

    fn snapshot(text: &str) -> Snapshot {
        let loaded = build_texts(&[("jobs.d/a.yaml", text)]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.snapshot
    }

    fn change(action: Action) -> Change {
        Change {
            action,
            kind: crate::spec::model::Kind::Defaults,
            id: "defaults".into(),
            file: "jobs.d/a.yaml".into(),
            line: 1,
            fields: Vec::new(),
            rescheduled: false,
            enabled_change: None,
        }
    }

    #[test]
    fn names_the_jobs_without_rules_of_their_own_or_their_flows() {
        let s = snapshot(
            "kind: Connector\nid: hook\nprovider: webhook\nbase_url: http://127.0.0.1:9/h\n---\n\
             kind: Defaults\nnotify: [{connector: hook, on: [failure]}]\n---\n\
             kind: Flow\nid: loud\nnotify: [{connector: hook, on: [recovery]}]\n---\n\
             id: bare\ntype: noop\n---\nid: in-loud\ntype: noop\nflow: loud\n---\n\
             id: own\ntype: noop\nnotify: [{connector: hook, on: [failure]}]\n---\n\
             id: z-bare\ntype: noop\n",
        );
        let empty = Snapshot::default();
        assert_eq!(
            notes(&change(Action::Create), &empty, &s),
            ["jobs that take their notices from it (2): bare, z-bare"]
        );
        assert_eq!(
            notes(&change(Action::Delete), &s, &empty),
            ["jobs left without notices (2): bare, z-bare"]
        );
        assert_eq!(
            notes(&change(Action::Update), &s, &empty),
            ["no job takes its notices from it (each has its own or its flow's)"]
        );
    }

    #[test]
    fn names_ten_jobs_and_counts_the_rest() {
        let jobs: Vec<String> = (0..12)
            .map(|i| format!("id: j{i:02}\ntype: noop\n"))
            .collect();
        let s = snapshot(&jobs.join("---\n"));
        assert_eq!(
            notes(&change(Action::Create), &Snapshot::default(), &s),
            [
                "jobs that take their notices from it (12): j00, j01, j02, j03, j04, j05, j06, \
              j07, j08, j09 and 2 more"
            ]
        );
    }
}
