//! `report.daily`: a summary of the runs and events of a period, written to
//! the data dir as JSON and Markdown, and delivered through message
//! connectors.
//!
//! Inputs: `period` (a duration such as `24h`, default 24h), `formats`
//! (`json`, `md`; default both), `deliver_to` (message connector ids),
//! `title`. Delivery is idempotent per run and connector: a retried or
//! reclaimed run does not send the report twice.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::RunContext;
use super::history::RunPages;
use crate::connectors::{Connectors, OutboundMessage};
use crate::run::{RunError, RunResult};
use crate::spec::model::Job;
use crate::store::runs::{Run, RunStatus};
use crate::store::{Store, format_ts};

const PAGE: usize = 1000;
/// Runs read per report at most (history is bounded by --keep-runs anyway).
const MAX_RUNS: usize = 200_000;

#[derive(Default, serde::Serialize)]
struct JobSummary {
    runs: u64,
    by_status: BTreeMap<&'static str, u64>,
    total_duration_ms: u64,
    last_error: Option<String>,
}

fn period(inputs: &Value) -> Result<jiff::SignedDuration, RunError> {
    match inputs.get("period") {
        None | Some(Value::Null) => Ok(jiff::SignedDuration::from_hours(24)),
        Some(Value::String(s)) => s
            .parse::<jiff::SignedDuration>()
            .ok()
            .filter(|d| d.is_positive())
            .ok_or_else(|| {
                RunError::Permanent(format!(
                    "inputs.period must be a duration like 24h, not {s:?}"
                ))
            }),
        Some(other) => Err(RunError::Permanent(format!(
            "inputs.period must be a duration like \"24h\", not {other}"
        ))),
    }
}

fn strings(inputs: &Value, name: &str, default: &[&str]) -> Result<Vec<String>, RunError> {
    match inputs.get(name) {
        None | Some(Value::Null) => Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    RunError::Permanent(format!("inputs.{name} must list strings, not {v}"))
                })
            })
            .collect(),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(other) => Err(RunError::Permanent(format!(
            "inputs.{name} must be a list, not {other}"
        ))),
    }
}

/// What a report covers and where it goes: its inputs, checked.
struct Request {
    period: jiff::SignedDuration,
    formats: Vec<String>,
    deliver_to: Vec<String>,
    title: String,
}

fn request(job: &Job, inputs: &Value) -> Result<Request, RunError> {
    let period = period(inputs)?;
    let formats = strings(inputs, "formats", &["json", "md"])?;
    if let Some(bad) = formats.iter().find(|f| *f != "json" && *f != "md") {
        return Err(RunError::Permanent(format!(
            "inputs.formats: unknown format {bad:?} (json, md)"
        )));
    }
    let deliver_to = strings(inputs, "deliver_to", &[])?;
    let title = inputs
        .get("title")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("multijob report ({})", job.id));
    Ok(Request {
        period,
        formats,
        deliver_to,
        title,
    })
}

pub async fn run(
    job: &Job,
    ctx: &RunContext,
    connectors: Option<&Connectors>,
    cancel: &CancellationToken,
) -> RunResult {
    let Some(store) = &ctx.store else {
        return Err(RunError::Permanent(
            "report.daily needs the store; this run has none".into(),
        ));
    };
    let request = request(job, &ctx.inputs)?;
    let end = jiff::Timestamp::now();
    let start = end
        .checked_sub(request.period)
        .map_err(|e| RunError::Permanent(format!("inputs.period: {e}")))?;
    let (start_s, end_s) = (format_ts(start), format_ts(end));

    let runs = runs_since(store, &start_s, cancel).await?;
    let events = store
        .event_counts_since(&start_s)
        .await
        .map_err(|e| RunError::retryable(format!("reading events: {e}")))?;
    let (jobs, totals) = summarize(&runs, &ctx.run_id);
    let report = json!({
        "title": request.title,
        "period": {"start": start_s, "end": end_s},
        "runs": {"total": runs.len(), "by_status": totals},
        "jobs": jobs,
        "events": events.into_iter().collect::<BTreeMap<_, _>>(),
    });
    let markdown = render_markdown(&report);

    let stem = end.strftime("%Y-%m-%dT%H%M%SZ").to_string();
    let mut files = Vec::new();
    for format in &request.formats {
        files.push(write_file(ctx, job, &stem, format, &report, &markdown).await?);
    }
    let mut delivered = Vec::new();
    for connector in &request.deliver_to {
        let connectors = connectors.ok_or_else(|| {
            RunError::Permanent("report.daily: no connectors for delivery".into())
        })?;
        deliver(
            store,
            connectors,
            connector,
            &ctx.run_id,
            &request.title,
            &markdown,
        )
        .await?;
        delivered.push(connector.clone());
    }
    Ok(json!({
        "period": report["period"],
        "runs": report["runs"],
        "files": files,
        "delivered": delivered,
    }))
}

