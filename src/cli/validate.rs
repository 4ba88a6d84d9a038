//! `multijob validate`: load and check everything.

use std::collections::HashMap;
use std::io::Write;

use crate::reconcile::{self, LoadedDir};
use crate::spec::{self, SourceFile, diagnostic::Diagnostic, model::Kind};

use super::{DirArg, Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob validate -d ops               # file:line:column errors; exit 1 when invalid
  multijob validate -o json | jq '.[] | select(.severity == \"error\")'
  multijob validate --server ops-host:8080   # also warn of worker groups no live worker serves

Environment: MULTIJOB_DIR, MULTIJOB_API_TOKEN (with --server)")]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    /// `text` for people, `json` for tools:
    /// [{file,line,column,kind,id,severity,code,message,pointer}].
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Also ask this daemon (`host:port` or a URL) which worker groups its
    /// live workers serve, and warn of jobs whose `worker_group` none does
    /// (uses MULTIJOB_API_TOKEN).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let LoadedDir { files, loaded } = reconcile::load(&args.dir.dir)?;
    let groups = match &args.server {
        Some(server) if !loaded.has_errors() => server_warnings(&loaded.snapshot, server)?,
        _ => Vec::new(),
    };
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &loaded.diagnostics)?;
            writeln!(stdout)?;
            // Diagnostics stay a list on stdout; these go to stderr.
            for w in &groups {
                eprintln!("warning: {w}");
            }
        }
        OutputFormat::Text => {
            for w in &groups {
                writeln!(stdout, "warning: {w}")?;
            }
            let mut excerpts = Excerpts::new(&files);
            for d in &loaded.diagnostics {
                writeln!(stdout, "{d}")?;
                // A literal secret's line is the secret: never echo it.
                if d.code != "literal-secret" {
                    excerpts.write(&mut stdout, d)?;
                }
            }
            let snapshot = &loaded.snapshot;
            // The Defaults document is named only when there is one.
            let counts = Kind::ALL
                .iter()
                .filter(|k| **k != Kind::Defaults || snapshot.count(**k) > 0)
                .map(|k| match k {
                    Kind::Defaults => plural(snapshot.count(*k), "defaults document"),
                    _ => plural(snapshot.count(*k), &k.as_str().to_lowercase()),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let summary = format!("{} in {}", counts, plural(files.len(), "file"));
            if loaded.has_errors() {
                writeln!(
                    stdout,
                    "invalid: {}, {} ({summary})",
                    plural(loaded.error_count(), "error"),
                    plural(loaded.warning_count(), "warning"),
                )?;
            } else {
                writeln!(
                    stdout,
                    "valid: {summary}, {}",
                    plural(loaded.warning_count(), "warning")
                )?;
            }
        }
    }
    Ok(if loaded.has_errors() {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}

/// `--server`: the worker groups no live worker of the daemon serves.
fn server_warnings(
    snapshot: &crate::spec::snapshot::Snapshot,
    server: &str,
) -> anyhow::Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let workers = runtime.block_on(super::group_warnings::from_server(server))?;
    Ok(super::group_warnings::warnings(snapshot, &workers))
}

/// Source lines for excerpts. Thousands of findings in one file, or on
/// one long line (minified JSON), must not each scan it from the start:
/// each file is split into lines once, and the char boundaries of the
/// line last shown are kept (findings come sorted by file and line).
struct Excerpts<'a> {
    /// Path → (path, text, lines once split).
    files: HashMap<&'a str, (&'a str, &'a str, Option<Vec<&'a str>>)>,
    /// File, line number and the byte offset of each char of that line
    /// (and of its end).
    last: Option<(&'a str, u32, Vec<usize>)>,
}

impl<'a> Excerpts<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        Excerpts {
            files: files
                .iter()
                .map(|f| (f.path.as_str(), (f.path.as_str(), f.text.as_str(), None)))
                .collect(),
            last: None,
        }
    }

    /// The offending source line with a caret under the column.
    fn write(&mut self, w: &mut impl Write, d: &Diagnostic) -> std::io::Result<()> {
        let Some((file, text, lines)) = self.files.get_mut(d.file.as_str()) else {
            return Ok(());
        };
        let lines = lines.get_or_insert_with(|| spec::yaml::source_lines(text));
        let Some(&line) = lines.get(d.line.saturating_sub(1) as usize) else {
            return Ok(());
        };
        let file: &'a str = file;
        let same = matches!(&self.last, Some((f, l, _)) if *f == file && *l == d.line);
        if !same {
            let bounds = line
                .char_indices()
                .map(|(i, _)| i)
                .chain([line.len()])
                .collect();
            self.last = Some((file, d.line, bounds));
        }
        let bounds = self.last.as_ref().map_or(&[][..], |(_, _, b)| b.as_slice());
        write_excerpt(w, line, bounds, d)
    }
}

/// `line` with a caret under the finding's column; `bounds` holds the
/// byte offset of each of its chars and of its end.
fn write_excerpt(
    w: &mut impl Write,
    line: &str,
    bounds: &[usize],
    d: &Diagnostic,
) -> std::io::Result<()> {
    let number = d.line.to_string();
    let pad = " ".repeat(number.len());
    // A long line (minified JSON) is clipped around the column: the
    // excerpt shows where, not the whole file again.
    let chars = bounds.len().saturating_sub(1);
    let column = (d.column.saturating_sub(1) as usize).min(chars);
    let start = column.saturating_sub(EXCERPT_WIDTH / 2);
    let end = (start + EXCERPT_WIDTH).min(chars);
    let byte = |i: usize| bounds.get(i).copied().unwrap_or(line.len());
    let mut shown = line
        .get(byte(start)..byte(end))
        .unwrap_or_default()
        .to_string();
    let mut caret_at: String = line
        .get(byte(start)..byte(column))
        .unwrap_or_default()
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    if start > 0 {
        shown.insert(0, '…');
        caret_at.insert(0, ' ');
    }
    if end < chars {
        shown.push('…');
    }
    writeln!(w, "  {number} | {shown}")?;
    writeln!(w, "  {pad} | {caret_at}^")
}

/// Most characters of a line an excerpt shows.
const EXCERPT_WIDTH: usize = 160;

fn plural(n: usize, word: &str) -> String {
    let word = match (n, word) {
        (1, w) => w.to_string(),
        (_, "flow") => "flows".into(),
        (_, w) => format!("{w}s"),
    };
    format!("{n} {word}")
}
