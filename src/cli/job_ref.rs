//! A job named on the command line, looked up in the applied revision
//! (with a skill's derived job `skill:<id>` where a run may be queued);
//! an unknown name gets the nearest ones; a paused one gets a note.

use super::store_access::StoreAccess;
use crate::spec::model::Job;
use crate::store::Applied;
use crate::store::paused::{PAUSED_KEY, paused_from};

/// How many near names an unknown job's error lists.
const NEAR: usize = 5;

/// `id`'s applied spec, or an error naming the nearest job ids.
pub fn applied_job<'a>(applied: &'a Applied, id: &str, store: &str) -> anyhow::Result<&'a Job> {
    check_applied(applied, store)?;
    if let Some(job) = applied.snapshot.jobs.get(id) {
        return Ok(&job.spec);
    }
    let known: Vec<&str> = applied.snapshot.jobs.keys().map(String::as_str).collect();
    Err(unknown(id, &known, store))
}

/// A job a run may be queued for: `id`'s applied spec, or a skill's
/// derived job (`skill:<id>`, its one-off runs); an unknown id gets the
/// nearest of either.
pub fn runnable_job(applied: &Applied, id: &str, store: &str) -> anyhow::Result<Job> {
    check_applied(applied, store)?;
    if let Some(job) = applied.snapshot.runnable_job(id) {
        return Ok(job.into_owned().spec);
    }
    let derived: Vec<String> = applied.snapshot.derived_jobs().map(|(id, _)| id).collect();
    let known: Vec<&str> = applied
        .snapshot
        .jobs
        .keys()
        .chain(derived.iter())
        .map(String::as_str)
        .collect();
    Err(unknown(id, &known, store))
}

fn check_applied(applied: &Applied, store: &str) -> anyhow::Result<()> {
    if applied.revision.is_none() {
        anyhow::bail!("nothing is applied in {store} yet: start `multijob run` on it once");
    }
    Ok(())
}

/// No job `id` among `known`: the error names the nearest ones.
fn unknown(id: &str, known: &[&str], store: &str) -> anyhow::Error {
    let mut near: Vec<(usize, &str)> = known.iter().map(|k| (distance(id, k), *k)).collect();
    near.sort();
    let close: Vec<&str> = near
        .iter()
        .take_while(|(d, _)| *d <= 3)
        .take(NEAR)
        .map(|(_, k)| *k)
        .collect();
    let hint = match close.as_slice() {
        [] if known.is_empty() => " (it has no jobs)".to_string(),
        [] => format!(" ({} jobs; `multijob status` lists them)", known.len()),
        [one] => format!(" (did you mean `{one}`?)"),
        more => format!(" (near names: {})", more.join(", ")),
    };
    anyhow::anyhow!("no job `{id}` in the applied revision of {store}{hint}")
}

/// The line telling that `job_id` is paused and `what` goes ahead anyway
/// (a pause holds back scheduled slots only), or `None`.
pub fn paused_note(
    store: &StoreAccess,
    job_id: &str,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let paused = paused_from(store.kv_get(PAUSED_KEY)?)?;
    Ok(paused.get(job_id).map(|p| {
        format!(
            "job {job_id} is paused (since {} by {}); {what} goes ahead",
            p.since, p.by
        )
    }))
}

/// Edit distance, with a name that contains the other counted as close.
fn distance(typed: &str, known: &str) -> usize {
    if known.contains(typed) || typed.contains(known) {
        return 1;
    }
    strsim::levenshtein(typed, known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(ids: &[&str]) -> Applied {
        let mut applied = Applied {
            revision: Some(
                serde_json::from_value(serde_json::json!({
                    "id": "r1", "status": "applied", "at": "2026-12-07T00:00:00Z",
                    "content_hash": "h", "summary": {}, "changes": [], "errors": []
                }))
                .unwrap(),
            ),
            ..Applied::default()
        };
        for id in ids {
            let job: Job =
                serde_json::from_value(serde_json::json!({"id": id, "type": "noop"})).unwrap();
            applied.snapshot.jobs.insert(
                id.to_string(),
                crate::spec::snapshot::Resource {
                    spec: job,
                    file: "jobs.d/a.yaml".into(),
                    line: 1,
                    column: 1,
                    hash: "h".into(),
                },
            );
        }
        applied
    }

    #[test]
    fn an_unknown_job_gets_the_near_names_and_never_itself() {
        let a = applied(&["nightly-report", "heartbeat", "sync"]);
        let err = applied_job(&a, "heartbeet", "S").unwrap_err().to_string();
        assert_eq!(
            err,
            "no job `heartbeet` in the applied revision of S (did you mean `heartbeat`?)"
        );
        let err = applied_job(&a, "zzzzzzzzzz", "S").unwrap_err().to_string();
        assert!(
            err.ends_with("(3 jobs; `multijob status` lists them)"),
            "{err}"
        );
        assert_eq!(applied_job(&a, "sync", "S").unwrap().id, "sync");
    }

    #[test]
    fn a_skill_s_derived_job_is_runnable_but_not_a_directory_job() {
        let mut a = applied(&["nightly-report"]);
        let skill: crate::spec::model::Skill =
            serde_json::from_value(serde_json::json!({"id": "brief"})).unwrap();
        a.snapshot.skills.insert(
            "brief".into(),
            crate::spec::snapshot::Resource::new(skill, "skills.d/b.yaml".into(), 1, 1),
        );
        assert_eq!(
            runnable_job(&a, "skill:brief", "S").unwrap().id,
            "skill:brief"
        );
        assert_eq!(
            runnable_job(&a, "nightly-report", "S").unwrap().id,
            "nightly-report"
        );
        // A typo, or the skill's bare id, gets the derived job's name.
        let err = runnable_job(&a, "skill:breif", "S")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("(did you mean `skill:brief`?)"), "{err}");
        let err = runnable_job(&a, "brief", "S").unwrap_err().to_string();
        assert!(err.ends_with("(did you mean `skill:brief`?)"), "{err}");
        // Pause, backfill and the like take the directory's jobs only.
        let err = applied_job(&a, "skill:brief", "S").unwrap_err().to_string();
        assert!(err.starts_with("no job `skill:brief`"), "{err}");
    }
}
