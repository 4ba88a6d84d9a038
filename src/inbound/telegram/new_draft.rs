//! `/new <sentence>` and `/apply`: a chat authors jobs the way
//! `multijob new` does ([`crate::reconcile::author`]). `/new` plans the
//! sentence against the daemon's config directory (zone: `MULTIJOB_TZ`,
//! else the system's; no channel or account defaults), replies with the
//! YAML and the plan, and keeps the draft for the chat ([`super::drafts`]).
//! `/apply` validates it again against the directory as it is now,
//! writes the files and, in a git checkout, commits exactly them with
//! the chat user as author and the sentence as message. The daemon then
//! applies them through its normal watch and reconcile: nothing here
//! enables a job.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use super::api::User;
use super::bridge::MAX_REPLY_CHARS;
use super::commands::{Answer, Asked, Desk};
use super::drafts::{Missing, Pending};
use crate::reconcile::author::{self, Author, Committed, Draft, Workspace};
use crate::reconcile::render;
use crate::spec::planner;
use crate::store::{Mutation, NewEvent};

/// Longest sentence `/new` takes, in characters.
pub const MAX_SENTENCE_CHARS: usize = 500;
/// Longest author name written into a commit.
const MAX_NAME_CHARS: usize = 64;

impl Desk {
    /// `/new <sentence>`: the draft's YAML and plan, kept for `/apply`.
    /// Any `/new` forgets the chat's older draft, even one refused.
    pub(super) async fn new_draft(&self, asked: &Asked) -> Answer {
        self.drafts.clear(asked.chat);
        let sentence = asked.line.rest.trim().to_string();
        if sentence.is_empty() {
            return Answer::says(
                "usage: /new SENTENCE, e.g. /new pantau telegram tiap 30 detik dan laporan harian jam 07:00",
            );
        }
        let chars = sentence.chars().count();
        if chars > MAX_SENTENCE_CHARS {
            return Answer::says(format!(
                "/new: the sentence is {chars} characters; at most {MAX_SENTENCE_CHARS}. Say less, or run `multijob new` on the config directory; nothing pending"
            ));
        }
        let dir = self.shared.dir.clone();
        let now = jiff::Timestamp::now();
        let text = sentence.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&dir, &text, now)).await;
        let (work, drafts, after) = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => return Answer::says(format!("/new refused: {why}\nnothing pending")),
            Err(e) => return Answer::says(format!("/new failed ({e}); nothing pending")),
        };
        let report = author::plan(&self.shared.dir, &work.before, &after, now).await;
        let plan = render::render_text(&report, &after.snapshot);
        let files: Vec<&str> = drafts.iter().map(|d| d.file.as_str()).collect();
        let tail = format!(
            "/apply within {} min writes {} and commits them as you; a newer /new replaces this draft.",
            self.drafts.ttl().as_secs().div_ceil(60),
            files.join(", ")
        );
        let reply = planned_reply(&drafts, &plan, &tail);
        self.record(
            "bridge.new_planned",
            json!({"chat": asked.chat, "user": asked.sender, "jobs": ids(&drafts)}),
        );
        self.drafts
            .put(asked.chat, Pending { sentence, drafts }, Instant::now());
        Answer::says(reply)
    }

    /// `/apply`: this chat's draft, checked again, written and committed.
    pub(super) async fn apply_draft(&self, asked: &Asked) -> Answer {
        let pending = match self.drafts.take(asked.chat, Instant::now()) {
            Ok(p) => p,
            Err(missing) => return Answer::says(missing_reply(&missing, self.drafts.ttl())),
        };
        let dir = self.shared.dir.clone();
        let drafts = pending.drafts.clone();
        let written = tokio::task::spawn_blocking(move || recheck_and_write(&dir, drafts)).await;
        let files = match written {
            Ok(Ok(files)) => files,
            Ok(Err(why)) => {
                return Answer::says(format!(
                    "/apply refused, nothing written: {why}\nsend /new again"
                ));
            }
            Err(e) => return Answer::says(format!("/apply failed ({e}); nothing written")),
        };
        let who = author_of(asked.user.as_ref(), asked.chat);
        let committed = author::commit(&self.shared.dir, &files, &who, &pending.sentence).await;
        let (commit, text) = match committed {
            Ok(Committed::Commit(hash)) => (
                Value::String(hash.clone()),
                format!(
                    "committed {hash} ({}) as {}; the daemon applies it",
                    files.join(", "),
                    who.name
                ),
            ),
            Ok(Committed::NotACheckout) => (
                Value::Null,
                format!(
                    "written, not a git checkout: {}; the daemon applies it",
                    files.join(", ")
                ),
            ),
            Err(why) => (
                Value::Null,
                format!(
                    "written {} but not committed: {why}; commit them by hand (the daemon applies them anyway)",
                    files.join(", ")
                ),
            ),
        };
        self.record(
            "bridge.new_applied",
            json!({"chat": asked.chat, "user": asked.sender,
                "jobs": ids(&pending.drafts), "commit": commit}),
        );
        Answer::says(text)
    }

    fn record(&self, kind: &str, mut data: Value) {
        data["connector"] = json!(self.connector);
        let event = NewEvent::new(kind, data);
        if let Err(e) = self.shared.store.submit(vec![Mutation::Event(event)]) {
            tracing::warn!(connector = %self.connector, error = %e, "cannot record a bridge event");
        }
    }
}

