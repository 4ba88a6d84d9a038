use super::*;
use crate::calendar::schedule::{DstGap, DstOverlap};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A schedule with the defaults serde gives a YAML `schedule:` block
/// (`Schedule::default()` zeroes the catchup window and run cap).
fn base() -> Schedule {
    Schedule {
        catchup_window_sec: crate::calendar::schedule::default_catchup_window_sec(),
        max_catchup_runs: crate::calendar::schedule::default_max_catchup_runs(),
        ..Schedule::default()
    }
}

fn interval(seconds: u64) -> Schedule {
    Schedule {
        interval_sec: Some(seconds),
        ..base()
    }
}

fn cron(expr: &str, zone: &str) -> Schedule {
    Schedule {
        cron: Some(expr.to_string()),
        timezone: Some(zone.to_string()),
        ..base()
    }
}

fn rule(schedule: &Schedule) -> SlotRule {
    SlotRule::compile(schedule, "job-a").unwrap()
}

fn error(schedule: &Schedule) -> ScheduleError {
    SlotRule::compile(schedule, "job-a").unwrap_err()
}

/// Nominal times of the first `n` slots after `after`, as RFC 3339 UTC.
fn nominals(rule: &SlotRule, after: &str, n: usize) -> Vec<String> {
    rule.next_slots(ts(after), n)
        .iter()
        .map(|s| s.nominal.to_string())
        .collect()
}

fn dst_rule(expr: &str, zone: &str, gap: DstGap, overlap: DstOverlap) -> SlotRule {
    let mut schedule = cron(expr, zone);
    schedule.dst = DstPolicy { gap, overlap };
    rule(&schedule)
}

// ---- DST: one table per zone, gap and overlap, every policy ----------

use DstGap::{Shift, Skip};
use DstOverlap::{Both, First, Last};

/// (cron, after, gap, overlap, the expected nominal times). Times are
/// 2026 UTC, written `MM-DDTHH:MM`, so that a row fits on a line.
type DstRow = (&'static str, &'static str, DstGap, DstOverlap, &'static str);

fn check_dst_table(zone: &str, rows: &[DstRow]) {
    let utc = |t: &str| format!("2026-{t}:00Z");
    for (expr, after, gap, overlap, expected) in rows {
        let expected: Vec<String> = expected.split_whitespace().map(utc).collect();
        let r = dst_rule(expr, zone, *gap, *overlap);
        assert_eq!(
            nominals(&r, &utc(after), expected.len()),
            expected,
            "{zone} '{expr}' after {after} gap={gap:?} overlap={overlap:?}"
        );
    }
}

#[test]
fn dst_europe_berlin() {
    // Gap: 2026-03-29 02:00 CET -> 03:00 CEST, at 01:00Z.
    // Fold: 2026-10-25 03:00 CEST -> 02:00 CET, at 01:00Z; 02:xx happens twice.
    #[rustfmt::skip]
    let rows: &[DstRow] = &[
        ("30 2 * * *", "03-27T12:00", Shift, First, "03-28T01:30 03-29T01:00 03-30T00:30"),
        ("30 2 * * *", "03-27T12:00", Skip, First,  "03-28T01:30 03-30T00:30 03-31T00:30"),
        ("30 2 * * *", "10-23T12:00", Shift, First, "10-24T00:30 10-25T00:30 10-26T01:30"),
        ("30 2 * * *", "10-23T12:00", Shift, Last,  "10-24T00:30 10-25T01:30 10-26T01:30"),
        ("30 2 * * *", "10-24T12:00", Shift, Both,  "10-25T00:30 10-25T01:30 10-26T01:30"),
    ];
    check_dst_table("Europe/Berlin", rows);
}

#[test]
fn dst_america_new_york() {
    // Gap: 2026-03-08 02:00 EST -> 03:00 EDT, at 07:00Z.
    // Fold: 2026-11-01 02:00 EDT -> 01:00 EST, at 06:00Z; 01:xx happens twice.
    #[rustfmt::skip]
    let rows: &[DstRow] = &[
        ("30 2 * * *", "03-06T12:00", Shift, First, "03-07T07:30 03-08T07:00 03-09T06:30"),
        ("30 2 * * *", "03-06T12:00", Skip, First,  "03-07T07:30 03-09T06:30 03-10T06:30"),
        ("30 1 * * *", "10-30T12:00", Shift, First, "10-31T05:30 11-01T05:30 11-02T06:30"),
        ("30 1 * * *", "10-30T12:00", Shift, Last,  "10-31T05:30 11-01T06:30 11-02T06:30"),
        ("30 1 * * *", "10-31T12:00", Shift, Both,  "11-01T05:30 11-01T06:30 11-02T06:30"),
        // Half-hourly through the fold: `both` interleaves the two passes.
        ("*/30 * * * *", "11-01T04:00", Shift, First, "11-01T04:30 11-01T05:00 11-01T05:30 11-01T07:00"),
        ("*/30 * * * *", "11-01T04:00", Shift, Last,  "11-01T04:30 11-01T06:00 11-01T06:30 11-01T07:00"),
        ("*/30 * * * *", "11-01T04:50", Shift, Both,  "11-01T05:00 11-01T05:30 11-01T06:00 11-01T06:30"),
    ];
    check_dst_table("America/New_York", rows);
}

#[test]
fn dst_australia_sydney() {
    // Southern hemisphere, the other way round.
    // Fold: 2026-04-05 03:00 AEDT -> 02:00 AEST, at 04-04T16:00Z.
    // Gap: 2026-10-04 02:00 AEST -> 03:00 AEDT, at 10-03T16:00Z.
    #[rustfmt::skip]
    let rows: &[DstRow] = &[
        ("30 2 * * *", "04-03T12:00", Shift, First, "04-03T15:30 04-04T15:30 04-05T16:30"),
        ("30 2 * * *", "04-03T12:00", Shift, Last,  "04-03T15:30 04-04T16:30 04-05T16:30"),
        ("30 2 * * *", "04-04T12:00", Shift, Both,  "04-04T15:30 04-04T16:30 04-05T16:30"),
        ("30 2 * * *", "10-02T12:00", Shift, First, "10-02T16:30 10-03T16:00 10-04T15:30"),
        ("30 2 * * *", "10-02T12:00", Skip, First,  "10-02T16:30 10-04T15:30 10-05T15:30"),
    ];
    check_dst_table("Australia/Sydney", rows);
}

#[test]
fn wall_times_sharing_a_gap_make_one_slot() {
    // 02:00, 02:15, 02:30, 02:45 and 03:00 all mean 01:00Z on 2026-03-29.
    let r = dst_rule("*/15 2-3 * * *", "Europe/Berlin", Shift, First);
    assert_eq!(
        nominals(&r, "2026-03-29T00:00:00Z", 4),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:15:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T01:45:00Z",
        ]
    );
    let r = dst_rule("0,30 2 * * *", "Europe/Berlin", Shift, First);
    assert_eq!(
        nominals(&r, "2026-03-28T12:00:00Z", 3),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:00:00Z",
            "2026-03-30T00:30:00Z",
        ]
    );
}

