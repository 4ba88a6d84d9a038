//! One bridge's task: long-poll `getUpdates`, handle each update in
//! order, reply through the connector, and only then move the offset.
//!
//! The offset lives in the store (kv [`offset_key`]) and is written after
//! an update's effect is durable: its run submitted ([`crate::inbound::Intake`]
//! flushes before it returns) and its reply sent (or given up on). A crash
//! in between re-reads the update, and its `update_id` as delivery id
//! queues nothing new. Telegram forgets an update when the next poll asks
//! from a later offset.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::api::{self, Message, Update};
use super::commands::{Asked, Desk, QueuedRun};
use super::parse::{self, MAX_MESSAGE_BYTES};
use crate::connectors::{Connectors, OutboundMessage};
use crate::run::RunError;
use crate::spec::model::Connector;
use crate::store::{KvOp, Mutation, NewEvent};

/// How long a run is followed for its end-of-run reply.
const FOLLOW_FOR: Duration = Duration::from_secs(3600);
/// How often a followed run is read.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Runs followed at once per bridge; past it a run gets no end reply.
const MAX_FOLLOWED: usize = 100;
/// Telegram refuses a message over 4096 characters.
pub(super) const MAX_REPLY_CHARS: usize = 4000;
/// Tries of one reply when Telegram is briefly unavailable.
const REPLY_TRIES: u32 = 3;
/// The longest wait between failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a bridge keeps the next `getUpdates` offset, with the id of the
/// bot it is for: `{"bot": "123456", "next": 1001}`.
pub fn offset_key(connector: &str) -> String {
    format!("__multijob/telegram/{connector}/offset")
}

pub(super) struct Bridge {
    pub desk: Desk,
    pub spec: Connector,
    pub allowed: HashSet<i64>,
    pub connectors: Connectors,
    pub followed: Arc<Semaphore>,
}

impl Bridge {
    pub fn new(desk: Desk, spec: Connector, connectors: Connectors) -> Bridge {
        let allowed = spec
            .bridge
            .as_ref()
            .map(|b| b.allowed_chat_ids.iter().map(|c| c.0).collect())
            .unwrap_or_default();
        Bridge {
            desk,
            spec,
            allowed,
            connectors,
            followed: Arc::new(Semaphore::new(MAX_FOLLOWED)),
        }
    }

    /// Poll and handle updates until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let id = self.desk.connector.clone();
        let mut offset = self.stored_offset().await;
        tracing::info!(connector = %id, offset, chats = self.allowed.len(), "telegram bridge polling");
        let mut backoff = Duration::from_secs(1);
        let mut me: Option<String> = None;
        loop {
            if me.is_none() {
                me = self.username(&stop).await;
            }
            let polled = tokio::select! {
                _ = stop.cancelled() => return,
                p = api::get_updates(&self.spec, offset) => p,
            };
            let updates = match polled {
                Ok(updates) => updates,
                Err(e) => {
                    let wait = e.wait.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::warn!(connector = %id, error = %e.message, wait_sec = wait.as_secs_f64(), "telegram bridge poll failed; polling again");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            backoff = Duration::from_secs(1);
            for update in updates {
                let next = update.update_id.saturating_add(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.handle(update, me.as_deref(), &stop) => {}
                }
                offset = Some(next);
                self.store_offset(next).await;
            }
        }
    }

    /// The bot's username, `None` while Telegram does not say (a command
    /// naming a bot is then taken as this one's; asked again next poll).
    async fn username(&self, stop: &CancellationToken) -> Option<String> {
        let asked = tokio::select! {
            _ = stop.cancelled() => return None,
            a = api::get_me(&self.spec) => a,
        };
        match asked {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(connector = %self.desk.connector, error = %e.message, "cannot read the bot's username (getMe); commands naming any bot are taken");
                None
            }
        }
    }

    /// The stored offset, when it is this bot's: a connector given
    /// another bot's token starts from what Telegram holds (the old bot's
    /// offset would confirm, and so drop, the new bot's updates).
    async fn stored_offset(&self) -> Option<i64> {
        let key = offset_key(&self.desk.connector);
        match self.desk.shared.store.kv(&key, KvOp::Get).await {
            Ok(Some(v)) if v["bot"].as_str() == api::bot_id(&self.spec).as_deref() => {
                v["next"].as_i64()
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(connector = %self.desk.connector, error = %e, "cannot read the bridge's offset; Telegram resends what it has not been told is read");
                None
            }
        }
    }

    async fn store_offset(&self, next: i64) {
        let key = offset_key(&self.desk.connector);
        let set = KvOp::Set {
            value: json!({"bot": api::bot_id(&self.spec), "next": next}),
            ttl_sec: None,
        };
        if let Err(e) = self.desk.shared.store.kv(&key, set).await {
            // The next poll still confirms it to Telegram; only a crash
            // before then re-reads the update (its run is not queued twice).
            tracing::warn!(connector = %self.desk.connector, error = %e, "cannot store the bridge's offset");
        }
    }

