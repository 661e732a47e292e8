//! [`Guarded`]: a directory behind the answer cache, the circuit breaker and a deadline per
//! call. What the server holds (`Arc<Guarded>` or `Arc<dyn Directory>`).

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use intake_core::Clock;
use intake_core::breaker::Breaker;
use intake_core::password::{self, Plaintext};

use crate::cache::{AnswerCache, LoginKeys};
use crate::{Backend, Directory, DirectoryError, LoginAnswer, LoginResult};

/// A hash to check unknown logins' passwords against, so they take as long as known ones.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| password::hash("no such login"));

/// How a [`Guarded`] directory is guarded (from [`crate::DirectorySettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// Each call must answer within this.
    pub timeout: Duration,
    /// A yes is kept this long.
    pub cache_ttl: Duration,
    /// A no is kept this long.
    pub negative_cache_ttl: Duration,
    /// After a failure, calls fail fast for this long.
    pub breaker_cooldown: Duration,
}

/// A directory behind a cache, a circuit breaker and a timeout.
pub struct Guarded {
    inner: Arc<dyn Backend>,
    guards: Guards,
    breaker: Breaker,
    recipients: AnswerCache<String>,
    logins: AnswerCache<[u8; 32]>,
    /// The senders of each login (a list found: `cache_ttl`; none: `negative_cache_ttl`).
    senders: AnswerCache<String, Vec<String>>,
    keys: LoginKeys,
}

impl Guarded {
    /// Guards `inner` as `guards` says; `clock` judges cache expiry (the breaker goes by
    /// the monotonic clock).
    pub fn new(inner: Arc<dyn Backend>, guards: Guards, clock: Arc<dyn Clock>) -> Guarded {
        Guarded {
            inner,
            guards,
            breaker: Breaker::new("directory", guards.breaker_cooldown),
            recipients: AnswerCache::new(
                guards.cache_ttl,
                guards.negative_cache_ttl,
                clock.clone(),
            ),
            logins: AnswerCache::new(guards.cache_ttl, guards.negative_cache_ttl, clock.clone()),
            senders: AnswerCache::new(guards.cache_ttl, guards.negative_cache_ttl, clock),
            keys: LoginKeys::new(),
        }
    }

    /// Whether calls currently fail fast (the directory failed within the cooldown).
    pub fn is_failing(&self) -> bool {
        self.breaker.is_open()
    }

