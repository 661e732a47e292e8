//! Small helpers shared by every listener (SMTP and HTTP): what to do when `accept` fails,
//! and how to log an event that can happen thousands of times a second without flooding
//! the log.

use std::io;
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
