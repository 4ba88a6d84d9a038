//! PURE. The rule-based planner of `multijob new`: a sentence in
//! Indonesian or English → jobs, each as YAML text for `jobs.d/<id>.yaml`.
//!
//! The sentence splits into parts at `dan`/`and`/`,`/`;`; a part with
//! its own intent word (monitor, report, backup, agent workflow) becomes
//! one job (a monitor of two channels, two), a part without one belongs
//! to its neighbour (`sabtu dan minggu`, `dan kirim ke email`). [`words`]
//! holds the vocabulary, [`when`] reads intervals, times and days,
//! [`render`] writes the ids and the YAML. Nothing here reads files, the
//! clock or the environment: the zone, the defaults and the directory's
//! connectors are arguments, and `validate` checks the result.

pub mod ai;
pub mod render;
pub mod when;
pub mod words;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use crate::spec::model::Provider;
use when::{Schedule, When};
use words::{Intent, Token};

pub use render::{FROM_NEW, file_of};

/// What the planner is told beside the sentence.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// IANA zone written into each schedule.
    pub timezone: String,
    /// The channel of a part that names none (`--channel`).
    pub channel: Option<String>,
    /// The account of a channel a part names without one (`--account`).
    pub account: Option<String>,
    /// The directory's connectors: id and provider.
    pub connectors: Vec<(String, Provider)>,
}

/// One job the sentence asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedJob {
    pub id: String,
    pub job_type: &'static str,
    /// The part of the sentence it comes from.
    pub part: String,
    pub schedule: Schedule,
    pub timezone: String,
    /// The channel it checks (monitor) or the first it delivers to.
    pub channel: Option<String>,
    /// Connector ids: checked (monitor) or delivered to (report).
    pub connectors: Vec<String>,
    pub account: Option<String>,
    /// `period` of a report.
    pub period: Option<String>,
    pub warnings: Vec<String>,
}

impl PlannedJob {
    /// Its document for `jobs.d/<id>.yaml`.
    pub fn yaml(&self, sentence: &str) -> String {
        render::yaml(self, sentence)
    }

    /// `every 30s`, `cron 0 7 * * *` or `none`.
    pub fn schedule_text(&self) -> String {
        match &self.schedule {
            Schedule::Every(e) => format!("every {e}"),
            Schedule::Cron(c) => format!("cron {c}"),
            Schedule::None => "none".into(),
        }
    }
}

/// Why a sentence plans nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the sentence is too long ({bytes} bytes or more); `multijob new` reads at most {} bytes: describe a few jobs, not a file",
        words::MAX_SENTENCE_BYTES
    )]
    TooLong { bytes: usize },
    #[error(
        "the sentence holds a control character {ch:?} at byte {at}: write it on one line of plain text"
    )]
    Control { at: usize, ch: char },
    #[error("the sentence is empty: say what to run and when{EXAMPLES}")]
    Empty,
    #[error(
        "nothing to plan in {sentence:?}: no job word (monitor/pantau, laporan/report, backup, workflow), channel, interval or time{EXAMPLES}"
    )]
    Meaningless { sentence: String },
    #[error("in {part:?}: {message}")]
    Part { part: String, message: String },
    #[error("{what} {value:?}: {why}")]
    Option {
        what: &'static str,
        value: String,
        why: String,
    },
}

/// Shown after an error about the sentence as a whole.
pub const EXAMPLES: &str = "
examples:
  multijob new \"Pantau telegram akun bot_a01 tiap 30 detik dan buat laporan harian jam 07:00\"
  multijob new \"monitor slack every 5 minutes and a daily report at 7pm to email\"
  multijob new \"backup setiap senin-jumat jam 2 malam\"";

/// Most characters of an account name.
const MAX_ACCOUNT: usize = 64;

