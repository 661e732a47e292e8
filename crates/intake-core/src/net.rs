//! Small helpers shared by every listener (SMTP and HTTP): what to do when `accept` fails,
//! and how to log an event that can happen thousands of times a second without flooding
//! the log.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts an event and says when it is time to log it: at most once per interval, with
/// the number of events since the last line.
#[derive(Debug)]
pub struct LogEvery {
    interval: Duration,
    last: Option<Instant>,
    count: u64,
}

impl LogEvery {
    /// At most one log line per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogEvery {
            interval,
            last: None,
            count: 0,
        }
    }

    /// Counts one event; `Some(n)` when a line is due, `n` being the events it covers.
    pub fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}

/// How many kinds of failure [`Repeated`] follows at once; past that the one seen least
/// recently is forgotten (and logged at once again if it comes back).
const REPEATED_KINDS: usize = 16;

/// Logs a failure that repeats, such as every message refused while a downstream, the
/// store or a scanner is down: the first failure of a kind is logged at once, then, while
/// it goes on, at most one line per interval counting the failures since the previous
/// line. Kinds are told apart by a key (the error text, a reply); a new kind is logged at
/// once. Shared between tasks (`&self`), and `const` so it can be a `static`. Metrics
/// count every failure; only the log is summarized.
#[derive(Debug)]
pub struct Repeated {
    interval: Duration,
    kinds: Mutex<Vec<Kind>>,
}

#[derive(Debug)]
struct Kind {
    key: String,
    logged: Instant,
    seen: Instant,
    count: u64,
}

impl Repeated {
    /// At most one line per kind and `interval`, after the first.
    pub const fn new(interval: Duration) -> Self {
        Repeated {
            interval,
            kinds: Mutex::new(Vec::new()),
        }
    }

    /// Counts one failure of the kind `key`; `Some(n)` when a line is due, `n` being the
    /// failures of that kind it covers (1 for the first).
    pub fn hit(&self, key: &str) -> Option<u64> {
        self.hit_at(key, Instant::now())
    }

    fn hit_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kinds.iter_mut().find(|k| k.key == key) {
            k.count += 1;
            k.seen = now;
            if now.saturating_duration_since(k.logged) < self.interval {
                return None;
            }
            k.logged = now;
            return Some(std::mem::take(&mut k.count));
        }
        if kinds.len() >= REPEATED_KINDS
            && let Some(oldest) = (0..kinds.len()).min_by_key(|&i| kinds[i].seen)
        {
            kinds.swap_remove(oldest);
        }
        kinds.push(Kind {
            key: key.to_owned(),
            logged: now,
            seen: now,
            count: 0,
        });
        Some(1)
    }
}

/// `EMFILE` and `ENFILE` (the same numbers on Linux and the BSDs).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// True when an error means the process or the system ran out of file descriptors.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

/// What an accept loop does after `accept` failed: wait a little (longer while failures
/// go on, up to a second) so that a loop out of file descriptors never spins, and log at
/// most once per ten seconds.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: &'static str,
    failures: u32,
    log: LogEvery,
}

impl AcceptBackoff {
    /// For the listener named in log lines (`"SMTP"`, `"HTTP"`).
    pub fn new(listener: &'static str) -> Self {
        AcceptBackoff {
            listener,
            failures: 0,
            log: LogEvery::new(Duration::from_secs(10)),
        }
    }

    /// How long to wait after the current run of failures.
    pub fn delay(&self) -> Duration {
        let ms = 10u64 << self.failures.min(7);
        Duration::from_millis(ms.min(1000))
    }

    /// Records a failure, logs when due, and sleeps.
    pub async fn failed(&mut self, e: &io::Error) {
        self.failures = self.failures.saturating_add(1);
        if let Some(n) = self.log.hit() {
            if out_of_descriptors(e) {
                tracing::warn!(listener = self.listener, failures = n, error = %e,
                    "accept failed: out of file descriptors; backing off (raise the open-file limit or lower the connection caps)");
            } else {
                tracing::warn!(listener = self.listener, failures = n, error = %e, "accept failed; backing off");
            }
        }
        tokio::time::sleep(self.delay()).await;
    }

    /// A connection was accepted: the next failure starts a new run.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_every_reports_the_first_then_a_count_per_interval() {
        let mut l = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.hit_at(t0), Some(1));
        for i in 1..100 {
            assert_eq!(l.hit_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(l.hit_at(t0 + Duration::from_secs(10)), Some(100));
        assert_eq!(l.hit_at(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn repeated_logs_each_kind_once_then_a_count_per_interval() {
        let r = Repeated::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.hit_at("refused", t0), Some(1));
        assert_eq!(
            r.hit_at("timed out", t0),
            Some(1),
            "another kind is logged at once"
        );
        for i in 1..=50 {
            assert_eq!(r.hit_at("refused", t0 + Duration::from_millis(i)), None);
            assert_eq!(r.hit_at("timed out", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit_at("refused", t0 + Duration::from_secs(10)), Some(51));
        assert_eq!(r.hit_at("refused", t0 + Duration::from_secs(11)), None);
        assert_eq!(
            r.hit_at("timed out", t0 + Duration::from_secs(12)),
            Some(51)
        );
    }

    #[test]
    fn repeated_forgets_the_least_recent_kind_past_its_bound() {
        let r = Repeated::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..=REPEATED_KINDS as u64 {
            assert_eq!(
                r.hit_at(&format!("k{i}"), t0 + Duration::from_millis(i)),
                Some(1)
            );
        }
        // k0 was dropped to make room: it is new again. k2 is still followed.
        assert_eq!(r.hit_at("k0", t0 + Duration::from_secs(1)), Some(1));
        assert_eq!(r.hit_at("k2", t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn backoff_grows_and_is_capped_and_resets() {
        let mut b = AcceptBackoff::new("test");
        assert_eq!(b.delay(), Duration::from_millis(10));
        b.failures = 3;
        assert_eq!(b.delay(), Duration::from_millis(80));
        b.failures = 30;
        assert_eq!(b.delay(), Duration::from_secs(1));
        b.succeeded();
        assert_eq!(b.delay(), Duration::from_millis(10));
    }

    #[test]
    fn descriptor_exhaustion_is_recognised() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(24)));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(104)));
    }
}
