//! `multijob status`: what a running daemon is doing, from its API.

use std::io::Write;

use anyhow::Context;
use serde_json::Value;

use super::{Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob status                        # the daemon on http://127.0.0.1:8080
  MULTIJOB_SERVER=http://ops-host:8080 multijob status -o json

Environment: MULTIJOB_SERVER, MULTIJOB_API_TOKEN (sent as a bearer token when set)")]
pub struct Args {
    /// The daemon's address, `host:port` or a URL (uses MULTIJOB_API_TOKEN
    /// when set).
    #[arg(long, env = "MULTIJOB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, jobs) = runtime.block_on(fetch(&args.server))?;
    let not_applied = not_applied(&status);
    let mut out = std::io::stdout().lock();
    if args.output == OutputFormat::Json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"status": status, "jobs": jobs}),
        )?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &status, &jobs, not_applied.is_some())?;
    }
    drop(out);
    match not_applied {
        // Nothing runs: a script or a probe must not read this as healthy.
        Some(why) => {
            eprintln!("multijob: {why}");
            Ok(Outcome::Failure)
        }
        None => Ok(Outcome::Success),
    }
}

/// Why nothing runs when the daemon has never applied a revision (a first
/// start on an invalid directory): the last rejected revision's first
/// error and what to do; `None` when a revision is applied.
fn not_applied(status: &Value) -> Option<String> {
    if !status["revision"].is_null() {
        return None;
    }
    let last = &status["last_reconcile"];
    let errors = last["errors"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let Some(first) = errors.first() else {
        return Some(format!(
            "no revision applied yet: the daemon has not finished a reconcile of {} \
             (last result: {}); see its log",
            status["dir"].as_str().unwrap_or("its directory"),
            last["result"].as_str().unwrap_or("none yet")
        ));
    };
    let n = errors.len();
    Some(format!(
        "no revision applied yet: revision {} was rejected with {n} error{}; first: \
         {}:{}:{}: {}; fix {}:{} and save (`multijob validate --dir {}` lists every error)",
        last["revision"].as_str().unwrap_or("-"),
        if n == 1 { "" } else { "s" },
        first["file"].as_str().unwrap_or("-"),
        first["line"],
        first["column"],
        first["message"].as_str().unwrap_or("-"),
        first["file"].as_str().unwrap_or("-"),
        first["line"],
        status["dir"].as_str().unwrap_or("DIR"),
    ))
}

/// The status as a person reads it: revision, last reconcile, queue, and
/// a table of the jobs.
fn write_text(
    out: &mut impl Write,
    status: &Value,
    jobs: &[Value],
    not_applied: bool,
) -> anyhow::Result<()> {
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    if not_applied {
        writeln!(out, "revision  - (no revision applied yet: nothing runs)")?;
    } else {
        writeln!(out, "revision  {}", s(&status["revision"]))?;
    }
    let last = &status["last_reconcile"];
    writeln!(
        out,
        "reconcile {} at {}{}",
        s(&last["result"]),
        s(&last["at"]),
        match last["errors"].as_array().map(Vec::len) {
            // The first error in full: the operator learns why without
            // switching to --output json.
            Some(n) if n > 0 => {
                let e = &last["errors"][0];
                format!(
                    " ({n} error{}; first: {}:{}:{}: {})",
                    if n == 1 { "" } else { "s" },
                    s(&e["file"]),
                    e["line"],
                    e["column"],
                    s(&e["message"])
                )
            }
            _ => String::new(),
        }
    )?;
    writeln!(
        out,
        "queue     {} waiting, {} running, pressure {}, workers {}/{}",
        status["queue_depth"],
        status["running"],
        if status["pressure_mode"] == true {
            "ON"
        } else {
            "off"
        },
        status["workers"]["busy"],
        status["workers"]["total"]
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<32} {:<16} {:<8} {:<25} {:<12} {:<8} FAILURES",
        "JOB", "TYPE", "ENABLED", "NEXT FIRE", "LAST", "ACTIVE"
    )?;
    for j in jobs {
        let fm = &j["failure_memory"];
        let failures = match (
            fm["consecutive_failures"].as_u64(),
            fm["cooldown_until"].as_str(),
        ) {
            (Some(0) | None, _) => "-".to_string(),
            (Some(n), Some(until)) => format!("{n} (cooling until {until})"),
            (Some(n), None) => n.to_string(),
        };
        let enabled = match (j["enabled"].as_bool(), j["paused"].is_object()) {
            (_, true) => "paused".to_string(),
            (e, false) => e.unwrap_or(false).to_string(),
        };
        writeln!(
            out,
            "{:<32} {:<16} {:<8} {:<25} {:<12} {:<8} {}",
            s(&j["id"]),
            s(&j["type"]),
            // (as strings: a JSON value's Display ignores the width)
            enabled,
            s(&j["next_fire_at"]),
            s(&j["last_run"]["status"]),
            j["active_runs"].to_string(),
            failures
        )?;
    }
    write_paused(out, jobs)?;
    Ok(())
}

/// Who paused which job, and why: `multijob resume JOB` undoes it.
fn write_paused(out: &mut impl std::io::Write, jobs: &[Value]) -> std::io::Result<()> {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for j in jobs.iter().filter(|j| j["paused"].is_object()) {
        let p = &j["paused"];
        writeln!(
            out,
            "paused: {} since {} by {}{}",
            s(&j["id"]),
            s(&p["since"]),
            s(&p["by"]),
            p["note"]
                .as_str()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

async fn fetch(server: &str) -> anyhow::Result<(Value, Vec<Value>)> {
    let base = super::server::server_url(server)?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let token = std::env::var("MULTIJOB_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let get = |path: String| {
        let mut r = client.get(format!("{base}{path}"));
        if let Some(t) = &token {
            r = r.bearer_auth(t);
        }
        r
    };
    let response = get("/api/v1/status".into())
        .send()
        .await
        .with_context(|| format!("is the daemon running? GET {base}/api/v1/status"))?;
    let status = super::server::json_of(response).await?;
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=1000&cursor={c}"),
            None => "/api/v1/jobs?limit=1000".into(),
        };
        let page = super::server::json_of(get(path).send().await?).await?;
        jobs.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    Ok((status, jobs))
}