/// Per job, and in all, the runs of the period (the report's own aside).
fn summarize(
    runs: &[Run],
    own_run: &str,
) -> (BTreeMap<String, JobSummary>, BTreeMap<&'static str, u64>) {
    let mut jobs: BTreeMap<String, JobSummary> = BTreeMap::new();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.id != own_run) {
        let s = jobs.entry(r.job_id.clone()).or_default();
        s.runs += 1;
        *s.by_status.entry(r.status.as_str()).or_default() += 1;
        *totals.entry(r.status.as_str()).or_default() += 1;
        s.total_duration_ms += r.duration_ms.unwrap_or(0);
        if matches!(r.status, RunStatus::Failed | RunStatus::TimedOut) && s.last_error.is_none() {
            s.last_error = r.error.clone();
        }
    }
    (jobs, totals)
}

/// Writes the report in one format under `reports/<job>/` in the data dir;
/// its path there.
async fn write_file(
    ctx: &RunContext,
    job: &Job,
    stem: &str,
    format: &str,
    report: &Value,
    markdown: &str,
) -> Result<String, RunError> {
    let dir = ctx.data_dir.join("reports").join(&job.id);
    let (name, bytes) = match format {
        "json" => (
            format!("{stem}.json"),
            serde_json::to_vec_pretty(report).unwrap_or_default(),
        ),
        _ => (format!("{stem}.md"), markdown.as_bytes().to_vec()),
    };
    let path = dir.join(&name);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = path.with_extension("tmp");
        // A FIFO planted at `tmp` is refused, not waited on.
        crate::regular_file::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(|e| RunError::retryable(format!("writing the report: {e}")))?
    .map_err(|e| RunError::retryable(format!("writing the report: {e}")))?;
    Ok(format!("reports/{}/{name}", job.id))
}

/// Sends the report through `connector`, once per run and connector.
async fn deliver(
    store: &Store,
    connectors: &Connectors,
    connector: &str,
    run_id: &str,
    title: &str,
    markdown: &str,
) -> Result<(), RunError> {
    let key = format!("{run_id}:deliver:{connector}");
    let msg = OutboundMessage {
        text: markdown.to_string(),
        to: None,
        subject: Some(title.to_string()),
        idempotency_key: key.clone(),
    };
    crate::connectors::send_once(store, connectors, connector, &format!("report:{key}"), msg)
        .await?;
    Ok(())
}

/// The runs queued since `start`, newest first (at most [`MAX_RUNS`]).
async fn runs_since(
    store: &Store,
    start: &str,
    cancel: &CancellationToken,
) -> Result<Vec<Run>, RunError> {
    let mut out = Vec::new();
    let mut pages = RunPages::new(store, cancel);
    while let Some(page) = pages.next(PAGE).await? {
        for r in page {
            // Newest first: once runs were queued before the period, stop.
            if r.queued_at.as_str() < start {
                return Ok(out);
            }
            out.push(r);
        }
        if out.len() >= MAX_RUNS {
            break;
        }
    }
    Ok(out)
}

fn render_markdown(r: &Value) -> String {
    let mut md = format!(
        "# {}\n\n{} → {}\n\n**{} runs**",
        r["title"].as_str().unwrap_or("report"),
        r["period"]["start"].as_str().unwrap_or(""),
        r["period"]["end"].as_str().unwrap_or(""),
        r["runs"]["total"]
    );
    if let Some(by) = r["runs"]["by_status"].as_object() {
        let parts: Vec<String> = by.iter().map(|(k, v)| format!("{v} {k}")).collect();
        if !parts.is_empty() {
            md.push_str(&format!(": {}", parts.join(", ")));
        }
    }
    md.push_str("\n\n| job | runs | succeeded | failed | last error |\n|---|---|---|---|---|\n");
    if let Some(jobs) = r["jobs"].as_object() {
        for (id, s) in jobs {
            let count = |k: &str| s["by_status"][k].as_u64().unwrap_or(0);
            md.push_str(&format!(
                "| {id} | {} | {} | {} | {} |\n",
                s["runs"],
                count("succeeded"),
                count("failed") + count("timed_out"),
                s["last_error"].as_str().unwrap_or("").replace('|', "/")
            ));
        }
    }
    md
}
