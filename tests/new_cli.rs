//! `multijob new` with the real binary: the files it writes validate,
//! `--dry-run` writes nothing, an existing id is refused (`--force`
//! replaces only its own file), the zone comes from `--tz` or
//! `MULTIJOB_TZ`, and hostile sentences are refused without a file.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{ConfigDir, Run};

const SEED: &str = "Pantau telegram akun bot_a01 tiap 30 detik dan buat laporan harian jam 07:00";

/// A directory with the ops example's connectors (telegram, slack,
/// whatsapp, email, ...).
fn ops_dir() -> ConfigDir {
    let dir = ConfigDir::new();
    let connectors =
        std::fs::read_to_string(common::repo().join("examples/ops-247/jobs.d/connectors.yaml"))
            .expect("example connectors");
    dir.write("jobs.d/connectors.yaml", &connectors);
    dir
}

/// `multijob new ARGS --dir DIR` with `env` set and no MULTIJOB_* from
/// the caller's shell; `stdin` piped in when given.
fn new(dir: &ConfigDir, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Run {
    let mut command = Command::new(common::bin());
    command.arg("new").args(args).arg("--dir").arg(dir.path());
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("MULTIJOB_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn multijob");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        // The command may refuse before reading it all: a broken pipe is fine.
        let _ = pipe.write_all(bytes);
    }
    drop(pipe);
    let output = child.wait_with_output().expect("wait multijob");
    Run {
        command: format!("multijob new {}", args.join(" ")),
        output,
        listing: dir.listing(),
    }
}

fn read(dir: &ConfigDir, relative: &str) -> String {
    std::fs::read_to_string(dir.path().join(relative)).unwrap_or_default()
}

#[test]
fn writes_one_file_per_job_that_validate_accepts() {
    let dir = ops_dir();
    let run = new(&dir, &[SEED, "--tz", "Asia/Jakarta"], &[], None);
    run.assert_code(0)
        .assert_line("2 to create", "")
        .assert_line("+ Job monitor-telegram-bot-a01", "")
        .assert_line("wrote jobs.d/monitor-telegram-bot-a01.yaml", "");
    let monitor = read(&dir, "jobs.d/monitor-telegram-bot-a01.yaml");
    assert!(
        monitor.starts_with(&format!("# multijob new: \"{SEED}\"\n")),
        "{monitor}"
    );
    assert!(monitor.contains("every: \"30s\"") && monitor.contains("connector: \"telegram\""));
    let report = read(&dir, "jobs.d/laporan-harian-0700.yaml");
    assert!(
        report.contains("cron: \"0 7 * * *\"\n  timezone: \"Asia/Jakarta\""),
        "{report}"
    );
    dir.run(&["validate"])
        .assert_code(0)
        .assert_line("valid: 2 jobs", "0 warnings");
}

#[test]
fn dry_run_prints_the_yaml_and_the_plan_and_writes_nothing() {
    let dir = ops_dir();
    let before = dir.listing();
    let run = new(&dir, &[SEED, "--dry-run", "--tz", "UTC"], &[], None);
    run.assert_code(0)
        .assert_line("# multijob new:", SEED)
        .assert_line("2 to create", "")
        .assert_line("dry run: nothing written", "");
    assert_eq!(dir.listing(), before);
    let json = new(
        &dir,
        &[SEED, "--dry-run", "--tz", "UTC", "-o", "json"],
        &[],
        None,
    )
    .json();
    assert_eq!(json["jobs"][0]["id"], "monitor-telegram-bot-a01");
    assert_eq!(json["jobs"][1]["file"], "jobs.d/laporan-harian-0700.yaml");
    assert!(
        json["jobs"][0]["yaml"]
            .as_str()
            .unwrap_or("")
            .contains("kind: Job")
    );
    assert_eq!(json["plan"]["summary"]["create"], 2);
    assert_eq!(json["written"], false);
    assert_eq!(dir.listing(), before);
}

#[test]
fn an_existing_id_is_refused_naming_its_file_even_with_force() {
    let dir = ops_dir();
    let hand = "kind: Job\nid: monitor-telegram\ntype: monitor.channel\nschedule: {every: 1m}\ninputs: {connector: telegram}\n";
    dir.write("jobs.d/hand.yaml", hand);
    let before = dir.listing();
    new(&dir, &["pantau telegram tiap 30 detik"], &[], None)
        .assert_code(1)
        .assert_stderr_has("job monitor-telegram")
        .assert_stderr_has("jobs.d/hand.yaml:1 defines it");
    new(
        &dir,
        &["pantau telegram tiap 30 detik", "--force"],
        &[],
        None,
    )
    .assert_code(1)
    .assert_stderr_has(
        "--force replaces only jobs.d/monitor-telegram.yaml written by `multijob new`",
    );
    assert_eq!(dir.listing(), before);
    assert_eq!(read(&dir, "jobs.d/hand.yaml"), hand);
}

#[test]
fn force_replaces_the_file_new_wrote_before() {
    let dir = ops_dir();
    new(
        &dir,
        &["pantau slack tiap 30 detik", "--tz", "UTC"],
        &[],
        None,
    )
    .assert_code(0);
    new(
        &dir,
        &["pantau slack tiap 5 menit", "--tz", "UTC"],
        &[],
        None,
    )
    .assert_code(1)
    .assert_stderr_has("jobs.d/monitor-slack.yaml:2 defines it");
    assert!(read(&dir, "jobs.d/monitor-slack.yaml").contains("\"30s\""));
    new(
        &dir,
        &["pantau slack tiap 5 menit", "--tz", "UTC", "--force"],
        &[],
        None,
    )
    .assert_code(0)
    .assert_line("0 to create, 1 to update", "");
    let file = read(&dir, "jobs.d/monitor-slack.yaml");
    assert!(
        file.contains("every: \"5m\"") && !file.contains("30s"),
        "{file}"
    );
    // A file at the path that `new` did not write stays, --force or not.
    dir.write(
        "jobs.d/monitor-slack.yaml",
        &file.replacen("# multijob new:", "# by hand:", 1),
    );
    new(
        &dir,
        &["pantau slack tiap 1 menit", "--tz", "UTC", "--force"],
        &[],
        None,
    )
    .assert_code(1)
    .assert_stderr_has("does not start with its `# multijob new:` comment");
}

