//! `multijob trigger`: queue one run of a job now.

use anyhow::Context;

use crate::daemon::presence::{PRESENCE_KEY, PRESENCE_TTL};
use crate::run::new_run_id;
use crate::spec::model::Job;
use crate::store::Applied;
use crate::store::runs::InboxCommand;

use super::Outcome;
use super::store_access::{StoreAccess, StoreArgs};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob trigger nightly-report -d ops
  multijob trigger nightly-report --wait --timeout 10m   # follow it; exit 0 if it succeeded
  multijob trigger restock --inputs '{\"sku\": \"P1\"}' --redis redis://db:6379/
  multijob trigger skill:content-brief -i topic=pricing   # a skill's one-off run

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL")]
pub struct Args {
    /// The job id, or `skill:<id>` to run a skill once (its inputs are the
    /// skill's `with`, checked against its `params`).
    pub job: String,
    /// JSON object overlaid on the job's inputs (templates only: inputs
    /// never change the job's policy).
    #[arg(long)]
    pub inputs: Option<String>,
    /// One input as KEY=VALUE (a string), over --inputs; repeat it for more.
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE", value_parser = parse_input)]
    pub input: Vec<(String, String)>,
    /// Queue this many runs (campaigns, load and capacity tests). The
    /// daemon admits a burst in slices of 64 as workers take them, so at
    /// most one slice of it waits in the queue and the rest in the inbox;
    /// after a crash it resumes where it got to, running no run twice.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Follow the run like `logs --follow` and exit with its status (0
    /// succeeded, 1 otherwise); with --count, wait for all of them.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (30s, 5m, 2h), exit 1.
    #[arg(long, value_name = "DUR", requires = "wait", value_parser = super::duration_arg::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let inputs = inputs(args.inputs.as_deref(), &args.input)?;
    let run_id = new_run_id();
    let command = |job: &Job| InboxCommand::Trigger {
        run_id: run_id.clone(),
        job_id: job.id.clone(),
        inputs: inputs.clone(),
        count: args.count.max(1),
    };
    let store = StoreAccess::open(&args.store)?;
    let applied = store.applied()?;
    let job = pick_job(&applied, &args.job, &store.describe())?;
    store.post(&command(&job))?;
    if args.count > 1 {
        println!(
            "queued run {run_id} of job {} (and {} more: {run_id}-1 ...)",
            job.id,
            args.count - 1
        );
    } else {
        println!("queued run {run_id} of job {}", job.id);
    }
    if let Some(note) = super::job_ref::paused_note(&store, &job.id, "this manual run")? {
        println!("{note}");
    }
    if job.requires_approval {
        println!("the job requires approval: `multijob approvals list` shows the request");
    }
    if store.kv_get(PRESENCE_KEY)?.is_none() {
        println!(
            "queued; no daemon is running on this store (none has read it in the last {} s): start one with `multijob run`",
            PRESENCE_TTL.as_secs()
        );
    }
    if args.wait {
        return super::wait::wait_for(&store, &run_id, args.count, args.timeout);
    }
    Ok(Outcome::Success)
}

/// `--inputs` with each `-i KEY=VALUE` over it.
fn inputs(json: Option<&str>, pairs: &[(String, String)]) -> anyhow::Result<serde_json::Value> {
    let mut inputs = match json {
        None => serde_json::Map::new(),
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--inputs is not JSON: {text}"))?;
            match v {
                serde_json::Value::Object(map) => map,
                _ => anyhow::bail!("--inputs must be a JSON object, like '{{\"sku\": \"P1\"}}'"),
            }
        }
    };
    for (k, v) in pairs {
        inputs.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    Ok(serde_json::Value::Object(inputs))
}

/// `-i KEY=VALUE`: a non-empty key, then the value (which may hold `=`).
fn parse_input(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "`{text}` is not KEY=VALUE (like -i topic=pricing; use --inputs for JSON values)"
        )),
    }
}

/// The job's applied spec, or a skill's derived job (an unknown id gets
/// the nearest ones), refused when it is disabled.
fn pick_job(applied: &Applied, id: &str, store: &str) -> anyhow::Result<Job> {
    let job = super::job_ref::runnable_job(applied, id, store)?;
    if !job.enabled {
        let (file, line) = applied
            .snapshot
            .jobs
            .get(id)
            .map_or(("?", 0), |r| (r.file.as_str(), r.line));
        anyhow::bail!(
            "job `{id}` is disabled (enabled: false in {file}:{line}): disabled jobs get no new runs; enable it to trigger it"
        );
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_pairs_are_strings_over_the_json_inputs() {
        let pairs = [
            parse_input("topic=a=b").unwrap(),
            parse_input("sku=P2").unwrap(),
        ];
        let got = inputs(Some(r#"{"sku": "P1", "n": 3}"#), &pairs).unwrap();
        assert_eq!(got, json!({"sku": "P2", "n": 3, "topic": "a=b"}));
        assert_eq!(inputs(None, &[]).unwrap(), json!({}));
        assert_eq!(
            parse_input("empty=").unwrap(),
            ("empty".into(), String::new())
        );
    }

    #[test]
    fn a_malformed_input_is_refused_with_the_form_it_takes() {
        for bad in ["topic", "=x", " =x", ""] {
            let err = parse_input(bad).unwrap_err();
            assert!(
                err.contains("is not KEY=VALUE (like -i topic=pricing"),
                "{err}"
            );
        }
        let err = inputs(Some("[1]"), &[]).unwrap_err().to_string();
        assert!(err.starts_with("--inputs must be a JSON object"), "{err}");
    }
}
