//! What a bridge does with one command from an allowed chat: `/help`,
//! `/run JOB k=v ...`, a skill's `command_prefix`, and (in [`super::views`]
//! and [`super::decide`]) `/jobs`, `/status`, `/approve`, `/reject`. Each
//! returns the reply text and, for a run it queued, the run to follow to
//! its end. Runs go through [`Intake`] with the update's id as the
//! delivery id, so a re-read update queues nothing new.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::api::User;
use super::drafts::Drafts;
use super::parse::{self, CommandLine};
use crate::inbound::{Accepted, Delivery, Intake, SubmitError};
use crate::spec::model::{BridgeCommand, Skill, skill_job_id};
use crate::spec::suggest;
use crate::status::state::Shared;
use crate::store::runs::Trigger;

/// What a bridge knows when it answers: its connector, the commands it
/// allows, the daemon's state and where runs go.
pub(super) struct Desk {
    pub connector: String,
    pub commands: Vec<BridgeCommand>,
    pub shared: Arc<Shared>,
    pub intake: Intake,
    /// Each chat's `/new` draft waiting for `/apply` (in memory).
    pub drafts: Drafts,
}

/// One command as asked: the update it came in, and who asked.
pub(super) struct Asked {
    pub update_id: i64,
    pub sender: String,
    pub chat: i64,
    pub user: Option<User>,
    pub line: CommandLine,
}

/// The reply, and the run it queued (to report its end).
#[derive(Debug, Default)]
pub(super) struct Answer {
    pub text: String,
    pub run: Option<QueuedRun>,
    /// The command was one this bridge takes (an `inbound.command`
    /// event), not an unknown or disabled one.
    pub accepted: bool,
}

#[derive(Debug, Clone)]
pub(super) struct QueuedRun {
    pub run_id: String,
    pub job_id: String,
}

impl Answer {
    pub fn says(text: impl Into<String>) -> Answer {
        Answer {
            text: text.into(),
            run: None,
            accepted: true,
        }
    }
}

impl Desk {
    /// The `telegram:<connector>` origin of this bridge's runs.
    pub fn origin(&self) -> String {
        format!("telegram:{}", self.connector)
    }

    fn allows(&self, command: BridgeCommand) -> bool {
        self.commands.contains(&command)
    }

    /// Answer one command.
    pub async fn answer(&self, asked: &Asked) -> Answer {
        let name = asked.line.name.as_str();
        let builtin = BridgeCommand::named(name).filter(|c| self.allows(*c));
        let Some(command) = builtin else {
            return match self.skill_for(name) {
                Some(skill) => self.run_skill(&skill, asked).await,
                None => Answer {
                    accepted: false,
                    ..Answer::says(format!(
                        "unknown command /{}. {}",
                        parse::shorten(name),
                        self.usage()
                    ))
                },
            };
        };
        let words = match command {
            // A sentence is prose: quotes and `=` in it are its own.
            BridgeCommand::New => Vec::new(),
            _ => match parse::words(&asked.line.rest) {
                Ok(w) => w,
                Err(e) => return Answer::says(format!("/{name}: {e}")),
            },
        };
        match command {
            BridgeCommand::Help => Answer::says(self.help()),
            BridgeCommand::Jobs => self.jobs().await,
            BridgeCommand::Status => self.status(&words).await,
            BridgeCommand::Run => self.run_job(&words, asked).await,
            BridgeCommand::Approve => self.decide(&words, true, &asked.sender).await,
            BridgeCommand::Reject => self.decide(&words, false, &asked.sender).await,
            BridgeCommand::New => self.new_draft(asked).await,
            BridgeCommand::Apply => self.apply_draft(asked).await,
        }
    }

    /// The short form: the commands, one line.
    fn usage(&self) -> String {
        let mut names: Vec<String> = self
            .commands
            .iter()
            .map(|c| format!("/{}", c.as_str()))
            .collect();
        names.extend(self.skills().iter().filter_map(prefix_of));
        format!("Commands: {}", names.join(", "))
    }