/// The jobs `sentence` asks for, with ids unique among themselves.
pub fn plan(sentence: &str, opts: &Options) -> Result<Vec<PlannedJob>, PlanError> {
    let tokens = words::tokenize(sentence)?;
    if tokens.iter().all(|t| t.sep) {
        return Err(PlanError::Empty);
    }
    check_options(opts)?;
    let indonesian = tokens.iter().any(|t| words::is_indonesian(&t.lower));
    let parts = parts(&tokens);
    let mut read = Vec::new();
    for part in &parts {
        read.push(Read::of(part)?);
    }
    if read.iter().all(Read::is_empty) {
        return Err(PlanError::Meaningless {
            sentence: sentence.to_string(),
        });
    }
    let mut jobs = Vec::new();
    for r in read {
        jobs.extend(r.jobs(opts, indonesian)?);
    }
    let mut used = BTreeSet::new();
    for job in &mut jobs {
        job.id = render::unique(std::mem::take(&mut job.id), &used);
        used.insert(job.id.clone());
    }
    Ok(jobs)
}

fn check_options(opts: &Options) -> Result<(), PlanError> {
    if let Some(c) = &opts.channel
        && words::channel(&c.to_lowercase()).is_none()
    {
        return Err(PlanError::Option {
            what: "--channel",
            value: c.clone(),
            why: "not a channel: telegram (tg), whatsapp (wa), email (gmail), slack".into(),
        });
    }
    if let Some(a) = &opts.account {
        check_account(a, "--account")?;
    }
    Ok(())
}

/// Account names are labels and slugs: plain characters only, so no
/// quote or colon can change the YAML around them.
fn check_account(account: &str, part: &str) -> Result<(), PlanError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-@+".contains(c);
    if account.is_empty() || account.len() > MAX_ACCOUNT || !account.chars().all(plain) {
        return Err(PlanError::Option {
            what: if part == "--account" {
                "--account"
            } else {
                "account"
            },
            value: account.to_string(),
            why: format!(
                "an account name is 1–{MAX_ACCOUNT} letters, digits, `.`, `_`, `-`, `@` or `+`{}",
                if part == "--account" {
                    String::new()
                } else {
                    format!(" (in {part:?})")
                }
            ),
        });
    }
    Ok(())
}

