//! Draining: no new runs; those in flight get a grace period, then are
//! interrupted. The embedded pool and the stream workers of a Redis
//! deployment drain with the same two helpers.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a drain looks at what is left.
const POLL: Duration = Duration::from_millis(20);

/// Wait until `in_flight()` is zero or `limit` has passed; what is left.
pub async fn until_idle(in_flight: impl Fn() -> usize, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = in_flight();
        if left == 0 || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Give the runs in flight `grace`; past it fire `shutdown` (the handlers
/// see a shutdown, so their runs end interrupted and run again) and each
/// run's token from `running`. What was left when the grace ended.
pub async fn grace_then_interrupt(
    in_flight: impl Fn() -> usize,
    grace: Duration,
    shutdown: &CancellationToken,
    running: impl FnOnce() -> Vec<CancellationToken>,
) -> usize {
    let left = until_idle(&in_flight, grace).await;
    if left > 0 {
        tracing::warn!(
            runs = left,
            "grace period over: interrupting runs; they will run again"
        );
        shutdown.cancel();
        for token in running() {
            token.cancel();
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_until_nothing_is_left() {
        let busy = Arc::new(AtomicUsize::new(2));
        let ending = busy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ending.store(0, Ordering::SeqCst);
        });
        let started = tokio::time::Instant::now();
        let left = until_idle(|| busy.load(Ordering::SeqCst), Duration::from_secs(10)).await;
        assert_eq!(left, 0);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_grace_interrupts_what_is_left() {
        let shutdown = CancellationToken::new();
        let run = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let tokens = run.clone();
        let left =
            grace_then_interrupt(|| 3, Duration::from_secs(2), &shutdown, || vec![tokens]).await;
        assert_eq!(left, 3);
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert!(shutdown.is_cancelled() && run.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_in_flight_interrupts_nothing() {
        let shutdown = CancellationToken::new();
        let left = grace_then_interrupt(
            || 0,
            Duration::from_secs(2),
            &shutdown,
            || panic!("nothing to interrupt"),
        )
        .await;
        assert_eq!(left, 0);
        assert!(!shutdown.is_cancelled());
    }
}
