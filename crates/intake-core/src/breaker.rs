//! A circuit breaker for a backend that may be away (a database, a directory): after a
//! failure, calls fail at once for a while instead of each waiting for its own timeout;
//! then exactly one call is let through to find out whether the backend is back, while the
//! others keep failing at once until it reports.

use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock: the real one, or a test's paused one.
use tokio::time::Instant;

/// Where the breaker is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Calls go through.
    Closed,
    /// Calls fail at once until this instant.
    Open(Instant),
    /// One call (the probe) went through at this instant; the others fail at once until it
    /// reports, or until `cool_down` has passed since (a probe that never reported, its
    /// caller gone, does not keep the breaker half-open for good).
    Probing(Instant),
}

/// Open after a failure for `cool_down`, then half-open: the next call goes through as the
/// probe, the others fail at once until it succeeds (closed) or fails (open again).
#[derive(Debug)]
pub struct Breaker {
    cool_down: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker that stays open `cool_down` after each failure.
    pub fn new(cool_down: Duration) -> Breaker {
        Breaker {
            cool_down,
            state: Mutex::new(State::Closed),
        }
    }

    /// Whether this call should fail at once. False when the breaker is closed, and for
    /// exactly one call once the cool-down has passed: that call is the probe, and must
    /// report with [`failed`](Self::failed) or [`succeeded`](Self::succeeded).
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }

    fn is_open_at(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            State::Closed => false,
            State::Open(until) if now < until => true,
            State::Probing(since) if now.saturating_duration_since(since) < self.cool_down => true,
            State::Open(_) | State::Probing(_) => {
                *state = State::Probing(now);
                false
            }
        }
    }

    /// A call failed: open (again) for `cool_down`.
    pub fn failed(&self) {
        self.failed_at(Instant::now());
    }

    fn failed_at(&self, now: Instant) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Open(now + self.cool_down);
    }

    /// A call succeeded: closed.
    pub fn succeeded(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Closed;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn opens_on_failure_and_lets_a_call_through_after_the_cool_down() {
        let b = Breaker::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!b.is_open_at(t0));
        b.failed_at(t0);
        assert!(b.is_open_at(t0 + Duration::from_secs(9)));
        assert!(
            !b.is_open_at(t0 + Duration::from_secs(10)),
            "half-open after the cool-down"
        );
        b.failed_at(t0 + Duration::from_secs(11));
        assert!(b.is_open_at(t0 + Duration::from_secs(12)));
        b.succeeded();
        assert!(!b.is_open_at(t0 + Duration::from_secs(12)));
    }

    /// Half-open, many calls at once: one goes through as the probe, the others fail at
    /// once until it reports.
    #[test]
    fn half_open_admits_exactly_one_probe() {
        let b = Arc::new(Breaker::new(Duration::from_secs(10)));
        let t0 = Instant::now();
        b.failed_at(t0);
        let later = t0 + Duration::from_secs(10);
        let start = Arc::new(std::sync::Barrier::new(16));
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (b, start) = (b.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    !b.is_open_at(later)
                })
            })
            .collect();
        let through = calls
            .into_iter()
            .map(|c| c.join().unwrap())
            .filter(|went| *went)
            .count();
        assert_eq!(through, 1, "one probe, the others fail fast");
        assert!(b.is_open_at(later), "still waiting for the probe");
        // The probe failed: open again for a whole cool-down.
        b.failed_at(later);
        assert!(b.is_open_at(later + Duration::from_secs(9)));
        assert!(
            !b.is_open_at(later + Duration::from_secs(10)),
            "the next probe"
        );
        // It succeeded: closed, every call goes through.
        b.succeeded();
        assert!(!b.is_open_at(later + Duration::from_secs(10)));
        assert!(!b.is_open_at(later + Duration::from_secs(10)));
    }

    /// A probe whose caller went away without reporting: after a cool-down another call
    /// becomes the probe.
    #[test]
    fn a_probe_that_never_reports_is_replaced_after_a_cool_down() {
        let b = Breaker::new(Duration::from_secs(10));
        let t0 = Instant::now();
        b.failed_at(t0);
        assert!(!b.is_open_at(t0 + Duration::from_secs(10)), "the probe");
        assert!(b.is_open_at(t0 + Duration::from_secs(19)));
        assert!(!b.is_open_at(t0 + Duration::from_secs(20)), "another probe");
        assert!(b.is_open_at(t0 + Duration::from_secs(20)));
    }
}
