//! `deadline` notices (pure): a run still unfinished `deadline_sec` after
//! its slot (its queue time when nothing scheduled it). Derived from the
//! unfinished runs each time it is asked, so a restart finds the same
//! overdue runs again; the send-once key (the run's id) keeps it one
//! notice per run.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::json;

use super::machine::Notice;
use super::rules_of;
use crate::spec::model::NoticeKind;
use crate::spec::snapshot::Snapshot;
use crate::store::runs::Run;

/// The `deadline` notices `active` (the unfinished runs) call for at
/// `now`: one per overdue run of a job whose rules want `deadline`.
pub fn overdue(active: &[Run], snapshot: &Snapshot, now: Timestamp) -> Vec<(String, Notice)> {
    let mut out = Vec::new();
    for run in active {
        let Some((job, rules)) = rules_of(snapshot, &run.job_id) else {
            continue;
        };
        let Some(limit) = job.deadline_sec else {
            continue;
        };
        if !rules.iter().any(|r| r.on.contains(&NoticeKind::Deadline)) {
            continue;
        }
        let slot = run.scheduled_at.as_deref().unwrap_or(&run.queued_at);
        let Ok(slot) = slot.parse::<Timestamp>() else {
            continue;
        };
        let late = now.as_second() - slot.as_second();
        if late < i64::try_from(limit).unwrap_or(i64::MAX) {
            continue;
        }
        let notice = Notice {
            kind: NoticeKind::Deadline,
            change: run.id.clone(),
            run: json!({
                "id": run.id,
                "status": run.status,
                "error": format!("not finished {late} s after its slot (deadline_sec {limit})"),
            }),
            count: 0,
            reasons: BTreeMap::new(),
        };
        out.push((run.job_id.clone(), notice));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::snapshot::Resource;
    use serde_json::Value;

    fn snapshot(job: Value) -> Snapshot {
        let mut s = Snapshot::default();
        let job: crate::spec::model::Job =
            serde_json::from_value(job).unwrap_or_else(|e| panic!("{e}"));
        s.jobs
            .insert(job.id.clone(), Resource::new(job, "j.yaml".into(), 1, 1));
        s
    }

    fn run(id: &str, job: &str, scheduled: &str) -> Run {
        let v = json!({
            "id": id, "job_id": job, "status": "running", "trigger": "schedule", "inputs": null,
            "attempt": 1, "attempts": [], "scheduled_at": scheduled, "queued_at": scheduled,
            "started_at": null, "finished_at": null, "duration_ms": null, "error": null,
            "spec_hash": "", "revision": "", "steps": [], "usage": {"llm_tokens": 0}, "output": null,
            "run_key": format!("{job}@{scheduled}"), "due_at": null, "priority": "normal",
            "flow": null, "chain_depth": 0, "lease_owner": null,
        });
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_run_past_its_deadline_gets_one_notice_keyed_by_its_id() {
        let s = snapshot(json!({"id": "j", "type": "noop", "deadline_sec": 60,
            "notify": [{"connector": "c", "on": ["deadline"]}]}));
        let runs = [
            run("r1", "j", "2026-12-07T10:00:00Z"),
            run("r2", "j", "2026-12-07T10:00:30Z"),
        ];
        let got = overdue(&runs, &s, at("2026-12-07T10:01:00Z"));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.as_str(), got[0].1.change.as_str()), ("j", "r1"));
        assert_eq!(got[0].1.kind, NoticeKind::Deadline);
        assert_eq!(overdue(&runs, &s, at("2026-12-07T10:00:59Z")).len(), 0);
    }

    #[test]
    fn no_deadline_rule_or_no_deadline_sec_means_no_notice() {
        let now = at("2026-12-07T12:00:00Z");
        let runs = [run("r1", "j", "2026-12-07T10:00:00Z")];
        let s = snapshot(json!({"id": "j", "type": "noop", "deadline_sec": 60,
            "notify": [{"connector": "c", "on": ["failure"]}]}));
        assert!(overdue(&runs, &s, now).is_empty());
        let s = snapshot(json!({"id": "j", "type": "noop",
            "notify": [{"connector": "c", "on": ["deadline"]}]}));
        assert!(overdue(&runs, &s, now).is_empty());
        assert!(overdue(&[run("r1", "other", "2026-12-07T10:00:00Z")], &s, now).is_empty());
    }
}
