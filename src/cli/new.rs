//! `multijob new "<sentence>"`: the rule planner's jobs, validated with
//! the whole directory, written one file each under `jobs.d/` for review
//! in git, and the `plan` of the change.
//!
//! Nothing is written unless the directory with the new files validates
//! with no error; an id the directory already defines is refused unless
//! `--force`, and even then only a file `new` wrote itself
//! (`jobs.d/<id>.yaml` starting with its comment) is replaced.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;

use crate::reconcile::render::{self, PlanContext, PlanReport};
use crate::reconcile::{self, source};
use crate::spec::planner::{self, FROM_NEW, Options, PlannedJob, file_of};
use crate::spec::{self, Loaded, SourceFile};

use super::{DirArg, Outcome, OutputFormat, new_ai};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob new \"Pantau telegram akun bot_a01 tiap 30 detik dan buat laporan harian jam 07:00\"
  multijob new \"monitor slack every 5 minutes and a report at 7pm to email\" --dry-run
  multijob new \"backup senin-jumat jam 2 malam\" --tz Asia/Jakarta -d ops
  multijob new \"pantau tiap 30 detik\" --channel wa --account ops_01 -o json
  echo \"daily report at 7pm to slack\" | multijob new - --dry-run
  multijob new \"laporan harian jam 7 ke email\" --ai openai_main --ai-timeout 20s

Each job goes to jobs.d/<id>.yaml, first line `# multijob new: \"<sentence>\"`.
An id the directory already has is refused (exit 1, naming its file); --force
replaces it only when that file is jobs.d/<id>.yaml written by `new`.
With --ai the connector's model plans (structured output, the job schema);
an answer that does not validate is sent back once with the findings; when it
still does not, or the model fails or is slow, the rules plan (warning on stderr).

