//! The jobs a snapshot implies without a document of their own: every
//! skill has a derived job `skill:<id>` whose runs are the skill's one-off
//! runs (`multijob trigger skill:<id>`, an inbound trigger's `skill:`, a
//! chat bridge's `command_prefix`).
//!
//! A derived job is an `agent.workflow` with no schedule and one step,
//! `uses: <id>`, whose `with` is the run's inputs as given (the workflow
//! engine takes them from the run, never as templates). The skill's
//! `requires_approval` is the job's gate; everything else (timeout, retry,
//! limits, tools) is a job's default: a caller's inputs never change it.
//! Derived jobs are runnable (the queue admits them, workers execute them)
//! but are not the directory's: the scheduler, `plan`, `validate` and
//! `/api/v1/jobs` see only `Snapshot::jobs`.
//!
//! Pure; uses only `spec::model`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Map;

use super::{Resource, Snapshot, spec_hash};
use crate::spec::model::{
    Action, FailureMemory, Job, Limits, Overlap, RetryPolicy, Skill, Step, ToolPolicy, skill_job_id,
};

/// What a derived job's id starts with (`:` is never in a document's id).
const PREFIX: &str = "skill:";

/// The skill whose one-off runs `job_id` names, if it is a derived job's id.
pub fn skill_of(job_id: &str) -> Option<&str> {
    job_id.strip_prefix(PREFIX).filter(|id| !id.is_empty())
}

/// The derived job of `skill`, at the skill's file and position. Its hash
/// covers the skill's: a changed skill changes the job its runs record.
pub fn skill_job(skill: &Resource<Skill>) -> Resource<Job> {
    let spec = derive(&skill.spec);
    let hash = spec_hash(&(&spec, &skill.hash));
    Resource {
        spec,
        file: skill.file.clone(),
        line: skill.line,
        column: skill.column,
        hash,
    }
}

fn derive(skill: &Skill) -> Job {
    let description = match &skill.description {
        Some(d) => format!("one-off runs of skill {}: {d}", skill.id),
        None => format!("one-off runs of skill {}", skill.id),
    };
    Job {
        id: skill_job_id(&skill.id),
        job_type: "agent.workflow".into(),
        enabled: true,
        description: Some(description),
        labels: BTreeMap::new(),
        schedule: None,
        timeout_ms: crate::spec::model::default_timeout_ms(),
        retry_policy: RetryPolicy::default(),
        flow: None,
        worker_group: None,
        priority: None,
        // Each request is its own run: two at once both run.
        overlap: Overlap::Allow,
        // Nothing schedules it, so a cooldown would hold nothing back.
        failure_memory: FailureMemory {
            enabled: false,
            ..FailureMemory::default()
        },
        requires_approval: skill.requires_approval,
        tools: ToolPolicy::default(),
        commands: None,
        limits: Limits::default(),
        budgets: Default::default(),
        expect: None,
        inputs: Map::new(),
        steps: vec![Step {
            id: skill.id.clone(),
            when: None,
            foreach: None,
            concurrency: None,
            retry: None,
            timeout_ms: None,
            continue_on_error: false,
            with: None,
            action: Action::Uses(skill.id.clone()),
        }],
        notify: Vec::new(),
        deadline_sec: None,
    }
}

