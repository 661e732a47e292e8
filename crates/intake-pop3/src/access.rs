//! Who may read what over POP3, following the HTTP side's access modes
//! (`http.access`, see docs/api.md): [`AccessAuthenticator`] turns a USER/PASS pair into a
//! [`Grant`] with the mode's rules; the credential check itself ([`Credentials`]: htpasswd
//! users and bearer tokens) is the HTTP side's, behind a trait.
//!
//! | login | open | public | private |
//! |---|---|---|---|
//! | a valid credential with `read` | all mail | all mail | all mail |
//! | an address, no valid credential | that mailbox | that mailbox | refused |
//! | anything else | all mail | refused | refused |
//!
//! A wrong password for a known user is refused in every mode (as HTTP answers 401). DELE
//! needs the credential's `delete` right; anonymous logins delete in open mode, and in public
//! mode when `public_delete` is on.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::maildrop::{AuthError, Authenticator, Grant, Reach};

/// The access mode (the HTTP side's `http.access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// Everyone may read everything.
    Open,
    /// One mailbox by its address for anyone; all mail with a credential.
    Public,
    /// Nothing without a credential.
    Private,
}

/// What a valid credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// Read any mail.
    pub read: bool,
    /// Delete any mail.
    pub delete: bool,
}

/// The outcome of checking a login and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// A valid credential (an htpasswd user with its password, or a token as the password).
    Valid(Rights),
    /// A known user with a wrong password.
    Wrong,
    /// Neither a known user nor a token.
    Unknown,
}

/// The credential check: production adapts the HTTP side's htpasswd users and tokens.
#[async_trait]
pub trait Credentials: Send + Sync + 'static {
    /// Checks `user` and `password` from `client`; hashing belongs off the async threads.
    /// A client or account over a failed-login limit (the shared login limiter) should get
    /// [`Checked::Wrong`] without the check: the client cannot tell the difference.
    async fn check(&self, user: &str, password: &str, client: IpAddr)
    -> Result<Checked, AuthError>;
}

/// The access modes' rules over a [`Credentials`] check.
pub struct AccessAuthenticator {
    mode: AccessMode,
    public_delete: bool,
    credentials: Arc<dyn Credentials>,
}

impl AccessAuthenticator {
    /// Rules of `mode`; `public_delete` as the HTTP side's `http.public_delete`.
    pub fn new(mode: AccessMode, public_delete: bool, credentials: Arc<dyn Credentials>) -> Self {
        AccessAuthenticator {
            mode,
            public_delete,
            credentials,
        }
    }
}

/// A login that names one mailbox: `local@domain`, nothing else.
fn looks_like_address(user: &str) -> bool {
    matches!(user.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'))
}

#[async_trait]
impl Authenticator for AccessAuthenticator {
    async fn login(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Option<Grant>, AuthError> {
        let all = |may_delete| {
            Some(Grant {
                reach: Reach::All,
                may_delete,
            })
        };
        let one = |may_delete| {
            Some(Grant {
                reach: Reach::Mailboxes(vec![user.to_ascii_lowercase()]),
                may_delete,
            })
        };
        Ok(
            match (
                self.credentials.check(user, password, client).await?,
                self.mode,
            ) {
                (Checked::Valid(r), _) if r.read => all(r.delete),
                (Checked::Wrong, _) => None,
                (_, AccessMode::Private) => None,
                (_, AccessMode::Open) if looks_like_address(user) => one(true),
                (_, AccessMode::Open) => all(true),
                (_, AccessMode::Public) if looks_like_address(user) => one(self.public_delete),
                (_, AccessMode::Public) => None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    #[async_trait]
    impl Credentials for Fixed {
        async fn check(&self, user: &str, password: &str, _: IpAddr) -> Result<Checked, AuthError> {
            Ok(match (user, password) {
                ("reader", "good") => Checked::Valid(Rights {
                    read: true,
                    delete: false,
                }),
                ("reader", _) => Checked::Wrong,
                (_, "token-rd") => Checked::Valid(Rights {
                    read: true,
                    delete: true,
                }),
                (_, "token-del-only") => Checked::Valid(Rights {
                    read: false,
                    delete: true,
                }),
                _ => Checked::Unknown,
            })
        }
    }

    async fn login(mode: AccessMode, user: &str, pw: &str) -> Option<Grant> {
        AccessAuthenticator::new(mode, false, Arc::new(Fixed))
            .login(user, pw, IpAddr::from([127, 0, 0, 1]))
            .await
            .unwrap()
    }

    fn all(may_delete: bool) -> Option<Grant> {
        Some(Grant {
            reach: Reach::All,
            may_delete,
        })
    }

    #[tokio::test]
    async fn private_mode_needs_a_valid_credential_with_read() {
        use AccessMode::Private;
        assert_eq!(login(Private, "reader", "good").await, all(false));
        assert_eq!(login(Private, "any", "token-rd").await, all(true));
        assert_eq!(login(Private, "reader", "bad").await, None);
        assert_eq!(login(Private, "bob@x.test", "x").await, None);
        assert_eq!(login(Private, "any", "token-del-only").await, None);
    }

    #[tokio::test]
    async fn public_mode_opens_one_mailbox_by_address_and_all_mail_with_a_credential() {
        use AccessMode::Public;
        assert_eq!(
            login(Public, "Bob@X.test", "anything").await,
            Some(Grant {
                reach: Reach::Mailboxes(vec!["bob@x.test".into()]),
                may_delete: false,
            })
        );
        assert_eq!(login(Public, "reader", "good").await, all(false));
        assert_eq!(login(Public, "reader", "bad").await, None);
        assert_eq!(login(Public, "someone", "x").await, None);
        assert_eq!(login(Public, "a@b@c", "x").await, None);
    }

    #[tokio::test]
    async fn open_mode_reads_everything_but_still_refuses_a_wrong_password() {
        use AccessMode::Open;
        assert_eq!(login(Open, "anyone", "x").await, all(true));
        assert_eq!(
            login(Open, "bob@x.test", "x").await.map(|g| g.reach),
            Some(Reach::Mailboxes(vec!["bob@x.test".into()]))
        );
        assert_eq!(login(Open, "reader", "bad").await, None);
    }
}