Environment: MULTIJOB_DIR, MULTIJOB_TZ (the zone without --tz; else the system's)")]
pub struct Args {
    /// What to run and when, in Indonesian or English; several jobs joined
    /// by `dan`/`and`/`,`/`;`. `-` reads it from stdin.
    pub sentence: String,
    #[command(flatten)]
    pub dir: DirArg,
    /// IANA zone of the schedules [default: the system's].
    #[arg(long, value_name = "ZONE", env = "MULTIJOB_TZ")]
    pub tz: Option<String>,
    /// Channel of a job whose words name none: telegram (tg), whatsapp
    /// (wa), email (gmail), slack.
    #[arg(long, value_name = "C")]
    pub channel: Option<String>,
    /// Account of a channel the sentence names without `akun`/`account`.
    #[arg(long, value_name = "A")]
    pub account: Option<String>,
    /// Print the YAML and the plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ask this `openai` connector of the directory for the plan (its
    /// `config.model`, else gpt-4o-mini); the rules plan when it fails.
    #[arg(long, value_name = "CONNECTOR")]
    pub ai: Option<String>,
    /// How long one model answer may take with --ai (a chat call's own
    /// 30 s limit still applies).
    #[arg(long, value_name = "DUR", default_value = "30s", requires = "ai", value_parser = super::duration_arg::parse_duration)]
    pub ai_timeout: std::time::Duration,
    /// Replace a job `new` wrote before (jobs.d/<id>.yaml), never another file.
    #[arg(long)]
    pub force: bool,
    /// `text` for people, `json` for tools: {jobs: [{id, file, yaml,
    /// warnings}], plan, written, planner: ai|rules, warnings}.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One planned job ready to write.
pub(super) struct Draft {
    job: PlannedJob,
    file: String,
    yaml: String,
    warnings: Vec<String>,
}

impl Draft {
    pub(super) fn of(job: PlannedJob, sentence: &str) -> Draft {
        Draft {
            file: file_of(&job.id),
            yaml: job.yaml(sentence),
            warnings: job.warnings.clone(),
            job,
        }
    }
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let dir = args.dir.dir.as_path();
    let timezone = zone(args.tz.as_deref())?;
    let contents = source::read_config_dir(dir)?;
    let now = jiff::Timestamp::now();
    let before = spec::build_at(&contents.files, Some(now));
    let opts = Options {
        timezone: timezone.clone(),
        channel: args.channel.clone(),
        account: args.account.clone(),
        connectors: before
            .snapshot
            .connectors
            .iter()
            .map(|(id, r)| (id.clone(), r.spec.provider))
            .collect(),
    };
    let sentence = sentence(&args.sentence)?;
    let planned = match &args.ai {
        Some(connector) => new_ai::plan(&new_ai::Request {
            connector,
            timeout: args.ai_timeout,
            sentence: &sentence,
            opts: &opts,
            before: &before,
            files: &contents.files,
            now,
            force: args.force,
        })?,
        None => new_ai::Planned {
            jobs: planner::plan(&sentence, &opts)?,
            planner: "rules",
            warnings: Vec::new(),
        },
    };
    let mut drafts: Vec<Draft> = planned
        .jobs
        .into_iter()
        .map(|job| Draft::of(job, &sentence))
        .collect();
    check_taken(dir, &before, &drafts, args.force)?;
    let after_files = with_drafts(&contents.files, &drafts);
    let mut after = spec::build_at(&after_files, Some(now));
    after
        .diagnostics
        .extend(contents.diagnostics.iter().cloned());
    check_after(&after, &mut drafts)?;
    let report = plan(dir, &before, &after, now)?;
    if !args.dry_run {
        write(dir, &drafts)?;
    }
    print(
        &args,
        &drafts,
        &report,
        &after,
        (planned.planner, &planned.warnings),
    )?;
    Ok(Outcome::Success)
}

/// The sentence argument, or stdin's text for `-` (read up to one byte
/// past the planner's limit, so a huge input is refused, not buffered).
fn sentence(arg: &str) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg.to_string());
    }
    let mut bytes = Vec::new();
    let limit = planner::words::MAX_SENTENCE_BYTES as u64 + 1;
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut bytes)
        .context("reading the sentence from stdin")?;
    if bytes.len() as u64 == limit {
        bail!(planner::PlanError::TooLong { bytes: bytes.len() });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the sentence on stdin is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// `--tz`, else `MULTIJOB_TZ` (clap reads it), else the system's zone;
/// an unknown name is an error naming the flag.
fn zone(flag: Option<&str>) -> anyhow::Result<String> {
    let name = match flag.map(str::trim).filter(|z| !z.is_empty()) {
        Some(z) => z.to_string(),
        None => match jiff::tz::TimeZone::system().iana_name() {
            Some(z) => z.to_string(),
            None => bail!(
                "the system time zone has no IANA name: pass --tz ZONE (e.g. --tz Asia/Jakarta) or set MULTIJOB_TZ"
            ),
        },
    };
    jiff::tz::TimeZone::get(&name).with_context(|| {
        format!("--tz/MULTIJOB_TZ {name:?} is not a known IANA time zone (e.g. Asia/Jakarta, Europe/Berlin, UTC)")
    })?;
    Ok(name)
}

/// An id the directory already defines: refused, naming its file; with
/// `--force` replaced only when `new` wrote it at `jobs.d/<id>.yaml`. A
/// file already at a draft's path is treated the same way.
fn check_taken(dir: &Path, before: &Loaded, drafts: &[Draft], force: bool) -> anyhow::Result<()> {
    for d in drafts {
        let existing = before.snapshot.jobs.get(&d.job.id);
        let path = dir.join(&d.file);
        let at_path = path.exists();
        if existing.is_none() && !at_path {
            continue;
        }
        let (file, line) = existing.map_or((d.file.clone(), 1), |r| (r.file.clone(), r.line));
        if !force {
            bail!(
                "job {} (planned from {:?}) already exists: {file}:{line} defines it; nothing written. Edit that file, or rerun with --force to replace a job `multijob new` wrote",
                d.job.id,
                d.job.part
            );
        }
        let own = file == d.file
            && std::fs::read_to_string(&path)
                .map(|t| t.starts_with(FROM_NEW))
                .unwrap_or(false);
        if !own {
            bail!(
                "job {}: --force replaces only {} written by `multijob new`, but {file}:{line} {}; edit it by hand or pick another sentence",
                d.job.id,
                d.file,
                if file == d.file {
                    "does not start with its `# multijob new:` comment"
                } else {
                    "defines it"
                }
            );
        }
    }
    Ok(())
}

/// The directory's files with the drafts in place (a replaced file's old
/// text gone).
pub(super) fn with_drafts(files: &[SourceFile], drafts: &[Draft]) -> Vec<SourceFile> {
    let mut out: Vec<SourceFile> = files
        .iter()
        .filter(|f| !drafts.iter().any(|d| d.file == f.path))
        .cloned()
        .collect();
    out.extend(drafts.iter().map(|d| SourceFile {
        path: d.file.clone(),
        text: d.yaml.clone(),
    }));
    out
}

/// Errors anywhere refuse the change: in a draft, named with its part of
/// the sentence; elsewhere, the directory was invalid already. A draft's
/// warnings join its own.
fn check_after(after: &Loaded, drafts: &mut [Draft]) -> anyhow::Result<()> {
    let mut errors = draft_errors(after, drafts);
    for diag in &after.diagnostics {
        match drafts.iter_mut().find(|d| d.file == diag.file) {
            Some(d) if !diag.is_error() => {
                d.warnings.push(format!("{}: {}", diag.code, diag.message))
            }
            None if diag.is_error() => errors.push(format!("{diag} (already in the directory)")),
            _ => {}
        }
    }
    if !errors.is_empty() {
        bail!(
            "nothing written: the directory with the new jobs does not validate:\n  {}\n(fix the directory, or add what is missing, e.g. a Connector for the channel)",
            errors.join("\n  ")
        );
    }
    Ok(())
}

/// The errors in the drafts' own files, each named with its part of the
/// sentence (what `--ai` sends back to the model).
pub(super) fn draft_errors(after: &Loaded, drafts: &[Draft]) -> Vec<String> {
    after
        .diagnostics
        .iter()
        .filter(|diag| diag.is_error())
        .filter_map(|diag| {
            let d = drafts.iter().find(|d| d.file == diag.file)?;
            Some(format!("{diag} (from {:?})", d.job.part))
        })
        .collect()
}

/// The plan of the change: the directory as it was → with the drafts.
fn plan(
    dir: &Path,
    before: &Loaded,
    after: &Loaded,
    now: jiff::Timestamp,
) -> anyhow::Result<PlanReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ctx = PlanContext::empty(now);
    Ok(runtime.block_on(reconcile::plan_report(
        dir,
        &before.snapshot,
        &after.snapshot,
        &ctx,
    )))
}

