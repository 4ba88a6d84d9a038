//! PURE. The `plan` command's output: the diff, and what applying it will
//! do given the running state (next fire times, catch-up of missed slots,
//! lane limits changing under active runs, runs in flight of jobs going away).
//!
//! [`report`] gathers those facts from two snapshots and a [`PlanContext`]
//! read from the store; [`render_text`] and [`render_json`] print them.

use std::collections::HashMap;
use std::fmt::Write;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::diff::{Action, Change, FieldChange, Plan, diff};
use crate::calendar::slots::{Misfired, Slot, SlotRule};
use crate::spec::model::{Job, Kind, Misfire};
use crate::spec::snapshot::Snapshot;

/// How many upcoming fire times `plan` shows per new or rescheduled job.
pub const NEXT_FIRES: usize = 3;

/// A value longer than this many characters is cut, ending in `…`.
const VALUE_WIDTH: usize = 80;

/// The running state `plan` needs beyond the running snapshot.
#[derive(Debug, Clone)]
pub struct PlanContext {
    pub now: Timestamp,
    /// Job id → nominal time of the last slot that got an outcome.
    pub last_slots: HashMap<String, Timestamp>,
    /// Runs queued, running, retrying or awaiting approval, per job.
    pub active_runs_by_job: HashMap<String, usize>,
    /// The same, per flow.
    pub active_runs_by_flow: HashMap<String, usize>,
}

impl PlanContext {
    /// No history and nothing running: what a first `plan` sees.
    pub fn empty(now: Timestamp) -> PlanContext {
        PlanContext {
            now,
            last_slots: HashMap::new(),
            active_runs_by_job: HashMap::new(),
            active_runs_by_flow: HashMap::new(),
        }
    }

    /// Against the live state a store recorded (see
    /// [`LiveState`](crate::store::runs::LiveState)).
    pub fn from_live(now: Timestamp, live: crate::store::runs::LiveState) -> PlanContext {
        PlanContext {
            now,
            last_slots: live.last_slots,
            active_runs_by_job: live.active_runs_by_job,
            active_runs_by_flow: live.active_runs_by_flow,
        }
    }
}

/// A plan and what applying it will do.
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub revision: String,
    pub plan: Plan,
    /// Job id → its next slots after `now`, for created, rescheduled or
    /// re-enabled jobs that are enabled and have a schedule.
    pub next_fires: HashMap<String, Vec<Slot>>,
    /// Rescheduled or re-enabled jobs with a last slot: the missed slots
    /// their misfire policy would run or skip. Only non-empty ones.
    pub catchup: Vec<(String, Misfired)>,
    /// Flow id, old max, new max (`None`: unlimited), active runs; only
    /// where the limit changes while runs are active.
    pub lanes_under_load: Vec<(String, Option<u32>, Option<u32>, usize)>,
    /// Job id, active runs, `"delete"` or `"disable"`.
    pub in_flight: Vec<(String, usize, &'static str)>,
    /// Trigger id → what its change does to the requests it answers
    /// ([`trigger_notes`](super::trigger_notes)); only non-empty ones.
    pub trigger_notes: HashMap<String, Vec<String>>,
    /// Which jobs take their notices from a changed Defaults document
    /// ([`defaults_notes`](super::defaults_notes)); empty when unchanged.
    pub defaults_notes: Vec<String>,
}

/// Diffs `running` against `desired` and works out what applying it will
/// do: for created, rescheduled or re-enabled jobs their next slots after
/// `ctx.now` and, when they ran before, the missed slots their misfire policy
/// would catch up; lanes whose limit changes under active runs; deleted or
/// disabled jobs that still have active runs.
pub fn report(
    revision: &str,
    running: &Snapshot,
    desired: &Snapshot,
    ctx: &PlanContext,
) -> PlanReport {
    let plan = diff(running, desired);
    let mut out = PlanReport {
        revision: revision.to_string(),
        plan: Plan::default(),
        next_fires: HashMap::new(),
        catchup: Vec::new(),
        lanes_under_load: Vec::new(),
        in_flight: Vec::new(),
        trigger_notes: HashMap::new(),
        defaults_notes: Vec::new(),
    };
    for change in &plan.changes {
        match change.kind {
            Kind::Job => job_effects(change, desired, ctx, &mut out),
            Kind::Flow => {
                let max =
                    |s: &Snapshot| s.flows.get(&change.id).and_then(|f| f.spec.max_active_runs);
                let (old, new) = (max(running), max(desired));
                let active = count(&ctx.active_runs_by_flow, &change.id);
                if old != new && active > 0 {
                    out.lanes_under_load
                        .push((change.id.clone(), old, new, active));
                }
            }
            Kind::Trigger => {
                let notes = super::trigger_notes::notes(change, running, desired);
                if !notes.is_empty() {
                    out.trigger_notes.insert(change.id.clone(), notes);
                }
            }
            Kind::Defaults => {
                out.defaults_notes = super::defaults_notes::notes(change, running, desired);
            }
            Kind::Connector | Kind::Skill => {}
        }
    }
    out.plan = plan;
    out
}

