//! SMTP AUTH: checking a login against the users in the store, with failed logins limited
//! per client and per account.
//!
//! The answer never says whether the user exists: an unknown user, a disabled one and a
//! wrong password all give [`AuthResult::Invalid`], after the same password-hash work (an
//! unknown user is checked against a dummy argon2id hash). Hash checks run on the
//! blocking pool (`spawn_blocking`), never on the async runtime.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::store::{User, UserDirectory};

/// A login to check.
#[derive(Clone)]
pub struct Credentials {
    /// The authentication identity (an address).
    pub username: String,
    /// The password as sent.
    pub password: String,
    /// Who is trying.
    pub client: IpAddr,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The result of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// Logged in as this user.
    Ok(User),
    /// Unknown user, disabled user or wrong password: the client cannot tell which.
    Invalid,
    /// Too many failed logins lately from this client or for this account.
    RateLimited,
    /// The users could not be read: try again later.
    Unavailable,
}

/// Checks logins.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `c`.
    async fn authenticate(&self, c: &Credentials) -> AuthResult;
}

/// Failed logins allowed per key within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failures allowed within `window`; the next attempt is refused unchecked.
    pub max_failures: u32,
    /// The window.
    pub window: Duration,
}

/// Counts failures per key (a client address, an account) in fixed windows.
#[derive(Debug)]
struct Failures {
    limit: FailureLimit,
    map: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Failures {
    fn new(limit: FailureLimit) -> Failures {
        Failures {
            limit,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn blocked(&self, key: &str) -> bool {
        let map = self.map.lock().expect("failures");
        map.get(key).is_some_and(|(n, since)| {
            since.elapsed() < self.limit.window && *n >= self.limit.max_failures
        })
    }

    fn failed(&self, key: &str) {
        let mut map = self.map.lock().expect("failures");
        if map.len() > 100_000 {
            let window = self.limit.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let e = map.entry(key.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.limit.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

/// A hash to check unknown users' passwords against, so they take as long as known ones.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| crate::password::hash("no such user"));

/// Logins checked against the store's `users` table (read at every AUTH: a change made
/// with the CLI applies to the next login).
pub struct StoreAuthenticator {
    store: Arc<dyn UserDirectory>,
    per_client: Failures,
    per_account: Failures,
}

impl StoreAuthenticator {
    /// Checks logins against `store`'s users, with these limits on failures.
    pub fn new(
        store: Arc<dyn UserDirectory>,
        per_client: FailureLimit,
        per_account: FailureLimit,
    ) -> StoreAuthenticator {
        StoreAuthenticator {
            store,
            per_client: Failures::new(per_client),
            per_account: Failures::new(per_account),
        }
    }
}

#[async_trait]
impl Authenticator for StoreAuthenticator {
    async fn authenticate(&self, c: &Credentials) -> AuthResult {
        let account = c.username.trim().to_lowercase();
        let client = c.client.to_string();
        if self.per_client.blocked(&client) || self.per_account.blocked(&account) {
            tracing::warn!(client = %c.client, user = %account, "AUTH refused: too many failed logins");
            return AuthResult::RateLimited;
        }
        let user = match self.store.user_get(&account).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "AUTH: users unavailable");
                return AuthResult::Unavailable;
            }
        };
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.clone());
        let password = c.password.clone();
        let matches =
            tokio::task::spawn_blocking(move || crate::password::verify(&hash, &password))
                .await
                .unwrap_or(false);
        match user {
            Some(u) if matches && u.enabled => AuthResult::Ok(u),
            other => {
                let why = match other {
                    None => "no such user",
                    Some(u) if !u.enabled => "disabled",
                    Some(_) => "wrong password",
                };
                tracing::info!(client = %c.client, user = %account, why, "AUTH failed");
                self.per_client.failed(&client);
                self.per_account.failed(&account);
                AuthResult::Invalid
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_after_the_limit_within_the_window() {
        let f = Failures::new(FailureLimit {
            max_failures: 2,
            window: Duration::from_millis(200),
        });
        assert!(!f.blocked("a"));
        f.failed("a");
        assert!(!f.blocked("a"));
        f.failed("a");
        assert!(f.blocked("a"));
        assert!(!f.blocked("b"), "per key");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!f.blocked("a"), "the window passed");
    }
}
