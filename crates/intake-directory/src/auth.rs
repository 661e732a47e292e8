//! SMTP AUTH against the directory (`auth.directory = true`): the login is checked by the
//! directory (an LDAP bind as the entry found, or the SQL password query and its hash),
//! behind the same failed-login limiter as Intake's own users. A login may use as envelope
//! sender itself (when it is an address) and the senders the directory gives it
//! ([`crate::Directory::senders`]).

use std::sync::Arc;

use async_trait::async_trait;
use intake_core::{AuthResult, Authenticator, Credentials, LoginLimiter, User};

use crate::{Directory, LoginResult};

/// An [`Authenticator`] over a [`Directory`].
pub struct DirectoryAuthenticator {
    directory: Arc<dyn Directory>,
    limiter: Arc<LoginLimiter>,
}

impl DirectoryAuthenticator {
    /// Logins checked by `directory`, failures counted in `limiter` (built once, kept across
    /// reloads).
    pub fn new(directory: Arc<dyn Directory>, limiter: Arc<LoginLimiter>) -> Self {
        DirectoryAuthenticator { directory, limiter }
    }
}

#[async_trait]
impl Authenticator for DirectoryAuthenticator {
    async fn authenticate(&self, c: &Credentials) -> AuthResult {
        let login = c.username.trim();
        if self.limiter.admit(c.client, Some(login)).await.is_err() {
            tracing::warn!(client = %c.client, user = %login, "AUTH refused: too many failed logins");
            return AuthResult::RateLimited;
        }
        match self.directory.verify_login(login, &c.password).await {
            // The envelope senders the directory gives this login (its own address when
            // the login is one; auth.restrict_senders holds MAIL FROM to them).
            Ok(LoginResult::Valid) => match self.directory.senders(login).await {
                Ok(senders) => AuthResult::Ok(User {
                    address: login.to_lowercase(),
                    password_hash: String::new(),
                    enabled: true,
                    senders,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, user = %login, "AUTH: the directory could not give the login's senders");
                    AuthResult::Unavailable
                }
            },
            Ok(LoginResult::Invalid) => {
                tracing::info!(client = %c.client, user = %login, "AUTH failed (directory)");
                self.limiter.failed(c.client, Some(login));
                AuthResult::Invalid
            }
            Err(e) => {
                tracing::warn!(error = %e, "AUTH: the directory could not decide");
                AuthResult::Unavailable
            }
        }
    }
}