/// Plan `sentence` against the directory as it is: the drafts, checked
/// with it (no id taken, no error anywhere).
fn prepare(
    dir: &Path,
    sentence: &str,
    now: jiff::Timestamp,
) -> Result<(Workspace, Vec<Draft>, crate::spec::Loaded), String> {
    let tz = std::env::var("MULTIJOB_TZ").ok();
    let zone = author::zone(tz.as_deref(), "the daemon's MULTIJOB_TZ")?;
    let work = Workspace::read(dir, now).map_err(|e| e.to_string())?;
    let opts = work.options(zone, None, None);
    let jobs = planner::plan(sentence, &opts).map_err(|e| e.to_string())?;
    let mut drafts: Vec<Draft> = jobs.into_iter().map(|j| Draft::of(j, sentence)).collect();
    let after = work
        .check(dir, &mut drafts, false)
        .map_err(|e| e.to_string())?;
    Ok((work, drafts, after))
}

/// The drafts checked against the directory as it is now (it may have
/// changed since `/new`), then written; the paths written.
fn recheck_and_write(dir: &Path, mut drafts: Vec<Draft>) -> Result<Vec<String>, String> {
    let work = Workspace::read(dir, jiff::Timestamp::now()).map_err(|e| e.to_string())?;
    work.check(dir, &mut drafts, false)
        .map_err(|e| e.to_string())?;
    author::write(dir, &drafts).map_err(|e| e.to_string())
}

/// The YAML, warnings, plan and `tail`, fitting one Telegram message:
/// when too long, the YAML is cut with a note (the plan and how to apply
/// always show).
fn planned_reply(drafts: &[Draft], plan: &str, tail: &str) -> String {
    let mut yaml = String::new();
    for d in drafts {
        yaml.push_str(&format!("--- {}\n{}", d.file, d.yaml));
    }
    let mut rest = String::from("\n");
    for w in drafts.iter().flat_map(|d| &d.warnings) {
        rest.push_str(&format!("warning: {w}\n"));
    }
    rest.push_str(plan);
    rest.push_str(tail);
    let room = MAX_REPLY_CHARS.saturating_sub(rest.chars().count());
    let total = yaml.chars().count();
    if total > room {
        let note = format!(
            "\n[... YAML cut: {} of {total} characters shown; `multijob new --dry-run` prints it all]\n",
            room.saturating_sub(120)
        );
        yaml = yaml.chars().take(room.saturating_sub(120)).collect();
        yaml.push_str(&note);
    }
    yaml + &rest
}

fn missing_reply(missing: &Missing, ttl: std::time::Duration) -> String {
    match missing {
        Missing::Nothing => "/apply: nothing pending in this chat; send /new SENTENCE first (drafts are per chat, kept in the bridge's memory); nothing written".to_string(),
        Missing::Expired { age } => format!(
            "/apply: this chat's draft expired ({}s old, drafts wait {}s); send /new again; nothing written",
            age.as_secs(),
            ttl.as_secs()
        ),
        Missing::Taken => "/apply: this chat's draft was applied already (once per /new); send /new for another; nothing written".to_string(),
    }
}

/// The commit author for a chat user: their first and last name, else
/// username, else `telegram user ID`; the email names the user id.
fn author_of(user: Option<&User>, chat: i64) -> Author {
    let Some(user) = user else {
        return Author {
            name: format!("telegram chat {chat}"),
            email: format!("telegram-chat{chat}@users.noreply.telegram"),
        };
    };
    let full = [&user.first_name, &user.last_name]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let name = Some(full)
        .filter(|n| !n.is_empty())
        .or_else(|| user.username.clone())
        .unwrap_or_else(|| format!("telegram user {}", user.id));
    // `<`, `>` and control characters would break `Name <email>`.
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .take(MAX_NAME_CHARS)
        .collect();
    let name = match clean.trim() {
        "" => format!("telegram user {}", user.id),
        n => n.to_string(),
    };
    Author {
        name,
        email: format!("telegram-{}@users.noreply.telegram", user.id),
    }
}

fn ids(drafts: &[Draft]) -> Vec<&str> {
    drafts.iter().map(|d| d.job.id.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(first: Option<&str>, last: Option<&str>, username: Option<&str>) -> User {
        User {
            id: 42,
            username: username.map(str::to_string),
            first_name: first.map(str::to_string),
            last_name: last.map(str::to_string),
        }
    }

    #[test]
    fn the_author_is_the_chat_user() {
        let a = author_of(Some(&user(Some("Ana"), Some("Sari"), Some("ana"))), 1);
        assert_eq!(a.name, "Ana Sari");
        assert_eq!(a.email, "telegram-42@users.noreply.telegram");
        let a = author_of(Some(&user(None, None, Some("ana"))), 1);
        assert_eq!(a.name, "ana");
        let a = author_of(Some(&user(Some("<>\n"), None, None)), 1);
        assert_eq!(a.name, "telegram user 42", "nothing usable left");
        let a = author_of(None, -100);
        assert_eq!(a.email, "telegram-chat-100@users.noreply.telegram");
    }

    #[test]
    fn a_long_reply_cuts_the_yaml_not_the_plan() {
        let job = planner::plan(
            "laporan harian jam 07:00",
            &planner::Options {
                timezone: "UTC".into(),
                channel: Some("telegram".into()),
                account: None,
                connectors: Vec::new(),
            },
        )
        .expect("plans");
        let mut d = Draft::of(job[0].clone(), "laporan harian jam 07:00");
        d.yaml.push_str(&"# padding\n".repeat(1000));
        let reply = planned_reply(&[d], "PLAN\n", "TAIL");
        assert!(reply.chars().count() <= MAX_REPLY_CHARS, "{}", reply.len());
        assert!(reply.contains("YAML cut"), "{reply}");
        assert!(reply.ends_with("PLAN\nTAIL"), "{reply}");
    }
}
