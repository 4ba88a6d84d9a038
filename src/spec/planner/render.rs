//! PURE. A planned job's id (a readable slug: `monitor-telegram-bot-a01`,
//! `laporan-harian-0700`) and its YAML document.
//!
//! Every string from the sentence is written as a double-quoted scalar
//! with JSON escaping (a subset of YAML's), so no quote, colon or `#` in
//! it can change the document's shape.

use std::collections::BTreeSet;

use super::PlannedJob;
use super::when::{ALL_DAYS, Schedule, When};
use super::words::{DAYS, HARI, Intent};

/// The first line of a file `multijob new` wrote: `--force` replaces only
/// such files.
pub const FROM_NEW: &str = "# multijob new: ";

/// Longest id the planner makes (the schema allows 128).
const MAX_ID: usize = 100;

/// Where `new` writes a job, relative to the config directory.
pub fn file_of(id: &str) -> String {
    format!("jobs.d/{id}.yaml")
}

/// Lowercase letters, digits and single dashes.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The id of a job: what it does, on which channel and account, and when.
pub fn id(
    intent: Intent,
    word: &str,
    channel: Option<&str>,
    account: Option<&str>,
    when: &When,
    indonesian: bool,
) -> String {
    let parts: Vec<String> = match intent {
        Intent::Monitor => vec![
            "monitor".into(),
            channel.unwrap_or("connectors").into(),
            account.unwrap_or_default().into(),
        ],
        Intent::Report | Intent::Backup => vec![word.into(), cadence(when, indonesian)],
        Intent::Agent => vec![
            word.into(),
            channel.unwrap_or_default().into(),
            cadence(when, indonesian),
        ],
    };
    let joined = slug(&parts.join("-"));
    let mut cut: String = joined.chars().take(MAX_ID).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    cut
}

/// `harian-0700`, `senin-jumat-0200`, `tiap-30s`, `every-5m-weekdays`.
fn cadence(when: &When, indonesian: bool) -> String {
    let days = days(when.days.unwrap_or(ALL_DAYS), indonesian, when.at.is_some());
    match (when.every, when.at) {
        (Some((n, u)), _) => {
            let every = if indonesian { "tiap" } else { "every" };
            format!("{every}-{n}{u}-{days}")
        }
        (None, Some((h, m))) => format!("{days}-{h:02}{m:02}"),
        (None, None) => days,
    }
}

/// The days' words; every day says `harian`/`daily` only beside a time.
fn days(mask: u8, indonesian: bool, timed: bool) -> String {
    let names = if indonesian { &HARI } else { &DAYS };
    match mask {
        ALL_DAYS if timed => (if indonesian { "harian" } else { "daily" }).into(),
        ALL_DAYS => String::new(),
        0b011_1110 => (if indonesian {
            "senin-jumat"
        } else {
            "weekdays"
        })
        .into(),
        0b100_0001 => (if indonesian { "akhir-pekan" } else { "weekend" }).into(),
        _ => (0..7)
            .filter(|d| mask & (1 << d) != 0)
            .map(|d| names[d])
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// `id`, else `id-2`, `id-3`, ... whichever is not in `used`.
pub fn unique(id: String, used: &BTreeSet<String>) -> String {
    if !used.contains(&id) {
        return id;
    }
    (2..)
        .map(|n| format!("{id}-{n}"))
        .find(|c| !used.contains(c))
        .unwrap_or(id)
}

/// A double-quoted YAML scalar.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The job's document, starting with the sentence it comes from.
pub fn yaml(job: &PlannedJob, sentence: &str) -> String {
    let mut y = format!("{FROM_NEW}{}\n", q(sentence));
    y.push_str("kind: Job\n");
    y.push_str(&format!("id: {}\n", q(&job.id)));
    y.push_str(&format!("type: {}\n", job.job_type));
    y.push_str(&format!("description: {}\n", q(&job.part)));
    let mut labels = Vec::new();
    if let Some(c) = &job.channel {
        labels.push(format!("channel: {}", q(c)));
    }
    if let Some(a) = &job.account {
        labels.push(format!("account: {}", q(a)));
    }
    if !labels.is_empty() {
        y.push_str(&format!("labels: {{{}}}\n", labels.join(", ")));
    }
    match &job.schedule {
        Schedule::Every(e) => y.push_str(&format!(
            "schedule:\n  every: {}\n  timezone: {}\n",
            q(e),
            q(&job.timezone)
        )),
        Schedule::Cron(c) => y.push_str(&format!(
            "schedule:\n  cron: {}\n  timezone: {}\n",
            q(c),
            q(&job.timezone)
        )),
        Schedule::None => {}
    }
    y.push_str(&inputs(job));
    y
}

/// `inputs:` (and `steps:` of a workflow) for the job's type.
fn inputs(job: &PlannedJob) -> String {
    let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    match job.job_type {
        "monitor.channel" => match job.connectors.first() {
            Some(c) => format!("inputs:\n  connector: {}\n", q(c)),
            None => String::new(),
        },
        "report.daily" => {
            let mut s = format!(
                "inputs:\n  period: {}\n  formats: [\"md\", \"json\"]\n",
                q(job.period.as_deref().unwrap_or("24h"))
            );
            if !job.connectors.is_empty() {
                s.push_str(&format!("  deliver_to: [{}]\n", list(&job.connectors)));
            }
            s
        }
        "backup.export" => "inputs:\n  include_runs: true\n  keep: 7\n".into(),
        _ => format!(
            "# A placeholder: replace this step with the workflow's steps.\nsteps:\n  - id: request\n    set:\n      request: {}\n",
            q(&job.part)
        ),
    }
}
