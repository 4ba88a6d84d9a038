//! The top-level help: commands grouped by when an operator reaches for
//! them, day-to-day ones first, instead of clap's one list in declaration
//! order. The list is built from the clap definition at run time, so a
//! command added later shows (under "More" until it is given a group).

use clap::CommandFactory;

use super::Cli;

/// Groups of the top-level help, in order; a name not defined (yet) is
/// skipped.
const GROUPS: [(&str, &[&str]); 4] = [
    (
        "Every day",
        &[
            "status",
            "check",
            "runs",
            "logs",
            "why",
            "trigger",
            "approvals",
            "cancel",
            "pause",
            "resume",
            "reset",
            "backfill",
        ],
    ),
    (
        "Change the config",
        &["init", "new", "validate", "plan", "simulate", "schema"],
    ),
    ("Processes", &["run", "worker", "migrate"]),
    ("Shell", &["completions", "help"]),
];

/// The command line's clap definition, with the grouped command list in
/// its help; what `main` parses with and the help snapshots render.
pub fn command() -> clap::Command {
    decorate(Cli::command())
}

/// `command` (not built yet: clap must not be changed after) as the
/// binary shows it.
pub fn decorate(command: clap::Command) -> clap::Command {
    let mut command = without_env_values(command);
    // Built first: clap adds the `help` subcommand when it builds.
    command.build();
    let list = command_list(&command);
    command.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{list}Options:\n{{options}}{{after-help}}"
    ))
}

/// `command` whose help names the variables its arguments read without
/// their values: a help page must not print the password in a
/// `MULTIJOB_REDIS_URL`, and it reads the same in every shell.
fn without_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|a| {
            let has_env = a.get_env().is_some();
            a.hide_env_values(has_env)
        })
        .mut_subcommands(without_env_values)
}

/// `Heading:` and `  name  about` lines per group, then the ungrouped.
fn command_list(command: &clap::Command) -> String {
    let visible: Vec<&clap::Command> = command
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .collect();
    let width = visible
        .iter()
        .map(|c| c.get_name().len())
        .max()
        .unwrap_or(0);
    let line = |c: &clap::Command| {
        let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
        format!("  {:<width$}  {about}\n", c.get_name())
    };
    let mut out = String::new();
    let grouped = |name: &str| GROUPS.iter().any(|(_, names)| names.contains(&name));
    let more: Vec<&clap::Command> = visible
        .iter()
        .copied()
        .filter(|c| !grouped(c.get_name()))
        .collect();
    let groups = GROUPS
        .iter()
        .map(|(heading, names)| {
            let members = names
                .iter()
                .filter_map(|n| visible.iter().copied().find(|c| c.get_name() == *n))
                .collect::<Vec<_>>();
            (*heading, members)
        })
        .chain(std::iter::once(("More", more)));
    for (heading, members) in groups {
        if members.is_empty() {
            continue;
        }
        out.push_str(&format!("{heading}:\n"));
        for c in members {
            out.push_str(&line(c));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible subcommand is listed once, whatever its group.
    #[test]
    fn the_grouped_list_names_every_command_once() {
        let command = command();
        let list = command_list(&command);
        for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
            let lines = list
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(sub.get_name()))
                .count();
            assert_eq!(lines, 1, "{} in\n{list}", sub.get_name());
        }
        assert!(list.starts_with("Every day:\n"), "{list}");
    }
}
