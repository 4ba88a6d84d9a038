//! A loopback fake of the Telegram Bot API for bridge tests: a real axum
//! server with `getUpdates` (long poll: `offset` confirms every update
//! before it, `timeout` holds the request open until one arrives) and
//! `sendMessage` (recorded; per bot it can be slowed or held until
//! released, so a test can kill the daemon while a reply is in flight),
//! and `getMe` (every bot is `ops_bot`).
//! Bots are told apart by the token in the path (`/bot<token>/<method>`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Which of a bot's `sendMessage` requests to wait on.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    Attempts,
    Sent,
}

/// One bot's side of the fake.
#[derive(Default)]
struct Bot {
    /// Updates not yet confirmed by an `offset`.
    pending: Vec<Value>,
    /// The last `offset` a poll sent.
    offset: Option<i64>,
    /// The `offset` of every poll, in order.
    offsets: Vec<Option<i64>>,
    polls: u32,
    /// `getUpdates` requests open now, and the most ever open at once
    /// (two pollers of one bot: Telegram answers 409).
    open_polls: u32,
    most_open_polls: u32,
    /// `sendMessage` requests as they arrive: (chat_id, text).
    attempts: Vec<(i64, String)>,
    /// `sendMessage` requests answered.
    sent: Vec<(i64, String)>,
    send_delay: Duration,
    hold_sends: bool,
    /// Answers the next polls get instead of updates: (status, body).
    poll_failures: Vec<(u16, String)>,
}

#[derive(Default)]
struct Inner {
    bots: HashMap<String, Bot>,
    next_update: i64,
}

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change a waiting request may care about.
    changed: Arc<watch::Sender<u64>>,
}

