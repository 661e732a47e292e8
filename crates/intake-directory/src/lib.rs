//! Intake's directory: recipients and logins looked up where an organisation already keeps
//! them, in LDAP or in an SQL database (`[directory]`).
//!
//! - [`Directory`]: the two questions Intake asks (does this recipient exist? is this login
//!   right?). [`Guarded`] answers them: what the server uses.
//! - [`Backend`]: what a directory server answers, [`ldap::LdapDirectory`] or
//!   [`sql::SqlDirectory`]. [`Guarded`] puts one behind a cache ([`cache`]: positive
//!   answers for `cache_ttl`, negative ones for `negative_cache_ttl`), a circuit breaker
//!   ([`breaker`]: after a failure, fail fast for `breaker_cooldown`) and a deadline per
//!   call (`timeout`), and checks a stored password itself, on the blocking pool and outside
//!   that deadline (a slow hash is not a slow directory).
//! - [`settings::DirectorySettings`]: `[directory]` as serde reads it, validated, and
//!   [`settings::DirectorySettings::open`], which builds the [`Guarded`] directory.
//! - [`check::DirectoryRecipients`]: the RCPT check (`550 5.1.1` for an unknown recipient).
//!
//! A directory that cannot answer (down, slow, a bad query) gives a [`DirectoryError`]:
//! "could not decide". The caller maps it to its `on_error` (a deferral by default), never
//! to a rejection. A wrong password is not an error but [`LoginResult::Invalid`].
#![warn(missing_docs)]

mod auth;
pub mod cache;
pub mod check;
mod guarded;
pub mod ldap;
mod read;
pub mod settings;
pub mod sql;
#[cfg(feature = "testing")]
pub mod testing;
// The shared test helpers name this crate as the integration tests do.
#[cfg(test)]
extern crate self as intake_directory;
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

use std::time::Duration;

use async_trait::async_trait;

pub use auth::DirectoryAuthenticator;
pub use check::DirectoryRecipients;
pub use guarded::{Guarded, Guards};
pub use ldap::LdapDirectory;
pub use settings::{DirectoryKind, DirectorySettings, SettingsError};
pub use sql::SqlDirectory;

/// The answer to a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// The password is right.
    Valid,
    /// Unknown login or wrong password (the caller cannot tell which).
    Invalid,
}

/// Where recipients and logins are looked up.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Whether `address` is a recipient the directory knows.
    async fn recipient_exists(&self, address: &str) -> Result<bool, DirectoryError>;
    /// Whether `password` is right for `login`.
    async fn verify_login(
        &self,
        login: &str,
        password: &str,
    ) -> Result<LoginResult, DirectoryError>;
    /// The envelope senders `login` may use beyond the login itself, lower-cased (LDAP: the
    /// `sender_attributes` of its entry; SQL: the rows of `senders_query`, none without it).
    async fn senders(&self, login: &str) -> Result<Vec<String>, DirectoryError>;
}

/// What a directory server answers about a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginAnswer {
    /// The server decided (LDAP: the bind as the entry succeeded or was refused).
    Decided(LoginResult),
    /// The server gave the stored password (SQL), to be checked by [`Guarded`] with
    /// [`intake_core::password::verify_with`]; `None`: no such login.
    Stored(Option<String>),
}

/// A directory server: one round trip per question, no cache, no deadline of its own
/// beyond its connection settings. [`Guarded`] adds those.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Whether `address` is a recipient the server knows.
    async fn recipient_exists(&self, address: &str) -> Result<bool, DirectoryError>;
    /// What the server says about `login` with `password` (never empty).
    async fn login(&self, login: &str, password: &str) -> Result<LoginAnswer, DirectoryError>;
    /// The envelope senders `login` may use (as [`Directory::senders`]), as stored.
    async fn senders(&self, login: &str) -> Result<Vec<String>, DirectoryError>;
}

/// The directory could not decide.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The LDAP server failed or refused (connection, service bind, search).
    #[error("LDAP: {0}")]
    Ldap(Box<ldap3::LdapError>),
    /// The SQL server failed or refused (connection, query, a column that is not text).
    #[error("SQL: {0}")]
    Sql(Box<sqlx::Error>),
    /// No answer within `directory.timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open after a recent failure: not asked at all.
    #[error("not asked: the directory failed {ago:?} ago ({last})")]
    CircuitOpen {
        /// How long ago the failure was.
        ago: Duration,
        /// What the failure was.
        last: String,
    },
    /// This directory has no query or filter for the question (`recipient_query` unset).
    #[error("directory.{0} is not set")]
    NotConfigured(&'static str),
    /// The password check task failed.
    #[error("password check: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<intake_core::breaker::Refused> for DirectoryError {
    fn from(r: intake_core::breaker::Refused) -> Self {
        DirectoryError::CircuitOpen {
            ago: r.ago,
            last: r.last,
        }
    }
}

impl From<ldap3::LdapError> for DirectoryError {
    fn from(e: ldap3::LdapError) -> Self {
        DirectoryError::Ldap(Box::new(e))
    }
}

impl From<sqlx::Error> for DirectoryError {
    fn from(e: sqlx::Error) -> Self {
        DirectoryError::Sql(Box::new(e))
    }
}