fn job_effects(change: &Change, desired: &Snapshot, ctx: &PlanContext, out: &mut PlanReport) {
    let active = count(&ctx.active_runs_by_job, &change.id);
    let going = match (change.action, change.enabled_change) {
        (Action::Delete, _) => Some("delete"),
        (_, Some(false)) => Some("disable"),
        _ => None,
    };
    if let Some(what) = going
        && active > 0
    {
        out.in_flight.push((change.id.clone(), active, what));
    }
    if change.action == Action::Delete || !change.rescheduled {
        return;
    }
    let Some(rule) = desired.jobs.get(&change.id).and_then(|j| rule_of(&j.spec)) else {
        return;
    };
    out.next_fires
        .insert(change.id.clone(), rule.next_slots(ctx.now, NEXT_FIRES));
    if let Some(last) = ctx.last_slots.get(&change.id) {
        let missed = rule.missed(Some(*last), ctx.now);
        if !missed.run.is_empty() || missed.skipped_total() > 0 {
            out.catchup.push((change.id.clone(), missed));
        }
    }
}

/// The compiled schedule of an enabled job; `None` when it has none. The
/// snapshot was validated, so a schedule that does not compile cannot occur.
fn rule_of(job: &Job) -> Option<SlotRule> {
    let schedule = job.schedule.as_ref().filter(|_| job.enabled)?;
    SlotRule::compile(schedule, &job.id).ok()
}

fn count(map: &HashMap<String, usize>, id: &str) -> usize {
    map.get(id).copied().unwrap_or(0)
}

/// The `plan` text: a header, a line per change with its fields and next
/// fire times, then what applying will do. `desired` gives jobs' zones.
pub fn render_text(r: &PlanReport, desired: &Snapshot) -> String {
    let s = &r.plan.summary;
    let mut out = format!(
        "{} to create, {} to update, {} to delete, {} unchanged\n",
        s.create, s.update, s.delete, s.unchanged
    );
    if r.plan.is_empty() {
        let noun = if s.unchanged == 1 {
            "resource"
        } else {
            "resources"
        };
        let _ = writeln!(out, "No changes. {} {noun} unchanged.", s.unchanged);
    }
    for change in &r.plan.changes {
        let sign = match change.action {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
        };
        let _ = writeln!(
            out,
            "{sign} {} {} ({}:{})",
            change.kind, change.id, change.file, change.line
        );
        for field in &change.fields {
            let _ = writeln!(out, "    {}", field_line(field));
        }
        for note in notes_of(r, change) {
            let _ = writeln!(out, "    note: {note}");
        }
        if change.kind == Kind::Job
            && let Some(slots) = r.next_fires.get(&change.id)
        {
            let zone = desired
                .jobs
                .get(&change.id)
                .and_then(|j| shown_zone(&j.spec));
            let _ = writeln!(out, "    next: {}", next_line(slots, zone.as_ref()));
        }
    }
    if !r.catchup.is_empty() {
        out.push_str("\nMissed slots that would be caught up:\n");
        for (id, missed) in &r.catchup {
            let policy = desired
                .jobs
                .get(id)
                .and_then(|j| j.spec.schedule.as_ref())
                .map_or(Misfire::default(), |s| s.misfire);
            let _ = writeln!(
                out,
                "    {id}: {} to run, {} skipped (misfire {})",
                missed.run.len(),
                missed.skipped_total(),
                misfire_name(policy)
            );
        }
    }
    if !r.lanes_under_load.is_empty() {
        out.push_str("\nLanes whose limits change under active runs:\n");
        for (id, old, new, active) in &r.lanes_under_load {
            let _ = writeln!(
                out,
                "    {id}: max_active_runs {} → {}, {}",
                limit(*old),
                limit(*new),
                runs(*active)
            );
        }
    }
    if !r.in_flight.is_empty() {
        out.push_str("\nRuns in flight of jobs being deleted or disabled:\n");
        for (id, active, what) in &r.in_flight {
            let _ = writeln!(out, "    {id}: {} ({what})", runs(*active));
        }
    }
    out
}

