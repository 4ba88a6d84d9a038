//! `multijob completions SHELL`: the shell's completion script, generated
//! from the same clap definition the binary parses with, so it never
//! lags behind a new command or flag.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Outcome};

#[derive(Debug, clap::Args)]
#[command(after_help = "Where to put it:\n  \
bash  multijob completions bash > ~/.local/share/bash-completion/completions/multijob\n  \
zsh   multijob completions zsh > ~/.zfunc/_multijob\n        \
(and `fpath+=~/.zfunc; autoload -Uz compinit; compinit` in ~/.zshrc)\n  \
fish  multijob completions fish > ~/.config/fish/completions/multijob.fish\n\
Open a new shell afterwards.\n\n\
Examples:\n  \
multijob completions bash > ~/.local/share/bash-completion/completions/multijob\n  \
source <(multijob completions bash)     # this shell only")]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells a script is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Shell {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    // Into memory first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(Shell::from(args.shell), &mut command, name, &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("writing the completion script to stdout")?;
    Ok(Outcome::Success)
}
