//! The circuit breaker: after a directory fails, it is not asked again for a while
//! (`directory.breaker_cooldown`), so an outage costs one timeout, not one per SMTP
//! command. Then a single call is let through as a probe: its success closes the breaker,
//! its failure opens it again. While the probe runs, other calls fail fast too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use intake_core::Clock;
use jiff::Timestamp;

use crate::DirectoryError;

/// Where the breaker stands.
#[derive(Debug, Clone)]
enum State {
    /// Calls go through.
    Closed,
    /// Calls fail fast until `since + cooldown`; `last` says why.
    Open { since: Timestamp, last: String },
    /// One probe is out; others fail fast.
    Probing { since: Timestamp, last: String },
}

/// A circuit breaker in front of one directory.
#[derive(Debug)]
pub struct Breaker {
    cooldown: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker that stays open `cooldown` after a failure.
    pub fn new(cooldown: Duration, clock: Arc<dyn Clock>) -> Breaker {
        Breaker {
            cooldown,
            clock,
            state: Mutex::new(State::Closed),
        }
    }

    /// Whether a call may go out: a [`Permit`] to report its outcome with, or
    /// [`DirectoryError::CircuitOpen`].
    pub fn admit(&self) -> Result<Permit<'_>, DirectoryError> {
        let now = self.clock.now();
        let mut state = self.state.lock().expect("breaker");
        let refuse = |since: Timestamp, last: &str| DirectoryError::CircuitOpen {
            ago: now.duration_since(since).unsigned_abs(),
            last: last.to_string(),
        };
        match &*state {
            State::Closed => Ok(Permit::new(self)),
            State::Open { since, last } if now < *since + self.cooldown => {
                Err(refuse(*since, last))
            }
            State::Open { since, last } => {
                *state = State::Probing {
                    since: *since,
                    last: last.clone(),
                };
                Ok(Permit::new(self))
            }
            State::Probing { since, last } => Err(refuse(*since, last)),
        }
    }

    /// Whether calls currently fail fast.
    pub fn is_open(&self) -> bool {
        !matches!(*self.state.lock().expect("breaker"), State::Closed)
    }

    fn succeeded(&self) {
        let mut state = self.state.lock().expect("breaker");
        if !matches!(*state, State::Closed) {
            tracing::info!("directory answers again; circuit closed");
        }
        *state = State::Closed;
    }

    fn failed(&self, why: String) {
        let mut state = self.state.lock().expect("breaker");
        if matches!(*state, State::Closed) {
            tracing::warn!(error = %why, cooldown = ?self.cooldown, "directory failed; circuit open");
        }
        *state = State::Open {
            since: self.clock.now(),
            last: why,
        };
    }
}

/// One admitted call. Dropped without an outcome (the call was cancelled) it counts as a
/// failure, so a probe that never finishes cannot leave the breaker half open.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    done: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a Breaker) -> Permit<'a> {
        Permit {
            breaker,
            done: false,
        }
    }

    /// The call got an answer.
    pub fn succeeded(mut self) {
        self.done = true;
        self.breaker.succeeded();
    }

    /// The call could not get an answer.
    pub fn failed(mut self, error: &DirectoryError) {
        self.done = true;
        self.breaker.failed(error.to_string());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.failed("the call was cancelled".into());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub use crate::test_common::ManualClock;

    fn down() -> DirectoryError {
        DirectoryError::Timeout(Duration::from_secs(5))
    }

    #[test]
    fn a_failure_opens_it_for_the_cooldown_then_one_probe_decides() {
        let clock = ManualClock::new();
        let b = Breaker::new(Duration::from_secs(10), clock.clone());
        b.admit().unwrap().succeeded();
        b.admit().unwrap().failed(&down());
        clock.advance(Duration::from_secs(9));
        match b.admit() {
            Err(DirectoryError::CircuitOpen { ago, last }) => {
                assert_eq!(ago, Duration::from_secs(9));
                assert!(last.contains("no answer within"), "{last}");
            }
            other => panic!("expected fail-fast, got {other:?}"),
        }
        clock.advance(Duration::from_secs(1));
        let probe = b.admit().expect("the probe goes out");
        assert!(b.admit().is_err(), "only one probe at a time");
        probe.failed(&down());
        assert!(b.admit().is_err(), "a failed probe opens it again");
        clock.advance(Duration::from_secs(10));
        b.admit().unwrap().succeeded();
        assert!(!b.is_open());
        let (p1, p2) = (b.admit().unwrap(), b.admit().unwrap());
        p1.succeeded();
        p2.succeeded();
    }

    #[test]
    fn a_cancelled_call_counts_as_a_failure() {
        let clock = ManualClock::new();
        let b = Breaker::new(Duration::from_secs(10), clock.clone());
        drop(b.admit().unwrap());
        assert!(b.is_open());
        assert!(b.admit().is_err());
    }
}
