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

use anyhow::{Context, bail};
use serde_json::json;

use crate::reconcile::author::{self, Draft, Workspace};
use crate::reconcile::render::{self, PlanReport};
use crate::spec::Loaded;
use crate::spec::planner;

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

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let dir = args.dir.dir.as_path();
    let timezone =
        author::zone(args.tz.as_deref(), "--tz/MULTIJOB_TZ").map_err(anyhow::Error::msg)?;
    let now = jiff::Timestamp::now();
    let work = Workspace::read(dir, now)?;
    let opts = work.options(timezone, args.channel.clone(), args.account.clone());
    let sentence = sentence(&args.sentence)?;
    let planned = match &args.ai {
        Some(connector) => new_ai::plan(&new_ai::Request {
            connector,
            timeout: args.ai_timeout,
            sentence: &sentence,
            opts: &opts,
            before: &work.before,
            files: &work.contents.files,
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
    let after = work.check(dir, &mut drafts, args.force)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(author::plan(dir, &work.before, &after, now));
    if !args.dry_run {
        author::write(dir, &drafts)?;
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
