//! `multijob schema`: print or write the embedded JSON Schemas.

use std::path::PathBuf;

use anyhow::Context;

use crate::spec::{model::Kind, schema::schema_text};

use super::Outcome;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob schema | jq .Job.required   # all four kinds in one JSON object
  multijob schema --out schemas          # one <kind>.schema.json per kind")]
pub struct Args {
    /// Write `<kind>.schema.json` files into this folder instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    match args.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for kind in Kind::ALL {
                let path = dir.join(format!("{}.schema.json", kind.schema_name()));
                std::fs::write(&path, schema_text(kind))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            // One JSON object keyed by kind, so the output is itself JSON.
            let mut all = serde_json::Map::new();
            for kind in Kind::ALL {
                let schema: serde_json::Value = serde_json::from_str(schema_text(kind))
                    .with_context(|| format!("embedded {} schema", kind.schema_name()))?;
                all.insert(kind.as_str().to_string(), schema);
            }
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
    }
    Ok(Outcome::Success)
}
