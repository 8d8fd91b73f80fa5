//! The change counter that tasks wait on: every write of a pool or instance
//! bumps it, and replenishers, waiting purchases and `WatchPools` streams
//! re-read the store when it moves.
//!
//! `tokio::sync::watch` has these semantics, but each of its receivers waits
//! on one of eight notifiers picked at random, so the tasks one change wakes
//! run in a random order. On the paused clock that order decides which pool
//! boots first, so replays of the same demand and seed came out different
//! (by a few tenths of a VM-hour). Here waiters wake in the order they began
//! to wait, which makes a replay repeat itself exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts changes; see the module doc.
#[derive(Debug, Default)]
pub struct Changes {
    count: AtomicU64,
    notify: Notify,
}

impl Changes {
    /// Records a change and wakes every waiter.
    pub fn bump(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// A cursor that has seen every change so far.
    pub fn subscribe(self: &Arc<Self>) -> ChangeCursor {
        ChangeCursor {
            seen: self.count.load(Ordering::SeqCst),
            changes: self.clone(),
        }
    }
}

/// One waiter's view of [`Changes`]: which changes it has seen.
#[derive(Debug)]
pub struct ChangeCursor {
    changes: Arc<Changes>,
    seen: u64,
}

impl ChangeCursor {
    /// Returns once there is a change the cursor has not seen (at once if
    /// one happened already), and marks it seen. True if it had to wait
    /// for it: a purchase that waited for an instance to become Ready is
    /// told from one that only looked again after a change it had missed
    /// (another purchase's claim of an instance it also saw Ready).
    pub async fn changed(&mut self) -> bool {
        let changes = self.changes.clone();
        let mut waited = false;
        loop {
            let notified = changes.notify.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a bump in between
            // either shows in the count or wakes this waiter.
            notified.as_mut().enable();
            if self.mark_seen() {
                return waited;
            }
            notified.await;
            waited = true;
        }
    }

    /// Marks every change so far as seen; true if there were unseen ones.
    pub fn mark_seen(&mut self) -> bool {
        let now = self.changes.count.load(Ordering::SeqCst);
        let moved = now != self.seen;
        self.seen = now;
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_change_before_the_wait_is_not_lost() {
        let changes = Arc::new(Changes::default());
        let mut cursor = changes.subscribe();
        changes.bump();
        let waited = tokio::time::timeout(Duration::from_secs(1), cursor.changed())
            .await
            .expect("the earlier change is seen");
        assert!(!waited, "it was there before the wait");
        // Seen now: the next wait needs a new change.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), cursor.changed())
                .await
                .is_err(),
            "no new change, no wake-up"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_the_wait_wakes_it() {
        let changes = Arc::new(Changes::default());
        let mut cursor = changes.subscribe();
        let waiter = tokio::spawn(async move { cursor.changed().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        changes.bump();
        let waited = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        assert!(waited, "it came during the wait");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_in_the_order_they_began_to_wait() {
        let changes = Arc::new(Changes::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..20 {
            let mut cursor = changes.subscribe();
            let tx = tx.clone();
            tokio::spawn(async move {
                cursor.changed().await;
                tx.send(i).expect("receiver alive");
            });
            // Each waiter registers before the next is spawned.
            tokio::task::yield_now().await;
        }
        drop(tx);
        changes.bump();
        let mut order = Vec::new();
        while let Some(i) = rx.recv().await {
            order.push(i);
        }
        assert_eq!(order, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn mark_seen_says_whether_anything_moved() {
        let changes = Arc::new(Changes::default());
        let mut cursor = changes.subscribe();
        assert!(!cursor.mark_seen());
        changes.bump();
        changes.bump();
        assert!(cursor.mark_seen());
        assert!(!cursor.mark_seen());
    }
}
