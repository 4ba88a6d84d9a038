//! `multijob validate`: load and check everything.

use std::io::Write;

use crate::reconcile::source::read_config_dir;
use crate::spec::{self, diagnostic::Diagnostic, model::Kind};

use super::{DirArg, Outcome, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub dir: DirArg,
    /// `text` for people, `json` for tools:
    /// [{file,line,column,kind,id,severity,code,message,pointer}].
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let contents = read_config_dir(&args.dir.dir)?;
    let mut loaded = spec::build(&contents.files);
    loaded.diagnostics.extend(contents.diagnostics);
    spec::diagnostic::sort(&mut loaded.diagnostics);
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &loaded.diagnostics)?;
            writeln!(stdout)?;
        }
        OutputFormat::Text => {
            let texts: std::collections::HashMap<&str, &str> = contents
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.text.as_str()))
                .collect();
            for d in &loaded.diagnostics {
                writeln!(stdout, "{d}")?;
                // A literal secret's line is the secret: never echo it.
                if d.code == "literal-secret" {
                    continue;
                }
                if let Some(text) = texts.get(d.file.as_str()) {
                    write_excerpt(&mut stdout, text, d)?;
                }
            }
            let snapshot = &loaded.snapshot;
            let counts = Kind::ALL
                .iter()
                .map(|k| plural(snapshot.count(*k), &k.as_str().to_lowercase()))
                .collect::<Vec<_>>()
                .join(", ");
            let summary = format!("{} in {}", counts, plural(contents.files.len(), "file"));
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

/// The offending source line with a caret under the column.
fn write_excerpt(w: &mut impl Write, text: &str, d: &Diagnostic) -> std::io::Result<()> {
    let Some(line) = text.lines().nth(d.line.saturating_sub(1) as usize) else {
        return Ok(());
    };
    let number = d.line.to_string();
    let pad = " ".repeat(number.len());
    // A long line (minified JSON) is clipped around the column: the
    // excerpt shows where, not the whole file again.
    let chars: Vec<char> = line.chars().collect();
    let column = (d.column.saturating_sub(1) as usize).min(chars.len());
    let start = column.saturating_sub(EXCERPT_WIDTH / 2);
    let end = (start + EXCERPT_WIDTH).min(chars.len());
    let mut shown: String = chars[start..end].iter().collect();
    let mut caret_at: String = chars[start..column]
        .iter()
        .map(|&c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    if start > 0 {
        shown.insert(0, '…');
        caret_at.insert(0, ' ');
    }
    if end < chars.len() {
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
