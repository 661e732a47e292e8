//! A circuit breaker for a backend that may be away (the store's recipient table, a
//! directory): after a failure, calls fail at once for a cool-down instead of each waiting
//! for its own timeout, so an outage costs one timeout, not one per SMTP command. Then
//! exactly one call is let through as the probe: its success closes the breaker, its
//! failure opens it again, and the other calls keep failing at once until it reports.
//!
//! A call dropped before it reported (its client went away mid-command) tells nothing
//! about the backend: it neither opens the breaker (or a client that hangs up during
//! lookups could keep it open for everyone) nor closes it; a dropped probe frees the
//! probe's place at once.
//!
//! Time is tokio's monotonic clock (a test's paused one under `start_paused`): a wall-clock
//! step backwards cannot hold the breaker open.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Where the breaker is.
#[derive(Debug, Clone)]
enum State {
    /// Calls go through.
    Closed,
    /// Calls fail at once until `failed + cool_down`; `last` says why.
    Open { failed: Instant, last: String },
    /// One call (the probe, number `id`) went out at `probe`; the others fail at once
    /// until it reports, or until a cool-down has passed since (a probe that never
    /// reported does not keep the breaker half open for good).
    Probing {
        failed: Instant,
        probe: Instant,
        id: u64,
        last: String,
    },
}

/// A call refused at once: the backend failed `ago`, with `last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Since the failure that opened the breaker.
    pub ago: Duration,
    /// That failure, as text.
    pub last: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed {:?} ago ({}); not asked again yet",
            self.ago, self.last
        )
    }
}

/// A circuit breaker in front of one backend: open for `cool_down` after each failure,
/// then half open (one probe), then closed on the probe's success.
#[derive(Debug)]
pub struct Breaker {
    /// What it guards, for its log lines ("directory", "recipient table").
    what: &'static str,
    cool_down: Duration,
    state: Mutex<State>,
    /// Numbers the probes, so that a dropped permit frees only its own probe's place.
    probes: AtomicU64,
}

impl Breaker {
    /// A closed breaker in front of `what` that stays open `cool_down` after a failure.
    pub fn new(what: &'static str, cool_down: Duration) -> Breaker {
        Breaker {
            what,
            cool_down,
            state: Mutex::new(State::Closed),
            probes: AtomicU64::new(0),
        }
    }

    /// Whether a call may go out: a [`Permit`] to report its outcome with, or why not.
    pub fn admit(&self) -> Result<Permit<'_>, Refused> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let refused = |failed: Instant, last: &str| Refused {
            ago: now.saturating_duration_since(failed),
            last: last.to_string(),
        };
        match &*state {
            State::Closed => Ok(Permit::new(self, None)),
            State::Open { failed, last } if now < *failed + self.cool_down => {
                Err(refused(*failed, last))
            }
            State::Probing {
                failed,
                probe,
                last,
                ..
            } if now.saturating_duration_since(*probe) < self.cool_down => {
                Err(refused(*failed, last))
            }
            State::Open { failed, last } | State::Probing { failed, last, .. } => {
                let id = self.probes.fetch_add(1, Ordering::Relaxed);
                *state = State::Probing {
                    failed: *failed,
                    probe: now,
                    id,
                    last: last.clone(),
                };
                Ok(Permit::new(self, Some(id)))
            }
        }
    }

    /// Whether calls fail at once now (open, or half open with the probe out).
    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Closed
        )
    }

    fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*state, State::Closed) {
            tracing::info!(what = self.what, "answers again; circuit closed");
        }
        *state = State::Closed;
    }

    fn failed(&self, why: String) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::Closed) {
            tracing::warn!(what = self.what, error = %why, cool_down = ?self.cool_down,
                "failed; circuit open");
        }
        *state = State::Open {
            failed: Instant::now(),
            last: why,
        };
    }

    /// The probe `id` was dropped before it reported: its place is free (the cool-down
    /// has passed, so the next call probes).
    fn probe_dropped(&self, id: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Probing {
            failed,
            id: current,
            last,
            ..
        } = &*state
            && *current == id
        {
            *state = State::Open {
                failed: *failed,
                last: last.clone(),
            };
        }
    }
}

