//! `multijob plan`: what applying the directory would change.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::reconcile::{self, render};
use crate::schedule::peak::{cap_warning, peak_slots_per_second};
use crate::spec::snapshot::Snapshot;
use crate::status::api::plan_context_from_json;
use crate::store::KvOp;
use crate::store::paused::{PAUSED_KEY, Paused, paused_from};
use crate::store::redis::RedisStore;
use crate::store::sqlite::{SqliteStore, read_applied, read_kv, read_live_state};

use super::group_warnings;
use super::{DirArg, Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob plan -d ops                   # against ops/.multijob/state.db
  multijob plan --redis redis://db:6379/ --detailed-exitcode   # CI: exit 2 on changes
  multijob plan --server http://ops-host:8080 -o json
  multijob plan --git https://github.com/acme/jobs.git --branch feature-x \\
      --server http://ops-host:8080   # a pull request's branch against production

A flag wins over a variable: with MULTIJOB_REDIS_URL set, --state or --server
is used; with both variables set and no flag, plan asks which.

Environment: MULTIJOB_DIR, MULTIJOB_REDIS_URL, MULTIJOB_SERVER, MULTIJOB_API_TOKEN (with --server),
  MULTIJOB_GIT_URL, MULTIJOB_GIT_KEY")]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub git: super::git_args::GitArgs,
    /// Running state from this embedded store [default: DIR/.multijob/state.db;
    /// a missing default store means nothing runs yet; a missing --state is an error].
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Running state from a Redis deployment (`redis://host:6379/`).
    #[arg(long, value_name = "URL", env = "MULTIJOB_REDIS_URL")]
    pub redis: Option<String>,
    /// Running state from a daemon's /api/v1/snapshot, `host:port` or a URL
    /// (uses MULTIJOB_API_TOKEN).
    #[arg(long, value_name = "URL", env = "MULTIJOB_SERVER")]
    pub server: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Exit 0 when nothing would change, 2 when something would (1 on error).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // `--git`: the branch cloned to a temporary directory, removed after.
    let checkout = match args.git.options(std::time::Duration::ZERO)? {
        Some(opts) => Some(runtime.block_on(TempCheckout::clone(&opts))?),
        None => None,
    };
    let (config, root) = match &checkout {
        Some(c) => (c.config.clone(), Some(c.root.as_path())),
        None => (args.dir.dir.clone(), None),
    };
    let dir = &args.dir.dir;
    let loaded = reconcile::load_within(&config, root)?.loaded;
    if loaded.has_errors() {
        return invalid(&loaded, args.output);
    }
    let now = jiff::Timestamp::now();
    let (running, ctx, baseline) = match (&args.server, &args.redis) {
        (Some(server), _) => runtime.block_on(fetch_snapshot(server, now))?,
        (None, Some(url)) => runtime.block_on(read_redis(url, now))?,
        (None, None) => read_sqlite(dir, args.state.as_deref(), now)?,
    };
    let report = runtime.block_on(reconcile::plan_report(
        &config,
        &running,
        &loaded.snapshot,
        &ctx,
    ));
    let cap = tick_cap()?;
    let peak = peak_slots_per_second(loaded.snapshot.jobs.values().map(|r| &r.spec), now);
    let mut warnings: Vec<String> = cap_warning(peak, cap).into_iter().collect();
    warnings.extend(runtime.block_on(group_warnings::for_plan(
        &loaded.snapshot,
        args.server.as_deref(),
        args.redis.as_deref(),
    )));
    let paused = runtime.block_on(read_paused(&args))?;
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Text => {
            writeln!(out, "{}", baseline.line())?;
            for w in &warnings {
                writeln!(out, "warning: {w}")?;
            }
            write!(out, "{}", render::render_text(&report, &loaded.snapshot))?;
            write_drift(&mut out, &paused, &loaded.snapshot)?;
        }
        OutputFormat::Json => {
            let mut json = render::render_json(&report);
            if let Value::Object(map) = &mut json {
                map.insert("compared_with".into(), baseline.json());
                map.insert("warnings".into(), json!(warnings));
                map.insert(
                    "outside_git".into(),
                    paused
                        .iter()
                        .map(|(id, p)| json!({"kind": "job", "id": id, "paused": p}))
                        .collect(),
                );
            }
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
        }
    }
    Ok(if args.detailed_exitcode && !report.plan.is_empty() {
        Outcome::Changes
    } else {
        Outcome::Success
    })
}

/// `plan --git`'s clone, in a directory of its own under the temp dir.
struct TempCheckout {
    area: PathBuf,
    config: PathBuf,
    root: PathBuf,
}

impl TempCheckout {
    async fn clone(opts: &crate::reconcile::pull::GitOptions) -> anyhow::Result<TempCheckout> {
        let area = std::env::temp_dir().join(format!("multijob-plan-{}", uuid::Uuid::now_v7()));
        // Removed on drop, whether the clone worked or not.
        let mut guard = TempCheckout {
            config: area.clone(),
            root: area.clone(),
            area,
        };
        let (config, root) = crate::reconcile::pull::checkout_once(opts, &guard.area)
            .await
            .map_err(|e| anyhow::anyhow!("plan --git {:?}: {e}", opts.remote))?;
        guard.config = config;
        guard.root = root;
        Ok(guard)
    }
}

impl Drop for TempCheckout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.area);
    }
}