    /// Runs one call through the breaker and under the deadline.
    async fn ask<T>(
        &self,
        call: impl Future<Output = Result<T, DirectoryError>>,
    ) -> Result<T, DirectoryError> {
        let permit = self.breaker.admit()?;
        match tokio::time::timeout(self.guards.timeout, call).await {
            Ok(Ok(v)) => {
                permit.succeeded();
                Ok(v)
            }
            // A missing query is our configuration, not the directory failing.
            Ok(Err(e @ DirectoryError::NotConfigured(_))) => {
                permit.succeeded();
                Err(e)
            }
            Ok(Err(e)) => {
                permit.failed(&e);
                Err(e)
            }
            Err(_) => {
                let e = DirectoryError::Timeout(self.guards.timeout);
                permit.failed(&e);
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Directory for Guarded {
    async fn recipient_exists(&self, address: &str) -> Result<bool, DirectoryError> {
        let key = address.trim().to_string();
        if let Some(known) = self.recipients.get(&key) {
            return Ok(known);
        }
        let known = self.ask(self.inner.recipient_exists(&key)).await?;
        self.recipients.insert(key, known);
        Ok(known)
    }

    async fn verify_login(
        &self,
        login: &str,
        password: &str,
    ) -> Result<LoginResult, DirectoryError> {
        // An empty password would be an anonymous LDAP bind; no directory gets one.
        if login.is_empty() || password.is_empty() {
            return Ok(LoginResult::Invalid);
        }
        let key = self.keys.of(login, password);
        if let Some(valid) = self.logins.get(&key) {
            return Ok(if valid {
                LoginResult::Valid
            } else {
                LoginResult::Invalid
            });
        }
        let result = match self.ask(self.inner.login(login, password)).await? {
            LoginAnswer::Decided(result) => result,
            LoginAnswer::Stored(stored) => check_stored(stored, password).await?,
        };
        self.logins.insert(key, result == LoginResult::Valid);
        Ok(result)
    }

    async fn senders(&self, login: &str) -> Result<Vec<String>, DirectoryError> {
        let key = login.trim().to_lowercase();
        if let Some(senders) = self.senders.get(&key) {
            return Ok(senders);
        }
        let mut senders: Vec<String> = (self.ask(self.inner.senders(login.trim())).await?)
            .into_iter()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        senders.sort();
        senders.dedup();
        self.senders.keep(key, senders.clone(), !senders.is_empty());
        Ok(senders)
    }
}

/// Checks `password` against a stored one on the blocking pool (an unknown login against a
/// dummy hash, so it takes as long).
async fn check_stored(
    stored: Option<String>,
    password: &str,
) -> Result<LoginResult, DirectoryError> {
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| DUMMY_HASH.clone());
    let password = password.to_string();
    let matches = tokio::task::spawn_blocking(move || {
        password::verify_with(&hash, &password, Plaintext::Accept)
    })
    .await?;
    Ok(if known && matches {
        LoginResult::Valid
    } else {
        LoginResult::Invalid
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::test_common::ManualClock;

    /// A directory of fixed recipients that can be switched off or made to hang.
    #[derive(Default)]
    struct Fake {
        recipients: Mutex<Vec<String>>,
        down: std::sync::atomic::AtomicBool,
        hang: std::sync::atomic::AtomicBool,
        calls: AtomicUsize,
        senders: Mutex<std::collections::HashMap<String, Vec<String>>>,
    }

    #[async_trait]
    impl Backend for Fake {
        async fn recipient_exists(&self, address: &str) -> Result<bool, DirectoryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(DirectoryError::Timeout(Duration::from_millis(1)));
            }
            Ok(self.recipients.lock().unwrap().iter().any(|r| r == address))
        }
        async fn login(&self, login: &str, pw: &str) -> Result<LoginAnswer, DirectoryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(match login {
                "alice" if pw == "right" => LoginAnswer::Decided(LoginResult::Valid),
                "alice" => LoginAnswer::Decided(LoginResult::Invalid),
                "stored" => LoginAnswer::Stored(Some("{PLAIN}right".into())),
                _ => LoginAnswer::Stored(None),
            })
        }
        async fn senders(&self, login: &str) -> Result<Vec<String>, DirectoryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .senders
                .lock()
                .unwrap()
                .get(login)
                .cloned()
                .unwrap_or_default())
        }
    }

    const GUARDS: Guards = Guards {
        timeout: Duration::from_secs(2),
        cache_ttl: Duration::from_secs(60),
        negative_cache_ttl: Duration::from_secs(10),
        breaker_cooldown: Duration::from_secs(5),
    };

    fn guarded(fake: &Arc<Fake>, clock: &Arc<ManualClock>) -> Guarded {
        Guarded::new(fake.clone(), GUARDS, clock.clone())
    }