#[test]
fn next_slot_from_inside_a_fold_keeps_its_pass() {
    // NY 2026-11-01: 05:10Z is 01:10 EDT (first pass), 06:10Z is 01:10 EST (second).
    let last = dst_rule("30 1 * * *", "America/New_York", Shift, Last);
    assert_eq!(
        nominals(&last, "2026-11-01T05:10:00Z", 1),
        ["2026-11-01T06:30:00Z"]
    );
    assert_eq!(
        nominals(&last, "2026-11-01T05:40:00Z", 1),
        ["2026-11-01T06:30:00Z"]
    );
    let first = dst_rule("30 1 * * *", "America/New_York", Shift, First);
    assert_eq!(
        nominals(&first, "2026-11-01T06:10:00Z", 1),
        ["2026-11-02T06:30:00Z"]
    );
    let both = dst_rule("30 1 * * *", "America/New_York", Shift, Both);
    assert_eq!(
        nominals(&both, "2026-11-01T05:40:00Z", 2),
        ["2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

/// The `cron` crate skipped a `30 2 * * *` job on a spring-forward day
/// and ran it twice on fall-back (DESIGN.md, section 6).
#[test]
fn regression_cron_crate_skipped_0230_on_spring_forward_and_ran_it_twice_on_fall_back() {
    let r = dst_rule("30 2 * * *", "Europe/Berlin", Shift, First);
    let spring = r.next_slots(ts("2026-03-28T12:00:00Z"), 2);
    assert_eq!(spring[0].nominal, ts("2026-03-29T01:00:00Z"), "not skipped");
    assert_eq!(spring[1].nominal, ts("2026-03-30T00:30:00Z"));
    let fall = r.next_slots(ts("2026-10-24T12:00:00Z"), 2);
    assert_eq!(fall[0].nominal, ts("2026-10-25T00:30:00Z"));
    assert_eq!(fall[1].nominal, ts("2026-10-26T01:30:00Z"), "not twice");
}

// ---- cron syntax and semantics ---------------------------------------

#[test]
fn five_and_six_field_cron() {
    let five = rule(&cron("*/20 * * * *", "UTC"));
    assert_eq!(
        nominals(&five, "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:20:00Z",
            "2026-01-01T00:40:00Z",
            "2026-01-01T01:00:00Z",
        ]
    );
    let six = rule(&cron("*/20 * * * * *", "UTC"));
    assert_eq!(
        nominals(&six, "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:00:20Z",
            "2026-01-01T00:00:40Z",
            "2026-01-01T00:01:00Z",
        ]
    );
}

#[test]
fn ranges_steps_lists_and_names() {
    // 2026-01-02 is a Friday.
    let r = rule(&cron("0 9-17/4 * * MON-FRI", "UTC"));
    assert_eq!(
        nominals(&r, "2026-01-02T10:00:00Z", 4),
        [
            "2026-01-02T13:00:00Z",
            "2026-01-02T17:00:00Z",
            "2026-01-05T09:00:00Z",
            "2026-01-05T13:00:00Z",
        ]
    );
    let r = rule(&cron("15,45 6 * jan,feb *", "UTC"));
    assert_eq!(
        nominals(&r, "2026-01-31T07:00:00Z", 3),
        [
            "2026-02-01T06:15:00Z",
            "2026-02-01T06:45:00Z",
            "2026-02-02T06:15:00Z",
        ]
    );
    let r = rule(&cron("@hourly", "UTC"));
    assert_eq!(
        nominals(&r, "2026-01-01T00:00:00Z", 1),
        ["2026-01-01T01:00:00Z"]
    );
    let r = rule(&cron("0 0 L * *", "UTC"));
    assert_eq!(
        nominals(&r, "2026-02-01T00:00:00Z", 1),
        ["2026-02-28T00:00:00Z"]
    );
}

#[test]
fn day_of_month_or_day_of_week() {
    // POSIX: the 13th OR a Friday. January 2026: Fridays 2, 9, 16, 23, 30.
    let r = rule(&cron("0 0 13 * 5", "UTC"));
    assert_eq!(
        nominals(&r, "2026-01-01T00:00:00Z", 6),
        [
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-13T00:00:00Z",
            "2026-01-16T00:00:00Z",
            "2026-01-23T00:00:00Z",
            "2026-01-30T00:00:00Z",
        ]
    );
}

#[test]
fn cron_runs_on_the_wall_clock_of_its_zone() {
    let r = rule(&cron("0 7 * * *", "Asia/Jakarta"));
    assert_eq!(
        nominals(&r, "2026-01-01T00:00:00Z", 2),
        ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]
    );
    assert_eq!(r.timezone(), &TimeZone::get("Asia/Jakarta").unwrap());
    assert_eq!(rule(&interval(60)).timezone(), &TimeZone::UTC);
}

#[test]
fn black_friday_cron_is_rejected_naming_the_field() {
    let e = error(&cron("0 9 * * 11-24", "Asia/Jakarta"));
    assert_eq!(e.field, "cron");
    assert_eq!(e.message, "day-of-week 11-24 is out of range (0-7)");
    assert_eq!(
        e.to_string(),
        "cron: day-of-week 11-24 is out of range (0-7)"
    );
}

#[test]
fn compile_rejects_what_cannot_run() {
    let cases: Vec<(Schedule, &str, &str)> = vec![
        (
            cron("0 7 * * *", "Mars/Olympus_Mons"),
            "timezone",
            "unknown time zone 'Mars/Olympus_Mons': use an IANA name such as Europe/Berlin or UTC",
        ),
        (
            cron("0 0 30 2 *", "UTC"),
            "cron",
            "'0 0 30 2 *' never fires: no date has that day of the month in those months",
        ),
        (base(), "schedule", "set one of interval_sec, every or cron"),
        (
            Schedule {
                cron: Some("0 7 * * *".into()),
                interval_sec: Some(30),
                ..base()
            },
            "schedule",
            "set exactly one of interval_sec, every or cron, not interval_sec and cron",
        ),
        (
            interval(0),
            "interval_sec",
            "interval_sec must be at least 1",
        ),
        (
            Schedule {
                jitter_sec: Some(60),
                ..interval(60)
            },
            "jitter_sec",
            "jitter_sec 60 must be less than the interval (60 s)",
        ),
        (
            Schedule {
                start_at: Some("tomorrow".into()),
                ..interval(60)
            },
            "start_at",
            "'tomorrow' is not an RFC 3339 instant such as 2026-11-24T00:00:00Z",
        ),
        (
            Schedule {
                start_at: Some("2026-11-24T00:00:00Z".into()),
                end_at: Some("2026-11-23T00:00:00Z".into()),
                ..interval(60)
            },
            "end_at",
            "end_at 2026-11-23T00:00:00Z must be after start_at 2026-11-24T00:00:00Z",
        ),
    ];
    for (schedule, field, message) in cases {
        let e = error(&schedule);
        assert_eq!((e.field, e.message.as_str()), (field, message));
    }
    for (every, message) in [
        (
            "soon",
            "'soon' is not a duration: write e.g. 30s, 5m, 1h30m or 2h",
        ),
        ("0s", "'0s' must be a positive duration"),
        ("-5m", "'-5m' must be a positive duration"),
        ("1.5s", "'1.5s' must be a whole number of seconds"),
    ] {
        let e = error(&Schedule {
            every: Some(every.into()),
            ..base()
        });
        assert_eq!((e.field, e.message.as_str()), ("every", message));
    }
}

#[test]
fn compile_accepts_the_whole_cron_grammar() {
    for expr in [
        "0 0 LW * *",
        "0 0 15W * *",
        "0 0 * * 5L",
        "0 0 * * 5#2",
        "0 0 * * FRI-SUN",
        "0 0 ? * 7",
        "0-30/10 0 0 * * *",
        "@weekly",
        "0 0 29 2 *",
    ] {
        assert!(SlotRule::compile(&cron(expr, "UTC"), "j").is_ok(), "{expr}");
    }
}

// ---- intervals -------------------------------------------------------

#[test]
fn intervals_align_to_the_epoch() {
    let r = rule(&interval(3600));
    assert_eq!(
        nominals(&r, "2026-01-01T00:30:00Z", 2),
        ["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]
    );
    // Strictly after: a slot at `after` itself is not returned.
    assert_eq!(
        nominals(&r, "2026-01-01T01:00:00Z", 1),
        ["2026-01-01T02:00:00Z"]
    );
    // Interval schedules ignore the zone and its DST.
    let r = rule(&Schedule {
        timezone: Some("Europe/Berlin".into()),
        ..interval(3600)
    });
    assert_eq!(
        nominals(&r, "2026-03-29T00:30:00Z", 3),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-29T02:00:00Z",
            "2026-03-29T03:00:00Z",
        ]
    );
}

#[test]
fn every_90s() {
    let r = rule(&Schedule {
        every: Some("90s".into()),
        ..base()
    });
    let slots = r.next_slots(ts("2026-01-01T00:00:00Z"), 3);
    let seconds: Vec<i64> = slots.iter().map(|s| s.nominal.as_second()).collect();
    assert!(seconds.iter().all(|s| s % 90 == 0), "{seconds:?}");
    assert_eq!(seconds[1] - seconds[0], 90);
    for (every, step) in [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2h", 7200),
        ("1d", 86_400),
    ] {
        let r = rule(&Schedule {
            every: Some(every.into()),
            ..base()
        });
        let s = r.next_slots(ts("2026-01-01T00:00:01Z"), 2);
        assert_eq!(
            s[1].nominal.as_second() - s[0].nominal.as_second(),
            step,
            "{every}"
        );
    }
}

#[test]
fn jitter_is_bounded_stable_and_differs_by_job() {
    let schedule = Schedule {
        jitter_sec: Some(30),
        ..interval(60)
    };
    let offsets: Vec<SignedDuration> = (0..20)
        .map(|i| {
            SlotRule::compile(&schedule, &format!("job-{i}"))
                .unwrap()
                .jitter()
        })
        .collect();
    for offset in &offsets {
        assert!(*offset >= SignedDuration::ZERO && *offset < SignedDuration::from_secs(30));
    }
    let again = SlotRule::compile(&schedule, "job-0").unwrap();
    assert_eq!(again.jitter(), offsets[0]);
    let mut distinct = offsets.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 10, "{offsets:?}");
    // fire_at = nominal + jitter; the nominal time is untouched.
    let slot = again.next_slot(ts("2026-01-01T00:00:30Z")).unwrap();
    assert_eq!(slot.nominal, ts("2026-01-01T00:01:00Z"));
    assert_eq!(slot.fire_at, slot.nominal + offsets[0]);
    // Fixed forever: a change here reshuffles every deployment's start
    // times. SHA-256 of the id, first 8 bytes big-endian, mod 30,000 ms
    // (Python's hashlib gives the same).
    let pinned = SlotRule::compile(&schedule, "monitor-telegram-a01").unwrap();
    assert_eq!(pinned.jitter(), SignedDuration::from_millis(24_362));
    // Jitter applies to cron slots too, and is zero when unset.
    let c = rule(&Schedule {
        jitter_sec: Some(5),
        ..cron("0 7 * * *", "UTC")
    });
    let slot = c.next_slot(ts("2026-01-01T00:00:00Z")).unwrap();
    assert_eq!(slot.fire_at, slot.nominal + c.jitter());
    assert_eq!(rule(&interval(60)).jitter(), SignedDuration::ZERO);
}

#[test]
fn start_and_end_bound_the_slots() {
    // An interval with start_at counts from start_at.
    let r = rule(&Schedule {
        start_at: Some("2026-01-01T00:15:00Z".into()),
        end_at: Some("2026-01-01T02:15:00Z".into()),
        ..interval(3600)
    });
    assert_eq!(
        nominals(&r, "2025-12-01T00:00:00Z", 5),
        [
            "2026-01-01T00:15:00Z",
            "2026-01-01T01:15:00Z",
            "2026-01-01T02:15:00Z",
        ]
    );
    assert_eq!(r.next_slot(ts("2026-01-01T02:15:00Z")), None);
    // The seed's Black Friday window, written as it was meant.
    let r = rule(&Schedule {
        start_at: Some("2026-11-24T00:00:00Z".into()),
        end_at: Some("2026-11-24T23:59:59Z".into()),
        ..cron("0 9 24 11 *", "UTC")
    });
    assert_eq!(
        nominals(&r, "2026-01-01T00:00:00Z", 5),
        ["2026-11-24T09:00:00Z"]
    );
    assert_eq!(r.next_slot(ts("2026-11-24T09:00:00Z")), None);
}

// ---- misfire ---------------------------------------------------------

const T0: &str = "2026-01-01T00:00:00Z";

fn misfire_rule(misfire: Misfire, window: u64, max_runs: u32) -> SlotRule {
    rule(&Schedule {
        misfire,
        catchup_window_sec: window,
        max_catchup_runs: max_runs,
        ..interval(60)
    })
}

/// (minutes after T0 of the runs, of the listed skips, skipped_more)
fn minutes(m: &Misfired) -> (Vec<i64>, Vec<i64>, u64) {
    let t0 = ts(T0).as_second();
    let of = |slots: &[Slot]| -> Vec<i64> {
        slots
            .iter()
            .map(|s| (s.nominal.as_second() - t0) / 60)
            .collect()
    };
    (of(&m.run), of(&m.skipped), m.skipped_more)
}

#[test]
fn misfire_policies_after_ten_missed_minutes() {
    // Last outcome at T0, back at T0 + 10m30s: slots at minutes 1..=10 were missed.
    let (last, now) = (Some(ts(T0)), ts("2026-01-01T00:10:30Z"));
    let day = 86_400;
    let cases = [
        (
            Misfire::RunOnce,
            day,
            10,
            vec![10],
            (1..=9).collect::<Vec<_>>(),
        ),
        (Misfire::Skip, day, 10, vec![], (1..=10).collect()),
        (Misfire::RunAll, day, 3, vec![8, 9, 10], (1..=7).collect()),
        (Misfire::RunAll, day, 100, (1..=10).collect(), vec![]),
        (Misfire::RunAll, day, 0, vec![], (1..=10).collect()),
        // The catchup window (now - 150 s = minute 8) skips older slots.
        (Misfire::RunAll, 150, 10, vec![8, 9, 10], (1..=7).collect()),
        (Misfire::RunOnce, 150, 10, vec![10], (1..=9).collect()),
        // Nothing young enough: everything is skipped.
        (Misfire::RunOnce, 10, 10, vec![], (1..=10).collect()),
    ];
    for (misfire, window, max_runs, run, skipped) in cases {
        let m = misfire_rule(misfire, window, max_runs).missed(last, now);
        assert_eq!(
            minutes(&m),
            (run, skipped, 0),
            "{misfire:?} window={window} max={max_runs}"
        );
    }
}

#[test]
fn misfire_edges() {
    let r = misfire_rule(Misfire::RunAll, 86_400, 10);
    // Never ran: nothing was missed.
    assert_eq!(
        r.missed(None, ts("2026-01-01T00:10:30Z")),
        Misfired::default()
    );
    // Nothing due since the last slot, or a clock that went back.
    assert_eq!(
        r.missed(Some(ts(T0)), ts("2026-01-01T00:00:59Z")),
        Misfired::default()
    );
    assert_eq!(
        r.missed(Some(ts(T0)), ts("2025-12-31T00:00:00Z")),
        Misfired::default()
    );
    // A slot exactly at `now` is missed; one exactly at `last` is not.
    let m = r.missed(Some(ts(T0)), ts("2026-01-01T00:02:00Z"));
    assert_eq!(minutes(&m), (vec![1, 2], vec![], 0));
    // A slot exactly at the window's edge is young enough.
    let r = misfire_rule(Misfire::RunAll, 120, 10);
    let m = r.missed(Some(ts(T0)), ts("2026-01-01T00:03:00Z"));
    assert_eq!(minutes(&m), (vec![1, 2, 3], vec![], 0));
    // Runs keep their jitter.
    let r = rule(&Schedule {
        jitter_sec: Some(30),
        ..interval(60)
    });
    let m = r.missed(Some(ts(T0)), ts("2026-01-01T00:02:00Z"));
    assert_eq!(m.run[0].fire_at, m.run[0].nominal + r.jitter());
}

#[test]
fn a_week_down_for_a_one_second_job_stays_bounded() {
    let r = rule(&interval(1));
    let last = ts(T0);
    let now = ts("2026-01-08T00:00:00Z");
    let started = std::time::Instant::now();
    let m = r.missed(Some(last), now);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(m.run.len(), 1);
    assert_eq!(m.run[0].nominal, now);
    assert_eq!(m.skipped_total(), 604_800 - 1);
    assert_eq!(m.skipped.len() as u64, MISSED_LIST_CAP - 1);
    // The listed skips are the newest, right before the run, in order.
    assert_eq!(
        m.skipped.last().unwrap().nominal,
        ts("2026-01-07T23:59:59Z")
    );
    assert!(m.skipped.windows(2).all(|w| w[0].nominal < w[1].nominal));
    // run_all caps the runs at max_catchup_runs, newest first chosen.
    let r = rule(&Schedule {
        misfire: Misfire::RunAll,
        max_catchup_runs: 3,
        ..interval(1)
    });
    let m = r.missed(Some(last), now);
    let runs: Vec<String> = m.run.iter().map(|s| s.nominal.to_string()).collect();
    assert_eq!(
        runs,
        [
            "2026-01-07T23:59:58Z",
            "2026-01-07T23:59:59Z",
            "2026-01-08T00:00:00Z",
        ]
    );
    assert_eq!(m.skipped_total(), 604_800 - 3);
}

#[test]
fn a_week_down_for_a_per_second_cron_counts_instead_of_listing() {
    // Every second of the week, Berlin time, across the 2026-10-25 fold:
    // `both` has a slot at every instant, `first` skips the second pass.
    let (last, now) = (ts("2026-10-20T00:00:00Z"), ts("2026-10-27T00:00:00Z"));
    for (overlap, total) in [
        (Both, 604_800),
        (First, 604_800 - 3600),
        (Last, 604_800 - 3600),
    ] {
        let r = rule(&Schedule {
            dst: DstPolicy {
                gap: Shift,
                overlap,
            },
            ..cron("* * * * * *", "Europe/Berlin")
        });
        let started = std::time::Instant::now();
        let m = r.missed(Some(last), now);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(m.skipped_total() + m.run.len() as u64, total, "{overlap:?}");
        assert_eq!(m.run.len(), 1);
        assert_eq!(m.run[0].nominal, now);
        assert_eq!(m.skipped.len() as u64, MISSED_LIST_CAP - 1);
    }
    // Across the spring-forward gap every instant is a slot too.
    let r = rule(&cron("* * * * * *", "Europe/Berlin"));
    let (last, now) = (ts("2026-03-26T00:00:00Z"), ts("2026-04-02T00:00:00Z"));
    assert_eq!(r.count_between(last, now), 604_800);
}

#[test]
fn misfire_for_a_daily_cron_across_a_gap() {
    // Down from 2026-03-27 to 2026-03-31 in Berlin, `30 2 * * *`, shift:
    // missed 03-28 01:30Z, 03-29 01:00Z (shifted), 03-30 00:30Z.
    let r = rule(&Schedule {
        misfire: Misfire::RunAll,
        max_catchup_runs: 2,
        catchup_window_sec: 7 * 86_400,
        ..cron("30 2 * * *", "Europe/Berlin")
    });
    let m = r.missed(Some(ts("2026-03-27T01:30:00Z")), ts("2026-03-30T12:00:00Z"));
    let of = |s: &[Slot]| s.iter().map(|s| s.nominal.to_string()).collect::<Vec<_>>();
    assert_eq!(of(&m.run), ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]);
    assert_eq!(of(&m.skipped), ["2026-03-28T01:30:00Z"]);
    assert_eq!(m.skipped_more, 0);
}

