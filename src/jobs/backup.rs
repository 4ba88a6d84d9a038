//! `backup.export`: the applied specs and the run history as one JSON file
//! in the data dir, written atomically, oldest backups rotated out.
//!
//! Inputs: `include_runs` (default true), `max_runs` (default 100,000,
//! newest first), `keep` (backup files kept per job, default 7).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::RunContext;
use crate::run::{RunError, RunResult};
use crate::spec::model::Job;
use crate::store::{Store, now_rfc3339};

/// Runs read from the store per page.
const PAGE: usize = 1000;

fn number(inputs: &Value, name: &str, default: u64) -> Result<u64, RunError> {
    match inputs.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| {
                RunError::Permanent(format!("inputs.{name} must be a whole number, not {v}"))
            }),
    }
}

pub async fn run(job: &Job, ctx: &RunContext, cancel: &CancellationToken) -> RunResult {
    let (Some(store), Some(applied)) = (&ctx.store, &ctx.applied) else {
        return Err(RunError::Permanent(
            "backup.export needs the store; this run has none".into(),
        ));
    };
    let include_runs = match ctx.inputs.get("include_runs") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(RunError::Permanent(format!(
                "inputs.include_runs must be true or false, not {v}"
            )));
        }
    };
    let max_runs = number(&ctx.inputs, "max_runs", 100_000)? as usize;
    let keep = number(&ctx.inputs, "keep", 7)?.max(1) as usize;

    let runs = if include_runs {
        read_runs(store, max_runs, cancel).await?
    } else {
        Vec::new()
    };
    let failure = store
        .failure_states()
        .await
        .map_err(|e| RunError::retryable(format!("reading failure memory: {e}")))?;
    let slots = store
        .job_slots()
        .await
        .map_err(|e| RunError::retryable(format!("reading job slots: {e}")))?;
    let revision = applied.revision.as_ref().map(|r| r.id.as_str());
    let document = json!({
        "format": "multijob-backup/1",
        "created_at": now_rfc3339(),
        "created_by": {"job": job.id, "run": ctx.run_id},
        "snapshot": applied.snapshot.to_json(revision),
        "runs": runs,
        "failure_memory": failure
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect::<serde_json::Map<_, _>>(),
        "job_slots": slots.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<_, _>>(),
    });
    let bytes = serde_json::to_vec_pretty(&document)
        .map_err(|e| RunError::Permanent(format!("encoding the backup: {e}")))?;
    let dir = ctx.data_dir.join("backups").join(&job.id);
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let path = dir.join(format!("{stamp}-{}.json", ctx.run_id));
    let size = bytes.len();
    let resources = applied.snapshot.len();
    let runs_written = document["runs"].as_array().map_or(0, Vec::len);
    let written = path.clone();
    tokio::task::spawn_blocking(move || write_and_rotate(&dir, &written, &bytes, keep))
        .await
        .map_err(|e| RunError::retryable(format!("writing the backup: {e}")))??;
    let relative = path
        .strip_prefix(&ctx.data_dir)
        .unwrap_or(&path)
        .display()
        .to_string();
    Ok(json!({"path": relative, "bytes": size, "resources": resources, "runs": runs_written}))
}

async fn read_runs(
    store: &Store,
    max: usize,
    cancel: &CancellationToken,
) -> Result<Vec<Value>, RunError> {
    let mut out = Vec::new();
    let mut pages = super::history::RunPages::new(store, cancel);
    while out.len() < max {
        let Some(page) = pages.next(PAGE.min(max - out.len())).await? else {
            break;
        };
        out.extend(
            page.into_iter()
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
        );
    }
    Ok(out)
}

/// Write via a temp file and rename (a reader never sees half a backup),
/// then drop the oldest files beyond `keep`.
fn write_and_rotate(dir: &Path, path: &Path, bytes: &[u8], keep: usize) -> Result<(), RunError> {
    let io = |what: &str, e: std::io::Error| RunError::retryable(format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io(&format!("creating {}", dir.display()), e))?;
    let tmp = path.with_extension("json.tmp");
    // A FIFO planted at `tmp` is refused, not waited on.
    crate::regular_file::write(&tmp, bytes)
        .map_err(|e| io(&format!("writing {}", tmp.display()), e.into()))?;
    std::fs::rename(&tmp, path).map_err(|e| io(&format!("renaming to {}", path.display()), e))?;
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(&format!("listing {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    // Names start with a UTC timestamp: lexical order is time order.
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for old in &backups[..excess] {
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}
