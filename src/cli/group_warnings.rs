//! `plan` and `validate --server`: a warning, at the job's file:line, for
//! each job whose `worker_group` no live worker serves (its runs would
//! wait). The live workers come from the daemon's `GET /api/v1/workers`
//! or the Redis deployment's registry; the embedded store never warns
//! (its daemon's pool serves every group).

use crate::spec::snapshot::Snapshot;
use crate::store::redis::RedisStore;
use crate::store::workers::{WorkerInfo, unserved_warning};

/// The warnings `plan` prints: against `--server`, else `--redis`; none
/// for the embedded store. A registry that cannot be read is one warning
/// saying so, not an error: the plan stands without it.
pub async fn for_plan(
    desired: &Snapshot,
    server: Option<&str>,
    redis: Option<&str>,
) -> Vec<String> {
    if !names_a_group(desired) {
        return Vec::new();
    }
    let workers = match (server, redis) {
        (Some(server), _) => from_server(server).await,
        (None, Some(url)) => from_redis(url).await,
        (None, None) => return Vec::new(),
    };
    match workers {
        Ok(workers) => warnings(desired, &workers),
        Err(e) => vec![format!(
            "cannot tell which worker groups live workers serve: {e:#}"
        )],
    }
}

/// The live workers a daemon lists.
pub async fn from_server(server: &str) -> anyhow::Result<Vec<WorkerInfo>> {
    let base = super::server::server_url(server)?;
    let body = super::server::get_json(&base, "/api/v1/workers").await?;
    serde_json::from_value(body["items"].clone()).map_err(|e| {
        anyhow::anyhow!("GET {base}/api/v1/workers: unexpected list ({e}); is the daemon older?")
    })
}

async fn from_redis(url: &str) -> anyhow::Result<Vec<WorkerInfo>> {
    let store = RedisStore::open(url).await?;
    Ok(store.live_workers().await?)
}

fn names_a_group(desired: &Snapshot) -> bool {
    desired.jobs.values().any(|r| r.spec.worker_group.is_some())
}

/// `file:line: job `id`: no live worker serves group …` for each job
/// whose group none of `workers` serves, in file order.
pub fn warnings(desired: &Snapshot, workers: &[WorkerInfo]) -> Vec<String> {
    let mut out: Vec<(&str, u32, String)> = desired
        .jobs
        .iter()
        .filter_map(|(id, r)| {
            let group = r.spec.worker_group.as_deref()?;
            if workers.iter().any(|w| w.serves(group)) {
                return None;
            }
            let text = format!(
                "{}:{}: job `{id}`: {}",
                r.file,
                r.line,
                unserved_warning(group)
            );
            Some((r.file.as_str(), r.line, text))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, _, text)| text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(text: &str) -> Snapshot {
        let loaded = crate::spec::build(&[crate::spec::SourceFile {
            path: "jobs.d/j.yaml".into(),
            text: text.into(),
        }]);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.snapshot
    }

    #[test]
    fn a_job_whose_group_no_worker_serves_is_named_at_its_line() {
        let s = snapshot(
            "id: a\ntype: noop\nworker_group: a\n---\nid: g\ntype: noop\nworker_group: gpu\n---\nid: p\ntype: noop\n",
        );
        let worker = crate::store::workers::decode(
            "n",
            &crate::store::workers::encode(1, 0, &["a".into()], 0),
        )
        .unwrap();
        let out = warnings(&s, std::slice::from_ref(&worker));
        assert_eq!(
            out,
            [
                "jobs.d/j.yaml:5: job `g`: no live worker serves group `gpu`: start one with `multijob worker --group gpu`"
            ]
        );
        assert_eq!(warnings(&s, &[]).len(), 2);
        let pool = WorkerInfo {
            groups: vec!["*".into()],
            ..worker
        };
        assert!(warnings(&s, &[pool]).is_empty());
    }
}