    /// One update: checked, answered, replied to.
    async fn handle(self: &Arc<Self>, update: Update, me: Option<&str>, stop: &CancellationToken) {
        let Some(message) = update.message else {
            return;
        };
        let chat = message.chat.id;
        if !self.allowed.contains(&chat) {
            self.count("unauthorized");
            self.event(
                "inbound.rejected",
                &message,
                json!({"reason": "chat_not_allowed"}),
                None,
            );
            return;
        }
        let Some(text) = message.text.as_deref() else {
            return;
        };
        let key = |n: u32| format!("telegram:{}:{}:{n}", self.desk.connector, update.update_id);
        if text.len() > MAX_MESSAGE_BYTES {
            self.count("too_large");
            self.event(
                "inbound.rejected",
                &message,
                json!({"reason": "too_long", "bytes": text.len()}),
                None,
            );
            let why = format!(
                "that message is {} bytes; a command is at most {MAX_MESSAGE_BYTES}",
                text.len()
            );
            self.reply(chat, &why, key(0)).await;
            return;
        }
        let Some(line) = parse::command_line(text).filter(|l| l.is_for(me)) else {
            return;
        };
        let command = line.name.clone();
        let asked = Asked {
            update_id: update.update_id,
            sender: message.sender(),
            chat,
            user: message.from.clone(),
            line,
        };
        let answer = self.desk.answer(&asked).await;
        self.count(if answer.accepted {
            "accepted"
        } else {
            "invalid"
        });
        if answer.accepted {
            let data = json!({"command": command, "user": asked.sender});
            self.event("inbound.command", &message, data, answer.run.as_ref());
        }
        self.reply(chat, &answer.text, key(0)).await;
        if let Some(run) = answer.run {
            self.follow(chat, run, key(1), stop.clone());
        }
    }

    /// One message in `multijob_inbound_requests_total`, as the inbound
    /// listener counts a request: `trigger` is the bridge's connector.
    fn count(&self, result: &str) {
        self.desk
            .shared
            .metrics
            .inbound_requests()
            .get_or_create(&vec![
                ("trigger".to_string(), self.desk.connector.clone()),
                ("source".to_string(), "telegram".to_string()),
                ("result".to_string(), result.to_string()),
            ])
            .inc();
    }

    /// Send `text` to `chat` through the connector (its rate limit),
    /// trying again a little when Telegram is briefly unavailable.
    async fn reply(&self, chat: i64, text: &str, idempotency_key: String) {
        let mut text: String = text.chars().take(MAX_REPLY_CHARS).collect();
        if text.is_empty() {
            text.push('-');
        }
        let msg = OutboundMessage {
            text,
            to: Some(chat.to_string()),
            subject: None,
            idempotency_key,
        };
        let id = &self.desk.connector;
        for attempt in 1..=REPLY_TRIES {
            match self.connectors.send_message(id, msg.clone()).await {
                Ok(_) => return,
                Err(RunError::Retryable {
                    message,
                    retry_after,
                }) if attempt < REPLY_TRIES => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(u64::from(attempt)));
                    tracing::warn!(connector = %id, chat, error = %message, "bridge reply not sent; trying again");
                    tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
                }
                Err(e) => {
                    tracing::warn!(connector = %id, chat, error = %e, "bridge reply not sent; giving up on it");
                    return;
                }
            }
        }
    }

    /// Reply again when `run` ends (within [`FOLLOW_FOR`]).
    fn follow(self: &Arc<Self>, chat: i64, run: QueuedRun, key: String, stop: CancellationToken) {
        let Ok(permit) = self.followed.clone().try_acquire_owned() else {
            tracing::warn!(connector = %self.desk.connector, run = %run.run_id, "bridge follows {MAX_FOLLOWED} runs already; this one gets no end-of-run reply");
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let until = Instant::now() + FOLLOW_FOR;
            while Instant::now() < until {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
                let Ok(Some((_, r))) = me.desk.shared.store.run(&run.run_id).await else {
                    continue;
                };
                if r.status.is_terminal() {
                    let took = r
                        .duration_ms
                        .map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0))
                        .unwrap_or_default();
                    let error = r
                        .error
                        .as_deref()
                        .map(|e| format!(": {}", e.chars().take(300).collect::<String>()))
                        .unwrap_or_default();
                    let status = r.status.as_str();
                    let text = format!("run {} of {} {status}{took}{error}", r.id, run.job_id);
                    me.reply(chat, &text, key).await;
                    return;
                }
            }
        });
    }

    /// An `inbound.*` event about a message; it never carries the text.
    fn event(&self, kind: &str, message: &Message, extra: Value, run: Option<&QueuedRun>) {
        let mut data = json!({
            "source": "telegram",
            "connector": self.desk.connector,
            "chat_id": message.chat.id,
        });
        if let (Some(obj), Value::Object(more)) = (data.as_object_mut(), extra) {
            obj.extend(more);
        }
        let mut event = NewEvent::new(kind, data);
        if let Some(run) = run {
            event = event.job(run.job_id.clone()).run(run.run_id.clone());
        }
        if let Err(e) = self.desk.shared.store.submit(vec![Mutation::Event(event)]) {
            tracing::warn!(connector = %self.desk.connector, error = %e, "cannot record a bridge event");
        }
    }
}