// ---- properties ------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    const PATTERNS: [&str; 8] = [
        "30 2 * * *",
        "*/7 * * * *",
        "0 0 13 * 5",
        "15 1-3 * * SUN",
        "0 30 2 * * *",
        "0 0 L * *",
        "*/20 0-3 * * * *",
        "0 */2 * * *",
    ];
    const ZONES: [&str; 7] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "Asia/Jakarta",
    ];
    const GAPS: [DstGap; 2] = [Shift, Skip];
    const OVERLAPS: [DstOverlap; 3] = [First, Last, Both];

    /// 50 slots after `after`: increasing, all after it, each the
    /// successor of the one before, and as many as `count_between` says.
    fn check_sequence(r: &SlotRule, after: Timestamp) -> Result<(), TestCaseError> {
        let slots = r.next_slots(after, 50);
        prop_assert_eq!(slots.len(), 50);
        prop_assert!(slots[0].nominal > after);
        for pair in slots.windows(2) {
            prop_assert!(pair[0].nominal < pair[1].nominal, "{:?}", pair);
            prop_assert_eq!(r.next_slot(pair[0].nominal), Some(pair[1]));
        }
        prop_assert_eq!(r.count_between(after, slots[49].nominal), 50);
        Ok(())
    }

    /// Every slot in `(last, now]` is run or skipped, once, in order.
    fn check_missed(r: &SlotRule, last: Timestamp, now: Timestamp) -> Result<(), TestCaseError> {
        let m = r.missed(Some(last), now);
        let total = r.count_between(last, now);
        prop_assert_eq!(m.run.len() as u64 + m.skipped_total(), total);
        prop_assert!(m.run.len() as u64 + m.skipped.len() as u64 <= MISSED_LIST_CAP);
        let listed: Vec<Slot> = m.skipped.iter().chain(&m.run).copied().collect();
        if m.skipped_more == 0 {
            prop_assert_eq!(&listed, &r.next_slots(last, total as usize));
        }
        for pair in listed.windows(2) {
            prop_assert_eq!(r.next_slot(pair[0].nominal), Some(pair[1]));
        }
        if let Some(newest) = listed.last() {
            prop_assert_eq!(
                r.next_slot(newest.nominal).filter(|s| s.nominal <= now),
                None
            );
        }
        let cutoff = now - r.catchup_window;
        prop_assert!(
            m.run
                .iter()
                .all(|s| s.nominal >= cutoff && s.nominal > last)
        );
        let young = r.count_between(last.max(just_before(cutoff)), now);
        let wanted = match r.misfire {
            Misfire::Skip => 0,
            Misfire::RunOnce => 1,
            Misfire::RunAll => u64::from(r.max_catchup_runs),
        };
        prop_assert_eq!(m.run.len() as u64, wanted.min(young));
        Ok(())
    }

    fn misfire_schedule(policy: usize, window: u64, max_runs: u32, base: Schedule) -> Schedule {
        Schedule {
            misfire: [Misfire::RunOnce, Misfire::Skip, Misfire::RunAll][policy],
            catchup_window_sec: window,
            max_catchup_runs: max_runs,
            ..base
        }
    }

    proptest! {
        #[test]
        fn missed_sorts_every_interval_slot_once(
            seconds in 1u64..7200,
            last in 1_700_000_000i64..1_800_000_000,
            down in 0i64..3 * 86_400,
            policy in 0..3usize,
            window in 0u64..2 * 86_400,
            max_runs in 0u32..20,
        ) {
            let r = rule(&misfire_schedule(policy, window, max_runs, interval(seconds)));
            let last = Timestamp::from_second(last).unwrap();
            check_missed(&r, last, last + SignedDuration::from_secs(down))?;
        }

        #[test]
        fn missed_sorts_every_cron_slot_once(
            pattern in 0..PATTERNS.len(),
            zone in 0..ZONES.len(),
            overlap in 0..3usize,
            day in 0i64..730,
            down in 0i64..5 * 86_400,
            policy in 0..3usize,
            window in 0u64..3 * 86_400,
            max_runs in 0u32..20,
        ) {
            let mut schedule = cron(PATTERNS[pattern], ZONES[zone]);
            schedule.dst.overlap = OVERLAPS[overlap];
            let r = rule(&misfire_schedule(policy, window, max_runs, schedule));
            let start = ts("2026-01-01T00:00:00Z") + SignedDuration::from_hours(24 * day);
            // Downtime that ends a day or two after a transition.
            let now = r.timezone().following(start).next().map_or(start, |t| t.timestamp())
                + SignedDuration::from_hours(30);
            check_missed(&r, now - SignedDuration::from_secs(down), now)?;
        }

        #[test]
        fn interval_slots_increase(
            seconds in 1u64..86_400,
            after_ns in 1_600_000_000_000_000_000i128..1_900_000_000_000_000_000,
            jitter in 0u64..2,
            anchored in any::<bool>(),
        ) {
            let r = rule(&Schedule {
                jitter_sec: Some(jitter.min(seconds - 1)),
                start_at: anchored.then(|| "2020-02-29T12:34:56.789Z".to_string()),
                ..interval(seconds)
            });
            let after = Timestamp::from_nanosecond(after_ns).unwrap();
            check_sequence(&r, after)?;
            for slot in r.next_slots(after, 3) {
                prop_assert!(slot.fire_at >= slot.nominal);
                prop_assert!(slot.fire_at < slot.nominal + SignedDuration::from_secs(seconds as i64));
            }
        }

        #[test]
        fn cron_slots_increase_across_dst(
            pattern in 0..PATTERNS.len(),
            zone in 0..ZONES.len(),
            gap in 0..2usize,
            overlap in 0..3usize,
            day in 0i64..730,
            offset in -3 * 86_400i64..86_400,
            near_transition in any::<bool>(),
        ) {
            let r = dst_rule(PATTERNS[pattern], ZONES[zone], GAPS[gap], OVERLAPS[overlap]);
            let start = ts("2026-01-01T00:00:00Z") + SignedDuration::from_hours(24 * day);
            // Half the cases start within a few days before a transition.
            let base = if near_transition {
                r.timezone()
                    .following(start)
                    .next()
                    .map_or(start, |t| t.timestamp())
            } else {
                start
            };
            check_sequence(&r, base + SignedDuration::from_secs(offset))?;
        }
    }
}