/// Each draft through a temporary file renamed into place, so a reader
/// (the daemon's watcher) never sees half a file.
fn write(dir: &Path, drafts: &[Draft]) -> anyhow::Result<()> {
    let jobs_d = dir.join("jobs.d");
    std::fs::create_dir_all(&jobs_d).with_context(|| format!("creating {}", jobs_d.display()))?;
    let mut written = Vec::new();
    for d in drafts {
        let path = dir.join(&d.file);
        let tmp = jobs_d.join(format!(".{}.yaml.tmp", d.job.id));
        let result = std::fs::write(&tmp, &d.yaml).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            let done = if written.is_empty() {
                "nothing written".to_string()
            } else {
                format!("already written: {}", written.join(", "))
            };
            bail!("writing {}: {e} ({done})", path.display());
        }
        written.push(d.file.clone());
    }
    Ok(())
}

fn print(
    args: &Args,
    drafts: &[Draft],
    report: &PlanReport,
    after: &Loaded,
    (planner, warnings): (&str, &[String]),
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.output == OutputFormat::Json {
        let jobs: Vec<_> = drafts
            .iter()
            .map(
                |d| json!({"id": d.job.id, "file": d.file, "yaml": d.yaml, "warnings": d.warnings}),
            )
            .collect();
        let value = json!({"jobs": jobs, "plan": render::render_json(report),
            "written": !args.dry_run, "planner": planner, "warnings": warnings});
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut warned = BTreeMap::new();
    for d in drafts {
        writeln!(out, "--- {}", d.file)?;
        write!(out, "{}", d.yaml)?;
        for w in &d.warnings {
            warned.entry(w.clone()).or_insert(());
        }
    }
    writeln!(out)?;
    for w in warned.keys() {
        writeln!(out, "warning: {w}")?;
    }
    write!(out, "{}", render::render_text(report, &after.snapshot))?;
    let files: Vec<&str> = drafts.iter().map(|d| d.file.as_str()).collect();
    if args.dry_run {
        writeln!(
            out,
            "dry run: nothing written ({} would be)",
            files.join(", ")
        )?;
    } else {
        writeln!(
            out,
            "wrote {}: review, commit, and the daemon applies them",
            files.join(", ")
        )?;
    }
    Ok(())
}
