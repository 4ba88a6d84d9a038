//! `--help` of every command, as snapshots so a change to it is reviewed
//! (tests/snapshots/help/<command path>.txt), and the habits every help
//! keeps: an `Examples:` block, and an `Environment:` line naming each
//! variable a command reads. Commands come from the clap definition, so a
//! new one is covered the day it is added.
//!
//! Refresh after an intended change:
//! `UPDATE_HELP_SNAPSHOTS=1 cargo test --test help`.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// Every command path: the root (empty) and each subcommand, nested ones
/// too, without clap's own `help` subcommands.
fn paths() -> Vec<Vec<String>> {
    fn walk(command: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = vec![Vec::new()];
    walk(&definition(), &[], &mut out);
    out
}

/// The definition the binary parses with, built (global arguments copied
/// into the subcommands that take them).
fn definition() -> clap::Command {
    let mut command = multijob::cli::help::command();
    command.build();
    command
}

fn find<'a>(command: &'a clap::Command, path: &[String]) -> &'a clap::Command {
    path.iter().fold(command, |at, name| {
        at.find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"))
    })
}

/// `multijob PATH --help` from the real binary, at a fixed width and with
/// no MULTIJOB_* variables from the caller's shell.
fn rendered(path: &[String]) -> String {
    let mut command = Command::new(common::bin());
    command.args(path).arg("--help").env("COLUMNS", "100");
    for (name, _) in std::env::vars() {
        if name.starts_with("MULTIJOB_") {
            command.env_remove(name);
        }
    }
    let out = command.output().expect("spawn multijob");
    assert!(
        out.status.success(),
        "multijob {} --help failed",
        path.join(" ")
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

fn snapshot_dir() -> PathBuf {
    common::repo().join("tests/snapshots/help")
}

fn snapshot_name(path: &[String]) -> String {
    if path.is_empty() {
        "multijob.txt".into()
    } else {
        format!("{}.txt", path.join("-"))
    }
}

/// The lines of `old` and `new` that differ, as `-`/`+` lines in order
/// (a longest-common-subsequence diff; helps are short).
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[test]
fn every_help_matches_its_snapshot() {
    let update = std::env::var_os("UPDATE_HELP_SNAPSHOTS").is_some();
    let dir = snapshot_dir();
    std::fs::create_dir_all(&dir).expect("snapshot dir");
    let mut failures = Vec::new();
    let mut expected = Vec::new();
    for path in paths() {
        let name = snapshot_name(&path);
        let file = dir.join(&name);
        let help = rendered(&path);
        expected.push(name.clone());
        if update {
            std::fs::write(&file, &help).expect("write snapshot");
            continue;
        }
        let command = format!(
            "multijob {}--help",
            path.iter().map(|p| format!("{p} ")).collect::<String>()
        );
        match std::fs::read_to_string(&file) {
            Err(_) => failures.push(format!("{command}: no snapshot {}", file.display())),
            Ok(old) if old != help => failures.push(format!(
                "{command} differs from {} (- snapshot, + now):\n{}",
                file.display(),
                diff(&old, &help)
            )),
            Ok(_) => {}
        }
    }
    for entry in std::fs::read_dir(&dir).expect("snapshot dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) {
            if update {
                std::fs::remove_file(entry.path()).expect("remove stale snapshot");
            } else {
                failures.push(format!("{name}: a snapshot of no command"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the change is intended: UPDATE_HELP_SNAPSHOTS=1 cargo test --test help",
        failures.join("\n\n")
    );
}

/// Every subcommand's help shows an example, and every command that
/// reads a variable says so in an `Environment:` line naming each one.
#[test]
fn every_help_has_examples_and_names_its_environment() {
    let root = definition();
    let mut failures = Vec::new();
    for path in paths().into_iter().filter(|p| !p.is_empty()) {
        let command = find(&root, &path);
        let help = rendered(&path);
        let name = format!("multijob {}", path.join(" "));
        if !help.contains("\nExamples:\n  multijob ") {
            failures.push(format!("{name}: no `Examples:` block of command lines"));
        }
        let leaf = !command.has_subcommands();
        let vars: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !leaf || vars.is_empty() {
            continue;
        }
        let Some((_, environment)) = help.split_once("\nEnvironment: ") else {
            failures.push(format!(
                "{name}: reads {vars:?} but has no `Environment:` line"
            ));
            continue;
        };
        for var in vars.iter().filter(|v| !environment.contains(v.as_str())) {
            failures.push(format!("{name}: `Environment:` does not name {var}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_diff_shows_removed_and_added_lines_in_order() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\nd\n"), "- b\n+ x\n+ d\n");
    assert_eq!(diff("same\n", "same\n"), "");
}