/// The notes of a change: a trigger's or the Defaults document's (none
/// for other kinds).
fn notes_of<'a>(r: &'a PlanReport, change: &Change) -> &'a [String] {
    match change.kind {
        Kind::Trigger => r.trigger_notes.get(&change.id).map_or(&[], Vec::as_slice),
        Kind::Defaults => &r.defaults_notes,
        _ => &[],
    }
}

fn field_line(field: &FieldChange) -> String {
    format!(
        "{}: {} → {}",
        field.path,
        value_text(field.old.as_ref()),
        value_text(field.new.as_ref())
    )
}

/// Compact JSON, cut to [`VALUE_WIDTH`] characters; `(none)` when absent.
fn value_text(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "(none)".to_string();
    };
    let text = value.to_string();
    if text.chars().count() <= VALUE_WIDTH {
        return text;
    }
    let mut cut: String = text.chars().take(VALUE_WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// A job's zone and its name, when it is not UTC.
fn shown_zone(job: &Job) -> Option<(TimeZone, String)> {
    let name = job.schedule.as_ref()?.timezone.as_deref()?;
    if matches!(name, "UTC" | "Etc/UTC") {
        return None;
    }
    Some((TimeZone::get(name).ok()?, name.to_string()))
}

fn next_line(slots: &[Slot], zone: Option<&(TimeZone, String)>) -> String {
    if slots.is_empty() {
        return "(none: the schedule's window has ended)".to_string();
    }
    let times: Vec<String> = slots
        .iter()
        .map(|slot| match zone {
            None => slot.fire_at.to_string(),
            Some((tz, name)) => {
                let local = slot.fire_at.to_zoned(tz.clone());
                let format = if local.second() == 0 && local.subsec_nanosecond() == 0 {
                    "%Y-%m-%d %H:%M"
                } else {
                    "%Y-%m-%d %H:%M:%S"
                };
                format!("{} ({} {name})", slot.fire_at, local.strftime(format))
            }
        })
        .collect();
    times.join(", ")
}

fn misfire_name(policy: Misfire) -> &'static str {
    match policy {
        Misfire::RunOnce => "run_once",
        Misfire::Skip => "skip",
        Misfire::RunAll => "run_all",
    }
}

fn limit(max: Option<u32>) -> String {
    max.map_or("unlimited".to_string(), |n| n.to_string())
}

fn runs(n: usize) -> String {
    if n == 1 {
        "1 active run".to_string()
    } else {
        format!("{n} active runs")
    }
}