impl Fake {
    fn with<R>(&self, token: &str, f: impl FnOnce(&mut Bot) -> R) -> R {
        let mut inner = self.inner.lock().expect("fake telegram state");
        f(inner.bots.entry(token.to_string()).or_default())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// The fake server and what it recorded.
pub struct FakeTelegram {
    pub url: String,
    fake: Fake,
}

impl FakeTelegram {
    pub fn start() -> FakeTelegram {
        let (tx, _) = watch::channel(0);
        let fake = Fake {
            inner: Arc::new(Mutex::new(Inner {
                next_update: 1000,
                ..Inner::default()
            })),
            changed: Arc::new(tx),
        };
        let app = axum::Router::new()
            .route("/{bot}/{method}", post(method))
            .with_state(fake.clone());
        FakeTelegram {
            url: super::serve(app),
            fake,
        }
    }

    /// A text message from `chat` (user `user`) to `token`'s bot; its
    /// update id.
    pub fn message(&self, token: &str, chat: i64, user: &str, text: &str) -> i64 {
        let id = {
            let mut inner = self.fake.inner.lock().expect("fake telegram state");
            inner.next_update += 1;
            let id = inner.next_update;
            let update = json!({"update_id": id, "message": {
                "message_id": id, "date": 0, "text": text,
                "chat": {"id": chat, "type": "private"},
                "from": {"id": 7000 + chat, "is_bot": false, "username": user,
                    "first_name": user, "last_name": "Tester"},
            }});
            inner
                .bots
                .entry(token.to_string())
                .or_default()
                .pending
                .push(update);
            id
        };
        self.fake.bump();
        id
    }

    /// The next polls of `token` are answered with these (status, body)
    /// pairs, one each, before updates flow again.
    pub fn fail_polls(&self, token: &str, answers: &[(u16, &str)]) {
        let answers = answers.iter().map(|(s, b)| (*s, b.to_string()));
        self.fake.with(token, |b| b.poll_failures.extend(answers));
    }

    pub fn set_send_delay(&self, token: &str, delay: Duration) {
        self.fake.with(token, |b| b.send_delay = delay);
    }

    /// Hold every `sendMessage` of `token` (recorded as an attempt, never
    /// answered) until released.
    pub fn hold_sends(&self, token: &str, hold: bool) {
        self.fake.with(token, |b| b.hold_sends = hold);
        self.fake.bump();
    }

    pub fn sent(&self, token: &str) -> Vec<(i64, String)> {
        self.fake.with(token, |b| b.sent.clone())
    }

    pub fn attempts(&self, token: &str) -> Vec<(i64, String)> {
        self.fake.with(token, |b| b.attempts.clone())
    }

    pub fn polls(&self, token: &str) -> u32 {
        self.fake.with(token, |b| b.polls)
    }

    /// The `offset` each poll of `token` sent, in order.
    pub fn offsets(&self, token: &str) -> Vec<Option<i64>> {
        self.fake.with(token, |b| b.offsets.clone())
    }

    /// The most `getUpdates` requests of `token` that were open at once.
    pub fn most_open_polls(&self, token: &str) -> u32 {
        self.fake.with(token, |b| b.most_open_polls)
    }

    /// The offset the bot's last poll confirmed up to.
    pub fn offset(&self, token: &str) -> Option<i64> {
        self.fake.with(token, |b| b.offset)
    }

    /// Wait until `f` holds of the bot's `sendMessage` requests as they
    /// arrived (`Seen::Attempts`) or as answered (`Seen::Sent`); panics
    /// with them after `within`.
    #[track_caller]
    pub fn wait_for(
        &self,
        token: &str,
        seen: Seen,
        within: Duration,
        f: impl Fn(&[(i64, String)]) -> bool,
    ) -> Vec<(i64, String)> {
        let start = Instant::now();
        loop {
            let now = match seen {
                Seen::Attempts => self.attempts(token),
                Seen::Sent => self.sent(token),
            };
            if f(&now) {
                return now;
            }
            if start.elapsed() > within {
                panic!("timed out waiting for {seen:?} messages; the bot has: {now:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn method(
    State(fake): State<Fake>,
    Path((bot, method)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> (StatusCode, String) {
    let not_found = || {
        let body = json!({"ok": false, "error_code": 404, "description": "Not Found"});
        (StatusCode::NOT_FOUND, body.to_string())
    };
    let Some(token) = bot.strip_prefix("bot") else {
        return not_found();
    };
    match method.as_str() {
        "getUpdates" => {
            let failure = fake.with(token, |b| {
                (!b.poll_failures.is_empty()).then(|| b.poll_failures.remove(0))
            });
            if let Some((status, body)) = failure {
                fake.with(token, |b| b.polls += 1);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return (status, body);
            }
            (
                StatusCode::OK,
                get_updates(&fake, token, &body).await.to_string(),
            )
        }
        "getMe" => {
            let id = token.split(':').next().unwrap_or_default();
            let me =
                json!({"ok": true, "result": {"id": id, "is_bot": true, "username": "ops_bot"}});
            (StatusCode::OK, me.to_string())
        }
        "sendMessage" => (
            StatusCode::OK,
            send_message(&fake, token, &body).await.to_string(),
        ),
        _ => not_found(),
    }
}

async fn get_updates(fake: &Fake, token: &str, body: &Value) -> Value {
    let offset = body["offset"].as_i64();
    let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(30));
    let mut changes = fake.changed.subscribe();
    let until = tokio::time::Instant::now() + timeout;
    let _open = OpenPoll::new(fake, token);
    fake.with(token, |b| {
        b.polls += 1;
        b.offsets.push(offset);
        if let Some(o) = offset {
            b.pending.retain(|u| u["update_id"].as_i64() >= Some(o));
            b.offset = Some(o);
        }
    });
    loop {
        let ready = fake.with(token, |b| b.pending.clone());
        if !ready.is_empty() {
            return json!({"ok": true, "result": ready});
        }
        if tokio::time::timeout_at(until, changes.changed())
            .await
            .is_err()
        {
            return json!({"ok": true, "result": []});
        }
    }
}

/// One open `getUpdates`, counted until its handler ends or is dropped
/// (the poller hung up).
struct OpenPoll {
    fake: Fake,
    token: String,
}

impl OpenPoll {
    fn new(fake: &Fake, token: &str) -> OpenPoll {
        fake.with(token, |b| {
            b.open_polls += 1;
            b.most_open_polls = b.most_open_polls.max(b.open_polls);
        });
        OpenPoll {
            fake: fake.clone(),
            token: token.to_string(),
        }
    }
}

impl Drop for OpenPoll {
    fn drop(&mut self) {
        self.fake.with(&self.token, |b| b.open_polls -= 1);
    }
}

async fn send_message(fake: &Fake, token: &str, body: &Value) -> Value {
    let chat = match &body["chat_id"] {
        Value::String(s) => s.parse().unwrap_or(0),
        v => v.as_i64().unwrap_or(0),
    };
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let delay = fake.with(token, |b| {
        b.attempts.push((chat, text.clone()));
        b.send_delay
    });
    fake.bump();
    tokio::time::sleep(delay).await;
    let mut changes = fake.changed.subscribe();
    while fake.with(token, |b| b.hold_sends) {
        let _ = changes.changed().await;
    }
    let id = fake.with(token, |b| {
        b.sent.push((chat, text));
        b.sent.len()
    });
    json!({"ok": true, "result": {"message_id": id, "chat": {"id": chat}, "text": "ok"}})
}
