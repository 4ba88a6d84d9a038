//! `multijob check`: are the jobs' expectations (`expect:
//! {success_within}`) holding? For an external cron or a Kubernetes
//! probe. Reads the store (or, with --server, the API's raw observations)
//! and judges each job's last success against this machine's clock, not
//! against what a daemon says, so a stuck or dead daemon is caught.
//! Exit 0: all hold; 2: some are broken (listed); 1: could not tell.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use super::store_access::{StoreAccess, StoreArgs};
use super::{Outcome, OutputFormat};
use crate::run::expectation::{self, ExpectState, Observed, Verdict};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob check --dir /etc/multijob            # exit 0 all hold, 2 broken, 1 error
  multijob check --redis redis://127.0.0.1:6379/ -o json
  multijob check --server http://ops-host:8080
  # cron, every 5 minutes: mail the list when one breaks
  */5 * * * *  multijob check -d /srv/jobs >/tmp/check.txt || mail -s broken ops@example.com </tmp/check.txt
  # Kubernetes: a liveness probe on the daemon's pod
  livenessProbe:
    exec: {command: [multijob, check, --state, /data/state.db]}
    periodSeconds: 30

Environment: MULTIJOB_DIR (-d), MULTIJOB_REDIS_URL (--redis), MULTIJOB_API_TOKEN (sent to --server as a bearer token when set)")]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Read a daemon's API (`host:port` or a URL) instead of the store;
    /// its data is still judged against this machine's clock.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Give up on --server after this long (exit 1).
    #[arg(long, default_value = "10s", value_parser = super::duration_arg::parse_duration)]
    pub timeout: Duration,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let observed = match &args.server {
        Some(server) => from_server(server, args.timeout)?,
        None => from_store(&args.store)?,
    };
    let now = jiff::Timestamp::now();
    let verdicts = observed
        .iter()
        .map(|o| o.judge(now).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<Verdict>>>()?;
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &verdicts)?;
            writeln!(out)?;
        }
        OutputFormat::Text => write_text(&mut out, &verdicts)?,
    }
    Ok(if verdicts.iter().any(|v| v.broken) {
        Outcome::Broken
    } else {
        Outcome::Success
    })
}

fn write_text(out: &mut impl Write, verdicts: &[Verdict]) -> anyhow::Result<()> {
    if verdicts.is_empty() {
        writeln!(
            out,
            "no enabled job has an expectation (add `expect: {{success_within: 2h}}` to one)"
        )?;
        return Ok(());
    }
    let broken = verdicts.iter().filter(|v| v.broken).count();
    for v in verdicts.iter().filter(|v| v.broken) {
        writeln!(out, "{}", v.line())?;
    }
    writeln!(
        out,
        "{broken} of {} expectation{} broken",
        verdicts.len(),
        if verdicts.len() == 1 { "" } else { "s" }
    )?;
    Ok(())
}

/// What the store holds: the applied jobs, each one's newest succeeded
/// run and the daemon's state (read-only; a stopped daemon does not block
/// the read).
fn from_store(args: &StoreArgs) -> anyhow::Result<Vec<Observed>> {
    let store = StoreAccess::open(args)?;
    let applied = store.applied()?;
    if applied.revision.is_none() {
        anyhow::bail!(
            "no revision is applied in {}: nothing to check yet (start `multijob run` on a valid directory)",
            store.describe()
        );
    }
    let fallback = expectation::applied_at(&applied);
    let mut out = Vec::new();
    for (job, expect) in expectation::expecting(&applied.snapshot) {
        let last = store
            .runs(expectation::last_success_query(&job.id))?
            .first()
            .and_then(|(_, r)| expectation::success_time(r));
        let state = ExpectState::from_stored(store.kv_get(&expectation::state_key(&job.id))?);
        out.push(Observed::new(job, expect, last, state, fallback));
    }
    Ok(out)
}

/// The API's observations (`/api/v1/expectations`).
fn from_server(server: &str, timeout: Duration) -> anyhow::Result<Vec<Observed>> {
    let base = super::server::server_url(server)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("{base}/api/v1/expectations");
    let body = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let mut request = client.get(&url);
        if let Ok(token) = std::env::var("MULTIJOB_API_TOKEN")
            && !token.is_empty()
        {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.with_context(|| {
            format!("cannot reach the daemon at {base} (GET {url}); is it running? `multijob check --dir D` reads the store instead")
        })?;
        super::server::json_of(response).await
    })?;
    serde_json::from_value(body["items"].clone())
        .with_context(|| format!("GET {url}: the answer has no readable `items`"))
}
