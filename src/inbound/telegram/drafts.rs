//! Each chat's `/new` draft waiting for `/apply`: kept in the memory of
//! the bridge's process (a restart forgets them), one per chat, valid
//! for a while (10 minutes; `MULTIJOB_BRIDGE_DRAFT_TTL_SEC` changes it
//! for tests and operators), taken at most once. A newer `/new` replaces
//! the older draft. `now` is passed in, so expiry is tested without
//! waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::reconcile::author::Draft;

/// How long a draft waits for `/apply` by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// The variable that overrides [`DEFAULT_TTL`] (whole seconds, ≥ 1).
pub const TTL_ENV: &str = "MULTIJOB_BRIDGE_DRAFT_TTL_SEC";

/// What `/new` planned for a chat.
#[derive(Debug, Clone)]
pub struct Pending {
    pub sentence: String,
    pub drafts: Vec<Draft>,
}

#[derive(Debug)]
enum Slot {
    Waiting {
        pending: Pending,
        at: Instant,
    },
    /// Taken by `/apply` at this time: a second `/apply` is told so.
    Taken,
}

/// Why `/apply` has nothing to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// No `/new` in this chat since the bridge started.
    Nothing,
    /// The draft is older than the TTL.
    Expired { age: Duration },
    /// The draft was applied (or its `/apply` refused) already.
    Taken,
}

pub struct Drafts {
    ttl: Duration,
    by_chat: Mutex<HashMap<i64, Slot>>,
}

impl Drafts {
    pub fn new(ttl: Duration) -> Drafts {
        Drafts {
            ttl,
            by_chat: Mutex::new(HashMap::new()),
        }
    }

    /// The TTL from [`TTL_ENV`], else [`DEFAULT_TTL`] (an unreadable
    /// value is warned about and ignored).
    pub fn ttl_from_env() -> Duration {
        let Ok(text) = std::env::var(TTL_ENV) else {
            return DEFAULT_TTL;
        };
        match text.trim().parse::<u64>() {
            Ok(sec) if sec >= 1 => Duration::from_secs(sec),
            _ => {
                tracing::warn!(value = %text, "{TTL_ENV} is not a whole number of seconds ≥ 1; drafts wait {}s", DEFAULT_TTL.as_secs());
                DEFAULT_TTL
            }
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Keep `pending` as `chat`'s draft, replacing any older one; expired
    /// drafts of other chats are dropped.
    pub fn put(&self, chat: i64, pending: Pending, now: Instant) {
        let mut map = self.lock();
        let ttl = self.ttl;
        map.retain(|_, slot| match slot {
            Slot::Waiting { at, .. } => now.saturating_duration_since(*at) <= ttl,
            Slot::Taken => true,
        });
        map.insert(chat, Slot::Waiting { pending, at: now });
    }

    /// Forget `chat`'s draft (a `/new` that planned nothing valid).
    pub fn clear(&self, chat: i64) {
        self.lock().remove(&chat);
    }

    /// `chat`'s draft, taken: a second take is [`Missing::Taken`].
    pub fn take(&self, chat: i64, now: Instant) -> Result<Pending, Missing> {
        let mut map = self.lock();
        match map.remove(&chat) {
            None => Err(Missing::Nothing),
            Some(Slot::Taken) => {
                map.insert(chat, Slot::Taken);
                Err(Missing::Taken)
            }
            Some(Slot::Waiting { pending, at }) => {
                let age = now.saturating_duration_since(at);
                if age > self.ttl {
                    return Err(Missing::Expired { age });
                }
                map.insert(chat, Slot::Taken);
                Ok(pending)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Slot>> {
        // A panic while holding it leaves a map that is still whole.
        self.by_chat.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(sentence: &str) -> Pending {
        Pending {
            sentence: sentence.to_string(),
            drafts: Vec::new(),
        }
    }

    #[test]
    fn a_draft_is_taken_once() {
        let d = Drafts::new(Duration::from_secs(600));
        let t0 = Instant::now();
        d.put(1, pending("a"), t0);
        let got = d.take(1, t0 + Duration::from_secs(5)).map(|p| p.sentence);
        assert_eq!(got, Ok("a".to_string()));
        let again = d.take(1, t0 + Duration::from_secs(6)).map(|p| p.sentence);
        assert_eq!(again, Err(Missing::Taken));
    }

    #[test]
    fn a_draft_expires_after_the_ttl() {
        let d = Drafts::new(Duration::from_secs(600));
        let t0 = Instant::now();
        d.put(1, pending("a"), t0);
        let late = d.take(1, t0 + Duration::from_secs(601)).map(|p| p.sentence);
        assert_eq!(
            late,
            Err(Missing::Expired {
                age: Duration::from_secs(601)
            })
        );
        let after = d.take(1, t0 + Duration::from_secs(602)).map(|p| p.sentence);
        assert_eq!(after, Err(Missing::Nothing), "an expired draft is gone");
        d.put(2, pending("b"), t0);
        let edge = d.take(2, t0 + Duration::from_secs(600)).map(|p| p.sentence);
        assert_eq!(edge, Ok("b".to_string()), "valid for the whole TTL");
    }

    #[test]
    fn a_newer_draft_replaces_the_older_and_chats_are_apart() {
        let d = Drafts::new(Duration::from_secs(600));
        let t0 = Instant::now();
        d.put(1, pending("old"), t0);
        d.put(1, pending("new"), t0 + Duration::from_secs(1));
        assert_eq!(
            d.take(2, t0 + Duration::from_secs(2)).map(|p| p.sentence),
            Err(Missing::Nothing),
            "another chat sees nothing"
        );
        assert_eq!(
            d.take(1, t0 + Duration::from_secs(2)).map(|p| p.sentence),
            Ok("new".to_string())
        );
        d.put(1, pending("after"), t0 + Duration::from_secs(3));
        assert_eq!(
            d.take(1, t0 + Duration::from_secs(4)).map(|p| p.sentence),
            Ok("after".to_string()),
            "a /new after an /apply starts a new draft"
        );
        d.put(3, pending("x"), t0);
        d.clear(3);
        assert_eq!(d.take(3, t0).map(|p| p.sentence), Err(Missing::Nothing));
    }

    #[test]
    fn put_drops_expired_drafts_of_other_chats() {
        let d = Drafts::new(Duration::from_secs(10));
        let t0 = Instant::now();
        d.put(1, pending("a"), t0);
        d.put(2, pending("b"), t0 + Duration::from_secs(11));
        assert_eq!(d.lock().len(), 1);
    }
}
