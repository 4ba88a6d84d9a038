//! `multijob cron`: the real binary previews a schedule: in words, its next
//! fires in the zone and in UTC, what the DST policy does with the fires a
//! clock change skips or repeats (the slot math's own dates), and the same
//! error `validate` gives for a bad expression or zone.

mod common;

use std::process::Command;

use common::{ConfigDir, Run};

fn cron(args: &[&str]) -> Run {
    let mut all = vec!["cron".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    common::run(&all, None)
}

#[test]
fn weekdays_at_seven_in_jakarta_has_no_dst() {
    let mut args = vec![
        "0 7 * * MON-FRI",
        "--tz",
        "Asia/Jakarta",
        "--from",
        "2026-12-05T00:00:00Z",
        "--count",
        "3",
    ];
    cron(&args)
        .assert_code(0)
        .assert_line("  at 07:00, Monday to Friday", "")
        .assert_line("time zone: Asia/Jakarta", "(--tz)")
        .assert_line("next 3 fires:", "")
        // Saturday the 5th and Sunday the 6th pass; Monday comes first.
        .assert_line("  2026-12-07 07:00:00 +07:00 Mon", "2026-12-07T00:00:00Z")
        .assert_line("  2026-12-09 07:00:00 +07:00 Wed", "2026-12-09T00:00:00Z")
        .assert_line(
            "  no fire falls in a DST change",
            "Asia/Jakarta changes no clocks",
        );
    args.extend(["-o", "json"]);
    let json = cron(&args).assert_code(0).json();
    assert_eq!(json["description"], "at 07:00, Monday to Friday");
    assert_eq!(json["timezone"], "Asia/Jakarta");
    assert_eq!(json["next"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["next"][0]["local"], "2026-12-07T07:00:00+07:00");
    assert_eq!(json["next"][0]["utc"], "2026-12-07T00:00:00Z");
    assert_eq!(json["dst"], serde_json::json!([]));
    assert_eq!(json["dst_changes"], 0);
}

/// 02:30 in Berlin: the 2026-03-29 gap and the 2026-10-25 fold, the same
/// instants as the slot math's table (`dst_europe_berlin`).
#[test]
fn half_past_two_in_berlin_lists_the_gap_and_the_overlap() {
    let base = [
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-01-01T00:00:00Z",
    ];
    cron(&base)
        .assert_code(0)
        .assert_line("next 10 fires:", "")
        .assert_line("  2026-01-01 02:30:00 +01:00 Thu", "2026-01-01T01:30:00Z")
        .assert_line(
            "DST in the next 12 months",
            "(dst.gap: shift, dst.overlap: first)",
        )
        .assert_line(
            "  2026-03-29 02:30 does not exist (spring forward)",
            "runs at 03:00 +02:00 (dst.gap: shift)",
        )
        .assert_line(
            "  2026-10-25 02:30 happens twice (fall back)",
            "runs once, at the first (02:30 +02:00) (dst.overlap: first)",
        );
    let mut other = base.to_vec();
    other.extend(["--dst-gap", "skip", "--dst-overlap", "both", "-o", "json"]);
    let json = cron(&other).assert_code(0).json();
    let dst = json["dst"].as_array().cloned().unwrap_or_default();
    assert_eq!(dst.len(), 2, "{json:#}");
    assert_eq!(dst[0]["local"], "2026-03-29T02:30:00");
    assert_eq!(dst[0]["kind"], "gap");
    assert_eq!(dst[0]["action"], "skip");
    assert_eq!(dst[0]["runs_at"], serde_json::json!([]));
    assert_eq!(dst[1]["local"], "2026-10-25T02:30:00");
    assert_eq!(dst[1]["kind"], "overlap");
    assert_eq!(dst[1]["action"], "both");
    let utc: Vec<&str> = dst[1]["runs_at"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["utc"].as_str())
        .collect();
    assert_eq!(utc, ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]);
}

/// The whole text output, so a change to its format is reviewed here.
#[test]
fn the_text_output_reads_like_this() {
    let run = cron(&[
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-27T12:00:00Z",
        "--count",
        "3",
        "--dst-overlap",
        "both",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stdout(),
        "30 2 * * *
  at 02:30, every day
time zone: Europe/Berlin (--tz)
next 3 fires:
  2026-03-28 02:30:00 +01:00 Sat   2026-03-28T01:30:00Z
  2026-03-29 03:00:00 +02:00 Sun   2026-03-29T01:00:00Z
  2026-03-30 02:30:00 +02:00 Mon   2026-03-30T00:30:00Z
DST in the next 12 months (dst.gap: shift, dst.overlap: both):
  2026-03-29 02:30 does not exist (spring forward): runs at 03:00 +02:00 (dst.gap: shift)
  2026-10-25 02:30 happens twice (fall back): runs 2 times (02:30 +02:00, 02:30 +01:00) (dst.overlap: both)
",
        "{}",
        run.explain()
    );
}

/// New York and Sydney, a gap and an overlap each (the slot math's tables).
#[test]
fn new_york_and_sydney_follow_the_slot_math() {
    let from = "2026-01-01T00:00:00Z";
    cron(&[
        "30 1,2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        from,
        "--dst-overlap",
        "last",
    ])
    .assert_code(0)
    .assert_line("  2026-03-08 02:30 does not exist", "runs at 03:00 -04:00")
    .assert_line(
        "  2026-11-01 01:30 happens twice",
        "at the second (01:30 -05:00) (dst.overlap: last)",
    );
    cron(&["30 2 * * *", "--tz", "Australia/Sydney", "--from", from])
        .assert_code(0)
        .assert_line(
            "  2026-04-05 02:30 happens twice",
            "at the first (02:30 +11:00)",
        )
        .assert_line("  2026-10-04 02:30 does not exist", "runs at 03:00 +11:00");
}

#[test]
fn a_bad_expression_gets_the_message_validate_gives() {
    let run = cron(&["61 * * * *", "--tz", "UTC"]);
    run.assert_code(1)
        .assert_stderr_has("cron: minute 61 is out of range (0-59)");
    let d = ConfigDir::new();
    d.write(
        "jobs.d/a.yaml",
        "id: a\ntype: noop\nschedule: {cron: \"61 * * * *\"}\n",
    );
    d.run(&["validate"]).assert_code(1).assert_line(
        "jobs.d/a.yaml:3:18: error[schedule] Job a:",
        "minute 61 is out of range (0-59)",
    );
    cron(&["0 9 * * 11-24"])
        .assert_code(1)
        .assert_stderr_has("day-of-week 11-24 is out of range (0-7)");
    cron(&["0 0 30 2 *"])
        .assert_code(1)
        .assert_stderr_has("never fires");
    cron(&["@reboot"])
        .assert_code(1)
        .assert_stderr_has("unknown alias '@reboot'");
    cron(&["* * *"])
        .assert_code(1)
        .assert_stderr_has("expected 5 fields");
    // A 100 KB list with one bad item at its end: named, not echoed whole.
    let long = "1,".repeat(50_000) + "99 * * * *";
    let run = cron(&[&long]);
    run.assert_code(1)
        .assert_stderr_has("minute 99 is out of range (0-59)");
    assert!(run.stderr().len() < 200, "{}", run.explain());
}

#[test]
fn a_bad_zone_gets_a_suggestion() {
    cron(&["0 7 * * *", "--tz", "Europe/Berln"])
        .assert_code(1)
        .assert_stderr_has("unknown time zone 'Europe/Berln'")
        .assert_stderr_has("did you mean `Europe/Berlin`?")
        .assert_stderr_has("(the zone came from --tz)");
    cron(&["0 7 * * *", "--tz", ""])
        .assert_code(1)
        .assert_stderr_has("unknown time zone");
}

#[test]
fn count_and_from_are_bounded() {
    cron(&["* * * * *", "--count", "0"])
        .assert_code(1)
        .assert_stderr_has("0 is not in 1..=1000");
    cron(&["* * * * *", "--count", "100000"])
        .assert_code(1)
        .assert_stderr_has("100000 is not in 1..=1000");
    cron(&["* * * * *", "--from", "yesterday"])
        .assert_code(1)
        .assert_stderr_has("not an RFC 3339 instant");
    let json = cron(&[
        "* * * * * *",
        "--tz",
        "UTC",
        "--count",
        "1000",
        "-o",
        "json",
    ])
    .assert_code(0)
    .json();
    assert_eq!(json["next"].as_array().map(Vec::len), Some(1000));
}

/// A per-second cron meets 3,600 missing seconds in one gap: a hundred are
/// listed, the rest counted.
#[test]
fn a_per_second_cron_lists_a_hundred_dst_fires_and_counts_the_rest() {
    let json = cron(&[
        "* * * * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-01T00:00:00Z",
        "--count",
        "1",
        "-o",
        "json",
    ])
    .assert_code(0)
    .json();
    assert_eq!(json["dst"].as_array().map(Vec::len), Some(100));
    assert_eq!(json["dst_more"], 3600 * 2 - 100);
}

#[test]
fn the_zone_comes_from_multijob_tz_when_no_flag_is_given() {
    let out = Command::new(common::bin())
        .args(["cron", "0 7 * * *", "--count", "1", "-o", "json"])
        .env("MULTIJOB_TZ", "Asia/Jakarta")
        .output()
        .expect("spawn multijob");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["timezone"], "Asia/Jakarta");
    assert_eq!(json["timezone_source"], "MULTIJOB_TZ");
    let local = json["next"][0]["local"].as_str().unwrap_or_default();
    assert!(local.ends_with("T07:00:00+07:00"), "{local}");
}

#[test]
fn a_bad_multijob_tz_is_named_as_the_source() {
    let out = Command::new(common::bin())
        .args(["cron", "0 7 * * *"])
        .env("MULTIJOB_TZ", "Asia/Jakartaa")
        .output()
        .expect("spawn multijob");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown time zone 'Asia/Jakartaa'")
            && stderr.contains("did you mean `Asia/Jakarta`?")
            && stderr.contains("(the zone came from MULTIJOB_TZ)"),
        "{stderr}"
    );
}
