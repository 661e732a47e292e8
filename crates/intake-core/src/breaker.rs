//! A circuit breaker for a backend that may be away (a database, a directory): after a
//! failure, calls fail at once for a while instead of each waiting for its own timeout;
//! then one call is let through to find out whether the backend is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Open after a failure for `cool_down`, then half-open: the next call goes through.
#[derive(Debug)]
pub struct Breaker {
    cool_down: Duration,
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    /// A closed breaker that stays open `cool_down` after each failure.
    pub fn new(cool_down: Duration) -> Breaker {
        Breaker {
            cool_down,
            open_until: Mutex::new(None),
        }
    }

    /// Whether calls should fail at once now (the backend failed less than `cool_down`
    /// ago). When the cool-down has passed, the breaker lets calls through again.
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }

    fn is_open_at(&self, now: Instant) -> bool {
        let mut open = self.open_until.lock().expect("breaker lock");
        match *open {
            Some(until) if now < until => true,
            Some(_) => {
                *open = None;
                false
            }
            None => false,
        }
    }

    /// A call failed: open (again) for `cool_down`.
    pub fn failed(&self) {
        self.failed_at(Instant::now());
    }

    fn failed_at(&self, now: Instant) {
        *self.open_until.lock().expect("breaker lock") = Some(now + self.cool_down);
    }

    /// A call succeeded: closed.
    pub fn succeeded(&self) {
        *self.open_until.lock().expect("breaker lock") = None;
    }
}

#[cfg(test)]
mod tests {
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
}
