//! Wall time for the runtime, or a virtual one that follows tokio's clock
//! so scheduler and retry tests run deterministically with
//! `tokio::time::pause()`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, Copy)]
pub enum Clock {
    Wall,
    /// `base` at `at`, advancing with tokio's (pausable) clock.
    Virtual {
        base: Timestamp,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A virtual clock starting at `base` now.
    pub fn virtual_at(base: Timestamp) -> Clock {
        Clock::Virtual {
            base,
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Wall => Timestamp::now(),
            Clock::Virtual { base, at } => {
                let elapsed = SignedDuration::try_from(at.elapsed()).unwrap_or(SignedDuration::MAX);
                base.checked_add(elapsed).unwrap_or(Timestamp::MAX)
            }
        }
    }

    /// How long until `t` (zero when past).
    pub fn until(&self, t: Timestamp) -> Duration {
        Duration::try_from(t.duration_since(self.now())).unwrap_or(Duration::ZERO)
    }

    /// Sleep until `t` by this clock.
    pub async fn sleep_until(&self, t: Timestamp) {
        tokio::time::sleep(self.until(t)).await
    }
}