#[test]
fn a_backfill_window_holds_its_start_and_not_its_end() {
    let every_hour = rule(&interval(3600));
    let got = every_hour
        .slots_in(ts("2026-03-01T10:00:00Z"), ts("2026-03-01T13:00:00Z"), 10)
        .unwrap();
    let nominals: Vec<String> = got.iter().map(|s| s.nominal.to_string()).collect();
    assert_eq!(
        nominals,
        [
            "2026-03-01T10:00:00Z",
            "2026-03-01T11:00:00Z",
            "2026-03-01T12:00:00Z"
        ]
    );
    assert_eq!(
        every_hour.slots_in(ts("2026-03-01T10:00:00Z"), ts("2026-03-01T13:00:00Z"), 2),
        Err(3)
    );
    // Ten years of a per-second job are counted, not listed.
    let every_second = rule(&interval(1));
    let ten_years =
        every_second.slots_in(ts("2016-01-01T00:00:00Z"), ts("2026-01-01T00:00:00Z"), 1000);
    assert_eq!(ten_years, Err(315_619_200));
    // Cron slots are read in the job's zone: 02:30 Berlin is 01:30 UTC in winter.
    let nightly = rule(&cron("30 2 * * *", "Europe/Berlin"));
    let got = nightly
        .slots_in(ts("2026-01-10T00:00:00Z"), ts("2026-01-12T00:00:00Z"), 10)
        .unwrap();
    let nominals: Vec<String> = got.iter().map(|s| s.nominal.to_string()).collect();
    assert_eq!(nominals, ["2026-01-10T01:30:00Z", "2026-01-11T01:30:00Z"]);
}

#[test]
fn prev_slots_are_the_last_ones_at_or_before() {
    let every = rule(&interval(300));
    let got: Vec<Timestamp> = every
        .prev_slots(ts("2026-11-22T12:05:00Z"), 3)
        .iter()
        .map(|s| s.nominal)
        .collect();
    assert_eq!(
        got,
        vec![
            ts("2026-11-22T11:55:00Z"),
            ts("2026-11-22T12:00:00Z"),
            ts("2026-11-22T12:05:00Z")
        ]
    );
    let weekdays = rule(&cron("0 7 * * 1-5", "Asia/Jakarta"));
    // Monday 2026-11-23 06:59 Jakarta: the last one was Friday's.
    let last = weekdays.prev_slots(ts("2026-11-22T23:59:00Z"), 1);
    assert_eq!(last[0].nominal, ts("2026-11-20T00:00:00Z"));
    let late_start = SlotRule::compile(
        &Schedule {
            start_at: Some("2026-11-22T12:00:00Z".into()),
            ..interval(60)
        },
        "job-a",
    )
    .unwrap();
    assert_eq!(
        late_start.prev_slots(ts("2026-11-22T12:01:30Z"), 5).len(),
        2
    );
}