    fn help(&self) -> String {
        let mut lines = vec!["multijob bridge commands:".to_string()];
        for c in &self.commands {
            lines.push(
                match c {
                    BridgeCommand::Help => "/help - this list",
                    BridgeCommand::Jobs => "/jobs - jobs, enabled or paused, last status",
                    BridgeCommand::Status => "/status JOB - the job's last runs",
                    BridgeCommand::Run => "/run JOB key=value ... - start a run with those inputs",
                    BridgeCommand::Approve => "/approve ID - approve a pending approval",
                    BridgeCommand::Reject => "/reject ID [note] - reject a pending approval",
                    BridgeCommand::New => {
                        "/new SENTENCE - plan jobs from a sentence: their YAML and the plan (a draft for this chat, kept in the bridge's memory for 10 minutes)"
                    }
                    BridgeCommand::Apply => {
                        "/apply - write this chat's /new draft and commit it in git as you; the daemon then applies it"
                    }
                }
                .to_string(),
            );
        }
        for skill in self.skills() {
            if let Some(prefix) = prefix_of(&skill) {
                let about = skill.description.as_deref().unwrap_or("run this skill");
                lines.push(format!(
                    "{prefix} key=value ... - {}",
                    parse::shorten(about)
                ));
            }
        }
        lines.join("\n")
    }

    /// The skills a chat on Telegram may start: those with a
    /// `command_prefix` and a channel of `telegram` or none.
    fn skills(&self) -> Vec<Skill> {
        let applied = self.shared.applied.load();
        applied
            .snapshot
            .skills
            .values()
            .map(|r| &r.spec)
            .filter(|s| s.command_prefix.is_some())
            .filter(|s| s.channel.as_deref().is_none_or(|c| c == "telegram"))
            .cloned()
            .collect()
    }

    fn skill_for(&self, name: &str) -> Option<Skill> {
        self.skills().into_iter().find(|s| {
            s.command_prefix
                .as_deref()
                .is_some_and(|p| p.trim_start_matches('/').eq_ignore_ascii_case(name))
        })
    }

    async fn run_job(&self, words: &[String], asked: &Asked) -> Answer {
        let Some((job, rest)) = words.split_first() else {
            return Answer::says("usage: /run JOB key=value ...");
        };
        if let Some(unknown) = self.unknown_job(job) {
            return unknown;
        }
        match parse::inputs(rest) {
            Ok(inputs) => self.submit(job, inputs, false, asked).await,
            Err(e) => Answer::says(format!("/run {job}: {e}")),
        }
    }

    async fn run_skill(&self, skill: &Skill, asked: &Asked) -> Answer {
        let inputs = parse::words(&asked.line.rest).and_then(|w| parse::inputs(&w));
        match inputs {
            Ok(inputs) => {
                let job = skill_job_id(&skill.id);
                self.submit(&job, inputs, skill.requires_approval, asked)
                    .await
            }
            Err(e) => Answer::says(format!("/{}: {e}", asked.line.name)),
        }
    }

    /// Queue the run once per update; the reply names it.
    async fn submit(
        &self,
        job: &str,
        inputs: Map<String, Value>,
        requires_approval: bool,
        asked: &Asked,
    ) -> Answer {
        let delivery = Delivery {
            job_id: job.to_string(),
            trigger: Trigger::Telegram,
            inputs: Value::Object(inputs),
            origin: self.origin(),
            delivery_id: Some(asked.update_id.to_string()),
            requires_approval,
            traceparent: None,
        };
        match self.intake.submit(delivery).await {
            Ok(accepted) => {
                let run_id = accepted.run_id().to_string();
                let again = matches!(accepted, Accepted::Duplicate(_));
                Answer {
                    text: format!(
                        "run {run_id} of {job} {}",
                        if again {
                            "was queued already"
                        } else {
                            "queued"
                        }
                    ),
                    run: Some(QueuedRun {
                        run_id,
                        job_id: job.to_string(),
                    }),
                    accepted: true,
                }
            }
            Err(SubmitError::Store(e)) => {
                tracing::error!(connector = %self.connector, job, error = %e, "bridge could not queue a run");
                Answer::says(format!(
                    "could not queue {job}: the store failed ({e}); try again"
                ))
            }
            Err(e) => Answer::says(format!("could not queue {job}: {e}")),
        }
    }
}

impl Desk {
    /// The reply for a job id the applied revision lacks (with the
    /// nearest id), or `None` when it has it.
    pub(super) fn unknown_job(&self, job: &str) -> Option<Answer> {
        let applied = self.shared.applied.load();
        let jobs = &applied.snapshot.jobs;
        (!jobs.contains_key(job)).then(|| {
            let hint = suggest::hint(job, jobs.keys().map(String::as_str));
            Answer::says(format!(
                "no job `{}`{hint}; /jobs lists them",
                parse::shorten(job)
            ))
        })
    }
}

/// A skill's command as typed: `/brief`.
fn prefix_of(skill: &Skill) -> Option<String> {
    let p = skill.command_prefix.as_deref()?.trim_start_matches('/');
    (!p.is_empty()).then(|| format!("/{p}"))
}
