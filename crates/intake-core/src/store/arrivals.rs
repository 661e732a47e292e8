//! [`Arrivals`]: the count of sessions receiving message content right now, which a
//! group-committing engine lingers for. The engine makes it; the wiring hands it to the SMTP
//! driver (`intake_store::open` returns it with the store).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts sessions that are receiving message content right now: deliveries that will reach
/// the store within moments. A store doing group commit lingers for them before a commit
/// and commits at once when none are on their way.
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<ArrivalsInner>);

#[derive(Debug, Default)]
struct ArrivalsInner {
    receiving: AtomicUsize,
    /// Notified when the last session receiving content is done.
    none_left: tokio::sync::Notify,
}

impl Arrivals {
    /// Marks one session as receiving content until the guard is dropped.
    pub fn start(&self) -> ArrivalGuard {
        self.0.receiving.fetch_add(1, Ordering::Relaxed);
        ArrivalGuard(self.0.clone())
    }

    /// Sessions receiving content now.
    pub fn pending(&self) -> usize {
        self.0.receiving.load(Ordering::Relaxed)
    }

    /// Returns once no session is receiving content (at once if none is). A writer that
    /// lingers waits on this and a deadline, rather than being woken by every message
    /// that reaches its queue meanwhile.
    pub async fn none_pending(&self) {
        let notified = self.0.none_left.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the count is read, so a guard dropped in between still wakes us.
        notified.as_mut().enable();
        if self.0.receiving.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

/// See [`Arrivals::start`].
#[derive(Debug)]
pub struct ArrivalGuard(Arc<ArrivalsInner>);

impl Drop for ArrivalGuard {
    fn drop(&mut self) {
        if self.0.receiving.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Arrivals;
    use std::time::Duration;

    #[tokio::test]
    async fn none_pending_returns_when_the_last_session_is_done() {
        let arrivals = Arrivals::default();
        // Nobody receiving: at once.
        tokio::time::timeout(Duration::from_secs(1), arrivals.none_pending())
            .await
            .expect("no session: returns at once");
        let a = arrivals.start();
        let b = arrivals.start();
        let waiter = {
            let arrivals = arrivals.clone();
            tokio::spawn(async move { arrivals.none_pending().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one session still receiving");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken by the last guard")
            .unwrap();
        assert_eq!(arrivals.pending(), 0);
    }
}