/// An invalid directory plans nothing: its errors (text, on stderr), or
/// every finding as `validate -o json` prints them (on stdout); exit 1.
fn invalid(loaded: &crate::spec::Loaded, output: OutputFormat) -> anyhow::Result<Outcome> {
    if output == OutputFormat::Json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &loaded.diagnostics)?;
        writeln!(out)?;
        return Ok(Outcome::Failure);
    }
    let mut err = std::io::stderr().lock();
    for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
        writeln!(err, "{d}")?;
    }
    writeln!(
        err,
        "plan: the directory is invalid ({} errors); run `multijob validate` for details",
        loaded.error_count()
    )?;
    Ok(Outcome::Failure)
}

/// The jobs an operator paused (`multijob pause`): drift from git that
/// applying the directory keeps. `--server` does not say (its snapshot
/// holds no pauses).
async fn read_paused(args: &Args) -> anyhow::Result<Paused> {
    if args.server.is_some() {
        return Ok(Paused::new());
    }
    if let Some(url) = &args.redis {
        let store = RedisStore::open(url).await?;
        return Ok(paused_from(store.kv(PAUSED_KEY.into(), KvOp::Get).await?)?);
    }
    let path = args
        .state
        .clone()
        .unwrap_or_else(|| super::default_state(&args.dir.dir));
    if !path.exists() {
        return Ok(Paused::new());
    }
    let conn = SqliteStore::open_read_only(&path)?;
    Ok(paused_from(read_kv(&conn, &path, PAUSED_KEY)?)?)
}

/// `job/J paused outside git since T by U: note`, after the plan.
fn write_drift(out: &mut impl Write, paused: &Paused, desired: &Snapshot) -> std::io::Result<()> {
    if paused.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nOutside git:")?;
    for (id, p) in paused {
        let note = p
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        let gone = if desired.jobs.contains_key(id) {
            ""
        } else {
            " (deleted from git: applying drops the pause)"
        };
        writeln!(
            out,
            "  job/{id} paused outside git since {} by {}{note}{gone}; `multijob resume {id}` ends it",
            p.since, p.by
        )?;
    }
    Ok(())
}

/// `SCHEDULER_MAX_DISPATCH_PER_TICK` as the daemon would read it: unset
/// or empty is no cap.
fn tick_cap() -> anyhow::Result<Option<usize>> {
    match std::env::var("SCHEDULER_MAX_DISPATCH_PER_TICK") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "SCHEDULER_MAX_DISPATCH_PER_TICK={v:?} is not a whole number: set a cap like 500, or unset it for none"
            )
        }),
        _ => Ok(None),
    }
}

/// What the plan compared the directory with.
struct Baseline {
    /// The store's path, the Redis URL (without credentials) or the server.
    source: String,
    /// The last applied revision's id and when it was applied (the server
    /// does not say when).
    revision: Option<(String, Option<String>)>,
}

impl Baseline {
    fn new(source: String, revision: Option<&crate::store::RevisionRecord>) -> Self {
        Baseline {
            source,
            revision: revision.map(|r| (r.id.clone(), Some(r.at.clone()))),
        }
    }

    fn line(&self) -> String {
        match &self.revision {
            Some((id, Some(at))) => {
                format!(
                    "comparing with {}, revision {id} applied at {at}",
                    self.source
                )
            }
            Some((id, None)) => format!("comparing with {}, revision {id}", self.source),
            None => format!("no state found at {}: everything below is new", self.source),
        }
    }

    fn json(&self) -> Value {
        let (revision, at) = match &self.revision {
            Some((id, at)) => (Some(id), at.as_ref()),
            None => (None, None),
        };
        json!({"source": self.source, "revision": revision, "applied_at": at})
    }
}

type Running = (Snapshot, render::PlanContext, Baseline);

/// The embedded store: `--state`, or the directory's default store (a
/// missing default store means nothing runs yet).
fn read_sqlite(dir: &Path, state: Option<&Path>, now: jiff::Timestamp) -> anyhow::Result<Running> {
    let path = state.map_or_else(|| super::default_state(dir), Path::to_path_buf);
    if !path.exists() && state.is_some() {
        // A missing store named on purpose is most likely a typo, and
        // planning against nothing would say "create all".
        anyhow::bail!(
            "no store at {} (--state): check the path; without --state, plan reads {}",
            path.display(),
            super::default_state(dir).display()
        );
    }
    let source = path.display().to_string();
    if !path.exists() {
        return Ok((
            Snapshot::default(),
            render::PlanContext::empty(now),
            Baseline::new(source, None),
        ));
    }
    let conn = SqliteStore::open_read_only(&path)?;
    let applied = read_applied(&conn, &path)?;
    let live = read_live_state(&conn, &path)?;
    let baseline = Baseline::new(source, applied.revision.as_ref());
    Ok((
        applied.snapshot,
        render::PlanContext::from_live(now, live),
        baseline,
    ))
}

async fn read_redis(url: &str, now: jiff::Timestamp) -> anyhow::Result<Running> {
    let store = RedisStore::open(url).await?;
    let applied = store.applied().await?;
    let live = store.live_state().await?;
    let baseline = Baseline::new(redacted_url(url), applied.revision.as_ref());
    Ok((
        applied.snapshot,
        render::PlanContext::from_live(now, live),
        baseline,
    ))
}

/// A Redis URL without its password, to print.
fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "the Redis store".to_string(),
    }
}

async fn fetch_snapshot(server: &str, now: jiff::Timestamp) -> anyhow::Result<Running> {
    let base = super::server::server_url(server)?;
    let url = format!("{base}/api/v1/snapshot");
    let body = super::server::get_json(&base, "/api/v1/snapshot").await?;
    let snapshot = Snapshot::from_json(&body).map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    let baseline = Baseline {
        source: base,
        revision: body["revision"].as_str().map(|r| (r.to_string(), None)),
    };
    Ok((snapshot, plan_context_from_json(&body, now), baseline))
}
