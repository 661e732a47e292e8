//! Group commit's gathering step, shared by the writers that batch deliveries (SQLite,
//! PostgreSQL, MariaDB): take what is queued, and linger for deliveries on their way.

use std::time::Duration;

use intake_core::Arrivals;
use tokio::sync::mpsc;

/// Where gathered jobs go. A `Vec` takes every job into the batch; a writer that also
/// receives other jobs on the same queue sorts them (and counts only the deliveries).
pub(crate) trait Batch<T> {
    /// Takes one job.
    fn put(&mut self, job: T);
    /// Deliveries in the batch.
    fn deliveries(&self) -> usize;
}

impl<T> Batch<T> for Vec<T> {
    fn put(&mut self, job: T) {
        self.push(job);
    }
    fn deliveries(&self) -> usize {
        self.len()
    }
}

/// Takes everything queued (up to `max` deliveries), then, while other sessions are
/// receiving content (`arrivals`), waits for them: until `commit_delay` has passed or the
/// last of them is done, whichever is first, and takes what has been queued meanwhile. A
/// lone client, or clients all waiting on this commit, never wait. The writer is not woken
/// for each message that reaches the queue during the wait (that cost more CPU than the
/// commit saved).
pub(crate) async fn gather<T>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut impl Batch<T>,
    max: usize,
    commit_delay: Duration,
    arrivals: &Arrivals,
) {
    if !take_queued(rx, batch, max) || batch.deliveries() == 0 || commit_delay.is_zero() {
        return;
    }
    let deadline = tokio::time::Instant::now() + commit_delay;
    while arrivals.pending() > 0 {
        let timed_out = tokio::select! {
            _ = arrivals.none_pending() => false,
            _ = tokio::time::sleep_until(deadline) => true,
        };
        if !take_queued(rx, batch, max) || timed_out {
            return;
        }
    }
}

/// Moves what is queued into `batch`; false once it holds `max` deliveries.
fn take_queued<T>(rx: &mut mpsc::Receiver<T>, batch: &mut impl Batch<T>, max: usize) -> bool {
    while batch.deliveries() < max {
        match rx.try_recv() {
            Ok(job) => batch.put(job),
            Err(_) => return true,
        }
    }
    false
}
