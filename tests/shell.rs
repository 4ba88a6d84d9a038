//! Shell habits: completion scripts, short flags, and which of a flag and
//! an environment variable names the store when both do.

mod common;

use std::process::Command;

use common::{ConfigDir, Run, bin};

/// `multijob ARGS` with `env` set (and no MULTIJOB_* from the caller's shell).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(bin());
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("MULTIJOB_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    Run {
        command: format!("{env:?} multijob {}", args.join(" ")),
        output: command.output().expect("spawn multijob"),
        listing: String::new(),
    }
}

/// A loopback URL nothing listens on.
fn dead_url(scheme: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("{scheme}://127.0.0.1:{port}/")
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn completion_scripts_name_the_subcommands_and_bash_parses_its_own() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_env(&["completions", shell], &[]);
        out.assert_code(0);
        let script = out.stdout();
        for sub in ["validate", "plan", "trigger", "approvals", "completions"] {
            assert!(
                script.contains(sub),
                "{shell} script lacks {sub}\n{}",
                out.explain()
            );
        }
        let path = std::env::temp_dir().join(format!("multijob-{}.{shell}", std::process::id()));
        std::fs::write(&path, &script).expect("write script");
        // bash is always here; zsh and fish when installed.
        let check = match shell {
            "bash" => Some(vec!["bash", "-n"]),
            "zsh" if installed("zsh") => Some(vec!["zsh", "-n"]),
            "fish" if installed("fish") => Some(vec!["fish", "--no-execute"]),
            _ => None,
        };
        if let Some(check) = check {
            let parsed = Command::new(check[0])
                .args(&check[1..])
                .arg(&path)
                .output()
                .expect("run the shell");
            assert!(
                parsed.status.success(),
                "{shell} rejects its script: {}",
                String::from_utf8_lossy(&parsed.stderr)
            );
        }
        let _ = std::fs::remove_file(&path);
    }
    let unknown = run_env(&["completions", "powershell-ish"], &[]);
    unknown.assert_code(1);
    unknown.assert_stderr_has("possible values: bash, zsh, fish");
}

#[test]
fn short_flags_d_and_o_work_like_the_long_ones() {
    let dir = ConfigDir::new();
    dir.write(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule:\n  every: 1h\n",
    );
    let d = dir.path().display().to_string();
    let out = run_env(&["validate", "-d", &d, "-o", "json"], &[]);
    out.assert_code(0);
    assert_eq!(out.json(), serde_json::json!([]), "{}", out.explain());
    let out = run_env(&["plan", "-d", &d, "-o", "json"], &[]);
    out.assert_code(0);
    assert!(out.json().is_object(), "{}", out.explain());
}

/// With `MULTIJOB_REDIS_URL` exported, `--state` on the command line is
/// the store a command uses, not a conflict; the variable alone is used.
#[test]
fn a_state_flag_wins_over_redis_in_the_environment() {
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    let d = dir.path().display().to_string();
    let missing = dir.path().join("elsewhere.db").display().to_string();
    let redis = dead_url("redis");
    let env = [("MULTIJOB_REDIS_URL", redis.as_str())];
    for args in [
        vec!["plan", "-d", &d, "--state", &missing],
        vec!["trigger", "a", "-d", &d, "--state", &missing],
        vec!["approvals", "list", "-d", &d, "--state", &missing],
    ] {
        let out = run_env(&args, &env);
        out.assert_code(1);
        out.assert_stderr_has(&format!("no store at {missing}"));
        out.assert_stdout_lacks("cannot be used with");
    }
    for args in [
        vec!["plan", "-d", &d],
        vec!["trigger", "a", "-d", &d],
        vec!["approvals", "list", "-d", &d],
    ] {
        let out = run_env(&args, &env);
        out.assert_code(1);
        out.assert_stderr_has(&format!("cannot reach Redis at {redis}"));
    }
}

#[test]
fn two_places_to_read_state_from_are_refused_naming_both() {
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    let d = dir.path().display().to_string();
    let out = run_env(
        &["plan", "-d", &d, "--state", "x.db", "--redis", "redis://h/"],
        &[],
    );
    out.assert_code(1);
    out.assert_stderr_has("--state and --redis name two places to read the state from");
    let (redis, server) = (dead_url("redis"), dead_url("http"));
    let env = [
        ("MULTIJOB_REDIS_URL", redis.as_str()),
        ("MULTIJOB_SERVER", server.as_str()),
    ];
    let out = run_env(&["plan", "-d", &d], &env);
    out.assert_code(1);
    out.assert_stderr_has("MULTIJOB_REDIS_URL and MULTIJOB_SERVER are both set");
    out.assert_stderr_has("choose one with --redis or --server");
    // A flag settles it: the server named in the environment is read.
    let out = run_env(&["plan", "-d", &d], &env[1..]);
    out.assert_code(1);
    out.assert_stderr_has(server.trim_end_matches('/'));
    let out = run_env(&["plan", "-d", &d, "--server", &server], &env[..1]);
    out.assert_code(1);
    out.assert_stderr_has(server.trim_end_matches('/'));
}

/// The daemon too: `run --state` with `MULTIJOB_REDIS_URL` exported runs
/// on the embedded store it names, and `approvals list` beside it reads it.
/// (Defect while building this: the command changed after clap built it
/// parsed `--listen A` as `--max-connections A`.)
#[test]
fn run_with_a_state_flag_ignores_redis_in_the_environment() {
    let dir = ConfigDir::new();
    dir.write("jobs.d/a.yaml", "id: a\ntype: noop\n");
    let state = dir.path().join("mine.db");
    let state = state.display().to_string();
    let redis = dead_url("redis");
    let daemon = common::Daemon::start_env(
        dir.path(),
        &["--state", &state],
        &[("MULTIJOB_REDIS_URL", redis.as_str())],
    );
    daemon.wait_until("/readyz", "ready", |v| v["ready"] == true);
    assert!(std::path::Path::new(&state).exists(), "{}", daemon.log());
    let d = dir.path().display().to_string();
    let out = run_env(
        &["approvals", "list", "-d", &d, "--state", &state],
        &[("MULTIJOB_REDIS_URL", redis.as_str())],
    );
    out.assert_code(0).assert_line("no pending approvals", "");
}
