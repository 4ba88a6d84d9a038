//! The bridge's read-only commands: `/jobs` (each job, enabled or paused,
//! its last run's status) and `/status JOB` (the job's last runs). What
//! they show comes from the applied snapshot and the store, like the
//! status API's job list.

use super::commands::{Answer, Desk};
use crate::store::runs::{Run, RunQuery};

/// Jobs listed by `/jobs` before "and N more".
const MAX_JOBS_LISTED: usize = 50;
/// Runs shown by `/status`.
const RUNS_SHOWN: usize = 5;

impl Desk {
    pub(super) async fn jobs(&self) -> Answer {
        let applied = self.shared.applied.load_full();
        let ids: Vec<String> = applied.snapshot.jobs.keys().cloned().collect();
        if ids.is_empty() {
            return Answer::says("no jobs in the applied revision");
        }
        let store = &self.shared.store;
        let (paused, last) = match (store.paused().await, store.last_runs(ids.clone()).await) {
            (Ok(p), Ok(l)) => (p, l),
            (Err(e), _) | (_, Err(e)) => {
                return Answer::says(format!("could not read the jobs' state: {e}"));
            }
        };
        let mut lines = Vec::new();
        for (id, job) in applied.snapshot.jobs.iter().take(MAX_JOBS_LISTED) {
            let state = if paused.contains_key(id) {
                "paused"
            } else if job.spec.enabled {
                "enabled"
            } else {
                "disabled"
            };
            let status = last.get(id).map_or("no runs yet", |r| r.status.as_str());
            lines.push(format!("{id} - {state}, last: {status}"));
        }
        if ids.len() > MAX_JOBS_LISTED {
            lines.push(format!("... and {} more", ids.len() - MAX_JOBS_LISTED));
        }
        Answer::says(lines.join("\n"))
    }

    pub(super) async fn status(&self, words: &[String]) -> Answer {
        let [job] = words else {
            return Answer::says("usage: /status JOB");
        };
        if let Some(unknown) = self.unknown_job(job) {
            return unknown;
        }
        let query = RunQuery {
            job_id: Some(job.clone()),
            status: None,
            limit: RUNS_SHOWN,
            before: None,
        };
        match self.shared.store.runs(query).await {
            Ok(runs) if runs.is_empty() => Answer::says(format!("{job}: no runs yet")),
            Ok(runs) => {
                let mut lines = vec![format!("{job}, last {} run(s):", runs.len())];
                lines.extend(runs.iter().map(|(_, r)| run_line(r)));
                Answer::says(lines.join("\n"))
            }
            Err(e) => Answer::says(format!("could not read {job}'s runs: {e}")),
        }
    }
}

/// `id status (trigger, queued at, took 1.2s)`.
pub(super) fn run_line(r: &Run) -> String {
    let took = r
        .duration_ms
        .map(|ms| format!(", took {:.1}s", ms as f64 / 1000.0))
        .unwrap_or_default();
    format!(
        "{} {} ({}, queued {}{took})",
        r.id,
        r.status.as_str(),
        r.trigger.as_str(),
        r.queued_at
    )
}
