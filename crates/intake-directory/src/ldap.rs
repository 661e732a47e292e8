//! The LDAP directory (ldap3, rustls on ring): `ldap://` (optionally upgraded with
//! StartTLS) or `ldaps://`.
//!
//! - A recipient exists when `recipient_filter`, with `%s` replaced by the address, finds
//!   an entry under `base`.
//! - A login is right when `login_filter`, with `%s` replaced by the login, finds exactly
//!   one entry and a bind as that entry's DN with the password succeeds (on a connection
//!   of its own). The password is never read from the directory, so any scheme the server
//!   knows works, and its password policy applies.
//!
//! - A login's envelope senders are the values of `sender_attributes` (`mail`,
//!   `mailAlternateAddress`) of the one entry `login_filter` finds; only those attributes
//!   are asked for, never the password.
//!
//! Searches run on one shared connection bound as `bind_dn` (anonymous without it),
//! opened on first use and again after it drops. `%s` is escaped as RFC 4515 requires
//! (`*`, `(`, `)`, `\` and NUL), so a login of `*)(uid=*` matches nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions, SearchResult,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Mutex;

use crate::{Backend, DirectoryError, LoginAnswer, LoginResult};

/// What the LDAP directory needs (from [`crate::DirectorySettings`]).
#[derive(Clone)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// The service bind for searches (`bind_dn`, `bind_password`); none: anonymous.
    pub bind: Option<(String, String)>,
    /// Where searches start (subtree).
    pub base: String,
    /// Finds a recipient, `%s` = the address.
    pub recipient_filter: String,
    /// Finds a login's entry, `%s` = the login.
    pub login_filter: String,
    /// The attributes of a login's entry that hold the envelope senders it may use.
    pub sender_attributes: Vec<String>,
    /// Connect and per-operation timeout.
    pub timeout: Duration,
    /// The TLS settings for `ldaps://` and StartTLS (none: the system's roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A TLS client configuration (ring) trusting only the CA certificates in the PEM file
/// `ca`, for a directory whose certificate a private CA issued.
pub fn tls_trusting(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl std::fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &intake_core::redact::url(&self.url))
            .field("starttls", &self.starttls)
            .field(
                "bind",
                &self
                    .bind
                    .as_ref()
                    .map(|(dn, pw)| (dn, intake_core::redact::Redacted(pw.as_bytes()))),
            )
            .field("base", &self.base)
            .field("recipient_filter", &self.recipient_filter)
            .field("login_filter", &self.login_filter)
            .field("sender_attributes", &self.sender_attributes)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Result codes of a user bind that mean "no" rather than "could not decide":
/// inappropriateAuthentication (48), invalidCredentials (49), insufficientAccessRights
/// (50), unwillingToPerform (53: e.g. a locked account).
const BIND_REFUSED: [u32; 4] = [48, 49, 50, 53];

/// sizeLimitExceeded: more entries than asked for, which still answers the question.
const SIZE_LIMIT_EXCEEDED: u32 = 4;

/// The LDAP directory.
#[derive(Debug)]
pub struct LdapDirectory {
    cfg: LdapConfig,
    /// The service connection, bound as `bind_dn`, shared by all searches.
    service: Mutex<Option<Ldap>>,
}

/// `filter` with every `%s` replaced by `value`, escaped as an RFC 4515 assertion value.
pub fn fill(filter: &str, value: &str) -> String {
    filter.replace("%s", &ldap3::ldap_escape(value))
}

impl LdapDirectory {
    /// The directory these settings describe. Connects on first use.
    pub fn new(cfg: LdapConfig) -> LdapDirectory {
        LdapDirectory {
            cfg,
            service: Mutex::new(None),
        }
    }

