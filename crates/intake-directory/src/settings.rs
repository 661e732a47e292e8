//! `[directory]`: the settings, as serde reads them, their validation, and
//! [`DirectorySettings::open`], which builds the guarded directory.
//!
//! ```toml
//! [directory]
//! type = "ldap"                                   # or "sql"
//! url = "ldap://127.0.0.1:389"                    # ldaps://…; postgres://… or mysql://… for sql
//! starttls = false
//! tls_ca = "/etc/intake/ldap-ca.pem"             # default: the system's roots
//! bind_dn = "cn=intake,dc=example,dc=test"
//! bind_password = "secret"
//! base = "ou=people,dc=example,dc=test"
//! recipient_filter = "(|(mail=%s)(mailAlternateAddress=%s))"
//! login_filter = "(uid=%s)"
//! sender_attributes = ["mail", "mailAlternateAddress"]
//! # sql:
//! # password_query = "SELECT password FROM customers WHERE login = $1 AND active"
//! # recipient_query = "SELECT 1 FROM mailboxes WHERE address = $1"
//! # senders_query = "SELECT address FROM mailboxes WHERE owner = $1"
//! cache_ttl = "60s"
//! negative_cache_ttl = "10s"
//! timeout = "5s"
//! breaker_cooldown = "10s"
//! max_connections = 4
//! ```
//!
//! Durations are integer seconds or strings such as `"250ms"`, `"30s"`, `"5m"`, `"1h"`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use intake_core::redact::Redacted;
use intake_core::{Clock, SystemClock};
use serde::{Deserialize, Deserializer};

use crate::guarded::{Guarded, Guards};
use crate::ldap::{LdapConfig, LdapDirectory};
use crate::sql::{SqlConfig, SqlDirectory, SqlServer, question_marks};

/// `directory.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryKind {
    /// An LDAP server.
    Ldap,
    /// PostgreSQL or MySQL/MariaDB.
    Sql,
}

impl DirectoryKind {
    /// As `directory.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            DirectoryKind::Ldap => "ldap",
            DirectoryKind::Sql => "sql",
        }
    }
}

/// The default LDAP recipient filter.
pub const DEFAULT_RECIPIENT_FILTER: &str = "(mail=%s)";
/// The default LDAP login filter.
pub const DEFAULT_LOGIN_FILTER: &str = "(uid=%s)";
/// The default LDAP attributes of a login's entry that hold its envelope senders.
pub const DEFAULT_SENDER_ATTRIBUTES: [&str; 2] = ["mail", "mailAlternateAddress"];

/// `[directory]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySettings {
    /// `ldap` or `sql`.
    #[serde(rename = "type")]
    pub kind: DirectoryKind,
    /// The server: `ldap://`, `ldaps://`, `postgres://`, `mysql://`.
    pub url: String,
    /// LDAP: upgrade `ldap://` with StartTLS (default false).
    #[serde(default)]
    pub starttls: bool,
    /// LDAP: a PEM file of the CA certificates to trust for `ldaps://` and StartTLS
    /// (none: the system's roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// LDAP: the DN to bind as for searches (none: anonymous).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// LDAP: its password.
    #[serde(default)]
    pub bind_password: Option<String>,
    /// LDAP: where searches start (required).
    #[serde(default)]
    pub base: Option<String>,
    /// LDAP: finds a recipient, `%s` = the address (default `(mail=%s)`).
    #[serde(default)]
    pub recipient_filter: Option<String>,
    /// LDAP: finds a login's entry, `%s` = the login (default `(uid=%s)`).
    #[serde(default)]
    pub login_filter: Option<String>,
    /// LDAP: the attributes of a login's entry that hold the envelope senders it may use
    /// (default `mail`, `mailAlternateAddress`).
    #[serde(default)]
    pub sender_attributes: Option<Vec<String>>,
    /// SQL: returns the stored password of the login (`$1` / `?`).
    #[serde(default)]
    pub password_query: Option<String>,
    /// SQL: returns a row for a known recipient (`$1` / `?`).
    #[serde(default)]
    pub recipient_query: Option<String>,
    /// SQL: returns the envelope senders of a login, one a row (`$1` / `?`); none: a login
    /// that is an address sends as itself only.
    #[serde(default)]
    pub senders_query: Option<String>,
    /// How long a yes is kept (default 60 s; 0: not cached).
    #[serde(default = "default_cache_ttl", deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// How long a no is kept (default 10 s; 0: not cached).
    #[serde(default = "default_negative_cache_ttl", deserialize_with = "duration")]
    pub negative_cache_ttl: Duration,
    /// How long one lookup may take (default 5 s).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// After a failure, lookups fail fast for this long (default 10 s).
    #[serde(default = "default_breaker_cooldown", deserialize_with = "duration")]
    pub breaker_cooldown: Duration,
    /// SQL: connections kept at most (default 4).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_negative_cache_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> u32 {
    4
}