/// The `plan --output json` document (SPEC section 3), plus `line` on each
/// change, `notes` on a trigger's, and the `catchup`, `lanes_under_load`
/// and `in_flight` facts.
pub fn render_json(r: &PlanReport) -> Value {
    let changes: Vec<Value> = r
        .plan
        .changes
        .iter()
        .map(|change| {
            let mut value = serde_json::to_value(change).unwrap_or(Value::Null);
            let fires: Vec<String> = r
                .next_fires
                .get(&change.id)
                .filter(|_| change.kind == Kind::Job)
                .map(|slots| slots.iter().map(|s| s.fire_at.to_string()).collect())
                .unwrap_or_default();
            if let Value::Object(map) = &mut value {
                map.insert("next_fires".into(), json!(fires));
                let notes = notes_of(r, change);
                if !notes.is_empty() {
                    map.insert("notes".into(), json!(notes));
                }
            }
            value
        })
        .collect();
    let catchup: Vec<Value> = r
        .catchup
        .iter()
        .map(|(id, missed)| {
            json!({
                "job": id,
                "run": missed.run.iter().map(|s| s.nominal.to_string()).collect::<Vec<_>>(),
                "skipped": missed.skipped_total(),
            })
        })
        .collect();
    let lanes: Vec<Value> = r
        .lanes_under_load
        .iter()
        .map(|(id, old, new, active)| {
            json!({"flow": id, "old_max": old, "new_max": new, "active_runs": active})
        })
        .collect();
    let in_flight: Vec<Value> = r
        .in_flight
        .iter()
        .map(|(id, active, what)| json!({"job": id, "active_runs": active, "action": what}))
        .collect();
    json!({
        "revision": r.revision,
        "changes": changes,
        "summary": r.plan.summary,
        "catchup": catchup,
        "lanes_under_load": lanes,
        "in_flight": in_flight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::snapshot::Resource;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    const NOW: &str = "2026-11-22T09:58:30Z";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn res<T: DeserializeOwned + Serialize>(file: &str, line: u32, spec: Value) -> Resource<T> {
        Resource::new(serde_json::from_value(spec).unwrap(), file.into(), line, 1)
    }

    /// A snapshot from `(file, line, document)` triples; `kind` picks the map.
    fn snapshot(docs: &[(&str, u32, Value)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (file, line, doc) in docs {
            let id = doc["id"].as_str().unwrap().to_string();
            match doc.get("kind").and_then(Value::as_str).unwrap_or("Job") {
                "Job" => {
                    s.jobs.insert(id, res(file, *line, without_kind(doc)));
                }
                "Flow" => {
                    s.flows.insert(id, res(file, *line, without_kind(doc)));
                }
                "Connector" => {
                    s.connectors.insert(id, res(file, *line, without_kind(doc)));
                }
                other => panic!("kind {other}"),
            }
        }
        s
    }

    fn without_kind(doc: &Value) -> Value {
        let mut doc = doc.clone();
        doc.as_object_mut().unwrap().remove("kind");
        doc
    }

    fn ctx() -> PlanContext {
        PlanContext::empty(ts(NOW))
    }

    fn text(running: &Snapshot, desired: &Snapshot, ctx: &PlanContext) -> String {
        render_text(&report("rev-1", running, desired, ctx), desired)
    }

    fn a_bit_of_everything() -> (Snapshot, Snapshot, PlanContext) {
        let running = snapshot(&[
            (
                "jobs.d/a.yaml",
                1,
                json!({"id": "report", "type": "noop", "schedule": {"interval_sec": 30}}),
            ),
            (
                "jobs.d/old.yaml",
                2,
                json!({"id": "old-job", "type": "noop"}),
            ),
            ("jobs.d/p.yaml", 1, json!({"id": "paused", "type": "noop"})),
            ("jobs.d/s.yaml", 1, json!({"id": "steady", "type": "noop"})),
            (
                "jobs.d/lanes.yaml",
                1,
                json!({"kind": "Flow", "id": "lane", "max_active_runs": 3}),
            ),
            (
                "jobs.d/c.yaml",
                1,
                json!({"kind": "Connector", "id": "tg", "provider": "telegram",
                       "secrets": {"bot_token": "${env:TG_OLD}"}}),
            ),
        ]);
        let desired = snapshot(&[
            (
                "jobs.d/heartbeat.yaml",
                3,
                json!({"id": "heartbeat", "type": "noop",
                       "schedule": {"cron": "0 17 * * *", "timezone": "Asia/Jakarta"}}),
            ),
            (
                "jobs.d/a.yaml",
                1,
                json!({"id": "report", "type": "noop", "schedule": {"interval_sec": 60}}),
            ),
            (
                "jobs.d/p.yaml",
                1,
                json!({"id": "paused", "type": "noop", "enabled": false}),
            ),
            (
                "jobs.d/moved.yaml",
                7,
                json!({"id": "steady", "type": "noop"}),
            ),
            (
                "jobs.d/lanes.yaml",
                1,
                json!({"kind": "Flow", "id": "lane", "max_active_runs": 1}),
            ),
            (
                "jobs.d/c.yaml",
                1,
                json!({"kind": "Connector", "id": "tg", "provider": "telegram",
                       "secrets": {"bot_token": "${env:TG_NEW}"}}),
            ),
        ]);
        let mut ctx = ctx();
        ctx.last_slots
            .insert("report".into(), ts("2026-11-22T09:50:00Z"));
        ctx.active_runs_by_job.insert("old-job".into(), 2);
        ctx.active_runs_by_job.insert("paused".into(), 1);
        ctx.active_runs_by_job.insert("report".into(), 4);
        ctx.active_runs_by_flow.insert("lane".into(), 5);
        (running, desired, ctx)
    }

    #[test]
    fn text_of_a_bit_of_everything() {
        let (running, desired, ctx) = a_bit_of_everything();
        assert_eq!(
            text(&running, &desired, &ctx),
            "\
1 to create, 4 to update, 1 to delete, 1 unchanged
+ Job heartbeat (jobs.d/heartbeat.yaml:3)
    next: 2026-11-22T10:00:00Z (2026-11-22 17:00 Asia/Jakarta), 2026-11-23T10:00:00Z (2026-11-23 17:00 Asia/Jakarta), 2026-11-24T10:00:00Z (2026-11-24 17:00 Asia/Jakarta)
- Job old-job (jobs.d/old.yaml:2)
~ Job paused (jobs.d/p.yaml:1)
    enabled: true → false
~ Job report (jobs.d/a.yaml:1)
    schedule.interval_sec: 30 → 60
    next: 2026-11-22T09:59:00Z, 2026-11-22T10:00:00Z, 2026-11-22T10:01:00Z
~ Flow lane (jobs.d/lanes.yaml:1)
    max_active_runs: 3 → 1
~ Connector tg (jobs.d/c.yaml:1)
    secrets.bot_token: \"${env:TG_OLD}\" → \"${env:TG_NEW}\"

Missed slots that would be caught up:
    report: 1 to run, 7 skipped (misfire run_once)

Lanes whose limits change under active runs:
    lane: max_active_runs 3 → 1, 5 active runs

Runs in flight of jobs being deleted or disabled:
    old-job: 2 active runs (delete)
    paused: 1 active run (disable)
"
        );
    }

    #[test]
    fn text_without_changes() {
        let s = snapshot(&[
            ("jobs.d/a.yaml", 1, json!({"id": "a", "type": "noop"})),
            (
                "jobs.d/a.yaml",
                4,
                json!({"kind": "Flow", "id": "lane", "implicit": true}),
            ),
        ]);
        assert_eq!(
            text(&s, &s, &ctx()),
            "0 to create, 0 to update, 0 to delete, 2 unchanged\nNo changes. 2 resources unchanged.\n"
        );
        assert_eq!(
            text(&Snapshot::default(), &Snapshot::default(), &ctx()),
            "0 to create, 0 to update, 0 to delete, 0 unchanged\nNo changes. 0 resources unchanged.\n"
        );
    }

    #[test]
    fn text_of_absent_long_and_ended_values() {
        let long = "x".repeat(100);
        let running = snapshot(&[(
            "jobs.d/a.yaml",
            1,
            json!({"id": "back", "type": "noop", "enabled": false,
                   "schedule": {"interval_sec": 3600, "timezone": "UTC", "misfire": "run_all"}}),
        )]);
        let desired = snapshot(&[
            (
                "jobs.d/a.yaml",
                1,
                json!({"id": "back", "type": "noop", "description": long,
                       "schedule": {"interval_sec": 3600, "timezone": "UTC", "misfire": "run_all"}}),
            ),
            (
                "jobs.d/b.yaml",
                1,
                json!({"id": "ended", "type": "noop",
                       "schedule": {"interval_sec": 60, "end_at": "2026-01-01T00:00:00Z"}}),
            ),
            (
                "jobs.d/b.yaml",
                5,
                json!({"id": "off", "type": "noop", "enabled": false,
                       "schedule": {"interval_sec": 60}}),
            ),
            ("jobs.d/b.yaml", 9, json!({"id": "manual", "type": "noop"})),
        ]);
        let mut ctx = ctx();
        ctx.last_slots
            .insert("back".into(), ts("2026-11-22T06:00:00Z"));
        let cut = format!("\"{}…", "x".repeat(VALUE_WIDTH - 2));
        assert_eq!(
            text(&running, &desired, &ctx),
            format!(
                "\
3 to create, 1 to update, 0 to delete, 0 unchanged
~ Job back (jobs.d/a.yaml:1)
    enabled: false → true
    description: (none) → {cut}
    next: 2026-11-22T10:00:00Z, 2026-11-22T11:00:00Z, 2026-11-22T12:00:00Z
+ Job ended (jobs.d/b.yaml:1)
    next: (none: the schedule's window has ended)
+ Job manual (jobs.d/b.yaml:9)
+ Job off (jobs.d/b.yaml:5)

Missed slots that would be caught up:
    back: 3 to run, 0 skipped (misfire run_all)
"
            )
        );
    }

    #[test]
    fn zone_times_show_seconds_only_when_there_are_some() {
        let slot = |s: &str| Slot {
            nominal: ts(s),
            fire_at: ts(s),
        };
        let zone = (
            TimeZone::get("Europe/Berlin").unwrap(),
            "Europe/Berlin".to_string(),
        );
        assert_eq!(
            next_line(
                &[slot("2026-11-22T10:00:00Z"), slot("2026-11-22T10:00:03.5Z")],
                Some(&zone)
            ),
            "2026-11-22T10:00:00Z (2026-11-22 11:00 Europe/Berlin), \
             2026-11-22T10:00:03.5Z (2026-11-22 11:00:03 Europe/Berlin)"
        );
    }

    #[test]
    fn report_facts() {
        let (running, desired, ctx) = a_bit_of_everything();
        let r = report("rev-1", &running, &desired, &ctx);
        let mut fired: Vec<&str> = r.next_fires.keys().map(String::as_str).collect();
        fired.sort();
        assert_eq!(fired, ["heartbeat", "report"]);
        assert_eq!(r.catchup.len(), 1);
        assert_eq!(r.catchup[0].1.run[0].nominal, ts("2026-11-22T09:58:00Z"));
        assert_eq!(
            r.lanes_under_load,
            [("lane".to_string(), Some(3), Some(1), 5)]
        );
        assert_eq!(
            r.in_flight,
            [
                ("old-job".to_string(), 2, "delete"),
                ("paused".to_string(), 1, "disable")
            ]
        );

        // Without active runs nothing is under load or in flight.
        let quiet = report("rev-1", &running, &desired, &PlanContext::empty(ctx.now));
        assert!(quiet.lanes_under_load.is_empty() && quiet.in_flight.is_empty());
        assert!(quiet.catchup.is_empty(), "no last slot, nothing missed");
    }

    #[test]
    fn json_has_the_spec_keys() {
        let (running, desired, ctx) = a_bit_of_everything();
        let value = render_json(&report("abc123-dirty+f00d", &running, &desired, &ctx));
        assert_eq!(value["revision"], "abc123-dirty+f00d");
        assert_eq!(
            value["summary"],
            json!({"create": 1, "update": 4, "delete": 1, "unchanged": 1})
        );
        let changes = value["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 6);
        assert_eq!(
            changes[0],
            json!({
                "action": "create", "kind": "Job", "id": "heartbeat",
                "file": "jobs.d/heartbeat.yaml", "line": 3, "fields": [],
                "next_fires": ["2026-11-22T10:00:00Z", "2026-11-23T10:00:00Z", "2026-11-24T10:00:00Z"],
            })
        );
        assert_eq!(
            changes[5],
            json!({
                "action": "update", "kind": "Connector", "id": "tg",
                "file": "jobs.d/c.yaml", "line": 1,
                "fields": [{"path": "secrets.bot_token", "old": "${env:TG_OLD}", "new": "${env:TG_NEW}"}],
                "next_fires": [],
            })
        );
        for change in changes {
            for key in ["action", "kind", "id", "file", "fields", "next_fires"] {
                assert!(change.get(key).is_some(), "{key} missing in {change}");
            }
        }
        assert_eq!(
            value["catchup"],
            json!([{"job": "report", "run": ["2026-11-22T09:58:00Z"], "skipped": 7}])
        );
        assert_eq!(
            value["lanes_under_load"],
            json!([{"flow": "lane", "old_max": 3, "new_max": 1, "active_runs": 5}])
        );
        assert_eq!(
            value["in_flight"],
            json!([
                {"job": "old-job", "active_runs": 2, "action": "delete"},
                {"job": "paused", "active_runs": 1, "action": "disable"},
            ])
        );
    }
}
