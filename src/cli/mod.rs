//! One file per command: its arguments and a short `exec` that calls the
//! library. Nothing here decides what a config means.

pub mod init;
pub mod schema;
pub mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A declarative, GitOps-style job runner.
///
/// Keep jobs, flows (lanes), connectors and skills as YAML in a git repo:
/// `validate` checks them, `plan` shows what would change, `run` runs them.
#[derive(Debug, Parser)]
#[command(name = "multijob", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and check every file of a config directory.
    ///
    /// Reports every error and warning with file:line:column, kind and id.
    /// Exit code 0 when valid (warnings allowed), 1 when invalid.
    Validate(validate::Args),
    /// Print the JSON Schemas of the four kinds, or write them to a folder.
    ///
    /// Point editors at them with `# yaml-language-server: $schema=...`.
    Schema(schema::Args),
    /// Scaffold a config directory with working examples.
    Init(init::Args),
}

/// How a command's findings are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// `--dir`, shared by the commands that read a config directory.
#[derive(Debug, Clone, clap::Args)]
pub struct DirArg {
    /// The config directory (holding jobs.d/ and skills.d/).
    #[arg(long, env = "MULTIJOB_DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// How a command ended, mapped to exit codes by `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the input is invalid (already reported).
    Failure,
    /// Exit 2: `plan --detailed-exitcode` found changes.
    Changes,
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate(args) => validate::exec(args),
        Command::Schema(args) => schema::exec(args),
        Command::Init(args) => init::exec(args),
    }
}
