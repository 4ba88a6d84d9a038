//! `multijob cron "<expr>"`: a schedule previewed before it goes into a
//! job: the expression in words, its next fires in the zone and in UTC,
//! and what the `dst` policy does with each fire a DST change skips or
//! repeats in the next 12 months. The same slot math the scheduler runs
//! and the same checks `validate` makes, so a bad expression gets the
//! same message here as in a job file.

use anyhow::anyhow;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde_json::{Value, json};

use super::{Outcome, OutputFormat};
use crate::calendar::describe::describe;
use crate::calendar::dst_effects::{DstEffects, dst_effects};
use crate::calendar::schedule::{DstGap, DstOverlap, DstPolicy, Schedule};
use crate::calendar::slots::SlotRule;

/// The most fires one call lists.
pub const MAX_COUNT: u64 = 1000;
/// The most DST-affected fires listed; the rest are counted.
const MAX_DST_LISTED: usize = 100;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  multijob cron \"0 7 * * MON-FRI\" --tz Asia/Jakarta
  multijob cron \"30 2 * * *\" --tz Europe/Berlin --dst-gap skip --dst-overlap both
  multijob cron \"*/5 * * * *\" --count 3 -o json
  multijob cron \"@daily\" --tz America/New_York --from 2027-03-01T00:00:00Z

Environment: MULTIJOB_TZ (--tz; else the system zone, else UTC)")]
pub struct Args {
    /// A cron expression: 5 fields, or 6 with seconds first; `@daily`-style aliases.
    pub expression: String,
    /// IANA time zone the expression is read in [default: MULTIJOB_TZ, else the system zone, else UTC].
    #[arg(long)]
    pub tz: Option<String>,
    /// How many fires to list (1-1000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    pub count: u64,
    /// List fires after this RFC 3339 instant instead of now.
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<Timestamp>,
    /// A wall time a spring-forward skips: run when the gap ends, or skip it (as a job's `dst.gap`).
    #[arg(long, value_enum, default_value_t = GapArg::Shift)]
    pub dst_gap: GapArg,
    /// A wall time a fall-back repeats: run at the first, the last, or both (as a job's `dst.overlap`).
    #[arg(long, value_enum, default_value_t = OverlapArg::First)]
    pub dst_overlap: OverlapArg,
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GapArg {
    Shift,
    Skip,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OverlapArg {
    First,
    Last,
    Both,
}

fn parse_instant(text: &str) -> Result<Timestamp, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not an RFC 3339 instant such as 2027-03-01T00:00:00Z"))
}

/// The zone's name and where it came from.
fn zone(flag: Option<String>) -> (String, &'static str) {
    if let Some(name) = flag {
        return (name, "--tz");
    }
    if let Ok(name) = std::env::var("MULTIJOB_TZ")
        && !name.trim().is_empty()
    {
        return (name.trim().to_string(), "MULTIJOB_TZ");
    }
    match TimeZone::try_system()
        .ok()
        .and_then(|tz| tz.iana_name().map(str::to_string))
    {
        Some(name) => (name, "the system zone"),
        None => (
            "UTC".to_string(),
            "no --tz, MULTIJOB_TZ or system zone found",
        ),
    }
}

pub fn exec(args: Args) -> anyhow::Result<Outcome> {
    let (zone_name, source) = zone(args.tz.clone());
    let schedule = Schedule {
        cron: Some(args.expression.clone()),
        timezone: Some(zone_name.clone()),
        dst: DstPolicy {
            gap: match args.dst_gap {
                GapArg::Shift => DstGap::Shift,
                GapArg::Skip => DstGap::Skip,
            },
            overlap: match args.dst_overlap {
                OverlapArg::First => DstOverlap::First,
                OverlapArg::Last => DstOverlap::Last,
                OverlapArg::Both => DstOverlap::Both,
            },
        },
        ..Schedule::default()
    };
    let rule = SlotRule::compile(&schedule, "cron").map_err(|e| {
        let mut message = e.to_string();
        if e.field == "timezone" {
            message.push_str(&crate::spec::suggest::zone_hint(&zone_name));
            message.push_str(&format!(" (the zone came from {source})"));
        }
        anyhow!("{message}")
    })?;
    let description = describe(&args.expression).map_err(|m| anyhow!("cron: {m}"))?;
    let tz = rule.timezone().clone();
    let from = args.from.unwrap_or_else(Timestamp::now);
    let until = from
        .to_zoned(tz.clone())
        .checked_add(Span::new().years(1))
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX);
    let next: Vec<Timestamp> = rule
        .next_slots(from, args.count as usize)
        .iter()
        .map(|s| s.nominal)
        .collect();
    let dst = dst_effects(&schedule, from, until, MAX_DST_LISTED)?;
    let preview = Preview {
        expression: &args.expression,
        description,
        zone: &zone_name,
        source,
        tz: &tz,
        next,
        dst,
        policy: schedule.dst,
    };
    match args.output {
        OutputFormat::Text => print!("{}", preview.text()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&preview.json())?),
    }
    Ok(Outcome::Success)
}

struct Preview<'a> {
    expression: &'a str,
    description: String,
    zone: &'a str,
    source: &'static str,
    tz: &'a TimeZone,
    next: Vec<Timestamp>,
    dst: DstEffects,
    policy: DstPolicy,
}

impl Preview<'_> {
    fn local(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %:z %a")
            .to_string()
    }

    fn local_rfc3339(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    fn text(&self) -> String {
        let mut out = format!(
            "{}\n  {}\ntime zone: {} ({})\nnext {} fires:\n",
            self.expression,
            self.description,
            self.zone,
            self.source,
            self.next.len()
        );
        for t in &self.next {
            out.push_str(&format!("  {}   {}\n", self.local(*t), utc(*t)));
        }
        out.push_str(&format!(
            "DST in the next 12 months (dst.gap: {}, dst.overlap: {}):\n",
            policy_name(&self.policy.gap),
            policy_name(&self.policy.overlap)
        ));
        if self.dst.changes == 0 {
            out.push_str(&format!(
                "  no fire falls in a DST change ({} changes no clocks in that time)\n",
                self.zone
            ));
        } else if self.dst.effects.is_empty() {
            out.push_str(&format!(
                "  no fire falls in a DST change ({} clock changes, none at a fire)\n",
                self.dst.changes
            ));
        }
        for effect in &self.dst.effects {
            out.push_str(&format!("  {}\n", effect.sentence(self.tz)));
        }
        if self.dst.more > 0 {
            out.push_str(&format!("  ... and {} more\n", self.dst.more));
        }
        out
    }

    fn json(&self) -> Value {
        let at = |t: &Timestamp| json!({"local": self.local_rfc3339(*t), "utc": utc(*t)});
        let dst: Vec<Value> = self
            .dst
            .effects
            .iter()
            .map(|e| {
                json!({
                    "local": e.wall.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
                    "kind": e.kind.as_str(),
                    "action": e.action,
                    "runs_at": e.runs_at.iter().map(at).collect::<Vec<_>>(),
                    "text": e.sentence(self.tz),
                })
            })
            .collect();
        json!({
            "expression": self.expression,
            "description": self.description,
            "timezone": self.zone,
            "timezone_source": self.source,
            "next": self.next.iter().map(at).collect::<Vec<_>>(),
            "dst": dst,
            "dst_more": self.dst.more,
            "dst_changes": self.dst.changes,
        })
    }
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn policy_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
