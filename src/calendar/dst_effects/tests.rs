//! The DST effects against the slot math's own tables (`slots/tests.rs`):
//! the same zones, dates and instants, one gap and one overlap each.

use super::*;
use DstGap::{Shift, Skip};
use DstOverlap::{Both, First, Last};

fn schedule(expr: &str, zone: &str, gap: DstGap, overlap: DstOverlap) -> Schedule {
    let mut s = Schedule {
        cron: Some(expr.to_string()),
        timezone: Some(zone.to_string()),
        ..Schedule::default()
    };
    s.dst.gap = gap;
    s.dst.overlap = overlap;
    s
}

/// Effects over 2026 as `kind wall(MM-DDTHH:MM) action -> runs(UTC MM-DDTHH:MM)`.
fn effects(expr: &str, zone: &str, gap: DstGap, overlap: DstOverlap) -> Vec<String> {
    let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let until: Timestamp = "2026-12-31T23:59:59Z".parse().unwrap();
    let found = dst_effects(&schedule(expr, zone, gap, overlap), from, until, 100).unwrap();
    assert_eq!(found.more, 0);
    let changes = if zone.starts_with("Asia") || zone == "UTC" {
        0
    } else {
        2
    };
    assert_eq!(found.changes, changes, "{zone}");
    found
        .effects
        .iter()
        .map(|e| {
            let runs: Vec<String> = e
                .runs_at
                .iter()
                .map(|t| t.strftime("%m-%dT%H:%M").to_string())
                .collect();
            format!(
                "{} {} {} -> {}",
                e.kind.as_str(),
                e.wall.strftime("%m-%dT%H:%M"),
                e.action,
                runs.join(" ")
            )
        })
        .collect()
}

type Row = (&'static str, DstGap, DstOverlap, [&'static str; 2]);

fn check(zone: &str, rows: &[Row]) {
    for (expr, gap, overlap, expected) in rows {
        assert_eq!(
            effects(expr, zone, *gap, *overlap),
            expected.to_vec(),
            "{zone} '{expr}' {gap:?} {overlap:?}"
        );
    }
}

#[test]
fn europe_berlin() {
    // Gap 2026-03-29 02:00 -> 03:00 at 01:00Z; fold 2026-10-25 03:00 -> 02:00 at 01:00Z.
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("30 2 * * *", Shift, First, ["gap 03-29T02:30 shift -> 03-29T01:00", "overlap 10-25T02:30 first -> 10-25T00:30"]),
        ("30 2 * * *", Skip, Last,   ["gap 03-29T02:30 skip -> ", "overlap 10-25T02:30 last -> 10-25T01:30"]),
        ("30 2 * * *", Shift, Both,  ["gap 03-29T02:30 shift -> 03-29T01:00", "overlap 10-25T02:30 both -> 10-25T00:30 10-25T01:30"]),
    ];
    check("Europe/Berlin", rows);
}

#[test]
fn america_new_york() {
    // Gap 2026-03-08 02:00 -> 03:00 at 07:00Z; fold 2026-11-01 02:00 -> 01:00 at 06:00Z.
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("30 1,2 * * *", Shift, First, ["gap 03-08T02:30 shift -> 03-08T07:00", "overlap 11-01T01:30 first -> 11-01T05:30"]),
        ("30 1,2 * * *", Skip, Last,   ["gap 03-08T02:30 skip -> ", "overlap 11-01T01:30 last -> 11-01T06:30"]),
        ("30 1,2 * * *", Shift, Both,  ["gap 03-08T02:30 shift -> 03-08T07:00", "overlap 11-01T01:30 both -> 11-01T05:30 11-01T06:30"]),
    ];
    check("America/New_York", rows);
}

