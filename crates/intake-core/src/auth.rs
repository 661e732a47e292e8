//! SMTP AUTH: checking a login against the users in the store, with failed logins limited
//! by a [`LoginLimiter`] (per client address, per address and account; an account attacked
//! from many addresses is slowed down, never locked).
//!
//! The answer never says whether the user exists: an unknown user, a disabled one and a
//! wrong password all give [`AuthResult::Invalid`], after the same password-hash work (an
//! unknown user is checked against a dummy argon2id hash). Hash checks run on the
//! blocking pool (`spawn_blocking`), never on the async runtime.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;

use crate::login_limit::LoginLimiter;
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
    /// Mailpit's chaos `authentication` trigger fired: answer this code
    /// ([`crate::chaos`]), whatever the credentials.
    Chaos(u16),
}

/// Checks logins.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `c`.
    async fn authenticate(&self, c: &Credentials) -> AuthResult;
}

/// A hash to check unknown users' passwords against, so they take as long as known ones.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| crate::password::hash("no such user"));

/// Logins checked against the store's `users` table (read at every AUTH: a change made
/// with the CLI applies to the next login).
pub struct StoreAuthenticator {
    store: Arc<dyn UserDirectory>,
    limiter: Arc<LoginLimiter>,
}

impl StoreAuthenticator {
    /// Checks logins against `store`'s users, counting failures in `limiter` (built once
    /// and kept across reloads, so that a reload does not forgive a guesser).
    pub fn new(store: Arc<dyn UserDirectory>, limiter: Arc<LoginLimiter>) -> StoreAuthenticator {
        StoreAuthenticator { store, limiter }
    }
}

/// Logins refused by the limiter, summarized in the log.
static REFUSED: crate::net::Repeated =
    crate::net::Repeated::new(std::time::Duration::from_secs(10));

#[async_trait]
impl Authenticator for StoreAuthenticator {
    async fn authenticate(&self, c: &Credentials) -> AuthResult {
        let account = c.username.trim().to_lowercase();
        if self.limiter.admit(c.client, Some(&account)).await.is_err() {
            // A guesser keeps trying: logged once per client and account, then a count
            // every ten seconds while it goes on.
            if let Some(repeats) = REFUSED.hit(&format!("{} {account}", c.client)) {
                tracing::warn!(client = %c.client, user = %account, repeats,
                    "AUTH refused: too many failed logins");
            }
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
                self.limiter.failed(c.client, Some(&account));
                AuthResult::Invalid
            }
        }
    }
}