/// The sentence's parts: split at separators; a part without an intent
/// word joins the part before it (or, first, the one after it).
fn parts(tokens: &[Token]) -> Vec<Vec<Token>> {
    let mut groups: Vec<Vec<Token>> = Vec::new();
    let mut current = Vec::new();
    for t in tokens {
        if t.sep {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
        } else {
            current.push(t.clone());
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    let mut out: Vec<Vec<Token>> = Vec::new();
    let mut pending: Vec<Token> = Vec::new();
    for g in groups {
        let has_intent = g.iter().any(|t| words::intent(&t.lower).is_some());
        match out.last_mut() {
            Some(last) if !has_intent => last.extend(g),
            _ if !has_intent => pending.extend(g),
            _ => {
                let mut g = g;
                if !pending.is_empty() {
                    g.splice(0..0, std::mem::take(&mut pending));
                }
                out.push(g);
            }
        }
    }
    if !pending.is_empty() {
        out.push(pending);
    }
    out
}

/// What one part says.
struct Read {
    text: String,
    intent: Option<(Intent, String)>,
    channels: Vec<&'static str>,
    account: Option<String>,
    when: When,
}

impl Read {
    fn of(tokens: &[Token]) -> Result<Read, PlanError> {
        let text = tokens
            .iter()
            .map(|t| t.raw.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let intent = tokens
            .iter()
            .find_map(|t| words::intent(&t.lower).map(|i| (i, t.lower.clone())));
        let mut channels = Vec::new();
        for t in tokens {
            if let Some(c) = words::channel(&t.lower)
                && !channels.contains(&c)
            {
                channels.push(c);
            }
        }
        let account = tokens
            .windows(2)
            .find(|w| matches!(w[0].lower.as_str(), "akun" | "account" | "acc"))
            .map(|w| w[1].raw.clone());
        if let Some(a) = &account {
            check_account(a, &text)?;
        }
        let when = when::read(tokens, &text)?;
        Ok(Read {
            text,
            intent,
            channels,
            account,
            when,
        })
    }

    fn is_empty(&self) -> bool {
        self.intent.is_none()
            && self.channels.is_empty()
            && self.account.is_none()
            && self.when.is_empty()
    }

    /// The part's jobs: one per channel for a monitor, else one.
    fn jobs(self, opts: &Options, indonesian: bool) -> Result<Vec<PlannedJob>, PlanError> {
        let mut warnings = Vec::new();
        let (intent, word) = self.intent.clone().unwrap_or_else(|| {
            warnings.push(format!(
                "no job word in {:?} (monitor/pantau, laporan/report, backup, workflow): planned as agent.workflow with a placeholder step to replace",
                self.text
            ));
            (Intent::Agent, "agent".to_string())
        });
        let mut channels: Vec<String> = self.channels.iter().map(|c| c.to_string()).collect();
        if channels.is_empty()
            && let Some(c) = opts
                .channel
                .as_deref()
                .and_then(|c| words::channel(&c.to_lowercase()))
        {
            channels.push(c.to_string());
        }
        let account = self.account.clone().or_else(|| opts.account.clone());
        let when = with_default(&self.when, intent, &mut warnings, &self.text);
        let schedule = when::schedule(&when, &self.text)?;
        let id = |channel: Option<&String>| {
            render::id(
                intent,
                &word,
                channel.map(String::as_str),
                account.as_deref(),
                &when,
                indonesian,
            )
        };
        let base = PlannedJob {
            id: id(channels.first()),
            job_type: intent.job_type(),
            part: self.text.clone(),
            schedule,
            timezone: opts.timezone.clone(),
            channel: channels.first().cloned(),
            connectors: channels.iter().map(|c| connector(c, opts)).collect(),
            account: account.clone(),
            period: (intent == Intent::Report).then(|| period(&when)),
            warnings,
        };
        Ok(match intent {
            Intent::Monitor if channels.len() > 1 => channels
                .iter()
                .map(|c| PlannedJob {
                    id: id(Some(c)),
                    channel: Some(c.clone()),
                    connectors: vec![connector(c, opts)],
                    ..base.clone()
                })
                .collect(),
            Intent::Backup if !channels.is_empty() => vec![PlannedJob {
                warnings: [
                    base.warnings.clone(),
                    vec![format!(
                        "backup.export writes to the data dir; the channel {} is not used",
                        channels.join(", ")
                    )],
                ]
                .concat(),
                ..base
            }],
            _ => vec![base],
        })
    }
}

/// A part without a time gets its type's usual one, with a warning:
/// monitors every minute, reports at 07:00, backups at 02:00; an agent
/// workflow runs when triggered.
fn with_default(when: &When, intent: Intent, warnings: &mut Vec<String>, part: &str) -> When {
    if when.every.is_some() || when.at.is_some() {
        return when.clone();
    }
    let mut out = when.clone();
    let said = match intent {
        Intent::Monitor => {
            out.every = Some((1, 'm'));
            "every minute"
        }
        Intent::Report => {
            out.at = Some((7, 0));
            "at 07:00"
        }
        Intent::Backup => {
            out.at = Some((2, 0));
            "at 02:00"
        }
        Intent::Agent if when.days.is_some() => {
            out.at = Some((9, 0));
            "at 09:00"
        }
        Intent::Agent => return out,
    };
    warnings.push(format!(
        "no interval or time in {part:?}: planned {said}; edit the schedule if that is not it"
    ));
    out
}

/// A report covers the time since the one before: its interval, a week
/// for a weekly one, else a day.
fn period(when: &When) -> String {
    match (when.every, when.days) {
        (Some((n, 'd')), _) => format!("{}h", n * 24),
        (Some((n, u)), _) => format!("{n}{u}"),
        (None, Some(d)) if d.count_ones() == 1 => "168h".into(),
        _ => "24h".into(),
    }
}

/// The connector of a channel: the one with its name, else the only one
/// of its provider, else its name (validation then says none exists).
fn connector(channel: &str, opts: &Options) -> String {
    if opts.connectors.iter().any(|(id, _)| id == channel) {
        return channel.to_string();
    }
    let provider = match channel {
        "telegram" => Provider::Telegram,
        "whatsapp" => Provider::Whatsapp,
        "email" => Provider::Smtp,
        _ => Provider::Slack,
    };
    let mut of_provider = opts.connectors.iter().filter(|(_, p)| *p == provider);
    match (of_provider.next(), of_provider.next()) {
        (Some((id, _)), None) => id.clone(),
        _ => channel.to_string(),
    }
}