impl std::fmt::Debug for DirectorySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySettings")
            .field("kind", &self.kind)
            .field("url", &intake_core::redact::url(&self.url))
            .field("starttls", &self.starttls)
            .field("tls_ca", &self.tls_ca)
            .field("bind_dn", &self.bind_dn)
            .field(
                "bind_password",
                &self
                    .bind_password
                    .as_deref()
                    .map(|p| Redacted(p.as_bytes())),
            )
            .field("base", &self.base)
            .field("recipient_filter", &self.recipient_filter)
            .field("login_filter", &self.login_filter)
            .field("sender_attributes", &self.sender_attributes)
            .field("password_query", &self.password_query)
            .field("recipient_query", &self.recipient_query)
            .field("senders_query", &self.senders_query)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("timeout", &self.timeout)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A `[directory]` that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// A key this type needs is not set.
    #[error("directory.{key} is required for type = \"{kind}\"")]
    Missing {
        /// The key.
        key: &'static str,
        /// `ldap` or `sql`.
        kind: &'static str,
    },
    /// A key of the other type is set.
    #[error("directory.{key} does not apply to type = \"{kind}\"")]
    NotFor {
        /// The key.
        key: &'static str,
        /// `ldap` or `sql`.
        kind: &'static str,
    },
    /// The URL's scheme does not fit the type.
    #[error("directory.url {url:?}: expected {expected}")]
    BadUrl {
        /// The URL, its password hidden.
        url: String,
        /// What would fit.
        expected: &'static str,
    },
    /// A filter or query lacks its placeholder.
    #[error("directory.{key} must contain {placeholder} (the value looked up)")]
    NoPlaceholder {
        /// The key.
        key: &'static str,
        /// `%s`, `$1` or `?`.
        placeholder: &'static str,
    },
    /// An LDAP filter that is not one (RFC 4515), with `%s` filled in.
    #[error("directory.{key}: {filter:?} is not an LDAP filter")]
    BadFilter {
        /// The key.
        key: &'static str,
        /// The filter.
        filter: String,
    },
    /// `bind_dn` without `bind_password` or the other way round.
    #[error("directory.bind_dn and directory.bind_password go together")]
    HalfBind,
    /// The password attribute among `sender_attributes`.
    #[error("directory.sender_attributes: {0:?} holds the password, not a sender")]
    PasswordAttribute(String),
    /// StartTLS on an `ldaps://` connection.
    #[error("directory.starttls applies to ldap:// URLs, not ldaps://")]
    StartTlsOnLdaps,
    /// A zero `timeout` or `max_connections`.
    #[error("directory.{0} must be more than 0")]
    Zero(&'static str),
    /// Neither query is set: the SQL directory could answer nothing.
    #[error("directory: type = \"sql\" needs password_query, recipient_query or both")]
    NoQuery,
    /// sqlx could not read the URL.
    #[error("directory.url: {0}")]
    SqlUrl(String),
    /// `tls_ca` cannot be read or holds no certificate.
    #[error("directory.tls_ca: {0}")]
    TlsCa(String),
}