    #[tokio::test]
    async fn answers_are_cached_and_changes_seen_after_the_ttl() {
        let (fake, clock) = (Arc::new(Fake::default()), ManualClock::new());
        fake.recipients.lock().unwrap().push("a@x.test".into());
        let g = guarded(&fake, &clock);
        assert!(g.recipient_exists("a@x.test").await.unwrap());
        assert!(!g.recipient_exists("b@x.test").await.unwrap());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // Changed in the directory: the cached answers stand until their TTLs pass.
        *fake.recipients.lock().unwrap() = vec!["b@x.test".into()];
        assert!(g.recipient_exists("a@x.test").await.unwrap());
        assert!(!g.recipient_exists("b@x.test").await.unwrap());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "both from the cache");
        clock.advance(GUARDS.negative_cache_ttl);
        assert!(
            g.recipient_exists("b@x.test").await.unwrap(),
            "the no expired"
        );
        assert!(
            g.recipient_exists("a@x.test").await.unwrap(),
            "the yes did not"
        );
        clock.advance(GUARDS.cache_ttl);
        assert!(!g.recipient_exists("a@x.test").await.unwrap());
    }

    #[tokio::test]
    async fn logins_are_cached_per_password() {
        let (fake, clock) = (Arc::new(Fake::default()), ManualClock::new());
        let g = guarded(&fake, &clock);
        assert_eq!(
            g.verify_login("alice", "wrong").await.unwrap(),
            LoginResult::Invalid
        );
        assert_eq!(
            g.verify_login("alice", "right").await.unwrap(),
            LoginResult::Valid
        );
        assert_eq!(
            g.verify_login("alice", "right").await.unwrap(),
            LoginResult::Valid
        );
        assert_eq!(
            g.verify_login("alice", "wrong").await.unwrap(),
            LoginResult::Invalid
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            g.verify_login("alice", "").await.unwrap(),
            LoginResult::Invalid
        );
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "an empty password is not asked"
        );
    }

    #[tokio::test]
    async fn senders_are_lower_cased_and_cached_for_their_ttls() {
        let (fake, clock) = (Arc::new(Fake::default()), ManualClock::new());
        let g = guarded(&fake, &clock);
        fake.senders.lock().unwrap().insert(
            "alice".into(),
            vec!["Alice@X.test".into(), "alice@x.test".into(), " ".into()],
        );
        assert_eq!(g.senders("alice").await.unwrap(), ["alice@x.test"]);
        assert_eq!(g.senders("bob").await.unwrap(), Vec::<String>::new());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        fake.senders
            .lock()
            .unwrap()
            .insert("bob".into(), vec!["bob@x.test".into()]);
        assert_eq!(g.senders("ALICE").await.unwrap(), ["alice@x.test"]);
        assert_eq!(g.senders("bob").await.unwrap(), Vec::<String>::new());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "both from the cache");
        clock.advance(GUARDS.negative_cache_ttl);
        assert_eq!(g.senders("bob").await.unwrap(), ["bob@x.test"]);
    }

    #[tokio::test]
    async fn stored_passwords_are_checked_here() {
        let (fake, clock) = (Arc::new(Fake::default()), ManualClock::new());
        let g = guarded(&fake, &clock);
        assert_eq!(
            g.verify_login("stored", "right").await.unwrap(),
            LoginResult::Valid
        );
        assert_eq!(
            g.verify_login("stored", "wrong").await.unwrap(),
            LoginResult::Invalid
        );
        assert_eq!(
            g.verify_login("nobody", "right").await.unwrap(),
            LoginResult::Invalid
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_directory_fails_fast_then_is_probed() {
        let (fake, clock) = (Arc::new(Fake::default()), ManualClock::new());
        let g = guarded(&fake, &clock);
        fake.down.store(true, Ordering::SeqCst);
        assert!(matches!(
            g.recipient_exists("a@x.test").await,
            Err(DirectoryError::Timeout(_))
        ));
        assert!(matches!(
            g.recipient_exists("b@x.test").await,
            Err(DirectoryError::CircuitOpen { .. })
        ));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "not asked while open");
        fake.down.store(false, Ordering::SeqCst);
        tokio::time::advance(GUARDS.breaker_cooldown).await;
        assert!(!g.recipient_exists("b@x.test").await.unwrap(), "the probe");
        assert!(!g.is_failing());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_directory_costs_one_timeout() {
        let (fake, clock) = (Arc::new(Fake::default()), ManualClock::new());
        let g = guarded(&fake, &clock);
        fake.hang.store(true, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        assert!(matches!(
            g.recipient_exists("a@x.test").await,
            Err(DirectoryError::Timeout(d)) if d == GUARDS.timeout
        ));
        assert_eq!(started.elapsed(), GUARDS.timeout);
        assert!(matches!(
            g.recipient_exists("a@x.test").await,
            Err(DirectoryError::CircuitOpen { .. })
        ));
        assert_eq!(
            started.elapsed(),
            GUARDS.timeout,
            "the second failed at once"
        );
    }
}
