//! The `multijob` binary: parse the command line, run one command, map its
//! outcome to an exit code. Business logic lives in the library.

use std::process::ExitCode;

use clap::Parser;

use multijob::cli::{Cli, Outcome};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match multijob::cli::run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Ok(Outcome::Changes) => ExitCode::from(2),
        Err(e) => {
            eprintln!("multijob: {e:#}");
            ExitCode::from(1)
        }
    }
}