#[test]
fn australia_sydney() {
    // Fold 2026-04-05 03:00 -> 02:00 at 04-04T16:00Z; gap 2026-10-04 02:00 -> 03:00 at 10-03T16:00Z.
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("30 2 * * *", Shift, First, ["overlap 04-05T02:30 first -> 04-04T15:30", "gap 10-04T02:30 shift -> 10-03T16:00"]),
        ("30 2 * * *", Skip, Last,   ["overlap 04-05T02:30 last -> 04-04T16:30", "gap 10-04T02:30 skip -> "]),
        ("30 2 * * *", Shift, Both,  ["overlap 04-05T02:30 both -> 04-04T15:30 04-04T16:30", "gap 10-04T02:30 shift -> 10-03T16:00"]),
    ];
    check("Australia/Sydney", rows);
}

#[test]
fn wall_times_sharing_a_gap_all_run_at_its_end() {
    let found = effects("*/15 2-3 * * *", "Europe/Berlin", Shift, First);
    let gaps: Vec<&String> = found.iter().filter(|e| e.starts_with("gap")).collect();
    assert_eq!(
        gaps,
        [
            "gap 03-29T02:00 shift -> 03-29T01:00",
            "gap 03-29T02:15 shift -> 03-29T01:00",
            "gap 03-29T02:30 shift -> 03-29T01:00",
            "gap 03-29T02:45 shift -> 03-29T01:00",
        ]
    );
    // The fold repeats 02:00-02:59: four wall times, each run once.
    assert_eq!(found.len(), 8, "{found:?}");
}

#[test]
fn a_fire_away_from_the_change_or_a_zone_without_dst_has_none() {
    assert!(effects("0 7 * * MON-FRI", "Europe/Berlin", Shift, First).is_empty());
    assert!(effects("30 2 * * *", "Asia/Jakarta", Shift, First).is_empty());
    assert!(effects("30 2 * * *", "UTC", Shift, First).is_empty());
}

#[test]
fn a_per_second_cron_lists_up_to_the_cap_and_counts_the_rest() {
    let from: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let until: Timestamp = "2026-04-01T00:00:00Z".parse().unwrap();
    let s = schedule("* * * * * *", "Europe/Berlin", Shift, First);
    let found = dst_effects(&s, from, until, 10).unwrap();
    assert_eq!(found.effects.len(), 10);
    assert_eq!(found.more, 3600 - 10);
    assert_eq!(wall_text(found.effects[1].wall), "2026-03-29 02:00:01");
    let tz = TimeZone::get("Europe/Berlin").unwrap();
    assert_eq!(
        found.effects[1].sentence(&tz),
        "2026-03-29 02:00:01 does not exist (spring forward): runs at 03:00:00 +02:00 (dst.gap: shift)"
    );
}

#[test]
fn sentences_say_what_happens() {
    let tz = TimeZone::get("Europe/Berlin").unwrap();
    let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let until: Timestamp = "2026-12-31T00:00:00Z".parse().unwrap();
    let lines = |gap, overlap| -> Vec<String> {
        let s = schedule("30 2 * * *", "Europe/Berlin", gap, overlap);
        let found = dst_effects(&s, from, until, 10).unwrap();
        found.effects.iter().map(|e| e.sentence(&tz)).collect()
    };
    assert_eq!(
        lines(Shift, First),
        [
            "2026-03-29 02:30 does not exist (spring forward): runs at 03:00 +02:00 (dst.gap: shift)",
            "2026-10-25 02:30 happens twice (fall back): runs once, at the first (02:30 +02:00) (dst.overlap: first)",
        ]
    );
    assert_eq!(
        lines(Skip, Both),
        [
            "2026-03-29 02:30 does not exist (spring forward): not run (dst.gap: skip)",
            "2026-10-25 02:30 happens twice (fall back): runs 2 times (02:30 +02:00, 02:30 +01:00) (dst.overlap: both)",
        ]
    );
    assert_eq!(
        lines(Shift, Last)[1],
        "2026-10-25 02:30 happens twice (fall back): runs once, at the second (02:30 +01:00) (dst.overlap: last)"
    );
}

#[test]
fn an_invalid_schedule_gets_the_slot_math_error() {
    let from: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let e = dst_effects(&schedule("61 * * * *", "UTC", Shift, First), from, from, 10).unwrap_err();
    assert_eq!(e.to_string(), "cron: minute 61 is out of range (0-59)");
}
