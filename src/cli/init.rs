//! `multijob init`: scaffold a config directory that validates and runs.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::spec::{model::Kind, schema::schema_text};

use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob init ops && cd ops && multijob validate
  multijob init . --force                # put the examples back")]
pub struct Args {
    /// Where to create jobs.d/, skills.d/ and schemas/.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// The bundled demo (the repository's own jobs.d/ and skills.d/): it runs
/// offline against the daemon's own status API.
const FILES: [(&str, &str); 7] = [
    (
        "jobs.d/heartbeat.yaml",
        include_str!("../../jobs.d/heartbeat.yaml"),
    ),
    ("jobs.d/load.yaml", include_str!("../../jobs.d/load.yaml")),
    (
        "jobs.d/self-check.yaml",
        include_str!("../../jobs.d/self-check.yaml"),
    ),
    (
        "jobs.d/daily-report.yaml",
        include_str!("../../jobs.d/daily-report.yaml"),
    ),
    (
        "jobs.d/backup.yaml",
        include_str!("../../jobs.d/backup.yaml"),
    ),
    (
        "skills.d/summarize-status.yaml",
        include_str!("../../skills.d/summarize-status.yaml"),
    ),
    (
        ".gitignore",
        "# multijob's embedded store and data dir\n.multijob/\n",
    ),
];

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let mut written = 0;
    let mut kept = Vec::new();
    let schemas = Kind::ALL.map(|k| {
        (
            format!("schemas/{}.schema.json", k.schema_name()),
            schema_text(k),
        )
    });
    let all = FILES
        .iter()
        .map(|(p, t)| (p.to_string(), *t))
        .chain(schemas);
    for (relative, text) in all {
        let path = args.dir.join(&relative);
        if path.exists() && !args.force {
            kept.push(relative);
            continue;
        }
        write(&path, text)?;
        println!("created {}", path.display());
        written += 1;
    }
    for relative in &kept {
        println!(
            "kept    {} (exists; --force overwrites)",
            args.dir.join(relative).display()
        );
    }
    let dir = args.dir.display();
    println!(
        "\n{written} files written. Next:\n  multijob validate --dir {dir}\n  multijob plan --dir {dir}\n  multijob run --dir {dir}"
    );
    Ok(Outcome::Success)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
