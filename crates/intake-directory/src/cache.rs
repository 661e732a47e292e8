//! The answer cache: a yes is kept for `cache_ttl`, a no for `negative_cache_ttl`
//! (shorter by default, so a new mailbox or account is seen soon). Expiry is judged by the
//! injected [`Clock`], so tests move time instead of sleeping; moka's own time-to-live (the
//! longer of the two) only frees the memory.
//!
//! Logins are keyed by an HMAC of login and password under a key made at start, so the
//! cache never holds a password, and a wrong password cached as "no" says nothing about
//! the right one.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use intake_core::Clock;
use jiff::Timestamp;
use sha2::Sha256;

/// Entries kept at most (per cache).
const CAPACITY: u64 = 100_000;

/// Answers by key, each valid for its TTL: a yes (or a found value) for `positive_ttl`,
/// a no (or nothing found) for `negative_ttl`.
pub struct AnswerCache<K, V = bool> {
    map: moka::sync::Cache<K, (V, Timestamp, Duration)>,
    positive_ttl: Duration,
    negative_ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl<K, V> AnswerCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache keeping yes for `positive_ttl` and no for `negative_ttl` (zero: not kept).
    pub fn new(positive_ttl: Duration, negative_ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let longest = positive_ttl.max(negative_ttl).max(Duration::from_millis(1));
        AnswerCache {
            map: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(longest)
                .build(),
            positive_ttl,
            negative_ttl,
            clock,
        }
    }

    /// The answer for `key`, if one is cached and still valid.
    pub fn get(&self, key: &K) -> Option<V> {
        let (answer, at, ttl) = self.map.get(key)?;
        if self.clock.now() < at + ttl {
            Some(answer)
        } else {
            self.map.invalidate(key);
            None
        }
    }

    /// Keeps `value` for `key`, for the positive TTL or the negative one (unless that TTL
    /// is zero).
    pub fn keep(&self, key: K, value: V, positive: bool) {
        let ttl = if positive {
            self.positive_ttl
        } else {
            self.negative_ttl
        };
        if !ttl.is_zero() {
            self.map.insert(key, (value, self.clock.now(), ttl));
        }
    }
}

impl<K: Hash + Eq + Send + Sync + 'static> AnswerCache<K, bool> {
    /// Keeps `answer` for `key` (unless its TTL is zero).
    pub fn insert(&self, key: K, answer: bool) {
        self.keep(key, answer, answer);
    }
}

/// Turns a login and password into a cache key that reveals neither.
pub struct LoginKeys {
    key: [u8; 32],
}

impl LoginKeys {
    /// With a fresh random key.
    pub fn new() -> LoginKeys {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        LoginKeys { key }
    }

    /// The key of this login and password.
    pub fn of(&self, login: &str, password: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&(login.len() as u64).to_be_bytes());
        mac.update(login.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl Default for LoginKeys {
    fn default() -> Self {
        LoginKeys::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common::ManualClock;

    #[test]
    fn yes_and_no_expire_on_their_own_ttls() {
        let clock = ManualClock::new();
        let c = AnswerCache::<&str, bool>::new(
            Duration::from_secs(60),
            Duration::from_secs(10),
            clock.clone(),
        );
        c.insert("known", true);
        c.insert("unknown", false);
        assert_eq!(c.get(&"known"), Some(true));
        assert_eq!(c.get(&"unknown"), Some(false));
        assert_eq!(c.get(&"other"), None);
        clock.advance(Duration::from_secs(10));
        assert_eq!(c.get(&"unknown"), None, "a no is kept shorter");
        assert_eq!(c.get(&"known"), Some(true));
        clock.advance(Duration::from_secs(50));
        assert_eq!(c.get(&"known"), None);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let c = AnswerCache::<&str, bool>::new(Duration::ZERO, Duration::ZERO, ManualClock::new());
        c.insert("a", true);
        c.insert("b", false);
        assert_eq!((c.get(&"a"), c.get(&"b")), (None, None));
    }

    #[test]
    fn login_keys_differ_by_password_and_split() {
        let k = LoginKeys::new();
        assert_eq!(k.of("alice", "pw"), k.of("alice", "pw"));
        assert_ne!(k.of("alice", "pw"), k.of("alice", "pw2"));
        assert_ne!(k.of("ab", "c"), k.of("a", "bc"));
        assert_ne!(k.of("alice", "pw"), LoginKeys::new().of("alice", "pw"));
    }
}
