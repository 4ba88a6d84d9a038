//! `multijob plan`: what applying the directory would change.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::reconcile::{self, render};
use crate::spec::snapshot::Snapshot;
use crate::status::api::plan_context_from_json;
use crate::store::redis::RedisStore;
use crate::store::sqlite::{SqliteStore, read_applied, read_live_state};

use super::{DirArg, Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    /// Running state from this embedded store [default: DIR/.multijob/state.db;
    /// a missing default store means nothing runs yet; a missing --state is an error].
    #[arg(long, conflicts_with_all = ["server", "redis"])]
    pub state: Option<PathBuf>,
    /// Running state from a Redis deployment (`redis://host:6379/`).
    #[arg(long, conflicts_with = "server")]
    pub redis: Option<String>,
    /// Running state from a daemon's /api/v1/snapshot (uses MULTIJOB_API_TOKEN).
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Exit 0 when nothing would change, 2 when something would (1 on error).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let dir = &args.dir.dir;
    let loaded = reconcile::load(dir)?.loaded;
    if loaded.has_errors() {
        let mut err = std::io::stderr().lock();
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            writeln!(err, "{d}")?;
        }
        writeln!(
            err,
            "plan: the directory is invalid ({} errors); run `multijob validate` for details",
            loaded.error_count()
        )?;
        return Ok(Outcome::Failure);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let now = jiff::Timestamp::now();
    let (running, ctx) = match (&args.server, &args.redis) {
        (Some(url), _) => runtime.block_on(fetch_snapshot(url, now))?,
        (None, Some(url)) => runtime.block_on(read_redis(url, now))?,
        (None, None) => {
            let path = args
                .state
                .clone()
                .unwrap_or_else(|| super::default_state(dir));
            if !path.exists() && args.state.is_some() {
                // A missing default store means nothing runs yet; a
                // missing store named on purpose is most likely a typo,
                // and planning against nothing would say "create all".
                anyhow::bail!(
                    "no store at {} (--state): check the path; without --state, plan reads {}",
                    path.display(),
                    super::default_state(dir).display()
                );
            }
            if path.exists() {
                let conn = SqliteStore::open_read_only(&path)?;
                let snapshot = read_applied(&conn, &path)?.snapshot;
                let live = read_live_state(&conn, &path)?;
                (snapshot, render::PlanContext::from_live(now, live))
            } else {
                (Snapshot::default(), render::PlanContext::empty(now))
            }
        }
    };
    let report = runtime.block_on(reconcile::plan_report(
        dir,
        &running,
        &loaded.snapshot,
        &ctx,
    ));
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Text => write!(out, "{}", render::render_text(&report, &loaded.snapshot))?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &render::render_json(&report))?;
            writeln!(out)?;
        }
    }
    Ok(if args.detailed_exitcode && !report.plan.is_empty() {
        Outcome::Changes
    } else {
        Outcome::Success
    })
}

async fn read_redis(
    url: &str,
    now: jiff::Timestamp,
) -> anyhow::Result<(Snapshot, render::PlanContext)> {
    let store = RedisStore::open(url).await?;
    let snapshot = store.applied().await?.snapshot;
    let live = store.live_state().await?;
    Ok((snapshot, render::PlanContext::from_live(now, live)))
}

async fn fetch_snapshot(
    server: &str,
    now: jiff::Timestamp,
) -> anyhow::Result<(Snapshot, render::PlanContext)> {
    let url = format!("{}/api/v1/snapshot", server.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut request = client.get(&url);
    if let Ok(token) = std::env::var("MULTIJOB_API_TOKEN")
        && !token.is_empty()
    {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))?;
    if !status.is_success() {
        anyhow::bail!(
            "GET {url}: {status}: {}",
            body["error"].as_str().unwrap_or("")
        );
    }
    let snapshot = Snapshot::from_json(&body).map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    Ok((snapshot, plan_context_from_json(&body, now)))
}
