//! The directory: SMTP AUTH users and the valid recipients the CLI and the admin API
//! manage. Two caller traits ([`UserDirectory`] for logins and user management,
//! [`RecipientTable`] for the recipient check), one engine trait ([`DirectoryBackend`]).

use async_trait::async_trait;

use super::StoreError;

/// SMTP AUTH users, as the authenticator, the CLI and the admin API see them. Implemented
/// by `intake_store::Store` over a [`DirectoryBackend`] (addresses and senders trimmed and
/// lower-cased there). A store that keeps no users answers `Unavailable`: AUTH then fails
/// temporarily, never with a wrong-password reply.
#[async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    /// A user by address.
    async fn user_get(&self, address: &str) -> Result<Option<User>, StoreError>;

    /// Adds a user; false if the address exists already.
    async fn user_add(&self, user: User) -> Result<bool, StoreError>;

    /// Replaces a user's password hash; false if there is no such user.
    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError>;

    /// Enables or disables a user; false if there is no such user.
    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError>;

    /// Every user, by address.
    async fn user_list(&self) -> Result<Vec<User>, StoreError>;
}

/// The valid recipients kept in the store (`intake recipient add`), as the recipient check
/// and the CLI see them. Implemented by `intake_store::Store` over a [`DirectoryBackend`]
/// (entries trimmed, without a final dot, lower-cased there).
#[async_trait]
pub trait RecipientTable: Send + Sync + 'static {
    /// Adds an address (or `@domain`, every address of that domain) to the valid
    /// recipients. False if it was there already.
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError>;

    /// Removes an address or `@domain` from the valid recipients. False if it was absent.
    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError>;

    /// Every valid recipient entry, sorted.
    async fn recipient_list(&self) -> Result<Vec<String>, StoreError>;

    /// Whether `address` or its `@domain` is listed; `None` when the table is empty (no
    /// recipients kept in the store).
    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError>;
}

/// Users and recipients as a storage engine keeps them: keys arrive normalized by the
/// layer, and are stored and compared as they are. Every implementation passes the
/// directory cases of the conformance suite.
#[async_trait]
pub trait DirectoryBackend: Send + Sync + 'static {
    /// See [`UserDirectory::user_get`].
    async fn user_get(&self, address: &str) -> Result<Option<User>, StoreError>;
    /// See [`UserDirectory::user_add`].
    async fn user_add(&self, user: User) -> Result<bool, StoreError>;
    /// See [`UserDirectory::user_set_password`].
    async fn user_set_password(&self, address: &str, hash: &str) -> Result<bool, StoreError>;
    /// See [`UserDirectory::user_set_enabled`].
    async fn user_set_enabled(&self, address: &str, enabled: bool) -> Result<bool, StoreError>;
    /// See [`UserDirectory::user_list`].
    async fn user_list(&self) -> Result<Vec<User>, StoreError>;

    /// See [`RecipientTable::recipient_add`].
    async fn recipient_add(&self, address: &str) -> Result<bool, StoreError>;
    /// See [`RecipientTable::recipient_remove`].
    async fn recipient_remove(&self, address: &str) -> Result<bool, StoreError>;
    /// See [`RecipientTable::recipient_list`].
    async fn recipient_list(&self) -> Result<Vec<String>, StoreError>;
    /// See [`RecipientTable::recipient_lookup`].
    async fn recipient_lookup(&self, address: &str) -> Result<Option<bool>, StoreError>;
}

/// An SMTP AUTH user (the `users` table).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The login, an address; lower-cased.
    pub address: String,
    /// The password hash (see [`crate::password`]).
    pub password_hash: String,
    /// A disabled user cannot log in.
    pub enabled: bool,
    /// Envelope senders the user may use (`user@example.com`, or `@example.com` for a whole
    /// domain); empty: only the user's own address.
    pub senders: Vec<String>,
}

impl User {
    /// Whether the user may send with `mail_from` as the envelope sender.
    pub fn may_send_as(&self, mail_from: &str) -> bool {
        let from = mail_from.to_lowercase();
        if from == self.address {
            return true;
        }
        let domain = from.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        self.senders
            .iter()
            .any(|s| *s == from || Some(s) == domain.as_ref())
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("address", &self.address)
            .field("enabled", &self.enabled)
            .field("senders", &self.senders)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod user_tests {
    use super::User;

    #[test]
    fn a_user_sends_as_itself_and_as_listed_senders_only() {
        let u = User {
            address: "alice@example.test".into(),
            password_hash: String::new(),
            enabled: true,
            senders: vec!["sales@example.test".into(), "@alice.test".into()],
        };
        assert!(u.may_send_as("Alice@Example.test"));
        assert!(u.may_send_as("sales@example.test"));
        assert!(u.may_send_as("anything@alice.test"));
        assert!(!u.may_send_as("bob@example.test"));
        assert!(!u.may_send_as("x@sub.alice.test"));
        assert!(!u.may_send_as(""), "not the null sender");
        assert!(!format!("{u:?}").contains("password"), "no hash in logs");
    }
}
