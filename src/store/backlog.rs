//! Writes submitted and not yet committed, counted so producers can wait
//! for a backend's writer instead of growing its queue without bound.
//! Both backends count the same way.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Backlog {
    pending: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    /// `n` writes were submitted.
    pub(crate) fn add(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` writes were committed (or lost): wake whoever waits.
    pub(crate) fn done(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::Relaxed);
        self.drained.notify_waiters();
    }

    /// Submitted writes not yet committed.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Wait while more than `limit` submitted writes are uncommitted.
    pub(crate) async fn wait(&self, limit: usize) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.pending() <= limit {
                return;
            }
            drained.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_backlog_drains_to_its_limit() {
        let backlog = Arc::new(Backlog::default());
        backlog.add(10);
        let waiter = tokio::spawn({
            let b = backlog.clone();
            async move { b.wait(4).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "10 pending is above the limit of 4");
        backlog.done(5);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "5 pending is still above 4");
        backlog.done(1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes once 4 are pending")
            .expect("the waiter does not panic");
        assert_eq!(backlog.pending(), 4);
    }
}