/// One admitted call. Dropped without an outcome (the call was cancelled), it tells
/// nothing: the breaker stays as it is, and if it was the probe, the next call probes.
#[derive(Debug)]
#[must_use = "report the call's outcome with succeeded() or failed()"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    /// The probe's number while this call is the probe and has not reported.
    probe: Option<u64>,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a Breaker, probe: Option<u64>) -> Permit<'a> {
        Permit { breaker, probe }
    }

    /// The call got an answer.
    pub fn succeeded(mut self) {
        self.probe = None;
        self.breaker.succeeded();
    }

    /// The call could not get an answer.
    pub fn failed(mut self, error: &dyn fmt::Display) {
        self.probe = None;
        self.breaker.failed(error.to_string());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.probe {
            self.breaker.probe_dropped(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(10);

    async fn advance(secs: u64) {
        tokio::time::advance(Duration::from_secs(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_opens_it_for_the_cool_down_then_one_probe_decides() {
        let b = Breaker::new("test", COOL_DOWN);
        b.admit().unwrap().succeeded();
        b.admit().unwrap().failed(&"no answer within 5s");
        advance(9).await;
        let refused = b.admit().expect_err("fails at once");
        assert_eq!(refused.ago, Duration::from_secs(9));
        assert_eq!(refused.last, "no answer within 5s");
        advance(1).await;
        let probe = b.admit().expect("the probe goes out");
        let refused = b.admit().expect_err("only one probe at a time");
        assert_eq!(refused.ago, COOL_DOWN, "since the failure, not the probe");
        probe.failed(&"refused");
        assert!(b.admit().is_err(), "a failed probe opens it again");
        advance(9).await;
        assert!(b.admit().is_err(), "for a whole cool-down");
        advance(1).await;
        b.admit().unwrap().succeeded();
        assert!(!b.is_open());
        let (p1, p2) = (b.admit().unwrap(), b.admit().unwrap());
        p1.succeeded();
        p2.succeeded();
    }

    /// A client that hangs up during its lookups must not open the breaker for everyone,
    /// nor hold the probe's place.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_tells_nothing() {
        let b = Breaker::new("test", COOL_DOWN);
        for _ in 0..100 {
            drop(b.admit().unwrap());
        }
        assert!(!b.is_open(), "closed it was, closed it stays");
        b.admit().unwrap().failed(&"down");
        advance(10).await;
        let gone = b.admit().expect("the probe");
        // Its client went away before the backend answered.
        drop(gone);
        let probe = b
            .admit()
            .expect("the dropped probe's place is free at once");
        let kept = b.admit().expect_err("one probe at a time");
        assert_eq!(kept.last, "down", "still the backend's failure");
        drop(b.admit());
        probe.succeeded();
        assert!(!b.is_open());
    }

    /// A permit from before the breaker opened, dropped while another call probes, does
    /// not free the probe's place.
    #[tokio::test(start_paused = true)]
    async fn only_the_probe_frees_its_place() {
        let b = Breaker::new("test", COOL_DOWN);
        let old = b.admit().unwrap();
        b.admit().unwrap().failed(&"down");
        advance(10).await;
        let probe = b.admit().expect("the probe");
        drop(old);
        assert!(b.admit().is_err(), "the probe is still out");
        probe.failed(&"still down");
        assert_eq!(b.admit().unwrap_err().last, "still down");
    }

    /// A probe that never reports (its caller stuck): after a cool-down another call
    /// becomes the probe.
    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_is_replaced_after_a_cool_down() {
        let b = Breaker::new("test", COOL_DOWN);
        b.admit().unwrap().failed(&"down");
        advance(10).await;
        let stuck = b.admit().expect("the probe");
        advance(9).await;
        assert!(b.admit().is_err());
        advance(1).await;
        let next = b.admit().expect("another probe");
        assert!(b.admit().is_err());
        next.succeeded();
        assert!(!b.is_open());
        std::mem::forget(stuck);
    }

    /// Half open, many calls at once: one goes through as the probe, the others fail at
    /// once until it reports.
    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_probe() {
        let b = Arc::new(Breaker::new("test", COOL_DOWN));
        b.admit().unwrap().failed(&"down");
        advance(10).await;
        let start = Arc::new(std::sync::Barrier::new(16));
        let runtime = tokio::runtime::Handle::current();
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (b, start, runtime) = (b.clone(), start.clone(), runtime.clone());
                std::thread::spawn(move || {
                    // The test's paused clock is the runtime's.
                    let _clock = runtime.enter();
                    start.wait();
                    // The permit is kept: a dropped probe would free its place for
                    // another call.
                    b.admit().ok().map(std::mem::forget).is_some()
                })
            })
            .collect();
        let through = calls
            .into_iter()
            .map(|c| c.join().unwrap())
            .filter(|went| *went)
            .count();
        assert_eq!(through, 1, "one probe, the others fail fast");
        assert!(b.is_open(), "still waiting for the probe");
    }
}