impl DirectorySettings {
    /// Settings of this kind at `url`, every other key at its default.
    pub fn new(kind: DirectoryKind, url: impl Into<String>) -> DirectorySettings {
        DirectorySettings {
            kind,
            url: url.into(),
            starttls: false,
            tls_ca: None,
            bind_dn: None,
            bind_password: None,
            base: None,
            recipient_filter: None,
            login_filter: None,
            sender_attributes: None,
            password_query: None,
            recipient_query: None,
            senders_query: None,
            cache_ttl: default_cache_ttl(),
            negative_cache_ttl: default_negative_cache_ttl(),
            timeout: default_timeout(),
            breaker_cooldown: default_breaker_cooldown(),
            max_connections: default_max_connections(),
        }
    }

    /// Whether recipients can be looked up (`recipients.directory = true` needs it).
    pub fn answers_recipients(&self) -> bool {
        self.kind == DirectoryKind::Ldap || self.recipient_query.is_some()
    }

    /// Whether logins can be checked (`auth.directory = true` needs it).
    pub fn answers_logins(&self) -> bool {
        self.kind == DirectoryKind::Ldap || self.password_query.is_some()
    }

    /// Checks that these settings can work; the first problem found.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.timeout.is_zero() {
            return Err(SettingsError::Zero("timeout"));
        }
        if self.max_connections == 0 {
            return Err(SettingsError::Zero("max_connections"));
        }
        match self.kind {
            DirectoryKind::Ldap => self.validate_ldap(),
            DirectoryKind::Sql => self.validate_sql(),
        }
    }

    fn validate_ldap(&self) -> Result<(), SettingsError> {
        let kind = "ldap";
        let scheme = self
            .url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("ldap") => {}
            Some("ldaps") if self.starttls => return Err(SettingsError::StartTlsOnLdaps),
            Some("ldaps") => {}
            _ => {
                return Err(SettingsError::BadUrl {
                    url: intake_core::redact::url(&self.url),
                    expected: "ldap://host[:port] or ldaps://host[:port]",
                });
            }
        }
        for (key, set) in [
            ("password_query", self.password_query.is_some()),
            ("recipient_query", self.recipient_query.is_some()),
            ("senders_query", self.senders_query.is_some()),
        ] {
            if set {
                return Err(SettingsError::NotFor { key, kind });
            }
        }
        if self.base.as_deref().is_none_or(|b| b.trim().is_empty()) {
            return Err(SettingsError::Missing { key: "base", kind });
        }
        if self.bind_dn.is_some() != self.bind_password.is_some() {
            return Err(SettingsError::HalfBind);
        }
        for a in self.sender_attributes() {
            let name = a.to_ascii_lowercase();
            if name.contains("password") || name == "2.5.4.35" {
                return Err(SettingsError::PasswordAttribute(a));
            }
        }
        for (key, filter) in [
            ("recipient_filter", self.recipient_filter()),
            ("login_filter", self.login_filter()),
        ] {
            if !filter.contains("%s") {
                return Err(SettingsError::NoPlaceholder {
                    key,
                    placeholder: "%s",
                });
            }
            if ldap3::parse_filter(crate::ldap::fill(filter, "x")).is_err() {
                return Err(SettingsError::BadFilter {
                    key,
                    filter: filter.to_string(),
                });
            }
        }
        Ok(())
    }

    fn validate_sql(&self) -> Result<(), SettingsError> {
        let kind = "sql";
        let Some(server) = SqlServer::of_url(&self.url) else {
            return Err(SettingsError::BadUrl {
                url: intake_core::redact::url(&self.url),
                expected: "postgres://… or mysql://…",
            });
        };
        for (key, set) in [
            ("bind_dn", self.bind_dn.is_some()),
            ("bind_password", self.bind_password.is_some()),
            ("base", self.base.is_some()),
            ("recipient_filter", self.recipient_filter.is_some()),
            ("login_filter", self.login_filter.is_some()),
            ("sender_attributes", self.sender_attributes.is_some()),
            ("starttls", self.starttls),
            ("tls_ca", self.tls_ca.is_some()),
        ] {
            if set {
                return Err(SettingsError::NotFor { key, kind });
            }
        }
        if self.password_query.is_none() && self.recipient_query.is_none() {
            return Err(SettingsError::NoQuery);
        }
        for (key, query) in [
            ("password_query", &self.password_query),
            ("recipient_query", &self.recipient_query),
            ("senders_query", &self.senders_query),
        ] {
            let Some(query) = query else { continue };
            let has = match server {
                SqlServer::Postgres => query.contains("$1"),
                SqlServer::Mysql => question_marks(query) > 0,
            };
            if !has {
                return Err(SettingsError::NoPlaceholder {
                    key,
                    placeholder: server.placeholder(),
                });
            }
        }
        Ok(())
    }

    fn recipient_filter(&self) -> &str {
        self.recipient_filter
            .as_deref()
            .unwrap_or(DEFAULT_RECIPIENT_FILTER)
    }

    fn login_filter(&self) -> &str {
        self.login_filter.as_deref().unwrap_or(DEFAULT_LOGIN_FILTER)
    }

    /// LDAP: the attributes read as a login's senders.
    pub fn sender_attributes(&self) -> Vec<String> {
        match &self.sender_attributes {
            Some(a) => a.clone(),
            None => DEFAULT_SENDER_ATTRIBUTES.map(String::from).to_vec(),
        }
    }

    /// The cache, breaker and timeout these settings ask for.
    pub fn guards(&self) -> Guards {
        Guards {
            timeout: self.timeout,
            cache_ttl: self.cache_ttl,
            negative_cache_ttl: self.negative_cache_ttl,
            breaker_cooldown: self.breaker_cooldown,
        }
    }

    /// Validates, then builds the directory behind its cache, breaker and timeout, on the
    /// system clock. Connects on first use (call within a Tokio runtime).
    pub fn open(&self) -> Result<Guarded, SettingsError> {
        self.open_with_clock(Arc::new(SystemClock))
    }

    /// [`DirectorySettings::open`] with the clock that judges cache expiry and the
    /// breaker's cooldown (tests move it).
    pub fn open_with_clock(&self, clock: Arc<dyn Clock>) -> Result<Guarded, SettingsError> {
        self.validate()?;
        let inner: Arc<dyn crate::Backend> = match self.kind {
            DirectoryKind::Ldap => Arc::new(LdapDirectory::new(LdapConfig {
                url: self.url.clone(),
                starttls: self.starttls,
                bind: self.bind_dn.clone().zip(self.bind_password.clone()),
                base: self.base.clone().unwrap_or_default(),
                recipient_filter: self.recipient_filter().to_string(),
                login_filter: self.login_filter().to_string(),
                sender_attributes: self.sender_attributes(),
                timeout: self.timeout,
                tls: match &self.tls_ca {
                    Some(ca) => Some(crate::ldap::tls_trusting(ca).map_err(SettingsError::TlsCa)?),
                    None => None,
                },
            })),
            DirectoryKind::Sql => Arc::new(
                SqlDirectory::new(&SqlConfig {
                    url: self.url.clone(),
                    password_query: self.password_query.clone(),
                    recipient_query: self.recipient_query.clone(),
                    senders_query: self.senders_query.clone(),
                    timeout: self.timeout,
                    max_connections: self.max_connections,
                })
                .map_err(|e| SettingsError::SqlUrl(e.to_string()))?,
            ),
        };
        Ok(Guarded::new(inner, self.guards(), clock))
    }
}

/// A duration: integer seconds, or a string such as `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{t:?} is not a duration (examples: 30, \"30s\", \"5m\", \"250ms\")"
            ))
        }),
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"`, plain digits (seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