#[test]
fn the_zone_comes_from_tz_then_multijob_tz() {
    let dir = ops_dir();
    let zone = |run: &Run| {
        run.json()["jobs"][0]["yaml"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let from_env = new(
        &dir,
        &["report at 7am", "--dry-run", "-o", "json"],
        &[("MULTIJOB_TZ", "Europe/Berlin")],
        None,
    );
    assert!(
        zone(&from_env).contains("timezone: \"Europe/Berlin\""),
        "{}",
        from_env.explain()
    );
    let flag_wins = new(
        &dir,
        &[
            "report at 7am",
            "--dry-run",
            "-o",
            "json",
            "--tz",
            "America/New_York",
        ],
        &[("MULTIJOB_TZ", "Europe/Berlin")],
        None,
    );
    assert!(zone(&flag_wins).contains("timezone: \"America/New_York\""));
    new(&dir, &["report at 7am", "--tz", "Mars/Olympus"], &[], None)
        .assert_code(1)
        .assert_stderr_has("\"Mars/Olympus\" is not a known IANA time zone");
    new(
        &dir,
        &["report at 7am"],
        &[("MULTIJOB_TZ", "Nowhere")],
        None,
    )
    .assert_code(1)
    .assert_stderr_has("--tz/MULTIJOB_TZ \"Nowhere\"");
}

#[test]
fn hostile_sentences_are_refused_and_nothing_is_written() {
    let dir = ops_dir();
    let before = dir.listing();
    let megabyte = "pantau telegram ".repeat(65_536);
    new(&dir, &["-"], &[], Some(megabyte.as_bytes()))
        .assert_code(1)
        .assert_stderr_has("the sentence is too long");
    new(&dir, &[&megabyte[..100_000]], &[], None)
        .assert_code(1)
        .assert_stderr_has("at most 2000 bytes");
    new(
        &dir,
        &["pantau telegram \u{1b}[31m tiap 30 detik"],
        &[],
        None,
    )
    .assert_code(1)
    .assert_stderr_has("control character");
    new(&dir, &["pantau telegram\ntiap 30 detik"], &[], None).assert_code(1);
    new(
        &dir,
        &["pantau telegram akun bot\"a01: {x} tiap 30 detik"],
        &[],
        None,
    )
    .assert_code(1)
    .assert_stderr_has("an account name is");
    new(&dir, &["pantau telegram", "--account", "a'b\"c"], &[], None)
        .assert_code(1)
        .assert_stderr_has("--account");
    new(&dir, &["   "], &[], None)
        .assert_code(1)
        .assert_stderr_has("examples:");
    new(&dir, &["halo apa kabar"], &[], None)
        .assert_code(1)
        .assert_stderr_has("nothing to plan");
    new(&dir, &["-"], &[], Some(b"\xff\xfe pantau"))
        .assert_code(1)
        .assert_stderr_has("not UTF-8");
    assert_eq!(dir.listing(), before);
    // Quotes and `#` in the sentence stay inside its scalars.
    let tricky = "laporan jam 7 \"x\": #y' \\ ok";
    new(&dir, &[tricky, "--tz", "UTC"], &[], None).assert_code(0);
    dir.run(&["validate"]).assert_code(0);
}

#[test]
fn a_planned_job_that_does_not_validate_writes_nothing_and_names_its_part() {
    let dir = ConfigDir::new();
    dir.write("jobs.d/noop.yaml", "kind: Job\nid: n\ntype: noop\n");
    let before = dir.listing();
    new(
        &dir,
        &["backup jam 2 malam dan pantau telegram tiap 30 detik"],
        &[],
        None,
    )
    .assert_code(1)
    .assert_stderr_has("nothing written")
    .assert_stderr_has("jobs.d/monitor-telegram.yaml")
    .assert_stderr_has("(from \"pantau telegram tiap 30 detik\")");
    assert_eq!(dir.listing(), before);
    // An error already in the directory refuses too, named as such.
    dir.write("jobs.d/broken.yaml", "kind: Job\nid: [\n");
    new(&dir, &["backup jam 2 malam"], &[], None)
        .assert_code(1)
        .assert_stderr_has("jobs.d/broken.yaml")
        .assert_stderr_has("already in the directory");
}

#[test]
fn channel_and_account_flags_name_the_job_and_its_connector() {
    let dir = ops_dir();
    let run = new(
        &dir,
        &[
            "pantau tiap 30 detik",
            "--channel",
            "wa",
            "--account",
            "ops_01",
            "--tz",
            "UTC",
        ],
        &[],
        None,
    );
    run.assert_code(0)
        .assert_line("+ Job monitor-whatsapp-ops-01", "");
    let file = read(&dir, "jobs.d/monitor-whatsapp-ops-01.yaml");
    assert!(file.contains("connector: \"whatsapp\"") && file.contains("account: \"ops_01\""));
    dir.run(&["validate"]).assert_code(0);
    new(
        &dir,
        &["pantau tiap 30 detik", "--channel", "pigeon"],
        &[],
        None,
    )
    .assert_code(1)
    .assert_stderr_has("not a channel");
}
