//! Parsing the command line, with one rule clap cannot express: a store
//! named by a flag wins over one named by an environment variable.
//!
//! `--state`, `--redis` and `--server` each name where a command's state
//! lives, and two of them at once is an error. clap counts a value from
//! the environment as given, so with `MULTIJOB_REDIS_URL` exported in a
//! shell, `multijob plan --state x.db` would fail with a conflict the
//! user never typed. Here the command line is parsed once to see where
//! each value came from; when one came from a flag, the ones that came
//! from variables are dropped (the command line is parsed again with
//! those variables unread). Two flags, or two variables and no flag,
//! still fail, naming both.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;
use super::help::{command, decorate};

/// The arguments that each name a store or a daemon to read state from.
const STATE_SOURCES: [&str; 3] = ["state", "redis", "server"];

/// Parses `args` (the program's name first).
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = command().try_get_matches_from(&args)?;
    let (path, leaf) = leaf(&matches);
    let from = |wanted: ValueSource| -> Vec<&'static str> {
        STATE_SOURCES
            .into_iter()
            .filter(|id| leaf.ids().any(|i| i.as_str() == *id))
            .filter(|id| leaf.value_source(id) == Some(wanted))
            .collect()
    };
    let (flags, vars) = (
        from(ValueSource::CommandLine),
        from(ValueSource::EnvVariable),
    );
    if flags.len() > 1 {
        return Err(conflict(&format!(
            "{} name two places to read the state from: give one",
            names(&flags, " and ", |id| format!("--{id}"))
        )));
    }
    if flags.is_empty() && vars.len() > 1 {
        return Err(conflict(&format!(
            "{} are both set and name two places to read the state from: choose one with {}",
            names(&vars, " and ", |id| env_name(id).to_string()),
            names(&vars, " or ", |id| format!("--{id}"))
        )));
    }
    if flags.is_empty() || vars.is_empty() {
        return Cli::from_arg_matches(&matches);
    }
    // Changed before clap builds it: a built command changed afterwards
    // parsed `run --listen A` as `--max-connections A`.
    let command = decorate(unread_env(Cli::command(), &path, &vars));
    Cli::from_arg_matches(&command.try_get_matches_from(&args)?)
}

/// Parses the process's own command line.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

/// The innermost subcommand's matches (global arguments reach it) and the
/// names leading there.
fn leaf(matches: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut path = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        path.push(name.to_string());
        at = sub;
    }
    (path, at)
}

/// `command` with `ids` no longer read from the environment, wherever on
/// `path` they are defined.
fn unread_env(command: clap::Command, path: &[String], ids: &[&str]) -> clap::Command {
    let mut command = command;
    for id in ids {
        if command.get_arguments().any(|a| a.get_id() == *id) {
            command = command.mut_arg(*id, |a| a.env(None));
        }
    }
    match path.split_first() {
        Some((name, rest)) => {
            command.mut_subcommand(name.as_str(), |sub| unread_env(sub, rest, ids))
        }
        None => command,
    }
}

fn env_name(id: &str) -> &'static str {
    match id {
        "redis" => "MULTIJOB_REDIS_URL",
        "server" => "MULTIJOB_SERVER",
        _ => "MULTIJOB_STATE",
    }
}

fn names(ids: &[&str], joiner: &str, name: impl Fn(&str) -> String) -> String {
    ids.iter()
        .map(|id| name(id))
        .collect::<Vec<_>>()
        .join(joiner)
}

fn conflict(message: &str) -> clap::Error {
    command().error(ErrorKind::ArgumentConflict, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    #[test]
    fn two_state_flags_on_the_command_line_are_a_conflict_naming_both() {
        let err = parse_from([
            "multijob",
            "plan",
            "--state",
            "x.db",
            "--redis",
            "redis://h/",
        ])
        .expect_err("two stores");
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let text = err.to_string();
        assert!(text.contains("--state and --redis"), "{text}");
    }

    #[test]
    fn one_state_flag_parses_as_given() {
        let cli = parse_from([
            "multijob", "plan", "-d", "cfg", "--state", "x.db", "-o", "json",
        ])
        .expect("parses");
        let Command::Plan(args) = cli.command else {
            panic!("not plan");
        };
        assert_eq!(args.state.as_deref(), Some(std::path::Path::new("x.db")));
        assert_eq!(args.dir.dir, std::path::Path::new("cfg"));
        assert_eq!(args.output, crate::cli::OutputFormat::Json);
    }

    #[test]
    fn unread_env_reaches_arguments_of_nested_subcommands() {
        let path = ["approvals".to_string(), "list".to_string()];
        let mut command = unread_env(Cli::command(), &path, &["redis"]);
        command.build();
        let approvals = command.find_subcommand("approvals").expect("approvals");
        let redis = approvals
            .get_arguments()
            .find(|a| a.get_id() == "redis")
            .expect("redis");
        assert_eq!(redis.get_env(), None);
    }
}