impl Snapshot {
    /// A job runs may be queued for: one of the directory's, or a skill's
    /// derived job (`skill:<id>`).
    pub fn runnable_job(&self, id: &str) -> Option<Cow<'_, Resource<Job>>> {
        if let Some(job) = self.jobs.get(id) {
            return Some(Cow::Borrowed(job));
        }
        let skill = self.skills.get(skill_of(id)?)?;
        Some(Cow::Owned(skill_job(skill)))
    }

    /// Every skill's derived job, by id.
    pub fn derived_jobs(&self) -> impl Iterator<Item = (String, Resource<Job>)> + '_ {
        self.skills.values().map(|s| {
            let job = skill_job(s);
            (job.spec.id.clone(), job)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn skill(doc: serde_json::Value) -> Resource<Skill> {
        let spec: Skill = serde_json::from_value(doc).expect("skill");
        Resource::new(spec, "skills.d/brief.yaml".into(), 3, 1)
    }

    fn snapshot_with(skills: &[Resource<Skill>]) -> Snapshot {
        let mut s = Snapshot::default();
        for k in skills {
            s.skills.insert(k.spec.id.clone(), k.clone());
        }
        s
    }

    #[test]
    fn a_skill_derives_a_one_step_workflow_that_uses_it() {
        let k = skill(json!({
            "id": "brief", "description": "draft a brief", "requires_approval": true,
            "default_inputs": {"tone": "friendly"},
            "params": {"type": "object", "required": ["topic"]},
            "steps": [{"id": "out", "set": {"t": "{{ inputs.topic }}"}}],
        }));
        let job = skill_job(&k);
        assert_eq!(job.spec.id, "skill:brief");
        assert_eq!(job.spec.job_type, "agent.workflow");
        assert!(job.spec.schedule.is_none());
        assert!(job.spec.requires_approval);
        assert_eq!(job.spec.overlap, Overlap::Allow);
        assert!(!job.spec.failure_memory.enabled);
        assert_eq!(job.spec.steps.len(), 1);
        assert_eq!(job.spec.steps[0].action, Action::Uses("brief".into()));
        assert_eq!(job.spec.steps[0].with, None);
        // Policy is a job's default; inputs come from the run alone.
        assert!(job.spec.inputs.is_empty());
        assert!(job.spec.tools.is_empty());
        assert_eq!(job.spec.limits, Limits::default());
        assert_eq!(job.spec.timeout_ms, 60_000);
        assert_eq!((job.file.as_str(), job.line), ("skills.d/brief.yaml", 3));
        assert_eq!(
            job.spec.description.as_deref(),
            Some("one-off runs of skill brief: draft a brief")
        );
    }

    #[test]
    fn the_derived_hash_follows_the_skill() {
        let a = skill(json!({"id": "brief", "steps": [{"id": "s", "set": {"a": 1}}]}));
        let b = skill(json!({"id": "brief", "steps": [{"id": "s", "set": {"a": 2}}]}));
        assert_eq!(skill_job(&a).hash, skill_job(&a.clone()).hash);
        assert_ne!(skill_job(&a).hash, skill_job(&b).hash);
        // The job itself is the same: only the hash tells the skill changed.
        assert_eq!(skill_job(&a).spec, skill_job(&b).spec);
        let gated = skill(json!({"id": "brief", "requires_approval": true}));
        assert!(
            !skill_job(&skill(json!({"id": "brief"})))
                .spec
                .requires_approval
        );
        assert!(skill_job(&gated).spec.requires_approval);
    }

    #[test]
    fn runnable_jobs_are_the_directory_s_and_the_skills_derived_ones() {
        let mut s = snapshot_with(&[skill(json!({"id": "brief"})), skill(json!({"id": "x"}))]);
        let job: Job = serde_json::from_value(json!({"id": "nightly", "type": "noop"})).unwrap();
        s.jobs.insert(
            "nightly".into(),
            Resource::new(job, "jobs.d/n.yaml".into(), 1, 1),
        );
        assert!(matches!(s.runnable_job("nightly"), Some(Cow::Borrowed(_))));
        let derived = s.runnable_job("skill:brief").expect("derived");
        assert_eq!(derived.spec.id, "skill:brief");
        assert!(s.runnable_job("skill:nope").is_none());
        assert!(s.runnable_job("skill:").is_none());
        assert!(s.runnable_job("brief").is_none());
        let ids: Vec<String> = s.derived_jobs().map(|(id, _)| id).collect();
        assert_eq!(ids, ["skill:brief", "skill:x"]);
        // The directory's jobs are untouched: scheduler, plan and the API
        // never see a derived one.
        assert_eq!(s.jobs.keys().collect::<Vec<_>>(), ["nightly"]);
    }

    #[test]
    fn skill_of_reads_only_derived_ids() {
        assert_eq!(skill_of("skill:brief"), Some("brief"));
        assert_eq!(skill_of(&skill_job_id("a.b-c")), Some("a.b-c"));
        assert_eq!(skill_of("skill:"), None);
        assert_eq!(skill_of("brief"), None);
        assert_eq!(skill_of("skills:brief"), None);
    }
}