    /// A new connection (driven by a task of its own), not yet bound.
    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.timeout)
            .set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.cfg.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url).await?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// The service connection: the open one, or a new one bound as `bind_dn`.
    async fn service(&self) -> Result<Ldap, DirectoryError> {
        let mut slot = self.service.lock().await;
        if let Some(ldap) = slot.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        *slot = None;
        let mut ldap = self.connect().await?;
        if let Some((dn, password)) = &self.cfg.bind {
            ldap.with_timeout(self.cfg.timeout)
                .simple_bind(dn, password)
                .await?
                .success()?;
        }
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    /// The entries `filter` finds under `base` (at most `limit`), with the attributes
    /// `attrs` (`["1.1"]`: none).
    async fn search(
        &self,
        filter: &str,
        limit: i32,
        attrs: Vec<&str>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let mut ldap = self.service().await?;
        let found = ldap
            .with_timeout(self.cfg.timeout)
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .search(&self.cfg.base, Scope::Subtree, filter, attrs)
            .await;
        let SearchResult(entries, result) = match found {
            Ok(r) => r,
            Err(e) => {
                // Whatever went wrong, start the next search on a fresh connection.
                *self.service.lock().await = None;
                return Err(e.into());
            }
        };
        if result.rc != SIZE_LIMIT_EXCEEDED {
            result.success()?;
        }
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect())
    }

    /// The DNs of the entries `filter` finds under `base` (at most `limit`).
    async fn search_dns(&self, filter: &str, limit: i32) -> Result<Vec<String>, DirectoryError> {
        let entries = self.search(filter, limit, vec!["1.1"]).await?;
        Ok(entries.into_iter().map(|e| e.dn).collect())
    }
}

#[async_trait]
impl Backend for LdapDirectory {
    async fn recipient_exists(&self, address: &str) -> Result<bool, DirectoryError> {
        let filter = fill(&self.cfg.recipient_filter, address);
        Ok(!self.search_dns(&filter, 1).await?.is_empty())
    }

    async fn login(&self, login: &str, password: &str) -> Result<LoginAnswer, DirectoryError> {
        // An empty password would be an unauthenticated bind, which servers accept
        // (Guarded never asks with one; this is the second lock).
        if password.is_empty() || login.is_empty() {
            return Ok(LoginAnswer::Decided(LoginResult::Invalid));
        }
        let filter = fill(&self.cfg.login_filter, login);
        let dns = self.search_dns(&filter, 2).await?;
        let dn = match dns.as_slice() {
            [dn] => dn,
            [] => return Ok(LoginAnswer::Decided(LoginResult::Invalid)),
            _ => {
                tracing::warn!(%login, filter = %filter, "directory.login_filter finds several entries; login refused");
                return Ok(LoginAnswer::Decided(LoginResult::Invalid));
            }
        };
        let mut user = self.connect().await?;
        let bound = user
            .with_timeout(self.cfg.timeout)
            .simple_bind(dn, password)
            .await;
        let _ = user.unbind().await;
        let result = bound?;
        if result.rc == 0 {
            Ok(LoginAnswer::Decided(LoginResult::Valid))
        } else if BIND_REFUSED.contains(&result.rc) {
            Ok(LoginAnswer::Decided(LoginResult::Invalid))
        } else {
            Err(result.success().expect_err("rc is not 0").into())
        }
    }

    async fn senders(&self, login: &str) -> Result<Vec<String>, DirectoryError> {
        if login.is_empty() || self.cfg.sender_attributes.is_empty() {
            return Ok(Vec::new());
        }
        let filter = fill(&self.cfg.login_filter, login);
        let attrs = self
            .cfg
            .sender_attributes
            .iter()
            .map(String::as_str)
            .collect();
        let entries = self.search(&filter, 2, attrs).await?;
        let [entry] = entries.as_slice() else {
            // None, or several (which no login can be): no senders.
            return Ok(Vec::new());
        };
        // The server answers with the attributes asked for (names as its schema spells
        // them); take those only.
        Ok(entry
            .attrs
            .iter()
            .filter(|(name, _)| {
                (self.cfg.sender_attributes.iter()).any(|a| a.eq_ignore_ascii_case(name))
            })
            .flat_map(|(_, values)| values.iter().cloned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_rfc_4515_says() {
        assert_eq!(fill("(uid=%s)", "alice"), "(uid=alice)");
        assert_eq!(fill("(uid=%s)", "*)(uid=*"), r"(uid=\2a\29\28uid=\2a)");
        assert_eq!(fill("(uid=%s)", r"a\b"), r"(uid=a\5cb)");
        assert_eq!(fill("(uid=%s)", "a\0b"), r"(uid=a\00b)");
        assert_eq!(
            fill("(|(mail=%s)(mailAlternateAddress=%s))", "x@y.test"),
            "(|(mail=x@y.test)(mailAlternateAddress=x@y.test))"
        );
        // Every filled filter still parses as one filter.
        for v in ["*)(uid=*", "a)(|(objectClass=*", "\\", "é@x.test"] {
            assert!(ldap3::parse_filter(fill("(uid=%s)", v)).is_ok(), "{v}");
        }
    }
}
